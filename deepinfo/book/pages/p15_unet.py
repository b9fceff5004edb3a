"""Page ``15_unet``: pixel-wise CID of a U-Net segmenting EM membranes (App. G.1).

The analysis behind the notebook: the figures of the maps (``unet_cid_maps``,
``unet_cid_maps_normalized``, ``membrane_concentration``, ``untrained_cid_maps``), the per-(layer,
slice) table of membrane and non-membrane CID (``cid_per_layer_slice``) and its per-layer summary
(``cid_per_layer``), the comparison with the untrained U-Net (``control_untrained``), the per-slice
effects the verdict is decided on (``concentration_per_slice``), the setup conditions and the
numbers and detail of the claim.

The membrane mask plays the role of the object in the concentration (Eq. 5): the mean CID of the
non-membrane cells minus that of the membrane cells, in nats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from deepinfo.book.verdicts import Condition, Verdict, constraint_condition, on_constraint, parts_text
from deepinfo.datasets import subset
from deepinfo.plotting import overlay
from deepinfo.result import InfoMaps
from deepinfo.toolkit.profile import Profile

__all__ = ["held_out_slices", "shared_color_range", "plot_cid_maps", "plot_cid_maps_normalized", "layer_slice_rows",
           "layer_summary", "plot_membrane_concentration", "control_frame", "plot_untrained_maps",
           "per_slice_concentration", "segmentation_condition", "data_condition", "setup_conditions", "claim_numbers",
           "claim_detail", "data_text"]


def held_out_slices(test_set: Dataset, n: int, seed: int) -> tuple[list[int], list[int], torch.Tensor, torch.Tensor]:
    """A seeded pick of ``n`` held-out slices with their membrane masks.

    Args:
        test_set: the held-out slices (a ``Subset`` of the labelled volume), items ``(image, mask)``.
        n: how many to pick (at most ``len(test_set)``); seed: the pick's seed.

    Returns:
        ``(picked, slices, x, membrane)``: positions in ``test_set``, the slices' indices in the
        volume, ``[n, 1, S, S]`` images in [0, 1] and ``[n, S, S]`` bool membrane masks.
    """
    picked = subset(test_set, n, seed=seed).indices
    x = torch.stack([test_set[i][0] for i in picked])          # [N, 1, S, S] in [0, 1]
    slices = [test_set.indices[i] for i in picked]
    membrane = torch.stack([test_set[i][1] for i in picked])   # [N, S, S] bool
    return picked, slices, x, membrane


def shared_color_range(maps: InfoMaps) -> tuple[float, float]:
    """``(vmin, vmax)`` of all pixel-wise values of ``maps`` (nats): one colour scale for every panel."""
    cid_maps = maps.pixelwise
    return float(cid_maps.min()), float(cid_maps.max())


def plot_cid_maps(x: torch.Tensor, membrane: torch.Tensor, predicted: torch.Tensor, maps: InfoMaps,
                  layers: Sequence[str], slice_ids: Sequence[int]) -> plt.Figure:
    """The figure ``unet_cid_maps``: per slice, the image, the true and predicted membranes and the
    CID of each layer, on one colour scale (:func:`shared_color_range`).

    Args:
        x: ``[N, 1, S, S]`` slices in [0, 1]; membrane, predicted: ``[N, S, S]`` bool masks.
        maps: the trained U-Net's maps; layers: their names; slice_ids: each slice's index.
    """
    cid_maps = maps.pixelwise  # [L, N, G, G]
    vmin, vmax = shared_color_range(maps)
    ncols = 3 + len(layers)
    n = len(slice_ids)
    fig, axes = plt.subplots(n, ncols, figsize=(2.0 * ncols + 0.6, 2.0 * n), squeeze=False)
    for r in range(n):
        panels = [(x[r, 0], "gray", f"slice {slice_ids[r]}"), (membrane[r], "gray_r", "membrane (truth)"),
                  (predicted[r], "gray_r", "membrane (U-Net)")]
        for c, (img, cmap, title) in enumerate(panels):
            axes[r, c].imshow(img.float().numpy(), cmap=cmap, vmin=0, vmax=1)
            axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
            axes[r, c].set_title(title, fontsize=9)
        for c, name in enumerate(layers):
            shown = overlay(x[r], cid_maps[c, r], axes[r, 3 + c], vmin=vmin, vmax=vmax, alpha=0.65,
                            title=f"CID {name}" if r == 0 else None)
    fig.colorbar(shown, ax=axes, fraction=0.02, pad=0.01, label="pixel-wise CID (nats)")
    return fig


def plot_cid_maps_normalized(x: torch.Tensor, maps: InfoMaps, layers: Sequence[str]) -> plt.Figure:
    """The figure ``unet_cid_maps_normalized``: every map on its own colour scale (App. G's view).

    Args:
        x: ``[N, 1, S, S]`` slices in [0, 1]; maps: the trained U-Net's maps; layers: their names.
    """
    cid_maps = maps.pixelwise
    n = x.shape[0]
    fig, axes = plt.subplots(n, len(layers), figsize=(2.0 * len(layers), 2.0 * n), squeeze=False)
    for r in range(n):
        for c, name in enumerate(layers):
            overlay(x[r], cid_maps[c, r], axes[r, c], alpha=0.65, title=name if r == 0 else None)
    return fig


def layer_slice_rows(pixelwise: torch.Tensor, conc: torch.Tensor, ratio: torch.Tensor, fg: torch.Tensor,
                     layers: Sequence[str], slice_ids: Sequence[int]) -> pd.DataFrame:
    """One row per (layer, slice): CID overall, on membrane cells and on the other cells.

    Args:
        pixelwise: ``[L, N, G, G]`` pixel-wise CID (nats).
        conc: ``[L, N]`` concentration w.r.t. the membrane mask (nats).
        ratio: ``[L, N]`` achieved constraint ratio ``r``.
        fg: ``[N, G*G]`` bool, the membrane cells of each slice.
        layers: the layer names; slice_ids: each slice's index in the data.

    Returns:
        layer, layer_index, slice, cid (mean over cells), cid_membrane, cid_non_membrane (means over
        those cells; NaN when a slice has none), concentration, ratio, n_membrane_cells.
    """
    values = pixelwise.reshape(len(layers), len(slice_ids), -1)
    fgf = fg.float()[None]
    rows = []
    for l, name in enumerate(layers):
        for b, slice_id in enumerate(slice_ids):
            rows.append({
                "layer": name, "layer_index": l, "slice": slice_id,
                "cid": float(values[l, b].mean()),
                "cid_membrane": float((values[l, b] * fgf[0, b]).sum() / fgf[0, b].sum()),
                "cid_non_membrane": float((values[l, b] * (1 - fgf[0, b])).sum() / (1 - fgf[0, b]).sum()),
                "concentration": float(conc[l, b]),
                "ratio": float(ratio[l, b]), "n_membrane_cells": int(fg[b].sum()),
            })
    return pd.DataFrame(rows)


def layer_summary(per_image: pd.DataFrame) -> pd.DataFrame:
    """Per layer (forward order), the means and ranges over the slices.

    Args:
        per_image: :func:`layer_slice_rows`'s table with an ``on_constraint`` column.

    Returns:
        layer_index, layer, the means of cid, cid_membrane, cid_non_membrane and concentration (nats),
        concentration_min/max, n_positive (slices with a concentration above 0), n_slices,
        n_on_constraint, ratio_min/max.
    """
    return per_image.groupby(["layer_index", "layer"], sort=True).agg(
        cid=("cid", "mean"), cid_membrane=("cid_membrane", "mean"), cid_non_membrane=("cid_non_membrane", "mean"),
        concentration=("concentration", "mean"), concentration_min=("concentration", "min"),
        concentration_max=("concentration", "max"), n_positive=("concentration", lambda v: int((v > 0).sum())),
        n_slices=("concentration", "size"), n_on_constraint=("on_constraint", "sum"),
        ratio_min=("ratio", "min"), ratio_max=("ratio", "max"),
    ).reset_index()


def plot_membrane_concentration(per_image: pd.DataFrame, layers: Sequence[str]) -> plt.Figure:
    """The figure ``membrane_concentration``: each slice's concentration per layer, forward order."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    pos = np.arange(len(layers))
    for sl in sorted(per_image.slice.unique()):
        d = per_image[per_image.slice == sl].sort_values("layer_index")
        ax.plot(pos, d.concentration, marker="o", alpha=0.8, label=f"slice {sl}")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xticks(pos, layers)
    ax.set_xlabel("layer (forward order)")
    ax.set_ylabel("CID non-membrane - CID membrane (nats)")
    ax.set_title("concentration w.r.t. the membrane mask")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def control_frame(cid: torch.Tensor, cid0: torch.Tensor, conc: torch.Tensor, conc0: torch.Tensor,
                  ratio: torch.Tensor, ratio0: torch.Tensor, layers: Sequence[str], slice_ids: Sequence[int],
                  tol: float) -> pd.DataFrame:
    """The trained and the untrained U-Net side by side, per (layer, slice).

    Args:
        cid, cid0: ``[L, N]`` layer CID (nats) of the trained and the untrained net.
        conc, conc0: ``[L, N]`` their concentrations w.r.t. the membranes (nats).
        ratio, ratio0: ``[L, N]`` their achieved constraint ratios.
        layers: the layer names; slice_ids: each slice's index; tol: the estimator's tolerance on ``r``.

    Returns:
        layer, layer_index, slice, cid_trained, cid_untrained, concentration_trained,
        concentration_untrained, difference (trained minus untrained concentration), ratio_trained,
        ratio_untrained, on_trained (the trained map met the constraint), on_both (both did).
    """
    control = pd.DataFrame([
        {"layer": name, "layer_index": l, "slice": slice_ids[b],
         "cid_trained": float(cid[l, b]), "cid_untrained": float(cid0[l, b]),
         "concentration_trained": float(conc[l, b]), "concentration_untrained": float(conc0[l, b]),
         "difference": float(conc[l, b] - conc0[l, b]),
         "ratio_trained": float(ratio[l, b]), "ratio_untrained": float(ratio0[l, b])}
        for l, name in enumerate(layers) for b in range(len(slice_ids))])
    control["on_trained"] = on_constraint(control.ratio_trained.to_numpy(), tol)
    control["on_both"] = control.on_trained & on_constraint(control.ratio_untrained.to_numpy(), tol)
    return control


def plot_untrained_maps(x: torch.Tensor, membrane: torch.Tensor, maps0: InfoMaps, layers: Sequence[str],
                        scale: tuple[float, float]) -> plt.Figure:
    """The figure ``untrained_cid_maps``: the first slice's membranes and the untrained net's maps.

    Args:
        x: ``[N, 1, S, S]`` slices; membrane: ``[N, S, S]`` bool; maps0: the untrained net's maps.
        layers: the layer names; scale: ``(vmin, vmax)``, the trained maps' colour scale.
    """
    vmin, vmax = scale
    fig, axes = plt.subplots(1, 1 + len(layers), figsize=(2.0 * (1 + len(layers)) + 0.6, 2.2), squeeze=False)
    axes[0, 0].imshow(membrane[0].float().numpy(), cmap="gray_r", vmin=0, vmax=1)
    axes[0, 0].set_xticks([]), axes[0, 0].set_yticks([])
    axes[0, 0].set_title("membrane (truth)", fontsize=9)
    for c, name in enumerate(layers):
        shown = overlay(x[0], maps0.pixelwise[c, 0], axes[0, 1 + c], vmin=vmin, vmax=vmax, alpha=0.65,
                        title=f"untrained {name}")
    fig.colorbar(shown, ax=axes, fraction=0.02, pad=0.01, label="pixel-wise CID (nats)")
    return fig


def per_slice_concentration(control: pd.DataFrame, slice_ids: Sequence[int]) -> pd.DataFrame:
    """The per-slice effects of the two parts of the rule (the unit of the verdict).

    Args:
        control: :func:`control_frame`'s table.
        slice_ids: the slices, in the order of the table's rows.

    Returns:
        One row per slice: concentration_trained (mean over the layers whose trained map met the
        constraint), concentration_untrained and trained_minus_untrained (means over the layers
        where both maps did), n_layers_trained, n_layers_both; NaN where no layer qualifies.
    """
    return pd.DataFrame({
        "concentration_trained": control[control.on_trained].groupby("slice").concentration_trained.mean(),
        "concentration_untrained": control[control.on_both].groupby("slice").concentration_untrained.mean(),
        "trained_minus_untrained": control[control.on_both].groupby("slice").difference.mean(),
        "n_layers_trained": control[control.on_trained].groupby("slice").size(),
        "n_layers_both": control[control.on_both].groupby("slice").size(),
    }).reindex(slice_ids).rename_axis("slice").reset_index()


def segmentation_condition(scores: Mapping[str, float], n_test: int, unit: str, fraction: float,
                           paper_accuracy: float) -> Condition:
    """Setup condition: the U-Net segments about as well as the U-Net paper's.

    Args:
        scores: ``pixel_accuracy``, ``iou_membrane`` and ``membrane_fraction`` on the test slices.
        n_test: held-out slices scored; unit: what a slice is called.
        fraction: the share of ``paper_accuracy`` (pixel accuracy, in [0, 1]) that meets it.

    Returns:
        Met when the pixel accuracy is at least ``fraction * paper_accuracy`` and above the
        all-"cell" baseline ``1 - membrane_fraction``.
    """
    s_acc, s_iou, s_mf = scores["pixel_accuracy"], scores["iou_membrane"], scores["membrane_fraction"]
    return Condition("U-Net segmentation", s_acc >= fraction * paper_accuracy and s_acc > 1 - s_mf,
                     f"pixel accuracy {s_acc:.1%}, membrane IoU {s_iou:.3f} on {n_test} held-out {unit} "
                     f"(all-'cell' baseline {1 - s_mf:.1%})",
                     f"~{paper_accuracy:.0%} pixel accuracy (Ronneberger et al. 2015, pixel error 0.061; "
                     "the paper gives no number)")


def data_condition(dataset: str, size: int, n_slices: int, n_test: int, unit: str, paper_size: int) -> Condition:
    """Setup condition: the data are ISBI 2012 slices at (at least) the paper's size.

    Args:
        dataset: the profile's segmentation data set; size: its image side (px).
        n_slices: slices measured, of ``n_test`` held out; unit: what a slice is called.
        paper_size: the side of the ISBI 2012 slices (px).
    """
    return Condition("data", dataset == "isbi2012" and size >= paper_size,
                     f"{dataset} at {size} px, {n_slices} of {n_test} held-out {unit} measured",
                     f"ISBI 2012 EM slices at {paper_size} x {paper_size} px")


def setup_conditions(scores: Mapping[str, float], profile: Profile, n_slices: int, n_test: int, unit: str,
                     control: pd.DataFrame, *, fraction: float, paper_accuracy: float,
                     paper_size: int) -> list[Condition]:
    """The setup conditions of the claim: :func:`segmentation_condition`, :func:`data_condition`
    (the profile's segmentation data set and image size) and the maps of both nets on the constraint.

    Args:
        scores: the U-Net's test scores; profile: the profile (data set, size, estimator's tol).
        n_slices: slices measured, of ``n_test`` held out; unit: what a slice is called.
        control: :func:`control_frame`'s table (its ``ratio_trained`` and ``ratio_untrained``).
        fraction, paper_accuracy, paper_size: the thresholds of the first two conditions.
    """
    seg = profile.data.segmentation
    return [
        segmentation_condition(scores, n_test, unit, fraction, paper_accuracy),
        data_condition(seg.dataset, seg.image_size, n_slices, n_test, unit, paper_size),
        constraint_condition(np.concatenate([control.ratio_trained.to_numpy(), control.ratio_untrained.to_numpy()]),
                             profile.estimator.tol),
    ]


def claim_numbers(n_layers: int, n_slices: int, scores: Mapping[str, float], direction: Verdict,
                  control_part: Verdict, per_layer: pd.DataFrame, control: pd.DataFrame) -> dict[str, float]:
    """The numbers kept with the claim.

    Args:
        n_layers, n_slices: the layers and slices measured.
        scores: ``pixel_accuracy`` and ``iou_membrane`` of the U-Net.
        direction, control_part: the verdicts of the two parts of the rule.
        per_layer: :func:`layer_summary`'s table; control: :func:`control_frame`'s.

    Returns:
        n_layers, n_slices, pixel_accuracy, iou_membrane; ``direction_``/``control_`` +
        ``effect``/``lo``/``hi``; ``concentration_<layer>`` (trained, mean over slices, nats);
        ``untrained_concentration_<layer>_slice<slice>`` (nats).
    """
    return {"n_layers": n_layers, "n_slices": n_slices,
            "pixel_accuracy": scores["pixel_accuracy"], "iou_membrane": scores["iou_membrane"],
            **{f"{k}_{q}": val for k, p in (("direction", direction), ("control", control_part))
               for q, val in (("effect", p.effect), ("lo", p.interval[0]), ("hi", p.interval[1]))},
            **{f"concentration_{r.layer}": r.concentration for r in per_layer.itertuples()},
            **{f"untrained_concentration_{r.layer}_slice{r.slice}": r.concentration_untrained
               for r in control.itertuples()}}


def claim_detail(parts: Mapping[str, Verdict], control: pd.DataFrame) -> str:
    """The claim's detail: each part's verdict line, then per layer the mean concentration over the
    slices of the trained and the untrained net (nats)."""
    return (parts_text(parts) + " Per layer, mean over slices (trained / untrained): "
            + "; ".join(f"{name} {g.concentration_trained.mean():+.3f} / {g.concentration_untrained.mean():+.3f} nats"
                        for name, g in control.groupby("layer", sort=False)) + ".")


def data_text(profile: Profile, grid: int, unit: str, n_test: int, n_slices: int, layers: Sequence[str]) -> str:
    """The claim's data line: the data set and size, the U-Net, the slices and cells measured, the control."""
    P = profile
    size = P.data.segmentation.image_size
    return (f"{P.data.segmentation.dataset} at {size} px: U-Net (base {P.networks.unet.base_channels}, "
            f"{P.networks.unet.levels} levels) trained on {P.data.segmentation.n_train} {unit}, scored on "
            f"{n_test} held-out {unit}, CID ({grid}x{grid} cells) on {n_slices} of them, layers "
            f"{', '.join(layers)}; control: the same U-Net at its initial weights")

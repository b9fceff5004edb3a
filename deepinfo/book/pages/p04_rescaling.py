"""Page ``notebooks/04_rescaling.ipynb``: the rescaling test of Fig. 1(a1, a2) and Sec. 3.4.

Two consecutive conv layers L and L+1 of a ReLU VGG are rescaled (``w_L, b_L / k``,
``w_(L+1) * k``); the network computes the same function. This module holds the page's analysis:
which layers form the pair, the before / after frames of CID and RU, the baselines' ratios
after / before of the mean |map| (table ``ratios``, figure ``ratios``), the layer-L maps (figure
``maps_layer_L``), and the per-unit values, ``numbers`` and ``detail`` of the page's three claims.
The notebook keeps the thresholds, the measuring calls, the tables and the claims' words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

import deepinfo
from deepinfo.attribution.baselines import attribute, default_layer
from deepinfo.book import experiments as E
from deepinfo.book.verdicts import Condition, constraint_condition, on_constraint, reconstruction_condition
from deepinfo.decoder import pixel_variance, reconstruction_mse
from deepinfo.models import stage_names
from deepinfo.plotting import overlay
from deepinfo.result import InfoMaps
from deepinfo.techniques.rescaling import Prescaled, mean_abs_ratio

__all__ = ["PairLayers", "pair_layers", "batch_norm_note", "output_change", "feature_ratios", "feature_table",
           "ru_layers", "trained_decoders", "measure_before_after", "per_image_frame", "before_after_frame",
           "predicted_class", "baseline_cases", "attribute_before_after", "ratio_table", "per_image_ratio_table",
           "plot_ratios", "plot_maps_layer_L", "invariance_units", "on_constraint_both", "largest_changes",
           "data_text", "output_condition", "invariance_setup", "invariance_evidence", "split_baselines",
           "changed_list", "unchanged_list", "gradient_log_ratios", "gradient_evidence",
           "activation_weighted_log_ratios", "method_labels", "activation_weighted_evidence"]

#: the estimators' keys in the ratio table (every other key is a baseline)
OURS = ["cid", "ru"]


@dataclass(frozen=True)
class PairLayers:
    """The module names of the rescaled pair and of the layers the page measures.

    Attributes:
        conv_L, conv_L1: the conv of layer L and of layer L+1 (``features.<i>``).
        first: the module that ends layer L's affine map (its BN with batch norm, else ``conv_L``),
            whose weight and bias are divided by k.
        relu_L, relu_L1: the ReLU after layer L and after layer L+1 (the measured "layer" outputs).
        stage_L: the max-pool ending the middle stage (the stage output after L).
        last_stage: the last max-pool of ``features``.
        scaled: the modules whose outputs the rescaling divides by k (from ``first`` up to L+1).
        roles: ``{layer: role in words}`` for the measured layers, and ``None: "input space"``.
        batch_norm: whether layer L ends with a batch norm (``first != conv_L``).
    """

    conv_L: str
    conv_L1: str
    first: str
    relu_L: str
    relu_L1: str
    stage_L: str
    last_stage: str
    scaled: frozenset[str]
    roles: dict
    batch_norm: bool


def pair_layers(model: nn.Module) -> PairLayers:
    """Choose the pair: L is the last conv of the middle stage, L+1 the first conv after it.

    A ReLU and a max-pool then sit between the two layers, and the stage output after L (where
    the profile trains an RU decoder) is rescaled too.

    Args:
        model: a VGG-like network with a ``features`` ``nn.Sequential`` of convs, ReLUs and pools.

    Returns:
        :class:`PairLayers` with the module names.
    """
    feats = model.features
    convs = [i for i, m in enumerate(feats) if isinstance(m, nn.Conv2d)]
    pools = [i for i, m in enumerate(feats) if isinstance(m, nn.MaxPool2d)]
    middle = pools[len(pools) // 2]  # the pool that ends the middle stage (VGG: the third of five)
    iL = max(i for i in convs if i < middle)
    iL1 = min(i for i in convs if i > iL)
    # With batch norm (eval mode) the layer is conv + BN, one affine map; its BN holds the map's last
    # scale and shift, so that is where w_L, b_L are divided by k (see deepinfo.techniques.rescaling).
    end_L = iL + 1 if isinstance(feats[iL + 1], nn.BatchNorm2d) else iL

    def relu(lo: int, hi: int) -> int:
        return next(i for i in range(lo, hi) if isinstance(feats[i], nn.ReLU))

    conv_L, conv_L1, first = f"features.{iL}", f"features.{iL1}", f"features.{end_L}"
    relu_L, relu_L1 = f"features.{relu(iL, iL1)}", f"features.{relu(iL1, len(feats))}"
    stage_L, last_stage = f"features.{middle}", f"features.{pools[-1]}"
    scaled = frozenset(f"features.{i}" for i in range(end_L, iL1))  # outputs divided by k
    roles = {relu_L: "L (scaled 1/k)", stage_L: "stage output after L (scaled 1/k)", relu_L1: "L+1 (unchanged)",
             last_stage: "last stage (unchanged)", None: "input space"}
    return PairLayers(conv_L, conv_L1, first, relu_L, relu_L1, stage_L, last_stage, scaled, roles, end_L != iL)


def batch_norm_note(pair: PairLayers) -> str:
    """The page's sentence on where w_L, b_L are divided by k (glue ``bn_note``)."""
    return (f"This network has batch norm after every conv (profile setting networks.cub.batch_norm): in "
            f"eval mode conv + BN is one affine map, and its weight and bias are divided by k through the "
            f"BN's scale and shift ({pair.first})." if pair.batch_norm else
            "This network has no batch norm: the conv's own weight and bias are divided by k.")


def output_change(out0: torch.Tensor, out1: torch.Tensor) -> tuple[float, float]:
    """How much the rescaled network's output differs from the original's.

    Args:
        out0, out1: ``[N, classes]`` logits of the original and the rescaled network.

    Returns:
        ``(out_diff, same_class)``: the largest absolute change of a logit divided by the largest
        absolute logit of the original, and the share (0-1) of inputs whose argmax class agrees.
    """
    out_diff = float((out1 - out0).abs().max() / out0.abs().max())
    same_class = float((out1.argmax(1) == out0.argmax(1)).float().mean())
    return out_diff, same_class


def feature_ratios(model: nn.Module, rescaled: nn.Module, x: torch.Tensor, roles: Mapping) -> dict[str, float]:
    """Mean |feature| before over after, per measured layer (k for the scaled ones, 1 after L+1).

    Args:
        model, rescaled: the original and the rescaled network.
        x: ``[B, C, H, W]`` images.
        roles: ``{layer: role}``; the ``None`` key (input space) is skipped.

    Returns:
        ``{layer: mean |f before| / mean |f after|}`` in the order of ``roles``.
    """
    taps = {(name, l): f for name, net in (("before", model), ("after", rescaled))
            for l, f in deepinfo.features(net, x, [l for l in roles if l]).items()}
    return {l: float(taps["before", l].abs().mean() / taps["after", l].abs().mean()) for l in roles if l}


def feature_table(feature_ratio: Mapping[str, float], roles: Mapping) -> pd.DataFrame:
    """Table ``features``: columns ``layer``, ``role``, ``mean_abs_before_over_after`` (a ratio)."""
    return pd.DataFrame([dict(layer=l, role=roles[l], mean_abs_before_over_after=v) for l, v in feature_ratio.items()])


def ru_layers(model: nn.Module, cid_layers: Sequence[str], scaled: frozenset[str] | set[str],
              decoder_layers: str | Sequence[str]) -> list[str]:
    """The layers where RU is measured: rescaled ones that have a decoder.

    From L+1 on the network and the decoder are the same before and after, so RU there needs no
    test; when the profile trains decoders at stage outputs only (``decoder_layers == "stages"``)
    a layer must also be a stage output (:func:`deepinfo.models.stage_names`).

    Args:
        model: the original network.
        cid_layers: the layers where CID is measured, in order.
        scaled: the modules whose output the rescaling divides by k.
        decoder_layers: the profile's ``decoder.layers``.

    Returns:
        The subset of ``cid_layers``, in order.
    """
    stages = stage_names(model)
    return [l for l in cid_layers if l in scaled and (decoder_layers != "stages" or l in stages)]


def trained_decoders(profile, trained, layers: Sequence[str]) -> dict[str, nn.Module]:
    """``{layer: RU decoder}`` of the original network (:func:`deepinfo.book.experiments.trained_decoder`,
    trained on the CUB train split, or loaded from the cache), in the order of ``layers``."""
    train = E.cub_data(profile, "train")
    return {l: E.trained_decoder(profile, trained, l, train) for l in layers}


def measure_before_after(model: nn.Module, rescaled: nn.Module, x: torch.Tensor, cid_layers: Sequence[str],
                         decoders: Mapping[str, nn.Module], ru_layers: Sequence[str], scaled: frozenset[str] | set[str],
                         k: float, estimator, seed: int) -> dict[tuple[str, str], InfoMaps]:
    """CID and RU of both networks with the same settings and seed (the same noise draws and probes).

    The rescaled network's RU uses the equivalent decoder ``g'(f) = g(k f)``
    (:class:`deepinfo.techniques.rescaling.Prescaled`) at the rescaled layers.

    Args:
        model, rescaled: the original and the rescaled network.
        x: ``[B, C, H, W]`` images.
        cid_layers, ru_layers: where CID and RU are measured.
        decoders: ``{layer: decoder}`` trained on the original network's features.
        scaled: the modules whose output the rescaling divides by k.
        k: the rescaling factor.
        estimator: the profile's estimator settings (``deepinfo.Settings.of`` reads them).
        seed: the estimators' seed.

    Returns:
        ``{("cid" | "ru", "before" | "after"): InfoMaps}``.
    """
    decoders_after = {l: Prescaled(d, k) if l in scaled else d for l, d in decoders.items()}
    settings = deepinfo.Settings.of(estimator)
    return {
        ("cid", "before"): deepinfo.cid(model, x, cid_layers, seed=seed, progress=True, settings=settings),
        ("cid", "after"): deepinfo.cid(rescaled, x, cid_layers, seed=seed, progress=True, settings=settings),
        ("ru", "before"): deepinfo.ru(model, decoders, x, ru_layers, seed=seed, progress=True, settings=settings),
        ("ru", "after"): deepinfo.ru(rescaled, decoders_after, x, ru_layers, seed=seed, progress=True,
                                     settings=settings),
    }


def per_image_frame(maps: Mapping[tuple[str, str], InfoMaps], roles: Mapping) -> pd.DataFrame:
    """Table ``cid_ru_per_image``: one row per (kind, network, layer, image).

    Args:
        maps: ``{(kind, "before" | "after"): InfoMaps}``.
        roles: ``{layer: role}``.

    Returns:
        :meth:`InfoMaps.to_frame` of every entry, with ``network`` ("before" / "after") inserted
        first and ``role`` appended; ``value`` is the mean CID or RU over cells (nats).
    """
    frames = []
    for (kind, when), m in maps.items():
        df = m.to_frame()
        df.insert(0, "network", when)
        df["role"] = df.layer.map(roles)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def before_after_frame(per_image: pd.DataFrame) -> pd.DataFrame:
    """One row per (kind, layer, role, image) with the before and after values side by side.

    Returns:
        Columns ``kind, layer, role, image``, then ``<v>_<network>`` for v in ``value``,
        ``delta_f2``, ``constraint`` and network in ``after``/``before`` (as the pivot orders
        them), and ``delta_value = value_after - value_before`` (nats).
    """
    wide = per_image.pivot_table(index=["kind", "layer", "role", "image"], columns="network",
                                 values=["value", "delta_f2", "constraint"], sort=False)
    wide.columns = [f"{a}_{b}" for a, b in wide.columns]
    wide = wide.reset_index()
    wide["delta_value"] = wide.value_after - wide.value_before
    return wide


def predicted_class(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``[B]`` the class the original network predicts; every baseline explains it, before and after."""
    with torch.no_grad():
        return model(x).argmax(1)


def baseline_cases(model: nn.Module, x: torch.Tensor, relu_L: str, relu_L1: str) -> list[tuple[str, str | None, str]]:
    """The baselines the page compares: ``(method, layer or None for input space, label)``.

    At layer L, at layer L+1 and in input space; CAM is added at the model's CAM layer when one
    exists (a feature map whose global average pool feeds the final linear layer), otherwise the
    reason is printed.
    """
    cases = [("gradient", relu_L, "gradient w.r.t. the layer output"),
             ("gradient_x_input", relu_L, "gradient x activation"),
             ("gradcam", relu_L, "Grad-CAM"),
             ("lrp", relu_L, "LRP (relevance of the layer output)"),
             ("gradient", relu_L1, "gradient w.r.t. the layer output"),
             ("gradient_x_input", relu_L1, "gradient x activation"),
             ("gradcam", relu_L1, "Grad-CAM"),
             ("gradient", None, "input gradient"),
             ("gradient_x_input", None, "gradient x input"),
             ("lrp", None, "LRP (input relevance)")]
    try:
        cam_layer = default_layer(model, x, cam=True)
        cases.append(("cam", cam_layer, "CAM"))
    except ValueError as err:
        print("CAM is not defined for this network:", err)
    return cases


def attribute_before_after(cases: Sequence[tuple[str, str | None, str]], model: nn.Module, rescaled: nn.Module,
                           x: torch.Tensor, target: torch.Tensor) -> dict:
    """Each case's map in the original and the rescaled network, for the same target class.

    Returns:
        ``{(method, layer): (map before, map after)}``, maps ``[B, ...]``.
    """
    attributions = {}
    for method, layer, label in cases:
        a0 = attribute(method, model, x, target=target, layer=layer)
        a1 = attribute(method, rescaled, x, target=target, layer=layer)
        attributions[method, layer] = (a0, a1)
    return attributions


def ratio_table(cases: Sequence[tuple[str, str | None, str]], attributions: Mapping, maps: Mapping,
                roles: Mapping, min_change: float) -> pd.DataFrame:
    """Table ``ratios``: per method and layer, the ratio after / before of the mean |map|.

    Args:
        cases, attributions: from :func:`baseline_cases` and :func:`attribute_before_after`.
        maps: ``{(kind, "before" | "after"): InfoMaps}`` of CID and RU.
        roles: ``{layer: role}``.
        min_change: ``|log ratio|`` above which a method counts as changed.

    Returns:
        One row per baseline case, then per CID / RU layer: ``method`` (label), ``key``, ``layer``
        ("input" for input space), ``role``, ``mean_abs_before``, ``mean_abs_after`` (over all
        images and cells), ``ratio`` (after / before), ``max_rel_change`` (largest |after - before|
        over the largest |before|); for CID / RU also ``max_abs_delta_mean_nats`` (largest change of
        a map's mean) and ``max_abs_delta_cell_nats`` (of one cell); ``changed_10pct``:
        ``|log ratio| > min_change``.
    """
    rows = []
    for method, layer, label in cases:
        a0, a1 = attributions[method, layer]
        rows.append(dict(method=label, key=method, layer=layer or "input", role=roles.get(layer, "layer " + str(layer)),
                         mean_abs_before=float(a0.abs().mean()), mean_abs_after=float(a1.abs().mean()),
                         ratio=float(a1.abs().mean() / a0.abs().mean()),
                         max_rel_change=float((a1 - a0).abs().max() / a0.abs().max())))
    for kind in OURS:
        b, a = maps[kind, "before"], maps[kind, "after"]
        for li, layer in enumerate(b.layers):
            pb, pa = b.pixelwise[li], a.pixelwise[li]
            rows.append(dict(method=kind.upper(), key=kind, layer=layer, role=roles[layer],
                             mean_abs_before=float(pb.abs().mean()), mean_abs_after=float(pa.abs().mean()),
                             ratio=float(pa.abs().mean() / pb.abs().mean()),
                             max_rel_change=float((pa - pb).abs().max() / pb.abs().max()),
                             max_abs_delta_mean_nats=float((a.mean()[li] - b.mean()[li]).abs().max()),
                             max_abs_delta_cell_nats=float((pa - pb).abs().max())))
    ratios = pd.DataFrame(rows)
    ratios["changed_10pct"] = np.abs(np.log(ratios.ratio)) > min_change  # mean |map| over images
    return ratios


def per_image_ratio_table(cases: Sequence[tuple[str, str | None, str]], attributions: Mapping) -> pd.DataFrame:
    """Table ``baseline_ratios_per_image``: columns ``method`` (label), ``key``, ``layer``
    ("input" for input space), ``image`` (0-based) and ``ratio``, the image's mean |map| after
    over before (:func:`deepinfo.techniques.rescaling.mean_abs_ratio`; NaN for a zero map)."""
    return pd.DataFrame([dict(method=label, key=method, layer=layer or "input", image=b, ratio=r)
                         for method, layer, label in cases
                         for b, r in enumerate(mean_abs_ratio(*attributions[method, layer]))])


def plot_ratios(ratios: pd.DataFrame, pair: PairLayers, k: float) -> Figure:
    """Figure ``ratios``: log2 of each row's ratio, baselines and CID / RU, with lines at 0 and +-log2 k."""
    short = {pair.relu_L: "L", pair.stage_L: "after L", pair.relu_L1: "L+1", pair.last_stage: "last stage"}
    lab = [f"{r.method} @ {r.layer} ({short.get(r.layer, r.layer)})" for r in ratios.itertuples()]
    ours_mask = ratios.key.isin(OURS).to_numpy()
    y = np.arange(len(ratios))[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(ratios) + 1.2), layout="constrained")
    ax.scatter(np.log2(ratios.ratio)[~ours_mask], y[~ours_mask], color="C0", zorder=3, label="baselines")
    ax.scatter(np.log2(ratios.ratio)[ours_mask], y[ours_mask], color="C3", marker="s", zorder=3, label="CID / RU")
    for v, s_ in ((0, "unchanged"), (math.log2(k), f"x k = {k:g}"), (-math.log2(k), "x 1/k")):
        ax.axvline(v, color="grey", lw=0.8, ls="--")
        ax.text(v, y.max() + 0.8, s_, fontsize=8, ha="center", color="grey")
    ax.set_yticks(y, lab, fontsize=8)
    ax.set_xlim(-math.log2(k) - 0.6, math.log2(k) + 0.6)
    ax.set_ylim(-0.7, y.max() + 1.5)
    ax.set_xlabel("log2(mean |map| after / before)")
    ax.set_title(f"Rescaling layer L = {pair.conv_L} by 1/{k:g} and L+1 = {pair.conv_L1} by {k:g}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_maps_layer_L(x: torch.Tensor, maps: Mapping, attributions: Mapping, relu_L: str) -> Figure:
    """Figure ``maps_layer_L``: CID, the layer-L gradient and Grad-CAM of the first image, before
    (top) and after (bottom), each method on one colour scale for its two panels."""
    shown = [("CID", maps["cid", "before"].layer(relu_L)[0], maps["cid", "after"].layer(relu_L)[0]),
             ("gradient (layer L)", *(a[0] for a in attributions["gradient", relu_L])),
             ("Grad-CAM (layer L)", *(a[0] for a in attributions["gradcam", relu_L]))]
    fig, axes = plt.subplots(2, len(shown), figsize=(3.0 * len(shown), 5.6), squeeze=False, layout="constrained")
    for c, (title, before, after) in enumerate(shown):
        lo, hi = float(torch.minimum(before.min(), after.min())), float(torch.maximum(before.max(), after.max()))
        for r, (when, m) in enumerate((("before", before), ("after", after))):
            im = overlay(x[0], m, axes[r, c], vmin=lo, vmax=hi, cmap="magma" if c == 0 else "viridis",
                         title=f"{title}, {when}\nmean |.| {float(m.abs().mean()):.3g}")
        fig.colorbar(im, ax=axes[:, c], shrink=0.6, location="bottom")
    return fig


# --- claim 1: CID and RU unchanged ---------------------------------------------------------------

def invariance_units(wide: pd.DataFrame, tol: float) -> tuple[np.ndarray, pd.Series]:
    """Claim 1's units: per map, |after - before| of the mean CID or RU (nats).

    Args:
        wide: from :func:`before_after_frame`.
        tol: the accepted constraint error (``estimator.tol``).

    Returns:
        ``(on, abs_delta)``: the boolean mask of the maps on the constraint both before and after,
        and ``|delta_value|`` with NaN for the maps off it (which ``decide`` leaves out).
    """
    on = on_constraint_both(wide, tol)
    abs_delta = wide.delta_value.abs().where(on)
    return on, abs_delta


def on_constraint_both(wide: pd.DataFrame, tol: float) -> np.ndarray:
    """Maps whose achieved ratio is within ``tol`` of 1 both before and after the rescaling."""
    return on_constraint(wide.constraint_before, tol) & on_constraint(wide.constraint_after, tol)


def largest_changes(wide: pd.DataFrame, ratios: pd.DataFrame) -> tuple[float, float]:
    """``(max_delta, max_cell)``: the largest |after - before| of a map's mean over all maps (on
    the constraint or not), and of a single cell over the CID / RU rows of ``ratios`` (nats)."""
    ours = ratios[ratios.key.isin(OURS)]
    return float(wide.delta_value.abs().max()), float(ours.max_abs_delta_cell_nats.max())


def data_text(arch: str, dataset: str, n_images: int, pair: PairLayers, k: float, cid_layers: Sequence[str],
              ru_layers: Sequence[str]) -> str:
    """The claims' ``data``: network, data set, images, the pair, k and the measured layers."""
    return (f"{arch} on CUB ({dataset}), {n_images} test images; pair {pair.conv_L} / {pair.conv_L1}, k = {k:g}; "
            f"CID at {', '.join(cid_layers)}; RU at {', '.join(ru_layers)}")


def output_condition(out_diff: float, same_class: float, max_change: float) -> Condition:
    """The setup condition that the rescaled network's output is the network's output
    (met when ``out_diff < max_change``)."""
    return Condition("rescaled network's output", out_diff < max_change,
                     f"largest logit change {out_diff:.1e} of the largest logit, {same_class:.0%} of the "
                     f"predictions the same", "unchanged (the revision 'did not change [...] the network output')")


def invariance_setup(output_unchanged: Condition, wide: pd.DataFrame, tol: float, model: nn.Module,
                     decoders: Mapping[str, nn.Module], x: torch.Tensor, max_share: float) -> list[Condition]:
    """Claim 1's setup: the output unchanged, the maps on the constraint (before and after
    together), and, when RU is measured, the decoders reconstruct (test MSE on ``x`` at most
    ``max_share`` of the pixel variance)."""
    setup = [output_unchanged,
             constraint_condition(np.concatenate([wide.constraint_before.to_numpy(), wide.constraint_after.to_numpy()]),
                                  tol)]
    if decoders:
        mses = {l: reconstruction_mse(model, l, d, x) for l, d in decoders.items()}
        setup.append(reconstruction_condition("RU", mses, pixel_variance(x), max_share=max_share))
    return setup


def invariance_evidence(wide: pd.DataFrame, on: np.ndarray, abs_delta: pd.Series, max_delta: float,
                        max_cell: float, tol: float, tol_nats: float) -> dict:
    """Claim 1's ``numbers`` and ``detail``.

    Returns:
        ``{"numbers": ..., "detail": ...}``: the largest changes, the margin, the maps on the
        constraint, and the largest |delta| (nats) per (kind, layer) over the maps on it.
    """
    per_layer_delta = wide.assign(abs_delta=abs_delta).groupby(["kind", "layer"], sort=False).abs_delta.max()
    numbers = {"max |delta| of one map (nats)": max_delta, "max |delta| of one cell (nats)": max_cell,
               "margin (nats)": tol_nats, "maps on the constraint": int(on.sum()), "maps": len(on),
               **{f"{k.upper()} {l} max |delta| (nats)": v for (k, l), v in per_layer_delta.items()}}
    detail = (f"Per map (layer x image, CID and RU; same seed before and after), |mean after - mean before| in nats; "
              f"{int(on.sum())} of {len(on)} maps on the constraint before and after. Largest change of a map "
              f"{max_delta:.2e} nats, of a single cell {max_cell:.2e} nats; margin 0.5 log(1 + {tol:g}) = "
              f"{tol_nats:.4f} nats.")
    return dict(numbers=numbers, detail=detail)


# --- claims 2 and 3: the baselines at layer L ----------------------------------------------------

def split_baselines(ratios: pd.DataFrame, relu_L: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(at_L, controls)``: the baseline rows of ``ratios`` at layer L, and those elsewhere
    (layer L+1, input space, CAM's layer), which are controls."""
    baselines = ~ratios.key.isin(OURS)
    return ratios[(ratios.layer == relu_L) & baselines], ratios[(ratios.layer != relu_L) & baselines]


def changed_list(at_L: pd.DataFrame) -> str:
    """The layer-L baselines whose mean |map| changed by more than the page's yardstick
    (``changed_10pct``), as "method (x ratio)" with 3 significant digits, or "none" (glue ``changed_list``)."""
    changed = at_L[at_L.changed_10pct]
    return ", ".join(f"{r.method} (x{r.ratio:.3g})" for r in changed.itertuples()) or "none"


def unchanged_list(at_L: pd.DataFrame) -> str:
    """The layer-L baselines whose mean |map| did not change by more than the yardstick, as
    "method (x ratio)" with 4 significant digits, or "none" (glue ``unchanged_list``)."""
    unchanged = at_L[~at_L.changed_10pct]
    return ", ".join(f"{r.method} (x{r.ratio:.4g})" for r in unchanged.itertuples()) or "none"


def gradient_log_ratios(before: torch.Tensor, after: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Claim 2's units: per image, the ratio after / before of the mean |gradient| and its
    ``|log|`` (``inf`` where the map after is zero, NaN where the map before is).

    Returns:
        ``(ratio [B], |log ratio| [B])``, float64.
    """
    with np.errstate(divide="ignore"):
        ratio = mean_abs_ratio(before, after)
        log = np.abs(np.log(ratio))
    return ratio, log


def gradient_evidence(grad_ratio_img: np.ndarray, controls: pd.DataFrame, k: float, relu_L: str) -> dict:
    """Claim 2's ``numbers`` (per-image ratios, k, the controls' ratios) and ``detail``."""
    numbers = {**{f"gradient @ L, image {b}: after/before": r for b, r in enumerate(grad_ratio_img)},
               "k": k, **{f"{r.method} @ {r.layer}: after/before": r.ratio for r in controls.itertuples()}}
    detail = (f"Per image, |log(after / before)| of the mean |gradient w.r.t. the output of {relu_L}|; ratios "
              + ", ".join(f"{r:.4g}" for r in grad_ratio_img)
              + f" (the algebra stated before the run expects k = {k:g}). "
              f"Controls at L+1 and in input space (mean over images): largest |ratio - 1| = "
              f"{float((controls.ratio - 1).abs().max()):.1e}.")
    return dict(numbers=numbers, detail=detail)


def activation_weighted_log_ratios(attributions: Mapping, methods: Sequence[str],
                                   relu_L: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Claim 3's units: per image, the largest ``|log(after / before)|`` of the mean |map| over
    the activation-weighted methods computed at layer L.

    Args:
        attributions: ``{(method, layer): (before, after)}``.
        methods: the activation-weighted methods (those missing at ``relu_L`` are skipped).
        relu_L: layer L.

    Returns:
        ``(weighted, aw_log, worst)``: the methods used, ``[methods, images]`` |log ratio| with NaN
        where undefined (a zero map), and ``[images]`` the largest finite one per image (NaN when
        none is).
    """
    weighted = [m for m in methods if (m, relu_L) in attributions]
    with np.errstate(divide="ignore", invalid="ignore"):
        aw_log = np.abs(np.log(np.stack([mean_abs_ratio(*attributions[m, relu_L]) for m in weighted])))
    aw_log = np.where(np.isfinite(aw_log), aw_log, np.nan)
    worst = np.array([np.nanmax(col) if np.isfinite(col).any() else np.nan for col in aw_log.T])
    return weighted, aw_log, worst


def method_labels(at_L: pd.DataFrame, methods: Sequence[str]) -> dict[str, str]:
    """``{method key: label}`` of the layer-L rows, for the methods given."""
    return {m: at_L[at_L.key == m].method.iloc[0] for m in methods}


def activation_weighted_evidence(weighted: Sequence[str], aw_log: np.ndarray, worst: np.ndarray,
                                 labels: Mapping[str, str], relu_L: str, min_change: float) -> dict:
    """Claim 3's ``numbers`` (every method and image's |log ratio|) and ``detail``."""
    numbers = {f"{labels[m]} @ L, image {b}: |log ratio|": v for m, row in zip(weighted, aw_log)
               for b, v in enumerate(row)}
    detail = (f"Per image, the largest over {', '.join(labels.values())} at {relu_L} of |log(after / before)| of "
              f"the mean |map|: " + ", ".join(f"{v:.2e}" for v in worst)
              + f" (margin log 1.1 = {min_change:.4f}); {int(np.isnan(aw_log).sum())} (method, image) maps undefined "
              "(zero before or after). This is a finding of this page, not a claim of the paper.")
    return dict(numbers=numbers, detail=detail)

"""Page ``notebooks/11_damage.ipynb``: architecture damage, Fig. 8 (App. F.1) and the maps of App. M.

One conv layer of a VGG is cut to a few filters; the original and the damaged nets are trained the
same way on birds vs non-birds and compared image by image. This module holds the page's
analysis: the accuracy table, the measured layers, CID and concentration per (network, layer,
image) (tables ``cid_concentration_per_layer_image`` and ``cid_concentration_per_layer``, figure
``cid_concentration_per_layer``), the pixel-wise maps at the damaged layers (figure
``pixelwise_cid_damaged_layer``), the paired per-image differences that the verdicts decide on,
the summary table, and the ``setup``, ``numbers`` and ``detail`` of the two claims. The notebook
keeps the rules, the decisions and the claims' words.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure

import deepinfo
from deepinfo.book.verdicts import Condition, Verdict, on_constraint
from deepinfo.models import resolve_layers
from deepinfo.plotting import overlay
from deepinfo.result import InfoMaps
from deepinfo.techniques.damage import damaged_layer

__all__ = ["pair_tag", "accuracy_table", "measured_layers", "measure_cid", "per_image_table", "per_layer_means",
           "plot_layer_curves", "plot_pixelwise_damaged", "paired_differences", "summary_table", "dcid_text",
           "dconc_text", "setup_conditions", "data_text", "maps_at_damaged_layers", "cid_claim_evidence",
           "concentration_claim_evidence"]


def pair_tag(arch: str, conv_index: int) -> str:
    """The name of an (architecture, damaged position) pair, e.g. ``"vgg16 conv -1"``."""
    return f"{arch} conv {conv_index}"


def accuracy_table(nets: Mapping, test_set, variant_name: Mapping) -> pd.DataFrame:
    """Table ``accuracy``: one row per net.

    Args:
        nets: ``{(arch, conv_index or None): Trained}`` (``Trained.accuracy(dataset)`` in [0, 1]).
        test_set: the balanced bird vs non-bird test set.
        variant_name: ``{conv_index or None: variant name}``.

    Returns:
        Columns ``network`` (arch), ``variant``, ``conv_index`` (None for the original),
        ``accuracy`` (0-1) and ``n_test_images``.
    """
    return pd.DataFrame([
        {"network": arch, "variant": variant_name[v], "conv_index": v, "accuracy": net.accuracy(test_set),
         "n_test_images": len(test_set)}
        for (arch, v), net in nets.items()])


def measured_layers(nets: Mapping, archs: Sequence[str], positions: Sequence[int],
                    layer_spec) -> tuple[dict[str, list[str]], dict[str, dict[int, str]]]:
    """The layers measured in every net of each architecture, and the damaged layer of each position.

    The profile's ``damage.layers`` resolved on the original net plus the output (after the ReLU)
    of every damaged conv layer, in the net's module order; module names are the same in the
    original and the damaged nets. Prints them per architecture.

    Args:
        nets: ``{(arch, conv_index or None): Trained}``.
        archs, positions: the profile's ``damage.archs`` and ``damage.conv_index``.
        layer_spec: the profile's ``damage.layers`` (:func:`deepinfo.models.resolve_layers`).

    Returns:
        ``(layers_of, damaged_of)``: ``{arch: [layer, ...]}`` and ``{arch: {conv_index: layer}}``.
    """
    layers_of, damaged_of = {}, {}
    for arch in archs:
        model = nets[(arch, None)].model
        order = [n for n, _ in model.named_modules()]
        damaged_of[arch] = {i: damaged_layer(model, i) for i in positions}
        chosen = set(resolve_layers(model, layer_spec)) | set(damaged_of[arch].values())
        layers_of[arch] = sorted(chosen, key=order.index)
        print(arch, "layers:", layers_of[arch], "| damaged:", damaged_of[arch])
    return layers_of, damaged_of


def measure_cid(nets: Mapping, layers_of: Mapping[str, Sequence[str]], x: torch.Tensor, masks: torch.Tensor,
                estimator, seed: int) -> tuple[dict, dict]:
    """CID of every net at its architecture's layers, and the concentration of each map.

    The same images and noise seed go through every net (a paired design).

    Args:
        nets: ``{(arch, conv_index or None): Trained}``.
        layers_of: ``{arch: [layer, ...]}``.
        x: ``[B, C, H, W]`` images; masks: ``[B, H, W]`` the object boxes.
        estimator: the profile's estimator settings; seed: the estimator's seed.

    Returns:
        ``(maps_of, conc_of)``: ``{(arch, v): InfoMaps}`` and ``{(arch, v): [L, B] concentration (nats)}``.
    """
    maps_of, conc_of = {}, {}
    for (arch, v), net in nets.items():
        maps = deepinfo.cid(net.model, x, layers_of[arch], settings=estimator, seed=seed, progress=True)
        maps_of[(arch, v)] = maps
        conc_of[(arch, v)] = deepinfo.concentration(maps, masks)  # [L, B] nats
    return maps_of, conc_of


def per_image_table(maps_of: Mapping[tuple, InfoMaps], conc_of: Mapping[tuple, torch.Tensor],
                    layers_of: Mapping[str, Sequence[str]], damaged_of: Mapping[str, Mapping[int, str]],
                    variant_name: Mapping, image_ids: torch.Tensor, tol: float) -> pd.DataFrame:
    """Table ``cid_concentration_per_layer_image``: one row per (network, variant, layer, image).

    Args:
        maps_of, conc_of: from :func:`measure_cid`.
        layers_of, damaged_of: from :func:`measured_layers`.
        variant_name: ``{conv_index or None: variant name}``.
        image_ids: ``[B]`` the images' indices in the data set.
        tol: the accepted constraint error.

    Returns:
        Columns ``network``, ``variant``, ``conv_index``, ``layer``, ``layer_index``,
        ``damaged_here`` (the layer is this damaged net's damaged layer), ``image`` (id), ``cid``
        (mean over cells, nats), ``concentration`` (nats), ``ratio`` (achieved constraint ratio),
        ``n_capped`` and ``on_constraint`` (``|ratio - 1| <= tol``).
    """
    rows = []
    for (arch, v), maps in maps_of.items():
        layers = layers_of[arch]
        layer_cid, conc = maps.mean(), conc_of[(arch, v)]  # [L, B] nats
        for l, name in enumerate(layers):
            for b, image_id in enumerate(image_ids.tolist()):
                rows.append({"network": arch, "variant": variant_name[v], "conv_index": v, "layer": name,
                             "layer_index": l, "damaged_here": v is not None and damaged_of[arch][v] == name,
                             "image": image_id, "cid": float(layer_cid[l, b]), "concentration": float(conc[l, b]),
                             "ratio": float(maps.constraint[l, b]), "n_capped": int(maps.n_capped[l, b])})
    per_image = pd.DataFrame(rows)
    per_image["on_constraint"] = on_constraint(per_image["ratio"].to_numpy(), tol)
    return per_image


def per_layer_means(per_image: pd.DataFrame) -> pd.DataFrame:
    """Table ``cid_concentration_per_layer``: the mean over images (all maps) of ``cid``,
    ``concentration`` (nats) and ``ratio`` per (network, variant, layer, layer_index), in the
    order they first appear."""
    return (per_image.groupby(["network", "variant", "layer", "layer_index"], sort=False)
            [["cid", "concentration", "ratio"]].mean().reset_index())


def plot_layer_curves(per_layer: pd.DataFrame, archs: Sequence[str], positions: Sequence[int],
                      layers_of: Mapping[str, Sequence[str]], damaged_of: Mapping[str, Mapping[int, str]],
                      variant_name: Mapping) -> Figure:
    """Figure ``cid_concentration_per_layer`` (Fig. 8): per architecture, CID and concentration per
    layer of the original (solid black) and each damaged net (dashed, a dotted line at its
    damaged layer)."""
    original = variant_name[None]
    variants = [original] + [variant_name[i] for i in positions]
    palette = dict(zip(variants, ["black"] + sns.color_palette("tab10", len(positions))))
    fig, axes = plt.subplots(len(archs), 2, figsize=(12, 3.8 * len(archs)), squeeze=False)
    for r, arch in enumerate(archs):
        layers = layers_of[arch]
        for c, what in enumerate(("cid", "concentration")):
            ax = axes[r, c]
            for var in variants:
                d = per_layer[(per_layer.network == arch) & (per_layer.variant == var)]
                ax.plot(d.layer_index, d[what], marker="o", color=palette[var], lw=2.2 if var == original else 1.4,
                        ls="-" if var == original else "--", label=var)
            for i in positions:
                ax.axvline(layers.index(damaged_of[arch][i]), color=palette[variant_name[i]], ls=":", lw=1)
            ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=8)
            ax.set_ylabel(("CID" if what == "cid" else "concentration") + " (nats, mean over images)")
            ax.set_title(f"{arch}: {'CID' if what == 'cid' else 'concentration'} per layer")
            if what == "concentration":
                ax.axhline(0, color="0.6", lw=0.8)
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_pixelwise_damaged(x: torch.Tensor, maps_of: Mapping[tuple, InfoMaps], archs: Sequence[str],
                           positions: Sequence[int], damaged_of: Mapping[str, Mapping[int, str]]) -> Figure:
    """Figure ``pixelwise_cid_damaged_layer`` (App. M): for the first two images, the pixel-wise
    CID at each damaged layer in the original and the damaged net, one colour scale per pair (the
    2nd to 98th percentile of the cells shown)."""
    shown = list(range(min(2, x.shape[0])))
    pairs = [(arch, i) for arch in archs for i in positions]
    fig, axes = plt.subplots(len(shown), 2 * len(pairs) + 1, squeeze=False, layout="constrained",
                             figsize=(1.9 * (2 * len(pairs) + 1), 2.0 * len(shown) + 0.9))
    for k, (arch, i) in enumerate(pairs):
        name = damaged_of[arch][i]
        a, d = maps_of[(arch, None)].layer(name), maps_of[(arch, i)].layer(name)
        vals = torch.cat([a[shown].flatten(), d[shown].flatten()])
        # one scale per pair, from the 2nd to the 98th percentile of the cells shown
        vmin, vmax = float(vals.quantile(0.02)), float(vals.quantile(0.98))
        for r, b in enumerate(shown):
            for j, (m, tag) in enumerate(((a[b], "original"), (d[b], "damaged"))):
                im = overlay(x[b], m, axes[r, 1 + 2 * k + j], vmin=vmin, vmax=vmax,
                             title=f"{arch} conv {i}\n{name}, {tag}" if r == 0 else None)
        fig.colorbar(im, ax=axes[:, 1 + 2 * k: 3 + 2 * k], location="bottom", shrink=0.8, label="CID (nats)")
    for r, b in enumerate(shown):
        axes[r, 0].imshow(x[b].permute(1, 2, 0).numpy())
        axes[r, 0].set_axis_off()
    return fig


def paired_differences(on: pd.DataFrame, arch: str, conv_index: int, original: str, variant: str,
                       damaged: str) -> pd.DataFrame:
    """The per-image units of one (architecture, damaged position) pair: damaged minus original.

    Only (layer, image) maps on the constraint in both nets enter.

    Args:
        on: the rows of the per-image table on the constraint.
        arch, conv_index: the pair.
        original, variant: the variant names of the original and the damaged net.
        damaged: the damaged layer.

    Returns:
        One row per image: ``network`` (arch), ``conv_index``, ``image``, ``d_cid`` (the CID
        difference at the damaged layer, nats; NaN when that layer is off the constraint),
        ``d_conc`` (the concentration difference averaged over the layers on the constraint,
        nats) and ``d_cid_minus_d_conc``.
    """
    o = on[(on.network == arch) & (on.variant == original)].set_index(["layer", "image"])
    d = on[(on.network == arch) & (on.variant == variant)].set_index(["layer", "image"])
    both = o.index.intersection(d.index)  # (layer, image) with both maps on the constraint
    delta = (d.loc[both, ["cid", "concentration"]] - o.loc[both, ["cid", "concentration"]]).reset_index()
    d_cid = delta[delta.layer == damaged].set_index("image")["cid"]
    d_conc = delta.groupby("image")["concentration"].mean()  # over the measured layers on the constraint
    frame = pd.DataFrame({"d_cid": d_cid, "d_conc": d_conc})
    frame["d_cid_minus_d_conc"] = frame.d_cid - frame.d_conc
    frame = frame.reset_index().rename(columns={"index": "image"})
    frame.insert(0, "network", arch)
    frame.insert(1, "conv_index", conv_index)
    return frame


def summary_table(per_image: pd.DataFrame, archs: Sequence[str], positions: Sequence[int],
                  damaged_of: Mapping[str, Mapping[int, str]], variant_name: Mapping,
                  verdicts_cid: Mapping[str, Verdict], verdicts_conc: Mapping[str, Verdict]) -> pd.DataFrame:
    """Table ``summary``: one row per (architecture, damaged position) pair.

    Args:
        per_image: the per-image table (all maps).
        archs, positions, damaged_of, variant_name: as on the page.
        verdicts_cid: ``{pair_tag: Verdict}`` of claim 1; verdicts_conc: ``{"<tag>, concentration
            rise" | "<tag>, CID rise minus concentration rise": Verdict}`` of claim 2.

    Returns:
        Columns ``network``, ``conv_index``, ``damaged_layer``; ``cid_original``, ``cid_damaged``
        (layer means over all images, nats); effect, interval and verdict of ``d_cid``, ``d_conc``
        and ``d_cid_minus_d_conc`` (the last as ``lo``, ``hi``, ``verdict``); the images each rests
        on; and the mean achieved constraint ratio at the damaged layer in both nets.
    """
    mean = per_image.groupby(["network", "variant", "layer"]).mean(numeric_only=True)
    original = variant_name[None]
    summary = []
    for arch in archs:
        for i in positions:
            name, var, key = damaged_of[arch][i], variant_name[i], pair_tag(arch, i)
            vc, va, vb = (verdicts_cid[key], verdicts_conc[f"{key}, concentration rise"],
                          verdicts_conc[f"{key}, CID rise minus concentration rise"])
            summary.append({
                "network": arch, "conv_index": i, "damaged_layer": name,
                "cid_original": float(mean.loc[(arch, original, name), "cid"]),
                "cid_damaged": float(mean.loc[(arch, var, name), "cid"]),
                "d_cid": vc.effect, "d_cid_lo": vc.interval[0], "d_cid_hi": vc.interval[1], "d_cid_verdict": vc.verdict,
                "d_conc": va.effect, "d_conc_lo": va.interval[0], "d_conc_hi": va.interval[1],
                "d_conc_verdict": va.verdict,
                "d_cid_minus_d_conc": vb.effect, "lo": vb.interval[0], "hi": vb.interval[1], "verdict": vb.verdict,
                "n_images_cid": vc.n_units, "n_images_conc": va.n_units,
                "ratio_at_layer_original": float(mean.loc[(arch, original, name), "ratio"]),
                "ratio_at_layer_damaged": float(mean.loc[(arch, var, name), "ratio"]),
            })
    return pd.DataFrame(summary)


def dcid_text(verdicts_cid: Mapping[str, Verdict]) -> str:
    """Glue ``dcid_text``: "<pair>: effect [lo, hi]" per pair, signed, 3 decimals (nats)."""
    return "; ".join(f"{k}: {v.effect:+.3f} [{v.interval[0]:+.3f}, {v.interval[1]:+.3f}]"
                     for k, v in verdicts_cid.items())


def dconc_text(summary: pd.DataFrame) -> str:
    """Glue ``dconc_text``: "<pair>: d_conc [lo, hi]" per row of the summary, signed, 3 decimals (nats)."""
    return "; ".join(f"{pair_tag(r.network, r.conv_index)}: {r.d_conc:+.3f} [{r.d_conc_lo:+.3f}, "
                     f"{r.d_conc_hi:+.3f}]" for r in summary.itertuples())


def setup_conditions(accuracy: pd.DataFrame, n_test: int, negatives: str, paper_accuracy: float,
                     fraction: float) -> list[Condition]:
    """The setup both claims rely on.

    Args:
        accuracy: table ``accuracy``.
        n_test: the number of test images.
        negatives: the profile's ``damage.negatives``.
        paper_accuracy: the accuracy assumed for the paper's nets (0-1).
        fraction: the accuracy condition is met when every net reaches ``fraction * paper_accuracy``.

    Returns:
        ``[accuracy of every net, non-bird images are ImageNet images]``.
    """
    acc_of = {(r.network, r.variant): r.accuracy for r in accuracy.itertuples()}
    return [
        Condition("accuracy on birds vs non-birds", all(a >= fraction * paper_accuracy for a in acc_of.values()),
                  ", ".join(f"{a} {v} {acc:.1%}" for (a, v), acc in acc_of.items())
                  + f" ({n_test} test images, chance 50 %)",
                  f"ImageNet VGGs on CUB birds vs random ImageNet images, ~{paper_accuracy:.0%}"),
        Condition("non-bird images", negatives == "imagenet", f"{negatives!r}", "random ImageNet images"),
    ]


def data_text(profile, n_train: int, n_test: int, n_images: int) -> str:
    """The claims' ``data``: the bird vs non-bird sets, the measured images, the nets and the damage."""
    DM = profile.damage
    return (f"{profile.data.cub.dataset} birds vs {DM.negatives} non-birds ({n_train} training, {n_test} test "
            f"images, {profile.data.cub.image_size} px); CID and concentration on {n_images} bird test images "
            f"({profile.data.cub.concentration_crop} crops); {', '.join(DM.archs)} "
            f"(width {profile.networks.cub.width}), "
            f"original and with conv {', '.join(map(str, DM.conv_index))} replaced by {DM.n_filters} "
            f"{DM.kernel_size}x{DM.kernel_size} filters")


def maps_at_damaged_layers(per_image: pd.DataFrame, damaged_of: Mapping[str, Mapping[int, str]],
                           original: str) -> pd.DataFrame:
    """The rows of the per-image table at a damaged layer: each damaged net at its own damaged
    layer, and the original net at every damaged layer of its architecture (claim 1's maps)."""
    return per_image[[bool(r.damaged_here) or (r.variant == original and r.layer in set(
        damaged_of[r.network].values())) for r in per_image.itertuples()]]


def cid_claim_evidence(verdicts_cid: Mapping[str, Verdict], summary: pd.DataFrame, n_cid_held: int,
                       n_pairs: int) -> dict:
    """Claim 1's ``numbers`` (per pair: effect, verdict; pairs held) and ``detail`` (per pair's
    summary, and the layer means from the summary table)."""
    numbers = {**{f"d_cid_{k}": v.effect for k, v in verdicts_cid.items()},
               **{f"verdict_{k}": v.verdict for k, v in verdicts_cid.items()},
               "n_pairs_held": n_cid_held, "n_pairs": n_pairs}
    detail = ("Per image: the damaged net's CID at the damaged layer minus the original's at that layer (both maps on "
              "the constraint); per pair: " + "; ".join(f"{k}: {v.summary()}" for k, v in verdicts_cid.items())
              + ". Layer means (all maps): " + "; ".join(
                  f"{pair_tag(r.network, r.conv_index)} ({r.damaged_layer}): {r.cid_original:.3f} -> "
                  f"{r.cid_damaged:.3f} nats" for r in summary.itertuples()) + ".")
    return dict(numbers=numbers, detail=detail)


def concentration_claim_evidence(verdicts_conc: Mapping[str, Verdict], n_off: int, n_maps: int,
                                 min_effect: float) -> dict:
    """Claim 2's ``numbers`` (per part: effect, verdict; maps off the constraint) and ``detail``."""
    numbers = {**{f"effect_{k}": v.effect for k, v in verdicts_conc.items()},
               **{f"verdict_{k}": v.verdict for k, v in verdicts_conc.items()},
               "n_maps_off_constraint": n_off}
    detail = ("Per image: d_conc = the damaged net's concentration minus the original's, averaged over the measured "
              "layers on the constraint; part (a) d_conc > 0, part (b) d_CID (at the damaged layer) - d_conc > "
              f"{min_effect} nats. " + "; ".join(f"{k}: {v.summary()}" for k, v in verdicts_conc.items())
              + f". {n_off} of {n_maps} maps off the constraint (left out).")
    return dict(numbers=numbers, detail=detail)

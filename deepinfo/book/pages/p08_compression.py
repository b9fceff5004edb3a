"""Page ``08_compression``: network compression and the change of CID, RU and concentration.

The analysis behind ``notebooks/08_compression.ipynb`` (the paper's Fig. 7(a) and Appendix K, and
a second line on a pruned CIFAR ResNet): the network tables, the per-(net, layer, image) CID,
concentration and RU frames, the paired changes against the original net, the equivalence margins,
the per-net verdicts, the setup conditions and the numbers and detail of each claim, and the
figures ``deltas_per_layer``, ``cid_maps_original_vs_compressed`` and ``second_line_cid``.

The thresholds, margins' fraction and tolerances are fixed in the notebook before the run and
passed in; nothing here chooses a rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from torch.utils.data import Dataset

import deepinfo
from deepinfo.book import experiments as ex
from deepinfo.book.experiments import Trained
from deepinfo.book.layer_curves import change_from_original, paired_change
from deepinfo.book.verdicts import (Condition, Verdict, combine, constraint_condition, decide, on_constraint,
                                    ratio_error, undecidable)
from deepinfo.decoder import reconstruction_mse
from deepinfo.models import PUBLISHED_ACCURACY, resolve_layers
from deepinfo.plotting import overlay
from deepinfo.result import InfoMaps
from deepinfo.toolkit.profile import Profile

#: ``[(target fraction, trained net, achieved fraction)]`` as :func:`deepinfo.book.experiments.compressed_models`
#: returns it, the original ``(1.0, net, 1.0)`` first
Nets = Sequence[tuple[float, Trained, float]]

__all__ = ["network_labels", "network_table", "measured_layers", "cid_per_layer",
           "largest_ratio_error", "layer_means", "ru_per_layer", "changes_from_original", "on_constraint_pairs",
           "deltas_figure", "cid_maps_figure", "per_image_deltas", "original_by_layer", "equivalence_margins",
           "margins_from_original", "decide_changes", "summary_table", "n_off_constraint", "intervals_text",
           "net_summaries", "network_conditions", "data_text", "cid_claim_evidence", "concentration_claim_evidence",
           "ru_claim_parts", "SecondLine", "second_line", "second_line_changes", "second_line_figure",
           "verdict_table", "verdicts_text", "second_line_conditions",
           "second_line_evidence", "second_line_data_text"]


# --- the networks, images and layers ---------------------------------------------------------

def network_labels(nets: Nets) -> dict[float, str]:
    """The name of each net by its target fraction: ``"original"`` for 1.0, else e.g. ``"12.8% kept"``."""
    return {keep: ("original" if keep == 1.0 else f"{keep:.1%} kept") for keep, _, _ in nets}


def network_table(P: Profile, nets: Nets, labels: Mapping[float, str], eval_set: Dataset) -> pd.DataFrame:
    """One row per net: what pruning reached and the test accuracy (the table ``networks``).

    Args:
        P: the run profile (for the retraining epochs).
        nets: the original and its compressed stages.
        labels: :func:`network_labels` of ``nets``.
        eval_set: the test images the accuracy is measured on.

    Returns:
        Columns network, target fraction, achieved fraction (conv + FC weights kept), achieved conv,
        achieved FC, s_conv, s_fc (the pruning thresholds in units of a layer's weight std; 0 for the
        original), retraining epochs, test accuracy (in [0, 1]), weights (cache key).
    """
    net_rows = []
    for keep, trained, achieved in nets:
        pr = trained.info.get("pruning")
        net_rows.append({"network": labels[keep], "target fraction": keep, "achieved fraction": achieved,
                         "achieved conv": pr.kept_conv if pr else 1.0, "achieved FC": pr.kept_fc if pr else 1.0,
                         "s_conv": pr.s_conv if pr else 0.0, "s_fc": pr.s_fc if pr else 0.0,
                         "retraining epochs": P.compression.retrain.epochs if pr else 0,
                         "test accuracy": trained.accuracy(eval_set), "weights": trained.key})
    return pd.DataFrame(net_rows)


def measured_layers(P: Profile, model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """``(layers, ru_layers)``: the modules of ``compression.layers``, and those RU is measured at
    (``compression.ru_layers``: ``"same"`` for the same layers, module names, or none)."""
    layers = resolve_layers(model, P.compression.layers)
    ru_spec = P.compression.ru_layers
    ru_layers = list(layers) if ru_spec == "same" else resolve_layers(model, list(ru_spec)) if ru_spec else []
    return layers, ru_layers


# --- CID, concentration and RU per (net, layer, image) ---------------------------------------

def cid_per_layer(P: Profile, nets: Nets, labels: Mapping[float, str], x: torch.Tensor, masks: torch.Tensor,
                  layers: Sequence[str], image_ids: Sequence[int],
                  settings: deepinfo.Settings) -> tuple[pd.DataFrame, dict[float, InfoMaps]]:
    """CID and concentration of every net at every layer, on the same images and noise seed.

    Args:
        P: the run profile (its seed is the noise seed of every net; ``estimator.tol`` sets
            ``on_constraint``).
        x: ``[B, C, H, W]`` images; masks: ``[B, H, W]`` their foreground masks.
        image_ids: the test-set index of each image (the frame's ``image`` column).
        settings: the estimator settings.

    Returns:
        ``(frame, maps)``: the frame of ``InfoMaps.to_frame`` (``value`` = mean pixel-wise CID in
        nats) with ``network`` and ``keep`` in front and ``concentration`` (nats, background minus
        foreground) and ``on_constraint`` added, one row per (net, layer, image); and each net's
        maps by its target fraction.
    """
    frames, cid_maps = [], {}
    for keep, trained, _ in nets:
        maps = deepinfo.cid(trained.model, x, layers, seed=P.seed, progress=True, settings=settings)
        df = maps.to_frame(image_ids=list(image_ids))
        df.insert(0, "network", labels[keep])
        df.insert(1, "keep", keep)
        df["concentration"] = deepinfo.concentration(maps, masks).flatten().tolist()
        frames.append(df)
        cid_maps[keep] = maps
    cid_df = pd.concat(frames, ignore_index=True)
    cid_df["on_constraint"] = on_constraint(cid_df["constraint"].to_numpy(), P.estimator.tol)
    return cid_df, cid_maps


def largest_ratio_error(*frames: pd.DataFrame) -> float:
    """The largest ``|r - 1|`` over the achieved ratios (column ``constraint``) of the frames' rows;
    empty frames (e.g. no RU measured) are skipped."""
    return max(float(ratio_error(frame["constraint"])) for i, frame in enumerate(frames) if i == 0 or not frame.empty)


def layer_means(cid_df: pd.DataFrame) -> pd.DataFrame:
    """Per (network, layer): the mean over images of CID (``value``) and concentration, nats."""
    return cid_df.groupby(["network", "layer_index", "layer"], sort=False, as_index=False)[
        ["value", "concentration"]].mean()


def ru_per_layer(P: Profile, nets: Nets, labels: Mapping[float, str], x: torch.Tensor, image_ids: Sequence[int],
                 ru_layers: Sequence[str], settings: deepinfo.Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """RU of every net at ``ru_layers`` and how well each (net, layer) decoder reconstructs.

    The decoders are trained (and cached) on the profile's training crops; each one's error is
    measured on the clean features of the measured images ``x``.

    Returns:
        ``(ru_df, recon_df)``: ``ru_df`` as :func:`cid_per_layer`'s frame for RU (``value`` in nats,
        with ``on_constraint``), and ``recon_df`` with columns network, keep, layer, mse,
        pixel_variance, mse_over_pixel_variance (1 = no better than the mean pixel value). Both
        empty (with those columns) when ``ru_layers`` is empty.
    """
    ru_df = pd.DataFrame(columns=["network", "keep", "layer", "image", "value", "constraint", "on_constraint"])
    recon_df = pd.DataFrame(columns=["network", "keep", "layer", "mse", "pixel_variance", "mse_over_pixel_variance"])
    if ru_layers:
        ru_train = ex.cub_data(P, "train")  # the training crops (the decoder cache key does not name the data)
        frames, recon = [], []
        pixel_var = float(x.var())
        for keep, trained, _ in nets:
            decoders = {name: ex.trained_decoder(P, trained, name, ru_train, progress=True) for name in ru_layers}
            for name, dec in decoders.items():  # does the decoder reconstruct? (clean features of the measured images)
                mse = reconstruction_mse(trained.model, name, dec, x)
                recon.append({"network": labels[keep], "keep": keep, "layer": name, "mse": mse,
                              "pixel_variance": pixel_var, "mse_over_pixel_variance": mse / pixel_var})
            maps = deepinfo.ru(trained.model, decoders, x, ru_layers, seed=P.seed, progress=True, settings=settings)
            df = maps.to_frame(image_ids=list(image_ids))
            df.insert(0, "network", labels[keep])
            df.insert(1, "keep", keep)
            frames.append(df)
        ru_df = pd.concat(frames, ignore_index=True)
        ru_df["on_constraint"] = on_constraint(ru_df["constraint"].to_numpy(), P.estimator.tol)
        recon_df = pd.DataFrame(recon)
    return ru_df, recon_df


# --- the paired changes against the original (Fig. 7(a)) -------------------------------------

def changes_from_original(cid_df: pd.DataFrame, ru_df: pd.DataFrame, layers: Sequence[str]) -> pd.DataFrame:
    """Per (compressed net, layer, image): the change of CID, concentration and RU against the original.

    Returns:
        The rows of :func:`deepinfo.book.layer_curves.change_from_original` for ``quantity`` CID,
        concentration and RU (in that order; ``delta`` in nats, ``on_constraint`` true when both
        maps met it), with ``layer_index``, the layer's position in ``layers``.
    """
    delta_df = pd.concat([change_from_original(cid_df, "value", "CID"),
                          change_from_original(cid_df, "concentration", "concentration"),
                          change_from_original(ru_df, "value", "RU")], ignore_index=True)
    delta_df["layer_index"] = delta_df["layer"].map({name: i for i, name in enumerate(layers)})
    return delta_df


def on_constraint_pairs(delta_df: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`changes_from_original` whose two maps both met the constraint."""
    return delta_df[delta_df.on_constraint.astype(bool)]


def deltas_figure(delta_df: pd.DataFrame, quantities: Sequence[str], layers: Sequence[str], n_images: int) -> Figure:
    """Fig. 7(a): per quantity, the mean change per layer (bars: one sd over images), a line per compressed net.

    Args:
        delta_df: :func:`changes_from_original`; only the pairs on the constraint are drawn.
        quantities: the panels, e.g. ``["CID", "concentration"]``.
        layers: the measured layers, in order; n_images: for the titles.
    """
    kept = on_constraint_pairs(delta_df)
    fig, axes = plt.subplots(1, len(quantities), figsize=(4.2 * len(quantities), 3.6), squeeze=False)
    for ax, q in zip(axes[0], quantities):
        sub = kept[kept.quantity == q].astype({"delta": float})
        sns.pointplot(sub, x="layer", y="delta", hue="network", order=[l for l in layers if l in set(sub.layer)],
                      errorbar="sd", dodge=0.3, markersize=4, linewidth=1.2, ax=ax)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_ylabel(f"Δ{q} (nats)" if q != "concentration" else "Δconcentration (nats)")
        ax.set_xlabel("layer")
        ax.tick_params(axis="x", rotation=45, labelsize=7)
        ax.set_title(f"Δ{q}, {n_images} images", fontsize=10)
        if ax is not axes[0][0] and ax.get_legend() is not None:
            ax.get_legend().remove()
    axes[0][0].legend(fontsize=7, title="compressed net", title_fontsize=7)
    fig.tight_layout()
    return fig


def cid_maps_figure(image: torch.Tensor, cid_maps: Mapping[float, InfoMaps], labels: Mapping[float, str],
                    layers: Sequence[str], keeps: Sequence[float]) -> Figure:
    """Appendix K: the pixel-wise CID maps of the first image, a row per net in ``keeps``, at the first
    and last of ``layers``, on one colour scale (nats)."""
    show = [layers[0], layers[-1]]
    vals = torch.stack([cid_maps[k].pixelwise[[layers.index(l) for l in show], 0] for k in keeps])
    vmin, vmax = float(vals.min()), float(vals.max())
    fig, axes = plt.subplots(2, 2, figsize=(5.2, 5.2))
    for row, keep in enumerate(keeps):
        for col, name in enumerate(show):
            im = overlay(image, cid_maps[keep].pixelwise[layers.index(name), 0], axes[row, col], vmin=vmin, vmax=vmax,
                         title=f"{labels[keep]}, {name}")
    fig.colorbar(im, ax=axes, fraction=0.04, label="CID (nats)")
    return fig


def per_image_deltas(delta_df: pd.DataFrame) -> pd.DataFrame:
    """One value per (quantity, compressed net, image): the paired change averaged over the layers
    whose pairs met the constraint (pairs off it are left out; an image with none left is left out).

    Args:
        delta_df: :func:`changes_from_original` (columns quantity, network, keep, image, layer,
            delta, on_constraint).

    Returns:
        Columns quantity, network, keep, image, delta (mean change, nats), n_layers (how many
        layers the mean is over) -- the unit of the verdicts.
    """
    kept = on_constraint_pairs(delta_df)
    return (kept.astype({"delta": float}).groupby(["quantity", "network", "keep", "image"], as_index=False)
            .agg(delta=("delta", "mean"), n_layers=("layer", "size")))


def original_by_layer(cid_df: pd.DataFrame, ru_df: pd.DataFrame | None = None) -> dict[str, pd.Series]:
    """The ORIGINAL net's mean over images per layer, maps on the constraint only (nats).

    Returns ``{"concentration": Series by layer}``, plus ``"RU"`` from ``ru_df`` when it is given
    (pass None when the run measures no RU). These set the equivalence margins, so they come from
    the original net alone, never from a compressed one.
    """
    orig_cid = cid_df[(cid_df.keep == 1.0) & cid_df.on_constraint]
    by_layer = {"concentration": orig_cid.groupby("layer")["concentration"].mean()}
    if ru_df is not None:
        orig_ru = ru_df[(ru_df.keep == 1.0) & ru_df.on_constraint.astype(bool)]
        by_layer["RU"] = orig_ru.astype({"value": float}).groupby("layer")["value"].mean()
    return by_layer


def equivalence_margins(by_layer: Mapping[str, pd.Series], fraction: float) -> dict[str, float]:
    """Per quantity: ``fraction`` x (largest - smallest) of its per-layer means; NaN with fewer than 2 layers."""
    return {q: (fraction * float(s.max() - s.min()) if len(s) >= 2 else float("nan")) for q, s in by_layer.items()}


def margins_from_original(cid_df: pd.DataFrame, ru_df: pd.DataFrame | None,
                          fraction: float) -> tuple[dict[str, pd.Series], dict[str, float]]:
    """``(by_layer, margin)``: :func:`original_by_layer` and the :func:`equivalence_margins` set from it."""
    by_layer = original_by_layer(cid_df, ru_df)
    return by_layer, equivalence_margins(by_layer, fraction)


def decide_changes(per_image: pd.DataFrame, quantities: Sequence[str], compressed: Sequence[str],
                   margin: Mapping[str, float], cid_threshold: float, cid_side: str, equiv_side: str, unit: str,
                   confidence: float) -> dict[str, dict[str, Verdict]]:
    """A verdict per quantity and compressed net from its per-image changes.

    CID is decided against ``cid_threshold`` on ``cid_side``; the other quantities are equivalence
    claims, decided within ``margin[q]`` (inconclusive when the margin is not a positive number).
    A net with no image left is inconclusive, saying why.

    Args:
        per_image: :func:`per_image_deltas`; margin: :func:`equivalence_margins`.

    Returns:
        ``{quantity: {network: Verdict}}``, in the order of ``quantities`` and ``compressed``.
    """
    verdicts: dict[str, dict[str, Verdict]] = {q: {} for q in quantities}
    for q in quantities:
        for n in compressed:
            vals = per_image[(per_image.quantity == q) & (per_image.network == n)]["delta"].to_numpy(float)
            if vals.size == 0:
                verdicts[q][n] = undecidable(f"no image of {n} has a pair of {q} maps on the constraint", unit=unit,
                                             threshold=cid_threshold if q == "CID" else 0.0,
                                             side=cid_side if q == "CID" else equiv_side)
            elif q == "CID":
                verdicts[q][n] = decide(vals, threshold=cid_threshold, side=cid_side, unit=unit, confidence=confidence)
            elif not (np.isfinite(margin[q]) and margin[q] > 0):
                verdicts[q][n] = undecidable(f"no equivalence margin: the original net's {q} has no range over layers "
                                             f"(fewer than 2 measured layers on the constraint)", unit=unit,
                                             n_units=vals.size, effect=float(vals.mean()), side=equiv_side)
            else:
                verdicts[q][n] = decide(vals, threshold=margin[q], side=equiv_side, unit=unit, confidence=confidence)
    return verdicts


def summary_table(verdicts: Mapping[str, Mapping[str, Verdict]], quantities: Sequence[str],
                  networks: pd.DataFrame) -> pd.DataFrame:
    """One row per (compressed net, quantity): mean_delta, lo, hi, n_images, threshold_or_margin, side,
    verdict, with the net's achieved fraction and test accuracy from ``networks`` (the table ``summary``)."""
    summary = pd.DataFrame([
        {"network": n, "quantity": q, "mean_delta": v.effect, "lo": v.interval[0], "hi": v.interval[1],
         "n_images": v.n_units, "threshold_or_margin": v.threshold, "side": v.side, "verdict": v.verdict}
        for q in quantities for n, v in verdicts[q].items()])
    return summary.merge(networks[["network", "achieved fraction", "test accuracy"]], on="network")


def n_off_constraint(frame: pd.DataFrame) -> int:
    """How many rows (maps, or pairs) are off the constraint (``on_constraint`` false)."""
    return int((~frame.on_constraint.astype(bool)).sum())


def intervals_text(verdicts: Mapping[str, Verdict], names: Sequence[str]) -> str:
    """``+0.0123 [-0.0010, +0.0250]`` per net in ``names``: effect and interval, comma-separated."""
    return ", ".join(f"{verdicts[n].effect:+.4f} [{verdicts[n].interval[0]:+.4f}, "
                     f"{verdicts[n].interval[1]:+.4f}]" for n in names)


def net_summaries(verdicts: Mapping[str, Verdict]) -> str:
    """``<net>: <verdict summary>`` per net, joined by ``"; "`` (for a claim's detail)."""
    return "; ".join(f"{n}: {v.summary()}" for n, v in verdicts.items())


# --- setup conditions and the claims' numbers --------------------------------------------------

def network_conditions(P: Profile, nets: Nets, networks: pd.DataFrame, paper_accuracy: float,
                       accuracy_fraction: float, retained_fraction: float, target_rel_tol: float) -> list[Condition]:
    """The setup conditions on the bird nets, checked with numbers.

    The original's accuracy at least ``accuracy_fraction`` x ``paper_accuracy``; every compressed
    net at least ``retained_fraction`` x the original's accuracy; every achieved fraction within
    ``target_rel_tol`` (relative) of its target.

    Args:
        nets: the original and its compressed stages; networks: :func:`network_table` of them.
    """
    labels = network_labels(nets)
    compressed = [labels[k] for k, _, _ in nets[1:]]
    acc = networks.set_index("network")["test accuracy"]
    orig_acc = float(acc[labels[1.0]])
    trained_words = "fine-tuned from ImageNet" if P.networks.cub.weights == "imagenet" else "trained from scratch"
    return [
        Condition(f"{P.compression.arch} accuracy (original)", orig_acc >= accuracy_fraction * paper_accuracy,
                  f"{orig_acc:.1%} ({trained_words}, {P.data.cub.num_classes} classes, {P.data.cub.image_size} px)",
                  f"VGG-16 fine-tuned from ImageNet on CUB-200 (200 classes, 224 px), ~{paper_accuracy:.0%}"),
        Condition("accuracy kept by retraining", all(acc[n] >= retained_fraction * orig_acc for n in compressed),
                  ", ".join(f"{n} {acc[n]:.1%}" for n in compressed) + f" vs the original's {orig_acc:.1%} "
                  f"({P.compression.retrain.epochs} retraining epochs per stage; "
                  f"needed >= {retained_fraction:.0%} of it)",
                  "Han et al. (2016): retrained VGG-16 keeps its accuracy down to 7.5 % of the weights"),
        Condition("pruning reached the targets", all(abs(a / k - 1) <= target_rel_tol for k, _, a in nets[1:]),
                  ", ".join(f"{k:.1%} -> {a:.1%}" for k, _, a in nets[1:]) + " of the conv + FC weights",
                  "38 %, 12.8 % and 8 % of the parameters (Table 3)"),
    ]


def data_text(P: Profile, nets: Nets, n_images: int, layers: Sequence[str]) -> str:
    """The data, networks and sizes of the bird claims, in words."""
    return (f"{P.data.cub.dataset} test set cropped by the {P.data.cub.concentration_crop} box, "
            f"{n_images} images; {P.compression.arch} (width {P.networks.cub.width}) and its Han et al. "
            "compressions to "
            + ", ".join(f"{a:.1%}" for _, _, a in nets[1:]) + " of the conv + FC weights "
            f"({P.compression.retrain.epochs} retraining epochs per stage); layers {', '.join(layers)}")


def cid_claim_evidence(P: Profile, verdicts: Mapping[str, Verdict], cid_df: pd.DataFrame,
                       setup: Sequence[Condition]) -> dict[str, Any]:
    """``setup``, ``numbers`` and ``detail`` of the CID claim.

    The setup is ``setup`` (:func:`network_conditions`) and the CID maps on the constraint; the
    numbers each net's mean change and verdict, and how many of the CID maps (rows of ``cid_df``)
    were off the constraint.
    """
    n_off, n_maps = n_off_constraint(cid_df), len(cid_df)
    return dict(
        setup=list(setup) + [constraint_condition(cid_df["constraint"].to_numpy(), P.estimator.tol)],
        numbers={**{f"mean_dcid_{n}": v.effect for n, v in verdicts.items()},
                 **{f"verdict_{n}": v.verdict for n, v in verdicts.items()},
                 "n_maps_off_constraint": n_off},
        detail=(f"Per image: ΔCID (compressed minus original) averaged over the layers whose maps met the "
                f"constraint in both nets; per compressed net: {net_summaries(verdicts)}. {n_off} of {n_maps} CID "
                "maps off the constraint (their pairs left out)."))


def concentration_claim_evidence(P: Profile, verdicts: Mapping[str, Mapping[str, Verdict]],
                                 margin: Mapping[str, float], by_layer: Mapping[str, pd.Series],
                                 cid_df: pd.DataFrame, setup: Sequence[Condition], fraction: float) -> dict[str, Any]:
    """``setup``, ``numbers`` and ``detail`` of the concentration claim.

    The setup is ``setup`` and the CID maps on the constraint (concentration is read from them);
    the numbers the margin, each net's mean change and verdict, and the original net's mean
    concentration per layer the margin was set from.

    Args:
        verdicts: :func:`decide_changes`; margin, by_layer: :func:`margins_from_original`;
        fraction: the margin's fraction of the range.
    """
    verdicts, margin, by_layer = verdicts["concentration"], margin["concentration"], by_layer["concentration"]
    return dict(
        setup=list(setup) + [constraint_condition(cid_df["constraint"].to_numpy(), P.estimator.tol)],
        numbers={"margin": margin,
                 **{f"mean_dconcentration_{n}": v.effect for n, v in verdicts.items()},
                 **{f"verdict_{n}": v.verdict for n, v in verdicts.items()},
                 **{f"concentration_original_{l}": float(v) for l, v in by_layer.items()}},
        detail=(f"Margin ±{margin:.4f} nats = {fraction} x the range over layers of the original "
                "net's mean concentration (" + ", ".join(f"{l} {v:+.4f}" for l, v in by_layer.items())
                + f" nats). Per image: Δconcentration averaged over the layers on the constraint; per compressed net: "
                f"{net_summaries(verdicts)}."))


def ru_claim_parts(P: Profile, verdicts: Mapping[str, Mapping[str, Verdict]], margin: Mapping[str, float],
                   by_layer: Mapping[str, pd.Series], setup: Sequence[Condition], ru_df: pd.DataFrame,
                   recon_df: pd.DataFrame, ru_layers: Sequence[str], data: str, unit: str, equiv_side: str,
                   fraction: float, decoder_mse_fraction: float) -> dict[str, Any]:
    """``verdict``, ``setup``, ``numbers``, ``detail`` and ``data`` of the RU claim.

    When RU was measured (``ru_layers`` not empty): the verdicts of ``verdicts["RU"]`` combined over
    the compressed nets, and the setup adds "decoders reconstruct" (the worst decoder MSE below
    ``decoder_mse_fraction`` x the pixel variance) and the RU maps on the constraint. When it was
    not: an inconclusive verdict saying why, and the unmet condition "RU measured".

    Args:
        verdicts: :func:`decide_changes`; margin: :func:`equivalence_margins`; by_layer:
            :func:`original_by_layer` (each needs ``"RU"`` only when ``measured``).
        setup: the conditions on the networks (:func:`network_conditions`).
        data: the data of the bird claims (:func:`data_text`), to which the RU layers are added.
    """
    if ru_layers:
        verdict_ru = combine(verdicts["RU"])
        worst = float(recon_df["mse_over_pixel_variance"].max())
        setup_ru = list(setup) + [
            Condition("decoders reconstruct", worst < decoder_mse_fraction,
                      f"largest decoder MSE / pixel variance {worst:.2f} over {len(recon_df)} decoders "
                      f"({P.decoder.n_blocks} blocks, {P.decoder.epochs} epochs)",
                      "decoders trained to reconstruct the input (MSE < half the pixel variance)"),
            constraint_condition(ru_df["constraint"].to_numpy(float), P.estimator.tol)]
        ru_detail = (f"Margin ±{margin['RU']:.4f} nats = {fraction} x the range over the RU layers of the original "
                     "net's mean RU (" + ", ".join(f"{l} {v:+.4f}" for l, v in by_layer["RU"].items())
                     + f" nats). Per image: ΔRU averaged over the layers on the constraint; per compressed net: "
                     f"{net_summaries(verdicts['RU'])}.")
        ru_numbers = {"margin": margin["RU"], **{f"mean_dru_{n}": v.effect for n, v in verdicts["RU"].items()},
                      **{f"verdict_{n}": v.verdict for n, v in verdicts["RU"].items()}}
    else:
        verdict_ru = undecidable(
            "RU was not measured: this profile's compression.ru_layers is empty, because one RU decoder per "
            "(net, layer) does not fit its time budget (see the profile); the paper reports ΔRU in Fig. 7(a)",
            unit=unit, side=equiv_side)
        setup_ru = list(setup) + [Condition("RU measured", False, "no layer (compression.ru_layers = [])",
                                            "RU at every layer of Fig. 7(a)")]
        ru_detail = "No RU map was computed in this run, so the change of RU cannot be judged."
        ru_numbers = {}
    return dict(verdict=verdict_ru, setup=setup_ru, numbers=ru_numbers, detail=ru_detail,
                data=data + (f"; RU at {', '.join(ru_layers)}" if ru_layers else "; no RU"))


# --- the second line: a CIFAR ResNet, pruned ---------------------------------------------------

@dataclass
class SecondLine:
    """What the second line measures: the pruned CIFAR ResNets and their CID on the same images.

    Attributes:
        nets: ``[(target, trained, achieved)]``, the original first; names: :func:`network_labels`.
        x: ``[B, C, H, W]`` the CIFAR test images measured; layers: the measured stage outputs.
        maps: each net's CID maps by target fraction.
        cid: ``InfoMaps.to_frame`` of every net (``value``: mean CID, nats per cell) with
            ``network`` and ``on_constraint`` (the table ``second_line_cid_per_layer``).
        networks: one row per net: network, achieved fraction, test accuracy (in [0, 1]),
            weights (the table ``second_line_networks``).
    """

    nets: Nets
    names: dict[float, str]
    x: torch.Tensor
    layers: list[str]
    maps: dict[float, InfoMaps]
    cid: pd.DataFrame
    networks: pd.DataFrame

    @property
    def accuracy(self) -> pd.Series:
        """Test accuracy (in [0, 1]) by network name, in the order of ``nets``."""
        return self.networks.set_index("network")["test accuracy"]


def second_line(P: Profile, settings: deepinfo.Settings) -> SecondLine:
    """Measure the second line: ``second_line.base_depth``'s CIFAR ResNet and its pruned stages
    (:func:`deepinfo.book.experiments.cifar_compressed_models`), CID at ``second_line.layers`` on
    ``second_line.n_images`` test images with the profile's seed, and each net's test accuracy."""
    SL = P.second_line
    sl_nets = ex.cifar_compressed_models(P, progress=True)
    cifar_test = ex.cifar_data(P, "test")
    sl_names = network_labels(sl_nets)
    sl_x, _, _ = ex.images(cifar_test, SL.n_images, seed=P.seed)
    sl_layers = resolve_layers(sl_nets[0][1].model, SL.layers)
    sl_maps = {keep: deepinfo.cid(trained.model, sl_x, sl_layers, seed=P.seed, progress=True, settings=settings)
               for keep, trained, _ in sl_nets}
    sl_cid = pd.concat([m.to_frame().assign(network=sl_names[k]) for k, m in sl_maps.items()], ignore_index=True)
    sl_cid["on_constraint"] = on_constraint(sl_cid["constraint"].to_numpy(), P.estimator.tol)
    sl_networks = pd.DataFrame([{"network": sl_names[k], "achieved fraction": a,
                                 "test accuracy": t.accuracy(cifar_test), "weights": t.key} for k, t, a in sl_nets])
    return SecondLine(sl_nets, sl_names, sl_x, sl_layers, sl_maps, sl_cid, sl_networks)


def second_line_changes(sl: SecondLine, tol: float, threshold: float, side: str, unit: str,
                        confidence: float) -> tuple[dict[str, Verdict], pd.DataFrame]:
    """Per pruned net (``sl.nets[1:]``), its verdict on the paired per-image change of CID against the
    original (``sl.maps[1.0]``).

    Each image's change is :func:`deepinfo.book.layer_curves.paired_change` (mean over the layers
    on the constraint in both nets); an image with no layer left is dropped, and a net with no
    image left is inconclusive.

    Returns:
        ``({network: Verdict}, rows)`` with rows network, image (position among the measured
        images), delta_cid (nats, NaN for an image with no layer left), n_layers.
    """
    maps, labels = sl.maps, sl.names
    sl_verdicts, sl_rows = {}, []
    for keep, _, _ in sl.nets[1:]:
        change, n_layers = paired_change(maps[1.0], maps[keep], tol)
        vals = change[np.isfinite(change)]
        sl_verdicts[labels[keep]] = (
            decide(vals, threshold=threshold, side=side, unit=unit, confidence=confidence) if vals.size else
            undecidable("no image has a pair of maps on the constraint", unit=unit, threshold=threshold, side=side))
        sl_rows += [{"network": labels[keep], "image": b, "delta_cid": float(c), "n_layers": int(n)}
                    for b, (c, n) in enumerate(zip(change, n_layers))]
    return sl_verdicts, pd.DataFrame(sl_rows)


def second_line_figure(sl_cid: pd.DataFrame, layers: Sequence[str], labels: Mapping[float, str], depth: int,
                       n_images: int) -> Figure:
    """Mean CID per layer (95 % CI over images, maps on the constraint) of the ResNet and its pruned versions."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.pointplot(sl_cid[sl_cid.on_constraint], x="layer", y="value", hue="network", errorbar=("ci", 95), seed=0, dodge=0.3,
                  order=layers, hue_order=list(labels.values()), ax=ax)
    ax.set_ylabel("CID (nats per cell; mean, 95 % CI over images)")
    ax.set_title(f"ResNet-{depth} (CIFAR-10) and its pruned versions, {n_images} images", fontsize=10)
    fig.tight_layout()
    return fig


def verdict_table(verdicts: Mapping[str, Verdict]) -> pd.DataFrame:
    """One row per net: network, mean ΔCID, lo, hi, images, verdict."""
    return pd.DataFrame([{"network": n, "mean ΔCID": v.effect, "lo": v.interval[0], "hi": v.interval[1],
                          "images": v.n_units, "verdict": v.verdict} for n, v in verdicts.items()])


def second_line_conditions(P: Profile, sl: SecondLine, accuracy_fraction: float, retained_fraction: float,
                           target_rel_tol: float) -> list[Condition]:
    """The setup conditions of the second line, checked with numbers.

    Another network and data set than the paper's (never met); the original's accuracy at least
    ``accuracy_fraction`` x the published one; every pruned net at least ``retained_fraction`` x
    the original's; achieved fractions within ``target_rel_tol`` of the targets; the maps on the
    constraint.
    """
    nets, labels, accuracy, sl_cid = sl.nets, sl.names, sl.accuracy, sl.cid
    SL = P.second_line
    sl_orig = float(accuracy["original"])
    sl_pruned = [labels[k] for k, _, _ in nets[1:]]
    published = PUBLISHED_ACCURACY[SL.base_depth]
    return [
        Condition("the paper's network and data", False,
                  f"ResNet-{SL.base_depth} on {P.data.cifar.dataset} (second line)", "VGG-16 on CUB-200-2011"),
        Condition(f"ResNet-{SL.base_depth} accuracy (original)", sl_orig >= accuracy_fraction * published,
                  f"{sl_orig:.1%} ({ex.cifar_weights_words(P)}, {P.data.cifar.dataset} test images)",
                  f"the published ResNet-{SL.base_depth}: {published:.1%} on official CIFAR-10"),
        Condition("accuracy kept by retraining", all(accuracy[n] >= retained_fraction * sl_orig for n in sl_pruned),
                  ", ".join(f"{n} {accuracy[n]:.1%}" for n in sl_pruned) + f" vs the original's {sl_orig:.1%} "
                  f"({SL.retrain.epochs} retraining epochs per stage; needed >= {retained_fraction:.0%} of it)",
                  "Han et al. (2016): retrained nets keep their accuracy"),
        Condition("pruning reached the targets", all(abs(a / k - 1) <= target_rel_tol for k, _, a in nets[1:]),
                  ", ".join(f"{k:.1%} -> {a:.1%}" for k, _, a in nets[1:]) + " of the conv + FC weights",
                  "38 %, 12.8 % and 8 % of the parameters (Table 3)"),
        constraint_condition(sl_cid["constraint"].to_numpy(), P.estimator.tol),
    ]


def verdicts_text(verdicts: Mapping[str, Verdict]) -> str:
    """``<net>: +0.0123 [-0.0010, +0.0250] (held)`` per net, joined by ``"; "``."""
    return "; ".join(f"{n}: {v.effect:+.4f} [{v.interval[0]:+.4f}, {v.interval[1]:+.4f}] ({v.verdict})"
                     for n, v in verdicts.items())


def second_line_evidence(verdicts: Mapping[str, Verdict], sl: SecondLine) -> dict[str, Any]:
    """``numbers`` and ``detail`` of the second-line claim: each pruned net's mean change, every net's
    accuracy, the maps off the constraint."""
    return dict(
        numbers={**{f"mean_dcid_{n}": v.effect for n, v in verdicts.items()},
                 **{f"accuracy_{n}": float(a) for n, a in sl.accuracy.items()},
                 "n_maps_off_constraint": int((~sl.cid.on_constraint).sum())},
        detail=("Per image: ΔCID (pruned minus original) averaged over the stage outputs whose maps met the "
                "constraint in both nets; per pruned net: " + net_summaries(verdicts) + "."))


def second_line_data_text(P: Profile, sl: SecondLine) -> str:
    """The data, networks and sizes of the second-line claim, in words."""
    SL = P.second_line
    return (f"{P.data.cifar.dataset} test set, {sl.x.shape[0]} images; ResNet-{SL.base_depth} "
            f"({ex.cifar_weights_words(P)}) pruned to " + ", ".join(f"{a:.1%}" for _, _, a in sl.nets[1:])
            + f" of the conv + FC weights ({SL.retrain.epochs} retraining epochs per stage on "
            f"{len(ex.cifar_data(P, 'train'))} images); layers {', '.join(sl.layers)}")

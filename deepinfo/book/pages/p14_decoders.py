"""Page ``14_decoders``: RU with decoders of different depth (Appendix J of Ma et al., ICML 2022).

The notebook trains, for every RU layer of a CIFAR ResNet, decoders with each number of residual
blocks in the profile's ``decoder.compare_blocks``, and computes the pixel-wise RU with each on the
same images, layers and noise seed. This module holds the page's arithmetic: the decoders'
reconstruction errors, the RU rows per decoder, the reference decoder's layer RU and its range
across layers (the equivalence margin), the per-(layer, image) comparison of each other decoder
with the reference and its summary, the per-part verdicts, the setup conditions and the claim's
numbers, and the bodies of its figures (``ru_maps``, ``ru_per_layer``, ``reconstructions``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from torch import nn

import deepinfo
from deepinfo.book.verdicts import (Condition, Verdict, accuracy_condition, constraint_condition, correlation, decide,
                                    on_constraint, undecidable)
from deepinfo.plotting import overlay
from deepinfo.result import InfoMaps
from deepinfo.settings import Settings
from deepinfo.toolkit.profile import Profile, load_profile

__all__ = ["reconstruction_errors", "ru_per_decoder", "mean_ru_by_decoder", "plot_ru_maps", "plot_ru_per_layer",
           "plot_reconstructions", "reference_layer_ru", "range_across_layers", "decoder_pairs",
           "decoder_comparison", "max_abs_delta", "map_correlation_per_image", "mean_test_mse", "decoder_parts",
           "setup_conditions", "claim_numbers", "claim_data"]

Decoders = Mapping[int, Mapping[str, nn.Module]]  # {number of residual blocks: {layer: decoder}}


# --- measuring: the decoders' errors and RU with each decoder ----------------------------------

def reconstruction_errors(model: nn.Module, decoders: Decoders, layers: Sequence[str], blocks: Sequence[int],
                          x_rec: torch.Tensor, x: torch.Tensor, pixel_var: float) -> pd.DataFrame:
    """Each decoder's reconstruction error from the clean feature of its layer.

    Args:
        model: the network; decoders: ``{blocks: {layer: decoder}}``; layers, blocks: in table order.
        x_rec: ``[N, C, H, W]`` test images for the error (one decoder batch).
        x: ``[B, C, H, W]`` the RU images.
        pixel_var: the pixel variance of ``x_rec`` (the error of predicting the mean pixel value).

    Returns:
        One row per (layer, decoder_blocks): ``parameters`` (the decoder's), ``test_mse`` (mean
        squared error per pixel and channel on ``x_rec``, pixel units^2), ``pixel_variance``,
        ``mse_over_pixel_variance`` (1 = no better than the mean pixel) and ``ru_images_mse`` (on ``x``).
    """
    recon = []
    for layer in layers:
        f_rec, f_ru = deepinfo.features(model, x_rec, layer)[layer], deepinfo.features(model, x, layer)[layer]
        for nb in blocks:
            dec = decoders[nb][layer]
            with torch.no_grad():
                mse = float(torch.nn.functional.mse_loss(dec(f_rec), x_rec))
                recon.append({"layer": layer, "decoder_blocks": nb,
                              "parameters": sum(p.numel() for p in dec.parameters()),
                              "test_mse": mse, "pixel_variance": pixel_var, "mse_over_pixel_variance": mse / pixel_var,
                              "ru_images_mse": float(torch.nn.functional.mse_loss(dec(f_ru), x))})
    return pd.DataFrame(recon)


def ru_per_decoder(model: nn.Module, decoders: Decoders, x: torch.Tensor, layers: Sequence[str],
                   blocks: Sequence[int], settings: Settings, *, seed: int, network: str
                   ) -> tuple[dict[int, InfoMaps], pd.DataFrame]:
    """``deepinfo.ru`` with each decoder on the same images, layers, seed and settings.

    Returns:
        ``({blocks: maps}, rows)``: the rows of every ``maps.to_frame()`` (one per layer and image;
        ``value`` the layer's mean pixel-wise RU in nats) with ``network`` and ``decoder_blocks`` first.
    """
    ru_maps, frames = {}, []
    for nb in blocks:
        ru_maps[nb] = deepinfo.ru(model, decoders[nb], x, layers, seed=seed, progress=True, settings=settings)
        df = ru_maps[nb].to_frame()
        df.insert(0, "network", network)
        df.insert(1, "decoder_blocks", nb)
        frames.append(df)
    return ru_maps, pd.concat(frames, ignore_index=True)


def mean_ru_by_decoder(ru_df: pd.DataFrame) -> pd.DataFrame:
    """Mean layer RU (nats) over the images: index (layer_index, layer), one column per decoder_blocks."""
    return ru_df.pivot_table(index=["layer_index", "layer"], columns="decoder_blocks", values="value", aggfunc="mean")


# --- figures ------------------------------------------------------------------------------------

def plot_ru_maps(ru_maps: Mapping[int, InfoMaps], x: torch.Tensor, layers: Sequence[str],
                 blocks: Sequence[int]) -> Figure:
    """The RU maps overlaid on (up to) the first two images: one row per image and decoder, one column
    per layer, one colour scale for all panels (RU is meant to be compared across layers)."""
    show = list(range(min(2, x.shape[0])))
    rows = [(b, nb) for b in show for nb in blocks]
    values = torch.stack([ru_maps[nb].pixelwise[:, show] for nb in blocks])
    vmin, vmax = float(values.min()), float(values.max())
    fig, axes = plt.subplots(len(rows), len(layers) + 1, figsize=(1.9 * (len(layers) + 1) + 0.6, 1.9 * len(rows)),
                             squeeze=False)
    for r, (b, nb) in enumerate(rows):
        axes[r, 0].imshow(x[b].permute(1, 2, 0).numpy())
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
        axes[r, 0].set_ylabel(f"image {b}\n{nb}-block decoder", fontsize=8)
        for c, layer in enumerate(layers):
            im = overlay(x[b], ru_maps[nb].pixelwise[c, b], axes[r, c + 1], vmin=vmin, vmax=vmax,
                         title=layer if r == 0 else None)
    fig.colorbar(im, ax=axes, fraction=0.02, pad=0.01, label="RU (nats)")
    return fig


def plot_ru_per_layer(ru_df: pd.DataFrame, recon_df: pd.DataFrame, layers: Sequence[str], depth: int,
                      n_images: int, n_rec: int) -> Figure:
    """Left: the layer RU with each decoder (mean over images, band = one sd). Right: the decoders'
    test reconstruction error per layer (on ``n_rec`` test images)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    plot_df = ru_df.assign(decoder=ru_df.decoder_blocks.map(lambda n: f"{n} blocks"))
    sns.lineplot(plot_df, x="layer_index", y="value", hue="decoder", style="decoder", markers=True, errorbar="sd",
                 ax=axes[0])
    axes[0].set_xticks(range(len(layers)), layers, fontsize=8)
    axes[0].set_xlabel(f"layer of ResNet-{depth}")
    axes[0].set_ylabel("RU (nats)")
    axes[0].set_title(f"layer RU, {n_images} images")
    sns.barplot(recon_df.assign(decoder=recon_df.decoder_blocks.map(lambda n: f"{n} blocks")), x="layer", y="test_mse",
                hue="decoder", ax=axes[1])
    axes[1].set_ylabel("reconstruction MSE (pixel variance)")
    axes[1].set_title(f"decoders on {n_rec} test images")
    fig.tight_layout()
    return fig


def plot_reconstructions(model: nn.Module, decoders: Decoders, x: torch.Tensor, layers: Sequence[str],
                         blocks: Sequence[int]) -> Figure:
    """What each decoder reconstructs from each layer's clean feature of the first image (one row per decoder)."""
    fig, axes = plt.subplots(len(blocks), len(layers) + 1, figsize=(1.9 * (len(layers) + 1), 1.9 * len(blocks)),
                             squeeze=False)
    for r, nb in enumerate(blocks):
        axes[r, 0].imshow(x[0].permute(1, 2, 0).numpy())
        axes[r, 0].set_ylabel(f"{nb}-block decoder", fontsize=8)
        axes[r, 0].set_title("image" if r == 0 else None, fontsize=9)
        for c, layer in enumerate(layers):
            with torch.no_grad():
                rec = decoders[nb][layer](deepinfo.features(model, x[:1], layer)[layer])[0]
            axes[r, c + 1].imshow(rec.clamp(0, 1).permute(1, 2, 0).numpy())
            if r == 0:
                axes[r, c + 1].set_title(layer, fontsize=9)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig


# --- the comparison the verdict is decided on ---------------------------------------------------

def reference_layer_ru(maps: InfoMaps, tol: float) -> np.ndarray:
    """``[L]`` the reference decoder's layer RU (nats): per layer, the mean over the images whose map met
    the constraint (``|r - 1| <= tol``); NaN for a layer with none."""
    ref_mean = maps.mean().numpy()  # [L, B] nats
    ref_ok = on_constraint(maps.constraint.numpy(), tol)  # [L, B]
    return np.array([ref_mean[l, ref_ok[l]].mean() if ref_ok[l].any() else np.nan for l in range(len(ref_mean))])


def range_across_layers(layer_ru: np.ndarray) -> float:
    """Largest minus smallest finite layer value (the span the equivalence margin is a share of);
    NaN with fewer than two finite layers."""
    return (float(np.nanmax(layer_ru) - np.nanmin(layer_ru)) if np.isfinite(layer_ru).sum() >= 2
            else float("nan"))


def decoder_pairs(ru_maps: Mapping[int, InfoMaps], ref: int, others: Sequence[int], layers: Sequence[str],
                  tol: float) -> pd.DataFrame:
    """Every other decoder against the reference, per (layer, image): the paired design of the verdict.

    Args:
        ru_maps: ``{blocks: maps}`` on the same layers and images; ref: the reference's blocks;
        others: the other decoders' blocks; layers: the maps' layers, in order.
        tol: the estimator's tolerance on the achieved ratio ``r``.

    Returns:
        One row per (decoder_blocks, layer, image): ``reference_blocks``, ``layer_index``,
        ``ru_reference`` and ``ru_other`` (the layer's mean RU, nats), ``delta_ru`` (other minus
        reference, nats), ``map_corr`` (Pearson correlation of the two pixel-wise maps, NaN if
        undefined) and ``on_constraint`` (both maps met it).
    """
    ref_mean = ru_maps[ref].mean().numpy()  # [L, B] nats
    ref_ok = on_constraint(ru_maps[ref].constraint.numpy(), tol)  # [L, B]
    B = ref_mean.shape[1]
    rows = []
    for nb in others:
        other_mean = ru_maps[nb].mean().numpy()
        ok = ref_ok & on_constraint(ru_maps[nb].constraint.numpy(), tol)
        for l, layer in enumerate(layers):
            for b in range(B):
                rows.append({"decoder_blocks": nb, "reference_blocks": ref, "layer": layer, "layer_index": l,
                             "image": b, "ru_reference": float(ref_mean[l, b]), "ru_other": float(other_mean[l, b]),
                             "delta_ru": float(other_mean[l, b] - ref_mean[l, b]),
                             "map_corr": correlation(ru_maps[nb].pixelwise[l, b], ru_maps[ref].pixelwise[l, b],
                                                     "pearson"),
                             "on_constraint": bool(ok[l, b])})
    return pd.DataFrame(rows)


def decoder_comparison(kept: pd.DataFrame, ru_range: float) -> pd.DataFrame:
    """Per (decoder_blocks, reference_blocks, layer_index, layer), over the kept pairs of
    :func:`decoder_pairs`: mean ``ru_reference``/``ru_other``/``delta_ru`` (nats), ``delta_ru_sd``,
    ``mean_map_corr``/``min_map_corr``, ``n_images``, and ``abs_delta_over_range`` (``|delta_ru|``
    as a share of the reference's range across layers; inf when the range is not positive)."""
    comparison = (kept.groupby(["decoder_blocks", "reference_blocks", "layer_index", "layer"])
                  .agg(ru_reference=("ru_reference", "mean"), ru_other=("ru_other", "mean"),
                       delta_ru=("delta_ru", "mean"), delta_ru_sd=("delta_ru", "std"),
                       mean_map_corr=("map_corr", "mean"), min_map_corr=("map_corr", "min"),
                       n_images=("image", "size")).reset_index())
    comparison["abs_delta_over_range"] = comparison.delta_ru.abs() / ru_range if ru_range > 0 else float("inf")
    return comparison


def max_abs_delta(comparison: pd.DataFrame) -> float:
    """The largest ``|delta_ru|`` (nats) of :func:`decoder_comparison`; NaN when it is empty."""
    return float(comparison.delta_ru.abs().max()) if len(comparison) else float("nan")


def map_correlation_per_image(kept: pd.DataFrame, others: Sequence[int]) -> dict[int, pd.Series]:
    """``{blocks: series by image}``: each image's map correlation with the reference, averaged over
    its kept layers (rows of :func:`decoder_pairs` on the constraint)."""
    return {nb: kept[kept.decoder_blocks == nb].groupby("image").map_corr.mean() for nb in others}


def mean_test_mse(recon_df: pd.DataFrame, blocks: int) -> float:
    """Mean ``test_mse`` over the layers of the decoders with ``blocks`` residual blocks."""
    return float(recon_df[recon_df.decoder_blocks == blocks].test_mse.mean())


def decoder_parts(kept: pd.DataFrame, corr_per_image: Mapping[int, pd.Series], layers: Sequence[str],
                  others: Sequence[int], ref: int, *, margin: float, min_map_corr: float, min_units: int,
                  unit: str) -> dict[str, Verdict]:
    """The parts of the rule, each decided over the images.

    For every other decoder: per layer, the RU change against the reference inside ``(-margin,
    margin)`` (side ``"within"``), then the per-image map correlation above ``min_map_corr``
    (side ``"greater"``); a part with fewer than ``min_units`` images is undecidable.

    Returns:
        ``{part name: verdict}`` in that order, for :func:`deepinfo.book.verdicts.combine`.
    """
    parts = {}
    for nb in others:
        d = kept[kept.decoder_blocks == nb]
        for layer in layers:
            v = d[d.layer == layer].delta_ru.to_numpy()
            parts[f"{layer} RU change ({nb} vs {ref} blocks)"] = (
                decide(v, threshold=margin, side="within", unit=unit) if len(v) >= min_units else
                undecidable(f"{len(v)} image(s) on the constraint", unit=unit, n_units=len(v), threshold=margin,
                            side="within"))
        c = corr_per_image[nb].dropna().to_numpy()
        parts[f"map correlation ({nb} vs {ref} blocks)"] = (
            decide(c, threshold=min_map_corr, side="greater", unit=unit) if len(c) >= min_units else
            undecidable(f"{len(c)} image(s) with a map correlation", unit=unit, n_units=len(c),
                        threshold=min_map_corr))
    return parts


def setup_conditions(P: Profile, depth: int, net_acc: float, published: float, recon_df: pd.DataFrame,
                     ru_maps: Mapping[int, InfoMaps], *, mse_fraction: float) -> list[Condition]:
    """The setup the claim relies on, checked with numbers.

    Args:
        P: the profile (decoder training, estimator tolerance); depth: the ResNet's depth.
        net_acc: its test accuracy; published: its published accuracy (fractions).
        recon_df: :func:`reconstruction_errors`; ru_maps: ``{blocks: maps}`` of every decoder.
        mse_fraction: a decoder reconstructs when its test MSE is below this share of the pixel variance.

    Returns:
        Conditions: the network near its published accuracy, every decoder reconstructs, decoder
        training against the paper profile's, the maps on the constraint.
    """
    paper_decoder = load_profile("paper").decoder
    worst = recon_df.loc[recon_df.mse_over_pixel_variance.idxmax()]
    return [
        accuracy_condition(f"ResNet-{depth}", net_acc, published,
                           paper_words=f"{published:.1%} (published; ~81-83 % on the JPEG copy counts as met)"),
        Condition("decoders reconstruct", bool((recon_df.mse_over_pixel_variance < mse_fraction).all()),
                  f"test MSE / pixel variance {recon_df.mse_over_pixel_variance.min():.2f}-"
                  f"{recon_df.mse_over_pixel_variance.max():.2f} (worst: {worst.layer}, "
                  f"{int(worst.decoder_blocks)} blocks)",
                  f"decoders that invert each layer (here: every ratio below {mse_fraction})"),
        Condition("decoder training", P.decoder.epochs >= paper_decoder.epochs and P.decoder.n_train is None,
                  f"{P.decoder.epochs} epoch{'s' if P.decoder.epochs != 1 else ''} on {P.decoder.n_train or 'all'} "
                  f"training images, width {P.decoder.width}",
                  f"not stated; this project's paper profile: {paper_decoder.epochs} epochs on the whole training "
                  f"split, width {paper_decoder.width}"),
        constraint_condition(np.concatenate([m.constraint.numpy().ravel() for m in ru_maps.values()]),
                             P.estimator.tol),
    ]


def claim_numbers(ru_range: float, margin: float, max_delta: float, per_pair: pd.DataFrame,
                  comparison: pd.DataFrame, mean_corr: Mapping[int, float], ref: int,
                  recon_df: pd.DataFrame) -> dict[str, float | int]:
    """The claim's numbers: the range across layers and margin (nats), the largest layer change, the
    pairs left out, each layer's mean change, each decoder's mean map correlation and every decoder's
    test MSE over the pixel variance."""
    return {"ru_range_across_layers": ru_range, "margin": margin, "max_abs_delta_layer_ru": max_delta,
            "n_pairs_left_out": int((~per_pair.on_constraint).sum()),
            **{f"delta_ru_{r.layer}_{r.decoder_blocks}v{r.reference_blocks}": r.delta_ru
               for r in comparison.itertuples()},
            **{f"mean_map_corr_{nb}v{ref}": c for nb, c in mean_corr.items()},
            **{f"decoder_mse_over_var_{r.layer}_{r.decoder_blocks}": r.mse_over_pixel_variance
               for r in recon_df.itertuples()}}


def claim_data(P: Profile, n_images: int, depth: int, layers: Sequence[str], blocks: Sequence[int]) -> str:
    """The claim's data line: data set, images, network, RU layers and the decoders' training."""
    return (f"{P.data.cifar.dataset} test set, {n_images} images; ResNet-{depth} ({P.networks.cifar.weights} weights), "
            f"RU layers {', '.join(layers)}; decoders with {', '.join(map(str, blocks))} blocks, width "
            f"{P.decoder.width}, {P.decoder.epochs} epochs on {P.decoder.n_train or 'all'} training images")

"""The analysis behind book page ``02_layer_curves``: layer-wise CID, RU and concentration across
networks (the paper's Fig. 5(a,b,c)), and the CIFAR layer curves in three regimes (section (d)).

The notebook loads the networks, fixes the thresholds and decides the claims; the functions here
measure the CIFAR ResNet classifiers and auto-encoders layer by layer (:func:`measure_cid`,
:func:`measure_ru`), the three regimes of a layer curve (:func:`measure_regimes`) and the
concentration of the bird classifiers (:func:`measure_concentration`), turn the rows into the
page's tables, draw its figures, and build the per-image effects, setup conditions, numbers and
details that its five verdicts rest on (the ``*_evidence`` functions, each a ``dict`` of
``verdict``, ``setup``, ``numbers`` and ``detail`` for :meth:`deepinfo.book.report.Report.claim`).

Units: CID, RU and concentration are in nats; ``r`` is the achieved distortion ratio (1 = the
constraint met); a slope over blocks is in nats per block, a slope over depth in nats per depth
step (ResNet-20 -> 32 -> 44 = steps 0, 1, 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from torch.utils.data import Dataset

import deepinfo
from deepinfo.datasets import subset
from deepinfo.decoder import reconstruction_mse
from deepinfo.estimators import foreground_cells
from deepinfo.plotting import plot_layers
from deepinfo.result import InfoMaps
from deepinfo.toolkit.profile import Profile
from deepinfo.toolkit.training import autoencoder_mse
from deepinfo.book import experiments as ex
from deepinfo.book import layer_curves as lc
from deepinfo.book.experiments import Trained
from deepinfo.book.verdicts import (Condition, accuracy_condition, constraint_condition, correlation, decide,
                                    on_constraint, ratio_error, undecidable)

__all__ = ["TASKS", "TREND_WORDS", "cifar_networks", "network_table", "resnet_layers", "measure_cid",
           "cid_layer_means", "measure_ru", "ru_layer_means", "plot_cid_ru_curves", "last_layer_values",
           "curve_similarity", "last_layer_table", "fewest_layers", "largest_ratio_error", "last_layer_summary",
           "regime_image_counts", "part_a_ids", "measure_regimes", "at_beta", "regime_slopes", "trend_table",
           "regime_trends", "plot_regimes", "plot_regime_trends_beta", "regime_text", "bird_images",
           "measure_concentration", "concentration_layer_means", "plot_concentration_curves",
           "plot_concentration_maps", "end_layer_values", "end_layer_concentration", "cifar_data_text",
           "classifier_setup", "image_variance", "autoencoder_setup", "last_blocks_at_beta", "slopes_on_constraint",
           "deeper_classifiers_evidence", "autoencoder_last_layers", "deeper_autoencoders_evidence",
           "per_image_curve_correlation", "similar_curves_evidence", "per_image_block_slope",
           "rising_blocks_evidence", "concentration_gain_per_image", "bird_setup",
           "concentrated_high_layers_evidence", "bird_data_text"]

#: the two tasks of a CIFAR ResNet on this page, in the order the page measures them
TASKS = ("classification", "auto-encoder")
#: a regime's trend with depth, in words, from the verdict on its per-image slopes over blocks
TREND_WORDS = {"held": "rises", "not held": "falls", "inconclusive": "no trend resolved"}
_ONE_DEPTH = "only one depth in this profile: nothing to compare"


# --- (a), (b): CID and RU of the CIFAR classifiers and auto-encoders ---------------------------

def cifar_networks(classifiers: Mapping[int, Trained], autoencoders: Mapping[int, Trained]
                   ) -> list[tuple[int, str, Trained]]:
    """The networks of parts (a) and (b) in the order they are measured.

    Args:
        classifiers, autoencoders: ``{depth: trained network}``, in the profile's order of depths.

    Returns:
        ``[(depth, task, trained)]``: per depth, the classifier then the auto-encoder.
    """
    return [(d, task, trained) for d in classifiers
            for task, trained in (("classification", classifiers[d]), ("auto-encoder", autoencoders[d]))]


def network_table(classifiers: Mapping[int, Trained], autoencoders: Mapping[int, Trained],
                  test_set: Dataset) -> pd.DataFrame:
    """The table ``networks``: one row per classifier, then one per auto-encoder.

    Args:
        classifiers, autoencoders: ``{depth: trained network}``.
        test_set: the CIFAR test set both are evaluated on.

    Returns:
        Columns network (``"ResNet-<depth>"``), task, weights (the cache key), test accuracy (in
        [0, 1], classifiers only) and test reconstruction MSE (mean over pixels and channels,
        auto-encoders only); the other column is NaN.
    """
    return pd.DataFrame(
        [{"network": f"ResNet-{d}", "task": "classification", "weights": classifiers[d].key,
          "test accuracy": classifiers[d].accuracy(test_set), "test reconstruction MSE": np.nan} for d in classifiers]
        + [{"network": f"ResNet-{d}", "task": "auto-encoder", "weights": autoencoders[d].key,
            "test accuracy": np.nan, "test reconstruction MSE": autoencoder_mse(autoencoders[d].model, test_set)}
           for d in autoencoders])


def resnet_layers(profile: Profile, depth: int, task: str, model: torch.nn.Module) -> list[str]:
    """The layers the profile measures in a CIFAR ResNet of ``depth``; an auto-encoder's are the
    same layers of its ``encoder.`` trunk."""
    return ex.layers_for(profile, f"resnet{depth}", model, prefix="encoder." if task == "auto-encoder" else "")


def measure_cid(profile: Profile, classifiers: Mapping[int, Trained], autoencoders: Mapping[int, Trained],
                x: torch.Tensor, settings: deepinfo.Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """CID of every measured layer of every network on the same images (the paper's method).

    Args:
        profile: the run's profile (layers, seed).
        classifiers, autoencoders: ``{depth: trained network}``, measured in the order of
            :func:`cifar_networks`.
        x: ``[B, C, H, W]`` test images.
        settings: the profile's estimator settings.

    Returns:
        ``(rows, means)``: one row per (network, layer, image) with the columns of
        :func:`deepinfo.book.layer_curves.resnet_rows` (``value`` the layer's mean pixel-wise CID in
        nats, ``constraint`` the achieved ratio r); and their per-layer means (:func:`cid_layer_means`).
    """
    frames = []
    for depth, task, trained in cifar_networks(classifiers, autoencoders):
        layers = resnet_layers(profile, depth, task, trained.model)
        maps = deepinfo.cid(trained.model, x, layers, seed=profile.seed, progress=True, settings=settings)
        frames.append(lc.resnet_rows(maps, trained.model, depth, task))
    cid_df = pd.concat(frames, ignore_index=True)
    return cid_df, cid_layer_means(cid_df)


def cid_layer_means(cid_df: pd.DataFrame) -> pd.DataFrame:
    """Per (network, depth, task, layer, position): ``cid`` (mean over images, nats), ``cid_sd``
    (their standard deviation) and ``max_ratio_error`` (largest ``|r - 1|`` of the layer's maps)."""
    return (cid_df.groupby(["network", "depth", "task", "layer", "position"], as_index=False)
            .agg(cid=("value", "mean"), cid_sd=("value", "std"), max_ratio_error=("constraint", ratio_error)))


def measure_ru(profile: Profile, classifiers: Mapping[int, Trained], autoencoders: Mapping[int, Trained],
               x_ru: torch.Tensor, train_set: Dataset, settings: deepinfo.Settings
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """RU of the layers that get a decoder, with each decoder's reconstruction error.

    Each (network, layer) decoder is trained once on ``train_set`` and cached
    (:func:`deepinfo.book.experiments.trained_decoder`).

    Args:
        profile: the run's profile (decoder layers, seed).
        classifiers, autoencoders: ``{depth: trained network}``, measured in the order of
            :func:`cifar_networks`.
        x_ru: ``[B, C, H, W]`` test images (part (a)'s first ones).
        train_set: the CIFAR training set the decoders learn on.
        settings: the profile's estimator settings.

    Returns:
        ``(rows, means)``: one row per (network, layer, image) with the columns of
        :func:`deepinfo.book.layer_curves.resnet_rows` (``value`` the layer's mean RU in nats) and
        ``decoder_mse``, the decoder's reconstruction MSE on ``x_ru`` without noise; and their
        per-layer means (:func:`ru_layer_means`).
    """
    frames = []
    for depth, task, trained in cifar_networks(classifiers, autoencoders):
        layers = ex.decoder_layers(profile, trained.model, resnet_layers(profile, depth, task, trained.model))
        decoders = {name: ex.trained_decoder(profile, trained, name, train_set, progress=True) for name in layers}
        maps = deepinfo.ru(trained.model, decoders, x_ru, layers, seed=profile.seed, progress=True, settings=settings)
        df = lc.resnet_rows(maps, trained.model, depth, task)
        df["decoder_mse"] = df["module"].map({n: reconstruction_mse(trained.model, n, decoders[n], x_ru)
                                              for n in layers})
        frames.append(df)
    ru_df = pd.concat(frames, ignore_index=True)
    return ru_df, ru_layer_means(ru_df)


def ru_layer_means(ru_df: pd.DataFrame) -> pd.DataFrame:
    """Per (network, depth, task, layer, position): ``ru`` (mean over images, nats), ``ru_sd``,
    ``decoder_mse`` (the layer's decoder) and ``max_ratio_error`` (largest ``|r - 1|``)."""
    return (ru_df.groupby(["network", "depth", "task", "layer", "position"], as_index=False)
            .agg(ru=("value", "mean"), ru_sd=("value", "std"), decoder_mse=("decoder_mse", "first"),
                 max_ratio_error=("constraint", ratio_error)))


def plot_cid_ru_curves(cid_df: pd.DataFrame, ru_df: pd.DataFrame, depths: Sequence[int], n_images: int) -> Figure:
    """Figure ``cid_ru_curves``: (a) CID and (b) RU per layer against the fraction of residual blocks
    passed; solid lines the classifiers, dashed the auto-encoders, bands one sd over images."""
    palette = dict(zip([f"ResNet-{d}" for d in depths], sns.color_palette("viridis", len(depths))))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, frame, ylabel, letter in ((axes[0], cid_df, "CID (nats)", "a"), (axes[1], ru_df, "RU (nats)", "b")):
        sns.lineplot(frame, x="position", y="value", hue="network", style="task", palette=palette,
                     style_order=["classification", "auto-encoder"], markers=True, dashes=[(1, 0), (4, 2)],
                     errorbar="sd", ax=ax)
        ax.set_xlabel("fraction of residual blocks passed")
        ax.set_ylabel(ylabel)
        ax.set_title(f"({letter}) {ylabel.split()[0]} per layer, {n_images} test images")
    axes[1].get_legend().remove()
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def last_layer_values(mean: pd.DataFrame, column: str) -> pd.Series:
    """``column`` at each network's last measured layer (largest ``position``), indexed by (task, depth).

    Args:
        mean: per-layer means (:func:`cid_layer_means` or :func:`ru_layer_means`).
        column: ``"cid"`` or ``"ru"``.
    """
    return mean.sort_values("position").groupby(["task", "depth"]).tail(1).set_index(["task", "depth"])[column]


def curve_similarity(mean: pd.DataFrame, column: str, depths: Sequence[int], same_layers: bool = False
                     ) -> dict[int, float]:
    """Per depth, the Pearson correlation over the layers of the classifier's and the auto-encoder's
    mean curve of ``column`` (NaN below 3 layers or for a constant curve).

    Args:
        mean: per-layer means (:func:`cid_layer_means` or :func:`ru_layer_means`).
        column: ``"cid"`` or ``"ru"``.
        depths: the ResNet depths.
        same_layers: check that both curves are measured at the same layers (raises otherwise).
    """
    similarity = {}
    for d in depths:
        c = mean[(mean.depth == d) & (mean.task == "classification")].sort_values("position")
        a = mean[(mean.depth == d) & (mean.task == "auto-encoder")].sort_values("position")
        if same_layers:
            assert list(c.layer) == list(a.layer), "classifier and auto-encoder must be measured at the same layers"
        similarity[d] = correlation(c[column], a[column], "pearson")
    return similarity


def last_layer_table(cid_mean: pd.DataFrame, ru_mean: pd.DataFrame, depths: Sequence[int]) -> pd.DataFrame:
    """The shown table of parts (a) and (b): one row per depth.

    Returns:
        Columns depth, last-layer CID / RU of the classifier and of the auto-encoder (nats, mean
        over images) and the Pearson r of the classifier's and the auto-encoder's mean CID and RU
        curves (:func:`curve_similarity`).
    """
    last = last_layer_values(cid_mean, "cid")
    ru_last = last_layer_values(ru_mean, "ru")
    deeper = {task: [float(last[(task, d)]) for d in depths] for task in TASKS}
    ru_deeper = {task: [float(ru_last[(task, d)]) for d in depths] for task in TASKS}
    similarity = curve_similarity(cid_mean, "cid", depths, same_layers=True)
    ru_similarity = curve_similarity(ru_mean, "ru", depths)
    return pd.DataFrame({"depth": depths, "last-layer CID, classifier": deeper["classification"],
                         "last-layer CID, auto-encoder": deeper["auto-encoder"],
                         "last-layer RU, classifier": ru_deeper["classification"],
                         "last-layer RU, auto-encoder": ru_deeper["auto-encoder"],
                         "Pearson r (CID curves, cls vs AE)": [similarity[d] for d in depths],
                         "Pearson r (RU curves, cls vs AE)": [ru_similarity[d] for d in depths]})


def fewest_layers(cid_mean: pd.DataFrame) -> int:
    """The smallest number of measured layers of any network (a curve correlation or a slope over
    blocks needs at least 3)."""
    return int(cid_mean.groupby("network").layer.nunique().min())


def largest_ratio_error(cid_mean: pd.DataFrame, ru_mean: pd.DataFrame) -> float:
    """The largest ``|r - 1|`` of any CID or RU map of parts (a) and (b)."""
    return float(max(cid_mean.max_ratio_error.max(), ru_mean.max_ratio_error.max()))


def last_layer_summary(cid_mean: pd.DataFrame, ru_mean: pd.DataFrame, depths: Sequence[int]
                       ) -> tuple[pd.DataFrame, int, float]:
    """Parts (a) and (b) in numbers: ``(table, n_layers, max_ratio_error)``, the shown table
    (:func:`last_layer_table`), the fewest measured layers of a network (:func:`fewest_layers`) and
    the largest ``|r - 1|`` of a map (:func:`largest_ratio_error`)."""
    return (last_layer_table(cid_mean, ru_mean, depths), fewest_layers(cid_mean),
            largest_ratio_error(cid_mean, ru_mean))


# --- (d): the layer curve in three regimes ----------------------------------------------------

def regime_image_counts(estimator, n_images: int) -> tuple[int, int, int]:
    """How many images each regime of section (d) is measured on.

    Args:
        estimator: the profile's estimator section (its ``n_images`` counts; 0 or None = default).
        n_images: part (a)'s number of images.

    Returns:
        ``(n_regimes, n_regimes_beta, n_loop)``: the closed forms at the paper's beta, the closed
        forms at the other betas (at most ``n_regimes``), the authors' loop (at most ``n_images``).
    """
    n_regimes = estimator.n_images.regimes or n_images
    n_regimes_beta = min(estimator.n_images.regimes_beta or n_regimes, n_regimes)
    n_loop = min(estimator.n_images.paper_loop or 1, n_images)
    return n_regimes, n_regimes_beta, n_loop


def part_a_ids(test_set: Dataset, n_images: int, seed: int) -> list[int]:
    """Part (a)'s images as test-set indices (the items :func:`deepinfo.book.experiments.images`
    draws with the same ``n_images`` and ``seed``), in index order."""
    return subset(test_set, n_images, seed=seed).indices


def measure_regimes(profile: Profile, classifiers: Mapping[int, Trained], cid_df: pd.DataFrame, test_set: Dataset,
                    x: torch.Tensor, n_images: int, settings: deepinfo.Settings, loop: Callable
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-image CID of every block of the CIFAR classifiers in the regimes of section (d).

    At the paper's beta, per depth: the bare and the calibrated closed form (on ``n_regimes``
    images), part (a)'s ``optimize`` rows (``cid_df``) and the authors' loop (on ``n_loop`` of
    part (a)'s images, its ``r`` measured against part (a)'s ``delta_f2``). At every other beta of
    the profile, on the shallowest ResNet: the two closed forms (``n_regimes_beta`` images) and the
    loop (``r`` against the calibrated maps' ``delta_f2``).

    Args:
        profile: the run's profile (estimator, seed, layers).
        classifiers: ``{depth: trained classifier}`` in the profile's order of depths.
        cid_df: part (a)'s per-image rows (:func:`measure_cid`).
        test_set: the CIFAR test set (the images are drawn from it with the profile's seed).
        x: part (a)'s images ``[n_images, C, H, W]``.
        n_images: part (a)'s number of images.
        settings: the profile's estimator settings.
        loop: the authors' loop (``benchmarks/paper_loop.py``'s ``paper_loop_cid``).

    Returns:
        ``(rows, table)``: one row per (network, estimator, beta, block, image) with the columns
        of :func:`deepinfo.book.layer_curves.per_image` (``image`` a test-set index, plus ``r_se``
        for the loop's rows); and the per-block means with their bootstrap intervals over images
        (:func:`deepinfo.book.layer_curves.summarize`, the profile's seed).
    """
    E = profile.estimator
    depths = list(classifiers)
    n_regimes, n_regimes_beta, n_loop = regime_image_counts(E, n_images)
    a_ids = part_a_ids(test_set, n_images, profile.seed)
    reg_ids = subset(test_set, n_regimes, seed=profile.seed).indices
    x_reg = torch.stack([test_set[i][0] for i in reg_ids])
    frames = []
    for d in depths:
        model, net = classifiers[d].model, f"ResNet-{d}"
        layers = ex.layers_for(profile, f"resnet{d}", model)
        for est in (lc.BARE, lc.CALIBRATED):
            maps = deepinfo.cid(model, x_reg, layers, seed=profile.seed, progress=True, settings=settings,
                                **lc.REGIMES[est])
            frames.append(lc.per_image(maps, net, est, image_ids=reg_ids))
        opt = cid_df[(cid_df.depth == d) & (cid_df.task == "classification")]  # part (a): the paper's method
        frames.append(pd.DataFrame({"network": net, "layer": opt.layer, "block_index": opt.layer_index + 1,
                                    "image": opt.image.map(dict(enumerate(a_ids))), "estimator": lc.OPTIMIZE,
                                    "beta": opt.beta, "cid": opt.value, "r": opt.constraint, "delta_f2": opt.delta_f2}))
        delta = torch.tensor(opt.pivot(index="layer_index", columns="image", values="delta_f2").to_numpy())
        frames.append(lc.paper_loop_rows(model, x[:n_loop], layers, delta[:, :n_loop], network=net, beta=E.beta,
                                         grid=E.grid, loop=loop, seed=profile.seed, image_ids=a_ids[:n_loop]))
    # the other betas, on the shallowest ResNet
    d0 = depths[0]
    model, net = classifiers[d0].model, f"ResNet-{d0}"
    layers = ex.layers_for(profile, f"resnet{d0}", model)
    for beta in [b for b in E.betas if not math.isclose(b, E.beta)]:
        for est in (lc.BARE, lc.CALIBRATED):
            maps = deepinfo.cid(model, x_reg[:n_regimes_beta], layers, seed=profile.seed, progress=True,
                                settings=settings, beta=beta, **lc.REGIMES[est])
            frames.append(lc.per_image(maps, net, est, image_ids=reg_ids[:n_regimes_beta]))
        frames.append(lc.paper_loop_rows(model, x_reg[:n_loop], layers, maps.delta_f2[:, :n_loop], network=net,
                                         beta=beta, grid=E.grid, loop=loop, seed=profile.seed,
                                         image_ids=reg_ids[:n_loop]))
    regimes = pd.concat(frames, ignore_index=True)
    return regimes, lc.summarize(regimes, seed=profile.seed)


def at_beta(frame: pd.DataFrame, beta: float) -> pd.DataFrame:
    """The rows of ``frame`` whose ``beta`` is (numerically) ``beta``."""
    return frame[np.isclose(frame.beta, beta)]


def regime_slopes(regimes: pd.DataFrame, tol: float) -> pd.DataFrame:
    """Each image's least-squares slope of CID over the blocks, per (network, estimator, beta).

    For the regimes that hold the constraint (:data:`deepinfo.book.layer_curves.CONSTRAINT_HELD`)
    maps with ``|r - 1| > tol`` are left out first; the others keep every map.

    Returns:
        The rows of :func:`deepinfo.book.layer_curves.depth_slopes` (``slope`` in nats per block),
        regimes in the order they appear in ``regimes``.
    """
    held_regimes = set(lc.CONSTRAINT_HELD)
    return pd.concat([lc.depth_slopes(g, tol=tol if est in held_regimes else None)
                      for est, g in regimes.groupby("estimator", sort=False)], ignore_index=True)


def trend_table(slopes: pd.DataFrame, regime_table: pd.DataFrame, threshold: float, seed: int) -> pd.DataFrame:
    """The table ``regime_trends``: each regime's trend with depth, decided over images.

    Args:
        slopes: per-image slopes over blocks (:func:`regime_slopes`).
        regime_table: per-block means (:func:`deepinfo.book.layer_curves.summarize`), for the ratio
            ``r`` at the first and the last block.
        threshold: nats per block the slope must exceed to "rise".
        seed: the bootstrap's seed.

    Returns:
        One row per (network, estimator, beta): ``slope (nats/block)`` (mean over images) with
        ``slope_lo``/``slope_hi`` (95 % bootstrap interval), ``n_images``, ``trend with depth``
        (:data:`TREND_WORDS` of the verdict), ``r first block`` and ``r last block``.
    """
    trend_rows = []
    for (net, est, beta), g in slopes.groupby(["network", "estimator", "beta"], sort=False):
        v = decide(g.slope.to_numpy(), threshold=threshold, unit="images", seed=seed)
        blocks = regime_table[(regime_table.network == net) & (regime_table.estimator == est)
                              & np.isclose(regime_table.beta, beta)].sort_values("block_index")
        trend_rows.append({"network": net, "estimator": est, "beta": beta, "slope (nats/block)": v.effect,
                           "slope_lo": v.interval[0], "slope_hi": v.interval[1], "n_images": v.n_units,
                           "trend with depth": TREND_WORDS[v.verdict], "r first block": float(blocks.r.iloc[0]),
                           "r last block": float(blocks.r.iloc[-1])})
    return pd.DataFrame(trend_rows)


def regime_trends(regimes: pd.DataFrame, regime_table: pd.DataFrame, *, tol: float, threshold: float, seed: int
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each regime's trend with depth: ``(slopes, trends)``, the per-image slopes over blocks
    (:func:`regime_slopes`, constraint-held regimes within ``tol``) and the table decided over
    images from them (:func:`trend_table`, ``threshold`` in nats per block)."""
    slopes = regime_slopes(regimes, tol)
    return slopes, trend_table(slopes, regime_table, threshold, seed)


def _regime_palette() -> dict[str, tuple]:
    """One colour per regime, the same in both figures of section (d)."""
    return dict(zip([lc.BARE, lc.CALIBRATED, lc.OPTIMIZE, lc.PAPER_LOOP], sns.color_palette("deep", 4)))


def plot_regimes(regime_table: pd.DataFrame, depths: Sequence[int], beta: float, tol: float) -> Figure:
    """Figure ``regimes``: per ResNet (columns), the mean CID per block of every regime with its
    95 % interval (top) and the achieved ratio ``r`` (bottom, log scale; the band is ``1 +- tol``)."""
    palette = _regime_palette()
    at = at_beta(regime_table, beta)
    fig, axes = plt.subplots(2, len(depths), figsize=(4.2 * len(depths), 6.2), sharex="col", squeeze=False)
    for j, d in enumerate(depths):
        part = at[at.network == f"ResNet-{d}"]
        for est, g in part.groupby("estimator", sort=False):
            g = g.sort_values("block_index")
            axes[0, j].plot(g.block_index, g.cid, marker="o", ms=3, color=palette[est],
                            label=f"{est} ({g.n_images.iloc[0]} img)")
            axes[0, j].fill_between(g.block_index, g.cid_lo, g.cid_hi, color=palette[est], alpha=0.2)
            axes[1, j].plot(g.block_index, g.r, marker="o", ms=3, color=palette[est])
        axes[0, j].set_title(f"ResNet-{d}, beta {beta:g}")
        axes[1, j].axhline(1, color="grey", lw=0.8)
        axes[1, j].axhspan(1 - tol, 1 + tol, color="grey", alpha=0.15)
        axes[1, j].set_yscale("log")
        axes[1, j].set_xlabel("block (1 = first measured)")
    axes[0, 0].set_ylabel("CID (nats), 95 % interval")
    axes[1, 0].set_ylabel("achieved ratio r (log)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_regime_trends_beta(trends: pd.DataFrame, depth: int) -> Figure:
    """Figure ``regime_trends_beta``: on the ResNet of ``depth``, each regime's slope over blocks at
    every beta, with its 95 % interval over images."""
    palette = _regime_palette()
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(trends) / 2 + 2))
    shown = trends[trends.network == f"ResNet-{depth}"].reset_index(drop=True)
    for k, row in shown.iterrows():
        ax.errorbar(row["slope (nats/block)"], k, xerr=[[row["slope (nats/block)"] - row.slope_lo],
                    [row.slope_hi - row["slope (nats/block)"]]], fmt="o", color=palette[row.estimator])
    ax.set_yticks(range(len(shown)), [f"beta {b:.1e}: {e}" for b, e in zip(shown.beta, shown.estimator)], fontsize=7)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("slope of CID over blocks (nats per block), 95 % interval over images")
    ax.set_title(f"ResNet-{depth}: each regime's trend with depth, per beta")
    fig.tight_layout()
    return fig


def regime_text(trends: pd.DataFrame, beta: float, depth: int) -> str:
    """The glued paragraph ``regime_text``: which regimes rise on every ResNet at the paper's
    ``beta``, each regime's trend per network, and the trends over beta on the ResNet of ``depth``."""
    at = at_beta(trends, beta)
    rising = [est for est, g in at.groupby("estimator", sort=False) if (g["trend with depth"] == "rises").all()]
    beta_view = trends[trends.network == f"ResNet-{depth}"]
    beta_stable = {est: sorted(set(g["trend with depth"])) for est, g in beta_view.groupby("estimator", sort=False)}
    return (
        f"**Which regime is the paper's rising curve?** At the paper's beta ({beta:g}) the curve rises with depth "
        f"on every ResNet in: {', '.join(rising) if rising else 'no regime'}. "
        f"The bare closed form: {lc.trend_words(trends, lc.BARE, beta)}. "
        f"With the constraint held on the real network -- calibrated closed form: "
        f"{lc.trend_words(trends, lc.CALIBRATED, beta)}; "
        f"`optimize` (fewer images): {lc.trend_words(trends, lc.OPTIMIZE, beta)}. "
        f"The authors' loop: {lc.trend_words(trends, lc.PAPER_LOOP, beta)}.\n\n"
        f"**Over beta** (ResNet-{depth}): " + "; ".join(f"{est}: {' / '.join(v)}" for est, v in beta_stable.items())
        + " (the trends found across the profile's betas).")


# --- (c): concentration of the bird classifiers ------------------------------------------------

def bird_images(profile: Profile, n_images: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """The bird test images, cropped by the profile's ``concentration_crop`` box, whose mask leaves
    a foreground and a background cell on the estimator's grid.

    Items of the cropped test set are examined in one seeded order
    (:func:`deepinfo.book.experiments.images_where`) until ``n_images`` pass.

    Returns:
        ``(xc [B, C, H, W], mc [B, H, W] masks, picked [B] test-set indices, foreground share)``,
        the share being the fraction of the images' grid cells that are foreground.
    """
    xc, mc, picked = ex.concentration_images(profile, n_images)
    grid, side = profile.estimator.grid, profile.data.cub.image_size
    cells = (side, side) if grid is None else (grid, grid)
    fg = foreground_cells(mc, tuple(xc.shape[-2:]), cells, xc.shape[0])
    return xc, mc, picked, float(fg.float().mean())


def measure_concentration(profile: Profile, cub_nets: Mapping[str, Trained], xc: torch.Tensor, mc: torch.Tensor,
                          picked: torch.Tensor, eval_set: Dataset, settings: deepinfo.Settings
                          ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, InfoMaps]]:
    """CID and concentration of every measured layer of the bird classifiers.

    Args:
        profile: the run's profile (layers, seed).
        cub_nets: ``{arch: trained classifier}``, measured in that order.
        xc, mc, picked: the images, masks and test-set indices (:func:`bird_images`).
        eval_set: the classification crops the accuracy is measured on.
        settings: the profile's estimator settings.

    Returns:
        ``(rows, means, maps)``: one row per (network, layer, image) with the columns of
        :meth:`deepinfo.result.InfoMaps.to_frame` (``value`` the mean CID, nats), ``concentration``
        (mean background minus mean foreground CID, nats), ``position`` ((layer index + 1) / number
        of layers) and ``test accuracy``; their per-layer means (:func:`concentration_layer_means`);
        and ``{arch: maps}``.
    """
    frames = []
    conc_maps = {}
    for arch, trained in cub_nets.items():
        layers = ex.layers_for(profile, arch, trained.model)
        maps = deepinfo.cid(trained.model, xc, layers, seed=profile.seed, progress=True, settings=settings)
        conc = deepinfo.concentration(maps, mc)  # [L, B]
        df = maps.to_frame(image_ids=picked.tolist())
        df.insert(0, "network", arch)
        df["concentration"] = conc.flatten().tolist()
        df["position"] = (df["layer_index"] + 1) / len(layers)
        df["test accuracy"] = trained.accuracy(eval_set)
        frames.append(df)
        conc_maps[arch] = maps
    conc_df = pd.concat(frames, ignore_index=True)
    return conc_df, concentration_layer_means(conc_df), conc_maps


def concentration_layer_means(conc_df: pd.DataFrame) -> pd.DataFrame:
    """Per (network, layer_index, layer, position): ``concentration`` (mean over images, nats),
    ``concentration_sd``, ``cid`` (mean CID, nats) and ``accuracy`` (the network's test accuracy)."""
    return (conc_df.groupby(["network", "layer_index", "layer", "position"], as_index=False)
            .agg(concentration=("concentration", "mean"), concentration_sd=("concentration", "std"),
                 cid=("value", "mean"), accuracy=("test accuracy", "first")))


def plot_concentration_curves(conc_df: pd.DataFrame, n_images: int) -> Figure:
    """Figure ``concentration_curves``: concentration per layer of each bird classifier (bands:
    one sd over images)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(conc_df, x="position", y="concentration", hue="network", marker="o", errorbar="sd", ax=ax)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("layer index / number of measured layers")
    ax.set_ylabel("concentration (nats)")
    ax.set_title(f"(c) concentration per layer, {n_images} bird images")
    fig.tight_layout()
    return fig


def plot_concentration_maps(conc_maps: Mapping[str, InfoMaps], xc: torch.Tensor, mc: torch.Tensor,
                            archs: Sequence[str]) -> Figure:
    """Figure ``concentration_maps``: the first image's pixel-wise CID at the first and the last
    measured layer of VGG-16 (else the first network), the foreground outlined."""
    arch = "vgg16" if "vgg16" in conc_maps else archs[0]
    fig = plot_layers(conc_maps[arch], xc, image_indices=[0],
                      layers=[conc_maps[arch].layers[0], conc_maps[arch].layers[-1]])
    for ax in fig.axes[1:3]:  # the foreground (mask) outline on both maps
        ax.contour(mc[0].float().numpy(), levels=[0.5], colors="cyan", linewidths=0.8)
    fig.suptitle(f"pixel-wise CID of {arch}, first and last measured layer (one colour scale; cyan: foreground)",
                 fontsize=9, y=1.15)
    return fig


def end_layer_values(conc_mean: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per network (the index), the mean concentration at its first and at its last measured
    layer (smallest and largest layer index), nats.

    Args:
        conc_mean: per-layer means (:func:`concentration_layer_means`).
    Returns:
        ``(first, last)``.
    """
    conc_first = conc_mean.sort_values("layer_index").groupby("network").head(1).set_index("network")["concentration"]
    conc_last = conc_mean.sort_values("layer_index").groupby("network").tail(1).set_index("network")["concentration"]
    return conc_first, conc_last


def end_layer_concentration(conc_mean: pd.DataFrame) -> pd.DataFrame:
    """The shown table of part (c): per network (the index), the mean concentration at the
    ``first layer`` and the ``last layer`` (:func:`end_layer_values`, nats) and ``last - first``."""
    conc_first, conc_last = end_layer_values(conc_mean)
    return pd.DataFrame({"first layer": conc_first, "last layer": conc_last, "last - first": conc_last - conc_first})


# --- the claims ----------------------------------------------------------------------------------

def cifar_data_text(profile: Profile, depths: Sequence[int], deciding: str, n_images: int) -> str:
    """The ``data`` of the CIFAR claims: data set, networks, and how many images each estimator saw."""
    n_regimes = regime_image_counts(profile.estimator, n_images)[0]
    return (f"{profile.data.cifar.dataset} test set; ResNet-{'/'.join(map(str, depths))} classifiers "
            f"({profile.networks.cifar.weights} weights): {deciding} on {n_regimes} images, optimize on {n_images}; "
            f"auto-encoders ({profile.training.cifar_autoencoder.epochs} epochs) on {n_images}")


def classifier_setup(classifiers: Mapping[int, Trained], test_set: Dataset, published: Mapping[int, float], *,
                     fraction: float, default: float = 0.92) -> list[Condition]:
    """One accuracy condition per CIFAR classifier: met when its test accuracy is at least
    ``fraction`` of the published top-1 (``published[depth]``, ``default`` for a depth not listed)."""
    accuracy = {d: classifiers[d].accuracy(test_set) for d in classifiers}
    return [accuracy_condition(f"ResNet-{d}", accuracy[d], published.get(d, default), fraction=fraction,
                               paper_words=f"published {published.get(d, default):.1%} on the official set "
                                           "(~81-83 % expected on the JPEG copy)") for d in classifiers]


def image_variance(test_set: Dataset, ids: Sequence[int]) -> float:
    """The (unbiased) variance of every pixel value of the images ``ids`` of ``test_set``: the
    yardstick of an auto-encoder's MSE (unlike :func:`deepinfo.decoder.pixel_variance`, no
    per-channel mean is removed)."""
    return float(torch.stack([test_set[i][0] for i in ids]).var())


def autoencoder_setup(networks: pd.DataFrame, depths: Sequence[int], test_set: Dataset, ids: Sequence[int],
                      min_r2: float) -> list[Condition]:
    """One condition per auto-encoder: it reconstructs when ``1 - MSE / pixel_var >= min_r2``.

    Args:
        networks: the table ``networks`` (:func:`network_table`), for each test reconstruction MSE.
        depths: the ResNet depths.
        test_set, ids: the images whose pixel variance is the yardstick (:func:`image_variance`).
        min_r2: the share of the pixel variance an auto-encoder must explain.
    """
    pixel_var = image_variance(test_set, ids)
    ae_mse = {d: float(networks[(networks.network == f"ResNet-{d}") & (networks.task == "auto-encoder")]
                       ["test reconstruction MSE"].iloc[0]) for d in depths}
    ae_r2 = {d: 1 - ae_mse[d] / pixel_var for d in depths}
    return [Condition(f"ResNet-{d} auto-encoder reconstructs", ae_r2[d] >= min_r2,
                      f"test MSE {ae_mse[d]:.4f} = {1 - ae_r2[d]:.0%} of the pixel variance",
                      f"an AE that reconstructs (MSE < {1 - min_r2:.0%} of the variance)") for d in depths]


def last_blocks_at_beta(regimes: pd.DataFrame, beta: float) -> pd.DataFrame:
    """The per-image rows of each network's last block at ``beta``, with ``depth`` (from the
    network's name) and ``position`` (block index over the network's largest block index)."""
    reg = at_beta(regimes, beta).copy()
    reg["depth"] = reg.network.str.removeprefix("ResNet-").astype(int)
    reg["position"] = reg.block_index / reg.groupby("network").block_index.transform("max")
    return lc.last_block(reg)


def slopes_on_constraint(last: pd.DataFrame, depths: Sequence[int], tol: float) -> pd.Series:
    """Per image, the slope of the last block's CID over the depth steps, on the images whose
    last-block map met the constraint (``|r - 1| <= tol``) in every network.

    Args:
        last: one regime's last-block rows (:func:`last_blocks_at_beta`).
    Returns:
        A ``Series`` by image, nats per depth step (:func:`deepinfo.book.layer_curves.slope_over_depth`).
    """
    ok = on_constraint(last.r, tol)
    kept_images = set(last.image) - set(last.image[~ok])
    return lc.slope_over_depth(last[last.image.isin(kept_images)], depths)


def deeper_classifiers_evidence(regimes: pd.DataFrame, ru_mean: pd.DataFrame, depths: Sequence[int],
                                setup: Sequence[Condition], *, deciding: str, beta: float, tol: float,
                                threshold: float, seed: int, n_ru: int) -> dict:
    """Claim 1 (deeper classifiers discard more): the verdict on the per-image slope of the last
    block's CID over depth (regime ``deciding``, maps on the constraint), with the other regimes'
    verdicts and the classifiers' last-stage RU beside it.

    Args:
        regimes: section (d)'s per-image rows (:func:`measure_regimes`).
        ru_mean: part (b)'s per-layer means (:func:`ru_layer_means`).
        setup: the classifiers' conditions (:func:`classifier_setup`).
        deciding: the regime that decides; beta: the paper's beta.
        tol, threshold, seed: the constraint's tolerance, the slope the claim needs (nats per depth
            step) and the bootstrap's seed.
        n_ru: how many images RU was measured on.

    Returns:
        ``verdict``, ``setup``, ``numbers`` and ``detail`` of :meth:`~deepinfo.book.report.Report.claim`.
    """
    last_reg = last_blocks_at_beta(regimes, beta)
    deciding_last = last_reg[last_reg.estimator == deciding]
    if len(depths) < 2:
        v_depth = undecidable(_ONE_DEPTH, unit="images")
    else:
        per_image_slope = slopes_on_constraint(deciding_last, depths, tol)
        v_depth = decide(per_image_slope.to_numpy(), threshold=threshold, unit="images", seed=seed)
    others = {est: lc.slope_over_depth(last_reg[last_reg.estimator == est], depths) for est in (lc.BARE, lc.OPTIMIZE)}
    others = {est: decide(s.to_numpy(), threshold=threshold, seed=seed) for est, s in others.items() if len(s)}
    last_means = deciding_last.groupby("depth").cid.mean()
    ru_last = last_layer_values(ru_mean, "ru")
    return dict(
        verdict=v_depth,
        setup=list(setup) + [constraint_condition(deciding_last.r, tol)],
        numbers={**{f"cid_last_{deciding}_resnet{d}": float(v) for d, v in last_means.items()},
                 **{f"ru_last_cls_resnet{d}": float(ru_last[("classification", d)]) for d in depths}},
        detail=(f"Last-block CID ({deciding}, mean over images): "
                + ", ".join(f"ResNet-{d} {v:.4f}" for d, v in last_means.items()) + " nats. Not deciding: "
                + "; ".join(f"{est}: {v.summary()}" for est, v in others.items())
                + ". RU at the last stage (classifiers, " + f"{n_ru} images, weak decoders): "
                + ", ".join(f"{float(ru_last[('classification', d)]):.3f}" for d in depths) + " nats."))


def autoencoder_last_layers(cid_df: pd.DataFrame, tol: float) -> pd.DataFrame:
    """The auto-encoders' per-image rows at their last measured layer, maps off the constraint
    (``|r - 1| > tol``) left out, with the CID as ``cid``."""
    ae_rows = cid_df[cid_df.task == "auto-encoder"]
    ae_ok = on_constraint(ae_rows.constraint, tol)
    return lc.last_block(ae_rows[ae_ok].assign(cid=lambda f: f.value))


def deeper_autoencoders_evidence(cid_df: pd.DataFrame, ru_mean: pd.DataFrame, depths: Sequence[int],
                                 setup: Sequence[Condition], *, tol: float, threshold: float, seed: int) -> dict:
    """Claim 2 (deeper auto-encoders discard more): the verdict on the per-image slope of the
    auto-encoders' last-layer CID (``optimize``, part (a)) over depth.

    Args:
        cid_df: part (a)'s per-image rows; ru_mean: part (b)'s per-layer means.
        setup: the auto-encoders' conditions (:func:`autoencoder_setup`).
        tol, threshold, seed: the constraint's tolerance, the slope the claim needs (nats per
            depth step), the bootstrap's seed.

    Returns:
        ``verdict``, ``setup``, ``numbers`` and ``detail`` of :meth:`~deepinfo.book.report.Report.claim`.
    """
    ae_rows = cid_df[cid_df.task == "auto-encoder"]
    ae_last = autoencoder_last_layers(cid_df, tol)
    if len(depths) < 2:
        v_ae = undecidable(_ONE_DEPTH, unit="images")
    else:
        v_ae = decide(lc.slope_over_depth(ae_last, depths).to_numpy(), threshold=threshold, unit="images", seed=seed)
    ae_means = ae_last.groupby("depth").cid.mean()
    ru_last = last_layer_values(ru_mean, "ru")
    return dict(
        verdict=v_ae,
        setup=list(setup) + [constraint_condition(ae_rows.constraint, tol)],
        numbers={**{f"cid_last_ae_resnet{d}": float(v) for d, v in ae_means.items()},
                 **{f"ru_last_ae_resnet{d}": float(ru_last[("auto-encoder", d)]) for d in depths}},
        detail="Last-layer CID of the auto-encoders (optimize, mean over images): "
               + ", ".join(f"ResNet-{d} {v:.4f}" for d, v in ae_means.items()) + " nats.")


def per_image_curve_correlation(cid_df: pd.DataFrame, depths: Sequence[int], tol: float) -> list[float]:
    """Per image, the Pearson correlation over the layers of the classifier's and the auto-encoder's
    CID curve, averaged over the depths.

    Maps off the constraint are left out first; a depth enters an image's mean when both curves
    share at least 3 layers and their correlation is finite. Images with no such depth are left
    out. Returns the means in image order.
    """
    both = cid_df[on_constraint(cid_df.constraint, tol)]
    per_image_r = []
    for image, g in both.groupby("image"):
        rs = []
        for d in depths:
            c = g[(g.depth == d) & (g.task == "classification")].set_index("layer").value
            a = g[(g.depth == d) & (g.task == "auto-encoder")].set_index("layer").value
            common = c.index.intersection(a.index)
            if len(common) >= 3:
                rs.append(correlation(c[common], a[common], "pearson"))
        rs = [r for r in rs if np.isfinite(r)]
        if rs:
            per_image_r.append(float(np.mean(rs)))
    return per_image_r


def similar_curves_evidence(cid_df: pd.DataFrame, cid_mean: pd.DataFrame, ru_mean: pd.DataFrame,
                            depths: Sequence[int], setup: Sequence[Condition], *, n_layers: int, tol: float,
                            threshold: float, seed: int) -> dict:
    """Claim 3 (classification and AE curves are similar): the verdict on the per-image curve
    correlation (:func:`per_image_curve_correlation`), undecidable below 3 measured layers; the
    correlations of the mean CID and RU curves (:func:`curve_similarity`) are kept beside it.

    Args:
        cid_df: part (a)'s per-image rows; cid_mean, ru_mean: parts (a) and (b)'s per-layer means.
        setup: the classifiers' and the auto-encoders' conditions.
        n_layers: the fewest measured layers of a network (:func:`fewest_layers`).
        tol, threshold, seed: the constraint's tolerance, the correlation the claim needs, the
            bootstrap's seed.

    Returns:
        ``verdict``, ``setup``, ``numbers`` and ``detail`` of :meth:`~deepinfo.book.report.Report.claim`.
    """
    similarity = curve_similarity(cid_mean, "cid", depths, same_layers=True)
    ru_similarity = curve_similarity(ru_mean, "ru", depths)
    per_image_r = per_image_curve_correlation(cid_df, depths, tol)
    if n_layers < 3 or not per_image_r:
        v_sim = undecidable(f"only {n_layers} measured layers per network: a correlation of curves needs at least 3",
                            unit="images", threshold=threshold)
    else:
        v_sim = decide(per_image_r, threshold=threshold, unit="images", seed=seed)
    return dict(
        verdict=v_sim,
        setup=list(setup) + [constraint_condition(cid_df.constraint, tol)],
        numbers={**{f"pearson_cid_mean_curves_resnet{d}": similarity[d] for d in depths},
                 **{f"pearson_ru_mean_curves_resnet{d}": ru_similarity[d] for d in depths}, "n_layers": n_layers},
        detail="Pearson r of the mean curves (not deciding): "
               + ", ".join(f"ResNet-{d} {similarity[d]:.2f}" for d in depths)
               + f" over {n_layers} layers; RU curves " + ", ".join(f"{ru_similarity[d]:.2f}" for d in depths) + ".")


def per_image_block_slope(slopes: pd.DataFrame, deciding: str, beta: float, n_networks: int) -> pd.Series:
    """Per image, the slope of CID over the blocks (nats per block) in regime ``deciding`` at
    ``beta``, averaged over the networks; only images with a slope in all ``n_networks``."""
    s = at_beta(slopes[slopes.estimator == deciding], beta)
    return s.groupby("image").slope.mean()[s.groupby("image").network.nunique() == n_networks]


def rising_blocks_evidence(slopes: pd.DataFrame, regimes: pd.DataFrame, trends: pd.DataFrame, depths: Sequence[int],
                           setup: Sequence[Condition], *, deciding: str, beta: float, n_layers: int, tol: float,
                           threshold: float, seed: int) -> dict:
    """Claim 4 (CID rises along the blocks): the verdict on the per-image slope over blocks in the
    regime ``deciding`` (:func:`per_image_block_slope`), undecidable below 3 measured layers; every
    regime's mean slope per network (the table ``regime_trends`` at ``beta``) is kept beside it.

    Args:
        slopes, regimes, trends: section (d)'s slopes, per-image rows and trend table.
        setup: the classifiers' conditions.
        deciding: the regime that decides; beta: the paper's beta.
        n_layers: the fewest measured layers of a network.
        tol, threshold, seed: the constraint's tolerance, the slope the claim needs (nats per
            block), the bootstrap's seed.

    Returns:
        ``verdict``, ``setup``, ``numbers`` and ``detail`` of :meth:`~deepinfo.book.report.Report.claim`.
    """
    per_image_blocks = per_image_block_slope(slopes, deciding, beta, len(depths))
    if n_layers < 3:
        v_blocks = undecidable(f"only {n_layers} measured layers per network: a slope over blocks needs at least 3",
                               unit="images")
    else:
        v_blocks = decide(per_image_blocks.to_numpy(), threshold=threshold, unit="images", seed=seed)
    at = at_beta(trends, beta)
    return dict(
        verdict=v_blocks,
        setup=list(setup) + [constraint_condition(at_beta(regimes[regimes.estimator == deciding], beta).r, tol)],
        numbers={f"slope_{r.estimator}_{r.network}": r["slope (nats/block)"] for _, r in at.iterrows()},
        detail="Per network and regime (mean slope, nats per block): "
               + "; ".join(f"{r.network} {r.estimator} {r['slope (nats/block)']:+.4f}" for _, r in at.iterrows()) + ".")


def concentration_gain_per_image(conc_df: pd.DataFrame, tol: float) -> pd.Series:
    """Per image, the last measured layer's concentration minus the first's, averaged over the
    networks (nats).

    A network's difference counts for an image when both maps met the constraint
    (``|r - 1| <= tol``); images missing a network's difference are left out.
    """
    conc_ok = conc_df.assign(ok=on_constraint(conc_df.constraint, tol))
    ends = []
    for arch, g in conc_ok.groupby("network"):
        lo_i, hi_i = g.layer_index.min(), g.layer_index.max()
        a = g[g.layer_index == lo_i].set_index("image")
        b = g[g.layer_index == hi_i].set_index("image")
        good = a.ok & b.ok
        ends.append((b.concentration - a.concentration)[good].rename(arch))
    return pd.concat(ends, axis=1).dropna().mean(axis=1)


def bird_setup(conc_mean: pd.DataFrame, archs: Sequence[str], paper: float, *, fraction: float) -> list[Condition]:
    """One accuracy condition per bird classifier: met when its test accuracy is at least
    ``fraction`` of ``paper`` (the accuracy such fine-tuned nets reach)."""
    cub_acc = conc_mean.groupby("network").accuracy.first()
    return [accuracy_condition(a, float(cub_acc[a]), paper, fraction=fraction,
                               paper_words="ImageNet-pretrained nets fine-tuned on CUB (not reported; 60-80 % typical)")
            for a in archs]


def concentrated_high_layers_evidence(conc_df: pd.DataFrame, conc_mean: pd.DataFrame, archs: Sequence[str], *,
                                      paper: float, fraction: float, tol: float, threshold: float, seed: int) -> dict:
    """Claim 5 (high layers are more concentrated): the verdict on the per-image last-minus-first
    concentration (:func:`concentration_gain_per_image`), with each network's mean concentration
    at both ends (:func:`end_layer_concentration`).

    Args:
        conc_df: part (c)'s per-image rows; conc_mean: its per-layer means.
        archs: the bird classifiers, in the profile's order.
        paper, fraction: their accuracy conditions (:func:`bird_setup`).
        tol, threshold, seed: the constraint's tolerance, the gain the claim needs (nats), the
            bootstrap's seed.

    Returns:
        ``verdict``, ``setup``, ``numbers`` and ``detail`` of :meth:`~deepinfo.book.report.Report.claim`.
    """
    gain_per_image = concentration_gain_per_image(conc_df, tol)
    v_conc = decide(gain_per_image.to_numpy(), threshold=threshold, unit="images", seed=seed)
    conc_first, conc_last = end_layer_values(conc_mean)
    return dict(
        verdict=v_conc,
        setup=bird_setup(conc_mean, archs, paper, fraction=fraction) + [constraint_condition(conc_df.constraint, tol)],
        numbers={**{f"concentration_first_{a}": float(conc_first[a]) for a in archs},
                 **{f"concentration_last_{a}": float(conc_last[a]) for a in archs}},
        detail="Mean last minus first per network: "
               + ", ".join(f"{a} {float(conc_last[a] - conc_first[a]):+.3f}" for a in archs) + " nats.")


def bird_data_text(profile: Profile, archs: Sequence[str], n_images: int) -> str:
    """The ``data`` of the concentration claim: bird data, crop, images and networks."""
    return (f"{profile.data.cub.dataset} test set cropped by the {profile.data.cub.concentration_crop} box, "
            f"{n_images} images; {', '.join(archs)} (width {profile.networks.cub.width}, weights "
            f"{profile.networks.cub.weights or 'random init'}, trained here)")

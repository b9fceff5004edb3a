"""The analysis behind ``notebooks/00_validation.ipynb``: the estimator's own checks (SPEC section 2).

The page checks that the CID estimators keep their promises:

* (a) on a linear layer ``h(x) = A x`` both methods recover the closed form
  ``sigma_g^2 = beta mean(W) / W_g`` (:func:`scaled_linear_layer`, :func:`closed_form_cid`,
  :func:`linear_error_frame`, figures :func:`linear_maps_figure`, :func:`linear_scatter_figure`);
* (b) the linear and optimize methods agree on a real network (:func:`timed_methods`,
  :func:`agreement_per_layer`, :func:`per_image_agreement`, figures :func:`maps_overlay_figure`,
  :func:`layer_cid_figure`);
* (c) every optimize map meets the distortion constraint (:func:`constraint_ratios`, figure
  :func:`constraint_ratios_figure`);
* (d) the time per map against the original code's loop (:func:`time_paper_loop`,
  :func:`timing_table`).

The ``*_evidence`` functions return the ``verdict``, ``numbers`` and ``detail`` of the page's three
claims, to be passed to :meth:`deepinfo.book.report.Report.claim` with ``**``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from torch import nn

import deepinfo
from deepinfo._features import ModelGuard
from deepinfo._grid import Grid
from deepinfo.result import InfoMaps
from deepinfo.plotting import overlay
from deepinfo.book.layer_curves import sampled_ratio
from deepinfo.book.verdicts import Condition, combine, constraint_condition, decide, on_constraint, parts_text

#: the constant of a Gaussian's differential entropy, ``0.5 log(2 pi e)`` (nats)
HALF_LOG_2PI_E = 0.5 * math.log(2 * math.pi * math.e)
#: the three estimates of part (b), each with its estimator keywords
NETWORK_METHODS = {"linear": dict(method="linear"), "optimize": dict(method="optimize"),
                   "linear, uncalibrated": dict(method="linear", calibrate=False)}
#: the methods of part (b) in the order of the timing table, the original loop last
TIMED = ("linear", "optimize", "linear, uncalibrated", "paper loop")


def describe_run(profile, x: torch.Tensor) -> str:
    """Two lines on the run: the profile, its images (as many as asked, their shape), torch's version
    and threads; then the estimator's settings."""
    return (f"profile {profile.name}: {profile.estimator.n_images.validation} {profile.data.cifar.dataset} test "
            f"images {tuple(x.shape[1:])}; torch {torch.__version__}, {torch.get_num_threads()} threads\n"
            f"estimator: {deepinfo.Settings.of(profile.estimator)}")


# --- (a) a linear layer with a known answer ----------------------------------------------------

def scaled_linear_layer(grid: Grid, image_shape: tuple[int, int, int], m_out: int,
                        seed: int) -> tuple[nn.Sequential, torch.Tensor]:
    """A bias-free linear layer ``h(x) = A x`` whose columns are scaled per grid cell.

    Each cell draws one factor log-uniformly in ``[0.2, 2]`` and every input unit (pixel and
    channel) of the cell has its column of a standard normal ``A`` multiplied by it, so the
    closed-form map has a spread across cells (a flat map would test nothing).

    Args:
        grid: the estimator's grid on the images.
        image_shape: ``(C, H, W)`` of the images.
        m_out: number of outputs.
        seed: seed of the generator that draws the factors and ``A``.

    Returns:
        ``(layer, A)``: ``nn.Sequential(Flatten, Linear)`` (the linear module is named ``"1"``)
        and its weight ``A`` ``[m_out, C*H*W]``. Building the ``nn.Linear`` draws its default
        initialisation from torch's global generator before ``A`` overwrites it.
    """
    C, H, W = image_shape
    gen = torch.Generator().manual_seed(seed)
    cell_scale = torch.exp(torch.empty(grid.n).uniform_(math.log(0.2), math.log(2.0), generator=gen))
    pixel_scale = cell_scale[grid.index()]  # [H*W], each pixel takes its cell's factor
    A = torch.randn(m_out, C * H * W, generator=gen) * pixel_scale.repeat(C)[None, :]
    linear_layer = nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, m_out, bias=False))
    with torch.no_grad():
        linear_layer[1].weight.copy_(A)
    return linear_layer, A


def closed_form_cid(A: torch.Tensor, grid: Grid, channels: int, beta: float) -> torch.Tensor:
    """The exact CID map of the linear layer ``h(x) = A x`` (SPEC section 2).

    ``W_g = sum_{u in g} ||A_{:,u}||^2`` over the input units of cell ``g`` (all channels of its
    pixels), ``sigma_g^2 = beta mean(W) / W_g`` and ``H_g = 0.5 log sigma_g^2 + 0.5 log(2 pi e)``.

    Args:
        A: ``[m, C*H*W]`` weight, inputs flattened channel-major (as ``nn.Flatten`` of ``[C, H, W]``).
        grid: the grid of the ``H x W`` image.
        channels: ``C``.
        beta: the relative distortion.

    Returns:
        ``[G]`` closed-form ``H_g`` per cell, nats.
    """
    per_pixel = A.pow(2).sum(0).reshape(channels, -1).sum(0)
    W_cells = torch.zeros(grid.n).index_add_(0, grid.index(), per_pixel)
    return 0.5 * torch.log(beta * W_cells.mean() / W_cells) + HALF_LOG_2PI_E


def probe_error_sd(grid: Grid, channels: int, n_probes: int) -> float:
    """Expected error (nats per cell) of the linear method's random-probe estimate of ``W_g``.

    About ``0.5 sqrt(2 / (K n_g))`` for ``K`` probes and ``n_g`` input units per cell (the smallest
    cell's count), with nearly orthogonal columns.
    """
    units_per_cell = channels * int(grid.pixel_counts().min())
    return 0.5 * math.sqrt(2 / (n_probes * units_per_cell))


def describe_closed_form(closed: torch.Tensor, grid: Grid, channels: int, n_probes: int) -> str:
    """One line on the closed-form map: its cells, range and spread (nats), and the expected probe
    error of the linear method (:func:`probe_error_sd`)."""
    return (f"closed form: {grid.n} cells, H_g from {closed.min():.2f} to {closed.max():.2f} nats "
            f"(sd {closed.std():.2f}); expected probe error of the linear method "
            f"~{probe_error_sd(grid, channels, n_probes):.3f} nats per cell")


def linear_runs(m_out: int, flat_start: Mapping[str, object]) -> dict[str, dict]:
    """The estimator runs on the linear layer, by name, with their keywords.

    The linear method with the profile's probes and with ``m_out`` probes (then ``W_g`` is exact),
    the optimize method as the package runs it, from a flat start with the long schedule
    ``flat_start``, and from a flat start with the profile's schedule (shown, not judged).
    """
    return {
        "linear": dict(method="linear"),
        "linear, exact probes": dict(method="linear", n_probes=m_out),
        "optimize": dict(method="optimize"),
        "optimize, flat start (long)": dict(method="optimize", **flat_start),
        "optimize, flat start (profile schedule)": dict(method="optimize", init="constant"),
    }


def measure_runs(layer: nn.Module, x: torch.Tensor, runs: Mapping[str, dict], *, seed: int,
                 settings) -> dict[str, InfoMaps]:
    """``deepinfo.cid`` of module ``"1"`` of ``layer`` on ``x``, once per run (in the runs' order)."""
    return {name: deepinfo.cid(layer, x, "1", seed=seed, progress=True, settings=settings, **extra)
            for name, extra in runs.items()}


def linear_error_frame(maps: Mapping[str, InfoMaps], closed: torch.Tensor,
                       tolerances: Mapping[str, float]) -> pd.DataFrame:
    """Each run's error against the closed form, one row per (run, image).

    Args:
        maps: per run, the maps of the single linear layer ``[1, B, Gh, Gw]``.
        closed: ``[G]`` closed-form ``H_g`` (nats).
        tolerances: the runs the rule judges, with their tolerance (nats).

    Returns:
        Columns ``run``, ``image``, ``mean_abs_error``, ``max_abs_error``, ``mean_error`` (over the
        cells, nats), ``corr_with_closed_form`` (Pearson over the cells), ``ratio_r`` (achieved
        distortion ratio), ``in_rule`` and ``tolerance`` (NaN for a run outside the rule).
    """
    rows = []
    for name, m in maps.items():
        B = m.pixelwise.shape[1]
        err = m.pixelwise[0].reshape(B, -1) - closed
        for b in range(B):
            rows.append({"run": name, "image": b, "mean_abs_error": float(err[b].abs().mean()),
                         "max_abs_error": float(err[b].abs().max()), "mean_error": float(err[b].mean()),
                         "corr_with_closed_form": float(np.corrcoef(m.pixelwise[0, b].flatten(), closed)[0, 1]),
                         "ratio_r": float(m.constraint[0, b]), "in_rule": name in tolerances,
                         "tolerance": tolerances.get(name, float("nan"))})
    return pd.DataFrame(rows)


def linear_summary(linear_df: pd.DataFrame) -> pd.DataFrame:
    """Per run (index, in the frame's order): ``mean_abs_error`` (mean over images), ``worst_image``
    (largest per-image mean error), ``max_abs_error`` (largest cell error), ``bias`` (mean signed
    error), ``corr`` (smallest per-image correlation), ``tolerance``, ``in_rule``."""
    return (linear_df.groupby("run", sort=False)
            .agg(mean_abs_error=("mean_abs_error", "mean"), worst_image=("mean_abs_error", "max"),
                 max_abs_error=("max_abs_error", "max"), bias=("mean_error", "mean"),
                 corr=("corr_with_closed_form", "min"), tolerance=("tolerance", "first"),
                 in_rule=("in_rule", "first")))


def worst_errors(linear_df: pd.DataFrame, runs: Sequence[str]) -> dict[str, float]:
    """Per run of ``runs``: the worst image's mean absolute error against the closed form (nats)."""
    return {name: float(linear_df[linear_df.run == name].mean_abs_error.max()) for name in runs}


def mean_error(linear_df: pd.DataFrame, run: str) -> float:
    """One run's mean over images of the per-image mean absolute error (nats)."""
    return float(linear_df[linear_df.run == run].mean_abs_error.mean())


def linear_maps_figure(closed: torch.Tensor, maps: Mapping[str, InfoMaps]):
    """Figure ``linear_layer_maps``: the closed-form map and each run's map of the first image.

    One colour scale for all panels (2 x 3 grid: the closed form, then the runs in order).
    """
    Gh, Gw = next(iter(maps.values())).pixelwise.shape[-2:]
    panels = [("closed form", closed.reshape(Gh, Gw))] + [(n, m.pixelwise[0, 0]) for n, m in maps.items()]
    vmin = min(float(p.min()) for _, p in panels)
    vmax = max(float(p.max()) for _, p in panels)
    fig, axes = plt.subplots(2, 3, figsize=(8, 5.4))
    for ax, (name, pm) in zip(axes.flat, panels):
        im = ax.imshow(pm.numpy(), cmap="magma", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes, fraction=0.03, pad=0.02, label="H_g (nats)")
    return fig


def linear_scatter_figure(closed: torch.Tensor, maps: Mapping[str, InfoMaps]):
    """Figure ``linear_layer_scatter``: every cell of every image, each run's estimate against the
    closed form, with the diagonal (an exact estimate)."""
    B = next(iter(maps.values())).pixelwise.shape[1]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, m in maps.items():
        ax.scatter(closed.repeat(B), m.pixelwise[0].reshape(-1), s=5, alpha=0.5, label=name)
    lims = [float(closed.min()) - 0.2, float(closed.max()) + 0.2]
    ax.plot(lims, lims, color="grey", lw=0.8)
    ax.set_xlabel("closed-form H_g (nats)")
    ax.set_ylabel("estimated H_g (nats)")
    ax.set_title(f"linear layer: {closed.numel()} cells x {B} images")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


# --- (b) linear and optimize on a real network -------------------------------------------------

def timed_methods(model: nn.Module, x: torch.Tensor, layers: Sequence[str], *, seed: int,
                  settings) -> tuple[dict[str, InfoMaps], dict[str, float]]:
    """The maps of each method of :data:`NETWORK_METHODS` on all images and layers, timed.

    A warm-up call (one image, one layer, linear method) comes first: first-call overheads are
    not the estimators' cost.

    Returns:
        ``(maps, seconds)``: per method its maps and the wall-clock seconds of its call.
    """
    deepinfo.cid(model, x[:1], layers[:1], seed=seed, progress=False, settings=settings, method="linear")
    net_maps, seconds = {}, {}
    for name, extra in NETWORK_METHODS.items():
        start = time.perf_counter()
        net_maps[name] = deepinfo.cid(model, x, layers, seed=seed, progress=True, settings=settings, **extra)
        seconds[name] = time.perf_counter() - start
    return net_maps, seconds


def methods_frame(maps: Mapping[str, InfoMaps], network: str) -> pd.DataFrame:
    """``InfoMaps.to_frame`` of each method stacked, with a ``method`` column and a first column
    ``network``: one row per (method, layer, image)."""
    frames = []
    for name, m in maps.items():
        df = m.to_frame()
        df["method"] = name
        frames.append(df)
    net_df = pd.concat(frames, ignore_index=True)
    net_df.insert(0, "network", network)
    return net_df


def _map_corr(lin: InfoMaps, opt: InfoMaps, li: int, b: int) -> float:
    """Pearson correlation of two methods' maps of layer ``li`` and image ``b`` over the cells."""
    return float(np.corrcoef(lin.pixelwise[li, b].flatten(), opt.pixelwise[li, b].flatten())[0, 1])


def agreement_per_layer(maps: Mapping[str, InfoMaps], layers: Sequence[str]) -> pd.DataFrame:
    """How far the linear and optimize methods are apart, per layer (every image, no map left out).

    Args:
        maps: per method its maps; uses ``"linear"`` and ``"optimize"``.
        layers: the maps' layer names.

    Returns:
        One row per layer: ``layer``, ``cid_linear`` and ``cid_optimize`` (layer CID, mean over
        images, nats), ``mean_abs_gap`` and ``max_abs_gap`` (over images of ``|CID_lin - CID_opt|``,
        nats), ``mean_map_corr`` and ``min_map_corr`` (over images of the maps' Pearson correlation).
    """
    lin, opt = maps["linear"], maps["optimize"]
    B = lin.pixelwise.shape[1]
    agree = []
    for li, layer in enumerate(layers):
        corr = [_map_corr(lin, opt, li, b) for b in range(B)]
        gap = (lin.mean()[li] - opt.mean()[li]).abs()
        agree.append({"layer": layer, "cid_linear": float(lin.mean()[li].mean()),
                      "cid_optimize": float(opt.mean()[li].mean()),
                      "mean_abs_gap": float(gap.mean()), "max_abs_gap": float(gap.max()),
                      "mean_map_corr": float(np.mean(corr)), "min_map_corr": float(np.min(corr))})
    return pd.DataFrame(agree)


def maps_overlay_figure(x: torch.Tensor, maps: Mapping[str, InfoMaps], layers: Sequence[str]):
    """Figure ``maps_linear_vs_optimize``: both methods' maps over the first two images, at most six
    evenly spaced layers; one colour scale per layer and image, shared by the two methods."""
    lin, opt = maps["linear"], maps["optimize"]
    B = x.shape[0]
    show_images = list(range(min(2, B)))
    show_layers = sorted({int(i) for i in np.linspace(0, len(layers) - 1, min(len(layers), 6)).round()})
    rows_ = [(b, name) for b in show_images for name in ("linear", "optimize")]
    fig, axes = plt.subplots(len(rows_), len(show_layers) + 1,
                             figsize=(1.9 * (len(show_layers) + 1), 1.9 * len(rows_)), squeeze=False)
    for r, (b, name) in enumerate(rows_):
        axes[r, 0].imshow(x[b].permute(1, 2, 0).numpy())
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
        axes[r, 0].set_ylabel(f"image {b}\n{name}", fontsize=8)
        for c, li in enumerate(show_layers):
            both = torch.stack([lin.pixelwise[li, b], opt.pixelwise[li, b]])
            overlay(x[b], maps[name].pixelwise[li, b], axes[r, c + 1], vmin=float(both.min()),
                    vmax=float(both.max()), title=layers[li] if r == 0 else None)
    fig.suptitle("pixel-wise CID (nats); colour scale per layer and image, shared by both methods", fontsize=9)
    fig.tight_layout()
    return fig


def layer_cid_figure(net_df: pd.DataFrame, layers: Sequence[str], depth: int, n_images: int):
    """Figure ``layer_cid_linear_vs_optimize``: layer CID of both methods, mean over images with a
    band of one standard deviation."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    curve = net_df[net_df.method.isin(["linear", "optimize"])]
    sns.lineplot(curve, x="layer_index", y="value", hue="method", style="method", markers=True, errorbar="sd", ax=ax)
    ax.set_xticks(range(len(layers)), layers, rotation=45 if len(layers) > 4 else 0, fontsize=8)
    ax.set_xlabel(f"layer of ResNet-{depth}")
    ax.set_ylabel("CID (nats)")
    ax.set_title(f"layer CID, {n_images} images")
    fig.tight_layout()
    return fig


# --- (c) + (d) the constraint, and the original code's loop ------------------------------------

def time_paper_loop(model: nn.Module, x: torch.Tensor, layers: Sequence[str], loop: Callable, estimator, *,
                    n_images: int, seed: int) -> tuple[dict[tuple[int, int], tuple], float]:
    """The original code's loop on the first ``n_images`` images at every layer, timed.

    Runs with the model in eval mode and frozen weights (as deepinfo's methods run it).

    Args:
        estimator: the profile's estimator settings (its ``beta`` and ``grid`` are used).
        loop: ``loop(model, x[b:b+1], layer, beta=, grid=, seed=) -> (cid_map, log_sigma)``
            (``benchmarks/paper_loop.py``'s ``paper_loop_cid``).

    Returns:
        ``(loops, seconds)``: per ``(layer_index, image)`` the loop's ``(cid_map, log_sigma)``, and the
        wall-clock seconds of all of them.
    """
    loops = {}
    with ModelGuard(model):
        start = time.perf_counter()
        for b in range(n_images):
            for li, layer in enumerate(layers):
                loops[(li, b)] = loop(model, x[b:b + 1], layer, beta=estimator.beta, grid=estimator.grid, seed=seed)
        seconds = time.perf_counter() - start
    return loops, seconds


def paper_loop_frame(model: nn.Module, x: torch.Tensor, layers: Sequence[str], loops: Mapping[tuple[int, int], tuple],
                     maps: Mapping[str, InfoMaps], estimator, *, seed: int, network: str) -> pd.DataFrame:
    """The original loop's maps against the optimize method's, one row per (layer, image).

    Its achieved ratio is measured by :func:`deepinfo.book.layer_curves.sampled_ratio` against the
    optimize maps' ``delta_f^2``, the estimate deepinfo's own ratios use.

    Args:
        loops: :func:`time_paper_loop`'s maps.
        maps: per method its maps of the same images and layers; uses ``"optimize"``.
        estimator: the profile's estimator settings (its ``beta`` and ``grid`` are used).

    Returns:
        Columns ``network``, ``method`` (``"paper loop"``), ``layer``, ``layer_index``, ``image``,
        ``value`` (layer CID, nats), ``constraint`` and ``constraint_se`` (achieved ratio and its
        standard error), ``corr_with_optimize`` (Pearson over the cells), ``cid_optimize`` (nats).
    """
    opt = maps["optimize"]
    rows = []
    for (li, b), (cid_map, log_sigma) in loops.items():
        r, se = sampled_ratio(model, layers[li], x[b], log_sigma, float(opt.delta_f2[li, b]), estimator.beta,
                              estimator.grid, seed=seed)
        rows.append({"network": network, "method": "paper loop", "layer": layers[li], "layer_index": li,
                     "image": b, "value": float(cid_map.mean()), "constraint": r, "constraint_se": se,
                     "corr_with_optimize": float(np.corrcoef(cid_map.flatten(), opt.pixelwise[li, b].flatten())[0, 1]),
                     "cid_optimize": float(opt.mean()[li, b])})
    return pd.DataFrame(rows)


def constraint_ratios(linear_df: pd.DataFrame, net_df: pd.DataFrame, paper_df: pd.DataFrame, network: str,
                      tol: float) -> pd.DataFrame:
    """Every achieved ratio of the page, one row per map.

    Returns:
        Columns ``setting`` (``"linear layer"`` or ``network``), ``method`` (the run or method),
        ``ratio_r`` and ``within_tol`` (``|r - 1| <= tol``).
    """
    ratios = pd.concat([
        linear_df.assign(setting="linear layer", method=linear_df.run)[["setting", "method", "ratio_r"]],
        net_df.assign(setting=network, ratio_r=net_df.constraint)[["setting", "method", "ratio_r"]],
        paper_df.assign(setting=network, ratio_r=paper_df.constraint)[["setting", "method", "ratio_r"]],
    ], ignore_index=True)
    ratios["within_tol"] = (ratios.ratio_r - 1).abs() <= tol
    return ratios


def ratio_summary(ratios: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, method), in the frame's order: ``n`` maps, ``within_tol`` (how many within the
    tolerance), ``r_min``, ``r_max``, ``r_median``."""
    return (ratios.groupby(["setting", "method"], sort=False)
            .agg(n=("ratio_r", "size"), within_tol=("within_tol", "sum"), r_min=("ratio_r", "min"),
                 r_max=("ratio_r", "max"), r_median=("ratio_r", "median")).reset_index())


def constraint_ratios_figure(ratios: pd.DataFrame, tol: float):
    """Figure ``constraint_ratios``: every achieved ratio per (setting, method), log scale, with the
    band of the tolerance around r = 1."""
    n_rows = len(ratio_summary(ratios))
    ratios = ratios.assign(label=ratios.setting + ": " + ratios.method)
    fig, ax = plt.subplots(figsize=(8, 0.45 * n_rows + 1.2))
    ax.axvspan(1 - tol, 1 + tol, color="tab:green", alpha=0.15, label=f"within {tol:.0%}")
    ax.axvline(1, color="grey", lw=0.8)
    sns.stripplot(ratios, x="ratio_r", y="label", hue="setting", jitter=0.25, size=4, ax=ax, legend=False)
    ax.set_xscale("log")
    ax.set_xlabel("achieved ratio r = E||f'-f||^2 / (beta delta_f^2), log scale")
    ax.set_ylabel("")
    ax.set_title("every (layer, image): the constraint asks for r = 1")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def optimize_ratios(ratios: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`constraint_ratios` of every optimize run (method name starting ``optimize``)."""
    return ratios[ratios.method.str.startswith("optimize")]


def timing_table(seconds: Mapping[str, float], n_layers: int, n_images: int, paper_images: int,
                 threads: int) -> pd.DataFrame:
    """Seconds per map (one layer of one image) of each method of :data:`TIMED`.

    deepinfo's methods made ``n_layers * n_images`` maps per call, the original loop
    ``n_layers * paper_images``.

    Returns:
        Columns ``method``, ``maps``, ``seconds``, ``seconds_per_map``, ``speed_up_vs_paper_loop``
        (the loop's seconds per map over the method's), ``threads``.
    """
    n_maps = {k: n_layers * n_images for k in TIMED[:-1]} | {"paper loop": n_layers * paper_images}
    timing = pd.DataFrame([{"method": k, "maps": n_maps[k], "seconds": seconds[k],
                            "seconds_per_map": seconds[k] / n_maps[k]} for k in TIMED])
    timing["speed_up_vs_paper_loop"] = timing.seconds_per_map.iloc[-1] / timing.seconds_per_map
    timing["threads"] = threads
    return timing


def range_text(values, fmt: str) -> str:
    """``"<min> to <max>"`` of ``values`` (array, tensor or Series), each formatted by ``fmt``."""
    return f"{fmt.format(values.min())} to {fmt.format(values.max())}"


# --- the claims --------------------------------------------------------------------------------

def data_text(profile, depth: int, layers: Sequence[str], n_images: int, m_out: int, paper_images: int) -> str:
    """The claims' ``data``: the linear layer, the ResNet and its layers, the images, the loop's images."""
    return (f"a linear layer (m = {m_out}) and ResNet-{depth} ({profile.networks.cifar.weights} weights, layers "
            f"{', '.join(layers)}) on {n_images} {profile.data.cifar.dataset} test images; original loop on "
            f"{paper_images} image")


def closed_form_evidence(linear_df: pd.DataFrame, tolerances: Mapping[str, float],
                         flat_start: Mapping[str, object]) -> dict:
    """Claim (a): each judged run's per-image mean absolute error below its tolerance.

    One part per run of ``tolerances`` (unit: images, side ``"less"``), combined (every part must hold).

    Returns:
        ``{"verdict", "numbers", "detail"}``: numbers ``worst_mean_abs_error[<run>]`` and
        ``mean_abs_error[<run>]`` (nats).
    """
    parts = {name: decide(linear_df[linear_df.run == name].mean_abs_error, threshold=tol, side="less", unit="images")
             for name, tol in tolerances.items()}
    verdict, detail = combine(parts), parts_text(parts)
    worst = worst_errors(linear_df, tolerances)
    return dict(
        verdict=verdict,
        numbers={**{f"worst_mean_abs_error[{k}]": v for k, v in worst.items()},
                 **{f"mean_abs_error[{k}]": parts[k].effect for k in parts}},
        detail=f"Per image, the mean over cells of |H_g - closed form| (nats). {detail} Flat start: "
               f"{flat_start['steps']} steps of {flat_start['draws']} draws, lr {flat_start['lr']}. Worst image: "
               + ", ".join(f"{k} {v:.4f}" for k, v in worst.items()) + " nats.")


def constraint_evidence(opt_ratios: pd.DataFrame, min_share: float, tol: float) -> dict:
    """Claim (c): the share of optimize maps with ``|r - 1| <= tol`` above ``min_share`` (unit: maps).

    Args:
        opt_ratios: :func:`optimize_ratios`.

    Returns:
        ``{"verdict", "numbers", "detail"}``; the detail counts the maps within per (setting, run).
    """
    n_opt, n_opt_ok = len(opt_ratios), int(opt_ratios.within_tol.sum())
    within = opt_ratios.within_tol.to_numpy(dtype=float)  # one value per optimize map: 1 if |r - 1| <= tol
    verdict = decide(within, threshold=min_share, side="greater", unit="maps")
    per_setting = opt_ratios.groupby(["setting", "method"], sort=False).within_tol.agg(["sum", "size"])
    return dict(
        verdict=verdict,
        numbers={"n_optimize_ratios": n_opt, "n_within_tol": n_opt_ok, "r_min": float(opt_ratios.ratio_r.min()),
                 "r_max": float(opt_ratios.ratio_r.max()), "tol": tol},
        detail=f"Effect: the share of optimize maps with |r - 1| <= {tol}. {n_opt_ok} of {n_opt} were; r ranged from "
               f"{opt_ratios.ratio_r.min():.3f} to {opt_ratios.ratio_r.max():.3f}. Per run: "
               + "; ".join(f"{s}, {m}: {int(r['sum'])} of {int(r['size'])}" for (s, m), r in per_setting.iterrows())
               + ".")


def per_image_agreement(lin: InfoMaps, opt: InfoMaps, tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Claim (b)'s units: per image, the worst layer among the maps both methods made on the constraint.

    Returns:
        ``(gap, corr, kept)``: ``gap`` ``[B]`` the largest over kept layers of ``|CID_lin - CID_opt|``
        (nats), ``corr`` ``[B]`` the smallest over kept layers of the maps' Pearson correlation (both
        NaN for an image with no kept layer), ``kept`` ``[L, B]`` both maps within ``tol`` of r = 1.
    """
    L, B = lin.constraint.shape
    lin_r, opt_r = lin.constraint.numpy(), opt.constraint.numpy()  # [L, B]
    kept = on_constraint(lin_r, tol) & on_constraint(opt_r, tol)
    gap_lb = (lin.mean() - opt.mean()).abs().numpy()
    corr_lb = np.array([[_map_corr(lin, opt, li, b) for b in range(B)] for li in range(L)])
    gap_img = np.array([gap_lb[kept[:, b], b].max() if kept[:, b].any() else np.nan for b in range(B)])
    corr_img = np.array([corr_lb[kept[:, b], b].min() if kept[:, b].any() else np.nan for b in range(B)])
    return gap_img, corr_img, kept


def worst_pair_ratio(lin: InfoMaps, opt: InfoMaps) -> np.ndarray:
    """``[L, B]``: of the two methods' achieved ratios for each (layer, image), the one farther from 1."""
    lin_r, opt_r = lin.constraint.numpy(), opt.constraint.numpy()
    return np.where(np.abs(lin_r - 1) > np.abs(opt_r - 1), lin_r, opt_r)


def agreement_conditions(maps: Mapping[str, InfoMaps], profile, depth: int, accuracy: float) -> list[Condition]:
    """Claim (b)'s setup besides the page's own: the network, and its maps on the constraint.

    Args:
        maps: per method its maps; uses ``"linear"`` and ``"optimize"``.
        profile: the run's profile (its CIFAR weights and ``estimator.tol``).
        depth, accuracy: the ResNet's depth and test accuracy (in [0, 1]).

    Returns:
        ``[network, maps on the constraint]``: the network condition is always met (any network will
        do); the constraint condition counts, per (layer, image), the map of the pair farther from
        r = 1 (:func:`worst_pair_ratio`).
    """
    network = Condition("network", True, f"ResNet-{depth}, {profile.networks.cifar.weights} weights, test accuracy "
                        f"{accuracy:.1%}; any network will do (a check of the estimators, not of "
                        f"the paper)")
    return [network, constraint_condition(worst_pair_ratio(maps["linear"], maps["optimize"]), profile.estimator.tol)]


def agreement_evidence(maps: Mapping[str, InfoMaps], agree_df: pd.DataFrame, tol: float, gap_threshold: float,
                       corr_threshold: float) -> dict:
    """Claim (b): per image, the worst layer's CID gap below ``gap_threshold`` and its map correlation
    above ``corr_threshold`` (unit: images; maps off the constraint left out, see :func:`per_image_agreement`).

    Args:
        maps: per method its maps; uses ``"linear"`` and ``"optimize"``.
        agree_df: :func:`agreement_per_layer`, for the per-layer numbers of the detail.

    Returns:
        ``{"verdict", "numbers", "detail"}``.
    """
    gap_img, corr_img, kept = per_image_agreement(maps["linear"], maps["optimize"], tol)
    none_kept = "no (layer, image) map of this run met the constraint with both methods"
    parts = {"layer CID gap (nats)": decide(gap_img, if_none=none_kept, threshold=gap_threshold, side="less",
                                            unit="images"),
             "map correlation": decide(corr_img, if_none=none_kept, threshold=corr_threshold, side="greater",
                                       unit="images")}
    verdict, detail = combine(parts), parts_text(parts)
    L, B = kept.shape
    return dict(
        verdict=verdict,
        numbers={"max_layer_mean_abs_gap": float(agree_df.mean_abs_gap.max()),
                 "min_layer_mean_map_corr": float(agree_df.mean_map_corr.min()), "n_layers": L,
                 "n_images": B, "n_maps_left_out": int((~kept).sum())},
        detail=f"Per image, the worst measured layer (largest |gap|, smallest correlation) among the maps on the "
               f"constraint ({int(kept.sum())} of {kept.size} (layer, image) pairs). {detail} Per layer, mean |gap|: "
               + ", ".join(f"{r.layer} {r.mean_abs_gap:.3f}" for r in agree_df.itertuples())
               + "; mean correlation: " + ", ".join(f"{r.layer} {r.mean_map_corr:.2f}" for r in agree_df.itertuples())
               + ".")

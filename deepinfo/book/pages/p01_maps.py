"""The analysis behind book page ``01_maps``: pixel-wise CID and RU across layers, beside CAM,
Grad-CAM and Gradient (the paper's Fig. 1(b), Fig. 4 and Appendices G, H and I).

The notebook measures the maps (``deepinfo.cid``, ``deepinfo.ru``) and decides the claims; the
functions here load its two networks, turn maps and attribution maps into the page's tables
(``layer_values``, ``per_layer``, ``baseline_magnitudes``, ``layer_spread``, ``per_image_rises``),
draw its figures, and build the per-image rises and setup conditions its two verdicts rest on.

A network of the page is a ``dict`` (``nets[name]``) filled in page order: ``trained``, ``arch``,
``data``, ``train``, ``test``, ``shown`` (:func:`load_networks`), ``x``, ``labels``, ``masks``,
``layers``, ``ru_layers``, ``spatial``, ``accuracy`` (:func:`load_networks`), then ``cid``,
``decoders``, ``decoder_mse``, ``pixel_variance``, ``ru`` and ``baselines`` (the notebook).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from deepinfo._features import features
from deepinfo.attribution.baselines import attribute
from deepinfo.decoder import pixel_variance, reconstruction_mse
from deepinfo.estimators import concentration, morans_i
from deepinfo.models import evenly_spaced
from deepinfo.plotting import plot_baselines, plot_layers
from deepinfo.result import InfoMaps
from deepinfo.toolkit.profile import Profile
from deepinfo.book import experiments as E
from deepinfo.book import layer_curves as lc
from deepinfo.book.verdicts import (Condition, Verdict, accuracy_condition, constraint_condition, decide,
                                    reconstruction_condition)

__all__ = ["load_networks", "network_overview", "layer_maps_figure", "decoders_and_errors", "baseline_maps",
           "baseline_magnitudes", "baselines_figure", "layer_values", "per_layer_means", "baseline_layer_means",
           "baseline_layer_table", "layer_magnitudes_figure", "layer_spread", "layer_rises", "setup_conditions",
           "rise_summary", "rise_numbers", "data_text"]


# --- networks, images and layers ---------------------------------------------------------------

def load_networks(profile: Profile, cub_arch: str, depth: int, n_images: int, max_columns: int,
                  ru_columns: int) -> dict[str, dict]:
    """The page's two networks (the CUB ``cub_arch`` and the CIFAR ResNet of ``depth``), each with
    its images and the layers the page measures.

    Args:
        profile: the run's profile.
        cub_arch: the CUB network's architecture (the paper's VGG-16).
        depth: the CIFAR ResNet's depth.
        n_images: images measured per network (drawn with the profile's seed; with object masks,
            only images with both a foreground and a background cell).
        max_columns: at most this many CID layers, evenly spaced from the first to the last.
        ru_columns: at most this many RU layers, evenly spaced over the layers with decoders.

    Returns:
        ``{name: net}``, names ``cub_arch`` and ``"resnet<depth>"``; each ``net`` holds ``trained``,
        ``arch``, ``data`` (words), ``train``, ``test``, ``shown`` (data sets), ``x`` ``[B, C, H, W]``,
        ``labels``, ``masks`` (``[B, H, W]`` or None), ``layers``, ``ru_layers``, ``spatial`` (the
        layers whose output has more than one spatial cell) and ``accuracy`` (test, in [0, 1]).
    """
    P = profile
    nets = {
        cub_arch: dict(trained=E.cub_model(P, cub_arch), arch=cub_arch, data=f"CUB ({P.data.cub.dataset})",
                       train=E.cub_data(P, "train"), test=E.cub_data(P, "test"),
                       shown=E.cub_data(P, "test", crop=P.data.cub.concentration_crop)),
        f"resnet{depth}": dict(trained=E.cifar_resnet_model(P, depth), arch=f"resnet{depth}",
                               data=f"CIFAR ({P.data.cifar.dataset})", train=E.cifar_data(P, "train"),
                               test=E.cifar_data(P, "test"), shown=E.cifar_data(P, "test")),
    }
    for name, net in nets.items():
        model = net["trained"].model
        net["x"], net["labels"], net["masks"] = E.measured_images(P, net["shown"], n_images)
        net["layers"] = evenly_spaced(E.layers_for(P, net["arch"], model), max_columns)
        net["ru_layers"] = evenly_spaced(E.decoder_layers(P, model, net["layers"]), ru_columns)
        shapes = {n: tuple(f.shape) for n, f in features(model, net["x"][:1], net["layers"]).items()}
        net["spatial"] = [l for l in net["layers"] if len(shapes[l]) == 4 and shapes[l][2] * shapes[l][3] > 1]
        net["accuracy"] = net["trained"].accuracy(net["test"])
    return nets


def network_overview(nets: Mapping[str, dict]) -> pd.DataFrame:
    """One row per network (the ``networks`` table).

    Args:
        nets: the page's networks (:func:`load_networks`).

    Returns:
        Columns network, data, test_accuracy (in [0, 1]), images, image_size (px), cid_layers and
        ru_layers (comma-separated layer names).
    """
    return pd.DataFrame([dict(network=k, data=v["data"], test_accuracy=v["accuracy"], images=v["x"].shape[0],
                              image_size=v["x"].shape[-1], cid_layers=", ".join(v["layers"]),
                              ru_layers=", ".join(v["ru_layers"])) for k, v in nets.items()])


def layer_maps_figure(maps: InfoMaps, images: torch.Tensor, network: str, data: str) -> Figure:
    """CID or RU maps, one row per image and one column per layer, on one colour scale.

    Args:
        maps: the maps of ``images`` (``maps.kind`` names them in the title).
        images: ``[B, C, H, W]`` in ``[0, 1]``.
        network, data: the network's name and its data in words, for the title.

    Returns:
        The figure (:func:`deepinfo.plotting.plot_layers`, titled).
    """
    fig = plot_layers(maps, images)
    fig.suptitle(f"Pixel-wise {maps.kind.upper()}, {network} ({data}), one colour scale for all layers", y=1.02)
    return fig


# --- RU decoders -------------------------------------------------------------------------------

def decoders_and_errors(profile: Profile, net: Mapping, n_ru: int
                        ) -> tuple[dict[str, nn.Module], dict[str, float], float]:
    """The RU decoder of each of ``net["ru_layers"]`` (trained and cached) and how well they
    reconstruct the first ``n_ru`` images.

    Args:
        profile: the run's profile.
        net: a network of the page (``trained``, ``train``, ``x``, ``ru_layers``).
        n_ru: the images RU is measured on (the first ``n_ru`` of ``net["x"]``).

    Returns:
        ``(decoders, mse, variance)``: ``{layer: decoder}``, ``{layer: test MSE}`` and the pixel
        variance of those images (pixel units squared), the two numbers the setup condition compares.
    """
    decoders = {l: E.trained_decoder(profile, net["trained"], l, net["train"]) for l in net["ru_layers"]}
    mse = {l: reconstruction_mse(net["trained"].model, l, d, net["x"][:n_ru]) for l, d in decoders.items()}
    return decoders, mse, pixel_variance(net["x"][:n_ru])


# --- baselines ---------------------------------------------------------------------------------

def baseline_maps(model: nn.Module, x: torch.Tensor, layers: Sequence[str], spatial: Sequence[str],
                  methods: Sequence[str]) -> dict[tuple[str, str], torch.Tensor]:
    """The baselines' attribution maps at each spatial layer's output.

    CAM is defined at one feature map only: where :func:`attribute` refuses it, that layer is
    skipped (any other method's refusal is raised).

    Args:
        model: the network.
        x: ``[B, C, H, W]`` images.
        layers: the measured layers, in order; only those in ``spatial`` get maps.
        methods: the baselines (``"cam"``, ``"gradcam"``, ``"gradient"`` ...).

    Returns:
        ``{(method, layer): [B, h, w] map}`` (detached), method-major, layers in order.
    """
    maps = {}
    for method in methods:
        for layer in layers:
            if layer not in spatial:
                continue
            try:
                a = attribute(method, model, x, layer=layer)
            except ValueError:
                if method == "cam":  # CAM is defined at one feature map only
                    continue
                raise
            maps[method, layer] = a.detach()
    return maps


def baseline_magnitudes(nets: Mapping[str, dict]) -> pd.DataFrame:
    """Mean ``|map|`` of each baseline map, per image (the ``baseline_magnitudes`` table).

    Args:
        nets: the page's networks, each with ``layers``, ``x`` and ``baselines``
            (:func:`baseline_maps`).

    Returns:
        One row per (network, method, layer, image), in that order: network, method, layer,
        layer_index (position in ``net["layers"]``), image, mean_abs (the raw magnitude, score units
        per unit of the layer's output).
    """
    rows = []
    for name, net in nets.items():
        for (method, layer), a in net["baselines"].items():
            li = list(net["layers"]).index(layer)
            for b in range(net["x"].shape[0]):
                rows.append(dict(network=name, method=method, layer=layer, layer_index=li, image=b,
                                 mean_abs=float(a[b].abs().mean())))
    return pd.DataFrame(rows)


def baselines_figure(net: Mapping, methods: Sequence[str], network: str) -> Figure:
    """The baselines' maps of one network, each panel on its own colour scale.

    Args:
        net: a network of the page with ``x``, ``baselines`` and ``spatial``.
        methods: the profile's baselines; those with no map on this network are left out.
        network: the network's name, for the title.

    Returns:
        The figure (:func:`deepinfo.plotting.plot_baselines`).
    """
    shown = [m for m in methods if any(k[0] == m for k in net["baselines"])]
    return plot_baselines(net["x"], net["baselines"], shown, net["spatial"],
                          f"Baselines at each layer, {network}: each panel on its own scale")


# --- values per layer and image ----------------------------------------------------------------

def layer_values(nets: Mapping[str, dict]) -> pd.DataFrame:
    """Every CID and RU map's layer value, constraint ratio, concentration and Moran's I (the
    ``layer_values`` table).

    Args:
        nets: the page's networks, each with ``cid``, ``ru`` and ``masks`` (None without masks;
            RU may hold fewer images than the masks, the first ones).

    Returns:
        One row per (network, kind, layer, image): network, the columns of
        :meth:`deepinfo.result.InfoMaps.to_frame` (value in nats, constraint ratio r ...),
        relative_depth (layer_index over the last index; 0 with one layer), morans_i (of the
        pixel-wise map), concentration (nats, Eq. 5; NaN without masks).
    """
    frames = []
    for name, net in nets.items():
        for kind in ("cid", "ru"):
            maps = net[kind]
            df = maps.to_frame()  # rows: layer-major, then image
            df.insert(0, "network", name)
            df["relative_depth"] = df.layer_index / max(1, len(maps.layers) - 1)
            df["morans_i"] = morans_i(maps.pixelwise).flatten().numpy()
            masks = None if net["masks"] is None else net["masks"][: maps.pixelwise.shape[1]]  # RU: maybe fewer images
            conc = (concentration(maps, masks) if masks is not None  # [L, B] nats; NaN without masks
                    else torch.full(maps.pixelwise.shape[:2], float("nan")))
            df["concentration"] = conc.flatten().numpy()
            frames.append(df)
    return pd.concat(frames, ignore_index=True)


def per_layer_means(values: pd.DataFrame) -> pd.DataFrame:
    """Means over images per (network, kind, layer) (the ``per_layer`` table).

    Args:
        values: :func:`layer_values`.

    Returns:
        Columns network, kind, layer_index, layer, then the means of value (nats), constraint,
        n_capped, concentration (nats) and morans_i; groups in order of first appearance.
    """
    return (values.groupby(["network", "kind", "layer_index", "layer"], sort=False)
            [["value", "constraint", "n_capped", "concentration", "morans_i"]].mean().reset_index())


def baseline_layer_means(magnitudes: pd.DataFrame) -> pd.DataFrame:
    """The layer means of each baseline's raw magnitude.

    Args:
        magnitudes: :func:`baseline_magnitudes`.

    Returns:
        Columns network, method, layer_index, layer, mean_abs (mean over images); groups in order
        of first appearance.
    """
    return (magnitudes.groupby(["network", "method", "layer_index", "layer"], sort=False).mean_abs.mean()
            .reset_index())


def baseline_layer_table(layer_mag: pd.DataFrame) -> pd.DataFrame:
    """:func:`baseline_layer_means` as one row per (network, layer) and one column per method (the
    ``baseline_layer_means`` table; rows sorted by network, layer_index, layer)."""
    return (layer_mag.pivot_table(index=["network", "layer_index", "layer"], columns="method", values="mean_abs")
            .reset_index())


def layer_magnitudes_figure(nets: Mapping[str, dict], layer_mag: pd.DataFrame, per_layer: pd.DataFrame) -> Figure:
    """The baselines' layer means (log scale) above the layer means of CID and RU (nats).

    Args:
        nets: the page's networks (one column each; ``layers`` labels the baselines' axis).
        layer_mag: :func:`baseline_layer_means`.
        per_layer: :func:`per_layer_means`.

    Returns:
        The figure, rows baselines, CID, RU.
    """
    fig, axes = plt.subplots(3, len(nets), figsize=(5.2 * len(nets), 9.5), squeeze=False)
    for c, (name, net) in enumerate(nets.items()):
        ax = axes[0, c]
        for method, g in layer_mag[layer_mag.network == name].groupby("method", sort=False):
            ax.plot(g.layer_index, g.mean_abs, "o-", label=method)
        ax.set_xticks(range(len(net["layers"])), net["layers"])
        ax.set_yscale("log")
        ax.set_ylabel("mean |map| (raw)")
        ax.set_title(f"{name}: baselines")
        ax.legend(fontsize=8)
        for r, kind in ((1, "cid"), (2, "ru")):
            g = per_layer[(per_layer.network == name) & (per_layer.kind == kind)]
            axes[r, c].plot(g.layer_index, g.value, "o-", color="C3" if kind == "cid" else "C4")
            axes[r, c].set_xticks(list(g.layer_index), list(g.layer))
            axes[r, c].set_ylabel(f"{kind.upper()}, mean over cells (nats)")
            axes[r, c].set_title(f"{name}: {kind.upper()}")
        for ax in axes[:, c]:
            ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    fig.tight_layout()
    return fig


def layer_spread(nets: Mapping[str, dict], layer_mag: pd.DataFrame, per_layer: pd.DataFrame
                 ) -> tuple[pd.DataFrame, dict[str, float]]:
    """How far the layer means spread across layers (an illustration, no verdict).

    A baseline's spread is the largest over the smallest of its layer means (NaN when the
    smallest is not positive; only methods with at least two layers). CID's spread is in nats,
    the largest minus the smallest layer mean, and ``exp`` of it is the factor between the
    geometric-mean noise levels of those two layers (``H = log sigma + const``).

    Args:
        nets: the page's networks (names, in order).
        layer_mag: :func:`baseline_layer_means`.
        per_layer: :func:`per_layer_means`.

    Returns:
        ``(frame, cid_spread)``: the ``layer_spread`` table (columns network, method,
        max_over_min_layer_mean, spread_nats; the baselines' rows first) and ``{network: CID
        spread in nats}``.
    """
    spread_rows = []
    for (name, method), g in layer_mag.groupby(["network", "method"], sort=False):
        if len(g) >= 2:
            lo_, hi_ = float(g.mean_abs.min()), float(g.mean_abs.max())
            spread_rows.append(dict(network=name, method=method, max_over_min_layer_mean=hi_ / lo_ if lo_ > 0 else np.nan))
    cid_spread = {}
    for name in nets:
        v = per_layer[(per_layer.network == name) & (per_layer.kind == "cid")].value
        cid_spread[name] = float(v.max() - v.min())
        spread_rows.append(dict(network=name, method="CID", spread_nats=cid_spread[name],
                                max_over_min_layer_mean=math.exp(cid_spread[name])))
    return pd.DataFrame(spread_rows), cid_spread


# --- the claims --------------------------------------------------------------------------------

def layer_rises(values: pd.DataFrame, nets: Mapping[str, dict], tol: float, min_rise: float
                ) -> tuple[pd.DataFrame, dict[str, list[np.ndarray]], dict[str, dict[str, Verdict]]]:
    """Per image, concentration and Moran's I at the highest measured layer minus at the lowest,
    decided per network and kind of map.

    Concentration is left out for a network without object masks. An image enters a part only
    if both of its maps met the constraint (``|r - 1| <= tol``, :func:`deepinfo.book.layer_curves.layer_rise`).

    Args:
        values: :func:`layer_values`.
        nets: the page's networks (names and ``masks``).
        tol: the constraint tolerance.
        min_rise: the threshold of each part (side "greater", unit images).

    Returns:
        ``(rises, ratios, parts)``: the ``per_image_rises`` table (columns of ``layer_rise``,
        quantity first, difference in the quantity's unit); ``{quantity: [ratios r of the maps that
        enter, one array per part]}``; ``{quantity: {"<network> <KIND>": verdict}}``, quantities
        ``"concentration"`` and ``"morans_i"``.
    """
    rise_rows, ratios_used, parts = [], {"concentration": [], "morans_i": []}, {"concentration": {}, "morans_i": {}}
    for col in ("concentration", "morans_i"):
        for name, net in nets.items():
            if col == "concentration" and net["masks"] is None:
                continue  # no object masks: no concentration
            for kind in ("cid", "ru"):
                rows, r = lc.layer_rise(values, name, kind, col, tol)
                rise_rows.append(rows)
                ratios_used[col].append(r)
                parts[col][f"{name} {kind.upper()}"] = decide(
                    rows.difference, if_none=f"no image of {name} has both {kind.upper()} maps on the constraint (or a defined value)",
                    threshold=min_rise, side="greater", unit="images")
    return pd.concat(rise_rows, ignore_index=True), ratios_used, parts


def setup_conditions(profile: Profile, nets: Mapping[str, dict], ratios_used: Mapping[str, list[np.ndarray]], *,
                     cub_arch: str, depth: int, paper_accuracy: Mapping[str, tuple[float, str]],
                     accuracy_fraction: float, max_mse_share: float, tol: float) -> dict[str, list[Condition]]:
    """The paper's setup conditions of each claim, checked with this run's numbers.

    Per network the claim covers (concentration: those with masks; Moran's I: every one): its
    accuracy against the paper's (met at ``accuracy_fraction`` of it), real images (not the
    synthetic set), and decoders that reconstruct (test MSE at most ``max_mse_share`` of the pixel
    variance); then the share of the claim's maps on the constraint.

    Args:
        profile: the run's profile (data sets and network settings, for the words).
        nets: the page's networks, with ``accuracy``, ``x``, ``masks``, ``decoder_mse`` and
            ``pixel_variance``.
        ratios_used: from :func:`layer_rises`.
        cub_arch, depth: which network is the CUB one, and the CIFAR ResNet's depth.
        paper_accuracy: ``{"cub" | "cifar": (top-1 in [0, 1], words)}``.
        accuracy_fraction, max_mse_share, tol: the page's thresholds.

    Returns:
        ``{"concentration": [...], "morans_i": [...]}`` (an empty list when no network qualifies).
    """
    P = profile
    with_masks = [name for name, net in nets.items() if net["masks"] is not None]
    setups = {}
    for col, names in (("concentration", with_masks), ("morans_i", list(nets))):
        out = []
        for name in names:
            net = nets[name]
            fam = "cub" if name == cub_arch else "cifar"
            acc, words = paper_accuracy[fam]
            cfg = P.networks.cub if fam == "cub" else P.networks.cifar
            how = (f"{cfg.weights or 'from scratch'}, width {cfg.width}, {net['x'].shape[-1]} px" if fam == "cub"
                   else f"{cfg.weights} weights")
            label = "VGG-16" if fam == "cub" else f"ResNet-{depth}"
            out.append(accuracy_condition(f"{label} ({how})", net["accuracy"], acc, paper_words=words,
                                          fraction=accuracy_fraction))
            dataset = P.data.cub.dataset if fam == "cub" else P.data.cifar.dataset
            real = "cub200" if fam == "cub" else "cifar10"
            masks = "" if net["masks"] is None or col != "concentration" else f", object masks from the {'boxes' if dataset == real else 'shapes'}"
            out.append(Condition(f"{label} images", dataset != "synthetic",
                                 f"{net['x'].shape[0]} {dataset} test images{masks}",
                                 "CUB-200-2011 birds with their boxes" if fam == "cub" else "CIFAR-10"))
            out.append(reconstruction_condition(label, net["decoder_mse"], net["pixel_variance"],
                                                max_share=max_mse_share))
        setups[col] = out + [constraint_condition(np.concatenate(ratios_used[col]), tol)] if names else []
    return setups


def rise_summary(rises: pd.DataFrame) -> pd.DataFrame:
    """The per-image rises summarised per (quantity, network, kind).

    Args:
        rises: the ``per_image_rises`` table of :func:`layer_rises`.

    Returns:
        Columns quantity, network, kind, images (rows), on_constraint (images that enter),
        mean_difference, min_difference, max_difference (over the images that enter; NaN skipped).
    """
    return rises.groupby(["quantity", "network", "kind"], sort=False).agg(
        images=("difference", "size"), on_constraint=("on_constraint", "sum"), mean_difference=("difference", "mean"),
        min_difference=("difference", "min"), max_difference=("difference", "max")).reset_index()


def rise_numbers(parts: Mapping[str, Verdict], label: str) -> dict[str, float]:
    """A claim's ``numbers``: each part's effect (mean rise over images) as ``"<part> <label>"``."""
    return {f"{k} {label}": v.effect for k, v in parts.items()}


def data_text(profile: Profile, nets: Mapping[str, dict]) -> str:
    """The claims' ``data``: per network its data, images (and how many RU is measured on) and layers."""
    return "; ".join(f"{name}: {net['data']}, {net['x'].shape[0]} test images ({profile.estimator.n_images.ru} for RU), "
                     f"layers {', '.join(net['layers'])} (RU at {', '.join(net['ru_layers'])})"
                     for name, net in nets.items())

"""Page ``05_concentration_accuracy``: concentration against classification accuracy (Fig. 3(a)).

The analysis behind the notebook: what the network-level design can decide before anything is
measured (the ``power`` table), the concentration of every measured layer of every network
(``concentration_per_layer_image``, ``concentration_per_layer``), the per-network means of the
layer groups and their correlation with accuracy (``per_network``, ``correlation``), the figure
``concentration_vs_accuracy``, the setup conditions and the numbers of the claim, and the per-image
rank correlations of our own design (``per_image_rho``).

Concentration (Eq. 5) is in nats: the mean pixel-wise CID of the background cells minus that of
the object's cells.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

import deepinfo
from deepinfo.book.experiments import Trained, layers_for
from deepinfo.book.verdicts import Condition, correlation, decide_correlation, on_constraint, permutation_p
from deepinfo.toolkit.profile import Profile

__all__ = ["design_power", "power_text", "layer_group", "concentration_rows", "measure_concentration",
           "layer_means", "network_summary", "group_correlations", "plot_concentration_vs_accuracy",
           "accuracy_condition_all", "accuracy_noise", "accuracy_spread_condition", "claim_numbers", "claim_detail",
           "data_text", "per_image_rho"]


def design_power(n_networks: int, *, threshold: float, side: str, method: str, unit: str) -> pd.DataFrame:
    """The verdict the correlation rule would give a perfect ordering and one adjacent swap.

    No measured number is used: the accuracies are the ranks ``0 .. n-1`` and the concentrations
    either the same ranks or the ranks with the two middle networks swapped. This says, before
    measuring, what a design with ``n_networks`` networks can decide at all.

    Args:
        n_networks: how many networks the profile trains.
        threshold, side, method, unit: the page's correlation rule (see
            :func:`deepinfo.book.verdicts.decide_correlation`).

    Returns:
        One row per ordering (``"perfect ordering"``, ``"one adjacent swap"``): ``spearman`` (the
        rank correlation), ``lo``/``hi`` (its bootstrap interval), ``verdict``. With fewer than 3
        networks the numbers are NaN and the verdict ``"inconclusive"``.
    """
    rank = np.arange(n_networks, dtype=float)
    swap = rank.copy()
    if n_networks >= 2:
        swap[[n_networks // 2 - 1, n_networks // 2]] = swap[[n_networks // 2, n_networks // 2 - 1]]
    design_rows = []
    for name, y in (("perfect ordering", rank), ("one adjacent swap", swap)):
        if n_networks >= 3:
            v = decide_correlation(rank, y, threshold=threshold, side=side, method=method, unit=unit)
            design_rows.append({"ordering": name, "spearman": v.effect, "lo": v.interval[0], "hi": v.interval[1],
                                "verdict": v.verdict})
        else:
            design_rows.append({"ordering": name, "spearman": float("nan"), "lo": float("nan"), "hi": float("nan"),
                                "verdict": "inconclusive"})
    return pd.DataFrame(design_rows)


def power_text(n_networks: int, design: pd.DataFrame) -> str:
    """The power of the design in one sentence (glued as ``power_text``).

    Args:
        n_networks: how many networks the profile trains.
        design: :func:`design_power`'s table (row 0 the perfect ordering, row 1 the swap).

    Returns:
        The one-sided exact permutation p of a perfect ordering (``1 / n!``) and the verdicts of
        the bootstrap rule for both orderings.
    """
    p_perfect = 1 / math.factorial(n_networks)
    return (f"With {n_networks} networks a perfect ordering has one-sided permutation p = 1/{n_networks}! = "
            f"{p_perfect:.3f}; the bootstrap rule gives a perfect ordering '{design['verdict'].iloc[0]}' and "
            f"one adjacent swap (rho = {design['spearman'].iloc[1]:.2f}) '{design['verdict'].iloc[1]}'.")


def layer_group(layer_index: int, n_layers: int, groups: Sequence[str]) -> str:
    """The third of a network's measured layers a layer falls in, by position.

    Args:
        layer_index: 0-based position of the layer among the ``n_layers`` measured ones.
        groups: the names of the thirds, first to last (``("low", "middle", "high")``).

    Returns:
        ``groups[3 * layer_index // n_layers]``.
    """
    return groups[3 * layer_index // n_layers]


def concentration_rows(arch: str, layers: Sequence[str], image_ids: Sequence[int], conc: torch.Tensor,
                       layer_cid: torch.Tensor, ratio: torch.Tensor, n_capped: torch.Tensor,
                       groups: Sequence[str]) -> list[dict]:
    """One row per (layer, image) of one network.

    Args:
        arch: the network's name.
        layers: its measured layers, in forward order.
        image_ids: the data set index of each image.
        conc: ``[L, B]`` concentration (nats); layer_cid: ``[L, B]`` the layer's mean CID (nats);
            ratio: ``[L, B]`` achieved constraint ratio ``r``; n_capped: ``[L, B]`` cells whose
            sigma hit the cap.
        groups: the names of the thirds of the layers (:func:`layer_group`).

    Returns:
        Dicts with network, layer, layer_index, n_layers, relative_depth (0 = first measured layer,
        1 = last; 1 for a single layer), group, image, concentration, cid, ratio, n_capped.
    """
    rows = []
    n_layers = len(layers)
    for l, name in enumerate(layers):
        for b, image_id in enumerate(image_ids):
            rows.append({
                "network": arch, "layer": name, "layer_index": l, "n_layers": n_layers,
                "relative_depth": l / (n_layers - 1) if n_layers > 1 else 1.0,
                "group": layer_group(l, n_layers, groups), "image": image_id,
                "concentration": float(conc[l, b]), "cid": float(layer_cid[l, b]),
                "ratio": float(ratio[l, b]), "n_capped": int(n_capped[l, b]),
            })
    return rows


def measure_concentration(nets: Mapping[str, Trained], archs: Sequence[str], x: torch.Tensor, masks: torch.Tensor,
                          image_ids: torch.Tensor, profile: Profile, groups: Sequence[str]) -> pd.DataFrame:
    """CID and concentration of every measured layer of every network, on the same images.

    Args:
        nets: the trained networks by name; archs: their order.
        x: ``[B, C, H, W]`` images; masks: ``[B, H, W]`` their object masks; image_ids: ``[B]``.
        profile: the profile (its layers per network and estimator settings, seed).
        groups: the names of the thirds of each network's layers.

    Returns:
        The rows of :func:`concentration_rows` for all networks, with ``on_constraint`` (the map's
        ``|r - 1|`` within ``estimator.tol``).
    """
    rows = []
    for arch in archs:
        model = nets[arch].model
        layers = layers_for(profile, arch, model)
        maps = deepinfo.cid(model, x, layers, settings=profile.estimator, seed=profile.seed, progress=True)
        conc = deepinfo.concentration(maps, masks)  # [L, B] nats
        layer_cid = maps.mean()  # [L, B] nats
        rows += concentration_rows(arch, layers, image_ids.tolist(), conc, layer_cid, maps.constraint,
                                   maps.n_capped, groups)
    per_image = pd.DataFrame(rows)
    per_image["on_constraint"] = on_constraint(per_image.ratio, profile.estimator.tol)
    return per_image


def layer_means(kept: pd.DataFrame) -> pd.DataFrame:
    """Per (network, layer): the means over images of concentration, CID and ratio.

    Args:
        kept: :func:`measure_concentration`'s rows of the maps on the constraint.

    Returns:
        network, layer, layer_index, relative_depth, group, concentration (nats), cid (nats),
        ratio; networks and layers in their order of appearance.
    """
    return (kept.groupby(["network", "layer", "layer_index", "relative_depth", "group"], sort=False)
            [["concentration", "cid", "ratio"]].mean().reset_index())


def network_summary(accuracy: pd.DataFrame, kept: pd.DataFrame, per_image: pd.DataFrame, archs: Sequence[str],
                    groups: Sequence[str]) -> pd.DataFrame:
    """One row per network: its accuracy and its mean concentration in each layer group.

    Args:
        accuracy: ``network``, ``accuracy`` (and further columns kept as they are).
        kept: the per-(layer, image) rows on the constraint; per_image: all of them.
        archs: the networks, in order; groups: the layer groups, in order.

    Returns:
        ``accuracy``'s columns, then one column per group (mean concentration over the group's
        layers and the images, maps on the constraint only, NaN when none), then
        ``maps_left_out`` (the network's maps off the constraint).
    """
    group_means = (kept.groupby(["network", "group"]).concentration.mean().unstack("group")
                   .reindex(index=archs, columns=list(groups)))
    summary = accuracy.set_index("network").join(group_means).reset_index()
    summary["maps_left_out"] = [int((~per_image[per_image.network == a].on_constraint).sum())
                                for a in summary.network]
    return summary


def group_correlations(summary: pd.DataFrame, groups: Sequence[str]) -> pd.DataFrame:
    """Per layer group, the correlation over networks of accuracy and mean concentration.

    Args:
        summary: :func:`network_summary`'s table.
        groups: the layer groups, in order.

    Returns:
        group, n_networks (with a finite concentration), spearman_rho, pearson_r (pairs with a
        missing value left out; NaN under 3 pairs) and permutation_p (exact one-sided p of rho).
    """
    return pd.DataFrame([
        {"group": g, "n_networks": int(summary[g].notna().sum()),
         "spearman_rho": correlation(summary.accuracy, summary[g], "spearman", drop_nonfinite=True),
         "pearson_r": correlation(summary.accuracy, summary[g], "pearson", drop_nonfinite=True),
         "permutation_p": permutation_p(summary.accuracy, summary[g])}
        for g in groups])


def plot_concentration_vs_accuracy(per_layer: pd.DataFrame, summary: pd.DataFrame, accuracy: pd.DataFrame,
                                   archs: Sequence[str], groups: Sequence[str]) -> plt.Figure:
    """The figure ``concentration_vs_accuracy``.

    Left: the concentration of every measured layer against its relative depth, one line per
    network. Right: the paper's Fig. 3(a) view, accuracy against each group's mean concentration,
    one point per network and group, with a least-squares trend line per group (dashed).
    """
    palette = dict(zip(groups, sns.color_palette("viridis", len(groups))))
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
    for arch in archs:
        d = per_layer[per_layer.network == arch]
        acc = float(accuracy.set_index("network").accuracy[arch])
        ax0.plot(d.relative_depth, d.concentration, marker="o", label=f"{arch} (acc {acc:.2f})")
    ax0.axhline(0, color="0.6", lw=0.8)
    ax0.set_xlabel("relative depth of the layer (0 = first measured, 1 = last)")
    ax0.set_ylabel("concentration (nats)")
    ax0.set_title("concentration per layer")
    ax0.legend(fontsize=8)

    for g in groups:
        ax1.scatter(summary.accuracy, summary[g], color=palette[g], label=f"{g} layers", zorder=3)
        if summary.accuracy.nunique() > 1:
            slope, icpt = np.polyfit(summary.accuracy, summary[g], 1)
            xs = np.linspace(summary.accuracy.min(), summary.accuracy.max(), 2)
            ax1.plot(xs, slope * xs + icpt, ls="--", color=palette[g])
    for _, row in summary.iterrows():
        ax1.annotate(row.network, (row.accuracy, row["high"]), fontsize=8, xytext=(4, 4),
                     textcoords="offset points")
    ax1.set_xlabel("test accuracy")
    ax1.set_ylabel("mean concentration of the group (nats)")
    ax1.set_title("concentration vs accuracy (one point per network)")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    return fig


def accuracy_condition_all(acc: pd.Series, archs: Sequence[str], paper_accuracy: Mapping[str, float],
                           fraction: float, profile: Profile) -> Condition:
    """Setup condition: every network reaches ``fraction`` of the paper's accuracy.

    Args:
        acc: test accuracy (in [0, 1]) by network name.
        archs: the networks checked.
        paper_accuracy: the paper's accuracy by network (0.75 for a network not listed).
        fraction: the share of the paper's accuracy that meets the condition.
        profile: the profile (how the networks were trained, classes and image size, for the words).

    Returns:
        A :class:`~deepinfo.book.verdicts.Condition` named ``"classifier accuracy"``.
    """
    trained = "fine-tuned from ImageNet" if profile.networks.cub.weights == "imagenet" else "trained from scratch"
    return Condition(
        "classifier accuracy",
        all(acc[a] >= fraction * paper_accuracy.get(a, 0.75) for a in archs),
        ", ".join(f"{a} {acc[a]:.1%}" for a in archs)
        + f" ({trained}, {profile.data.cub.num_classes} classes, {profile.data.cub.image_size} px)",
        "fine-tuned from ImageNet on CUB-200 (200 classes, 224 px): "
        + ", ".join(f"{a} ~{paper_accuracy.get(a, 0.75):.0%}" for a in archs))


def accuracy_noise(a: float, b: float, n_test: int) -> float:
    """1.96 binomial standard errors of the difference of two accuracies on ``n_test`` images.

    ``1.96 * sqrt(a (1 - a) / n + b (1 - b) / n)``, each variance floored at ``1e-12 / n`` so
    that an accuracy of 0 or 1 still has a (tiny) noise.
    """
    se = lambda v: math.sqrt(max(v * (1 - v), 1e-12) / n_test)  # noqa: E731
    return 1.96 * math.sqrt(se(a) ** 2 + se(b) ** 2)


def accuracy_spread_condition(acc: pd.Series, n_test: int) -> Condition:
    """Setup condition: the best and the worst network differ by more than the test-set noise.

    Args:
        acc: test accuracy (in [0, 1]) by network name.
        n_test: the number of test images the accuracies were measured on.

    Returns:
        A :class:`~deepinfo.book.verdicts.Condition` named ``"spread of accuracies"``, met when the
        range of the accuracies exceeds :func:`accuracy_noise` of the worst and best network.
    """
    lo_net, hi_net = acc.idxmin(), acc.idxmax()
    noise = accuracy_noise(acc[lo_net], acc[hi_net], n_test)
    return Condition(
        "spread of accuracies", float(acc.max() - acc.min()) > noise,
        f"{acc.min():.1%} ({lo_net}) to {acc.max():.1%} ({hi_net}), range {acc.max() - acc.min():.1%} "
        f"against {noise:.1%} of test-set noise ({n_test} test images)",
        "networks of clearly different accuracy (Fig. 3(a))")


def claim_numbers(corr: pd.DataFrame, summary: pd.DataFrame, deciding_group: str, n_networks: int,
                  n_off: int) -> dict[str, float]:
    """The numbers kept with the claim.

    Args:
        corr: :func:`group_correlations`'s table; summary: :func:`network_summary`'s.
        deciding_group: the group whose correlation decides (its concentration column is ``"high"``).
        n_networks: the networks the verdict rests on; n_off: the maps off the constraint.

    Returns:
        spearman_rho_high, permutation_p_high, n_networks, pearson_r_high, n_maps_off_constraint,
        ``rho_<group>`` of the other groups, ``accuracy_<network>`` and
        ``concentration_high_<network>`` (nats).
    """
    by_group = corr.set_index("group")
    high = by_group.loc[deciding_group]
    return {"spearman_rho_high": float(high.spearman_rho), "permutation_p_high": float(high.permutation_p),
            "n_networks": n_networks, "pearson_r_high": float(high.pearson_r), "n_maps_off_constraint": n_off,
            **{f"rho_{g}": float(v) for g, v in by_group.spearman_rho.items() if g != deciding_group},
            **{f"accuracy_{a}": float(v) for a, v in zip(summary.network, summary.accuracy)},
            **{f"concentration_high_{a}": float(v) for a, v in zip(summary.network, summary["high"])}}


def claim_detail(corr: pd.DataFrame, deciding_group: str, n_images: int, n_off: int, n_maps: int,
                 n_networks: int, power: str) -> str:
    """The claim's detail: the deciding correlation, its permutation p, the power and the other groups.

    Args:
        corr: :func:`group_correlations`'s table; deciding_group: the group that decides.
        n_images: images measured; n_off: maps off the constraint out of ``n_maps``.
        n_networks: the networks the verdict rests on; power: :func:`power_text`'s sentence.
    """
    by_group = corr.set_index("group")
    rho_high = float(by_group.loc[deciding_group].spearman_rho)
    p_high = float(by_group.loc[deciding_group].permutation_p)
    others = ", ".join(f"{g}: rho = {v:.2f}" for g, v in by_group.spearman_rho.items() if g != deciding_group)
    return (f"Spearman rho between test accuracy and the high-group concentration (mean over {n_images} "
            f"images, maps on the constraint only; {n_off} of {n_maps} maps left out) over {n_networks} "
            f"networks: {rho_high:.2f}, exact one-sided permutation p = {p_high:.3f}. Power: {power} "
            f"Not deciding: {others}.")


def data_text(profile: Profile, archs: Sequence[str], n_test: int, n_images: int) -> str:
    """The claim's data line: the bird data, the test images of each measurement and the networks."""
    p = profile
    return (f"{p.data.cub.dataset} birds ({p.data.cub.num_classes} classes, {p.data.cub.image_size} px); "
            f"accuracy on {n_test} test images, concentration on {n_images} test images "
            f"({p.data.cub.concentration_crop} crops); networks {', '.join(archs)} (width {p.networks.cub.width})")


def per_image_rho(kept: pd.DataFrame, acc: pd.Series, archs: Sequence[str], group: str) -> tuple[pd.Series, int]:
    """Our per-image design: per image, the rank correlation across networks of accuracy and
    that image's concentration in ``group``.

    Args:
        kept: the per-(layer, image) rows on the constraint.
        acc: test accuracy by network name; archs: the networks, in order.
        group: the layer group (concentration averaged over its layers per image and network).

    Returns:
        ``(rho, n_left_out)``: the Spearman rho per image (indexed by ``image``, named
        ``spearman_rho``; NaN when undefined), over the images that have a concentration for
        every network, and the number of images left out because some network has none.
    """
    img_net = (kept[kept.group == group].groupby(["image", "network"]).concentration.mean()
               .unstack("network").reindex(columns=archs))
    complete = img_net.dropna()
    acc_vec = acc.reindex(archs).to_numpy()
    rho = pd.Series([correlation(acc_vec, row.to_numpy(), "spearman", drop_nonfinite=True)
                     for _, row in complete.iterrows()], index=complete.index, name="spearman_rho")
    return rho, len(img_net) - len(complete)

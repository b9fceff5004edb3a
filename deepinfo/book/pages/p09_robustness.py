"""The analysis behind ``notebooks/09_robustness.ipynb``: Table 3 (App. F.2), CID of the last layer
against adversarial robustness.

The page measures, for the original VGG-16 bird classifier and its compressed versions, the CID of
the last FC layer (:func:`last_layer_cid`) and the minimal L2 perturbation to the decision boundary
of the top wrong classes (:func:`perturbations`), checks the DeepFool search against a bisection
(:func:`bisection_check`), assembles Table 3 (:func:`table3`) and its scatter plot
(:func:`cid_vs_robustness_figure`), and gives the per-image design (:func:`per_image_rho`). The
second line (published CIFAR ResNets and their pruned stages) is measured by
:func:`second_line_nets` and :func:`second_line_measure`. The setup conditions, numbers and detail
of the claims come from the ``*_setup`` and ``*_evidence`` functions; the notebook keeps the
thresholds, the decision calls and the claims' words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import Dataset

import deepinfo
from deepinfo.book import experiments as ex
from deepinfo.book.experiments import Trained
from deepinfo.book.verdicts import (Condition, Verdict, constraint_condition, correlation, decide, decide_correlation,
                                   on_constraint, undecidable)
from deepinfo.models import PUBLISHED_ACCURACY, last_linear
from deepinfo.techniques.robustness import (Robustness, boundary_scale, minimal_perturbation, robustness,
                                            top_wrong_classes)
from deepinfo.toolkit.profile import Profile

#: ``(keep target, trained net, achieved fraction of weights)``, as ``experiments.compressed_models`` returns
Nets = Sequence[tuple[float, Trained, float]]
#: the robustness column of Table 3 (both lines)
ROBUSTNESS = "adversarial robustness ||ε||₂"


def design_power_text(n_nets: int, confidence: float) -> str:
    """What a correlation over ``n_nets`` nets (the paper's unit) can decide, stated before measuring.

    A perfect ordering of n nets has one-sided permutation p = 1/n!; a two-sided interval at
    ``confidence`` needs p <= (1 - confidence) / 2.

    Args:
        n_nets: number of nets (the original and its compressions).
        confidence: the interval's coverage.

    Returns:
        One or two sentences for the page and the claim's detail (no measured number).
    """
    p_perfect = 1 / math.factorial(n_nets)
    can_decide = math.factorial(n_nets) * (1 - confidence) / 2 >= 1
    n_min = next(n for n in range(3, 20) if math.factorial(n) * (1 - confidence) / 2 >= 1)
    return (f"With {n_nets} nets a perfect ordering has one-sided permutation p = 1/{n_nets}! = {p_perfect:.3f}; "
            + ("the design can decide at 95 %." if can_decide else
               f"a 95 % decision needs p <= 0.025, so the design cannot decide and its verdict is inconclusive "
               f"whatever its bootstrap interval (a perfect ordering of {n_min} nets would be needed)."))


def net_names(nets: Nets) -> dict[float, str]:
    """``{keep target: "original" or "12.8% kept"}``, the names of the nets in every table.

    Args:
        nets: ``[(keep, trained, achieved)]``, the original first (keep 1.0).
    """
    return {keep: ("original" if keep == 1.0 else f"{keep:.1%} kept") for keep, _, _ in nets}


def last_layer_cid(nets: Nets, x: torch.Tensor, layer: str, names: Mapping[float, str], *, seed: int,
                   settings: deepinfo.Settings, tol: float) -> pd.DataFrame:
    """CID of the last FC layer of every net on the same images (measurement).

    Args:
        nets: ``[(keep, trained, achieved)]``.
        x: ``[B, C, H, W]`` images in [0, 1].
        layer: module name of the last FC layer (the same in every net).
        names: :func:`net_names`.
        seed, settings: the estimator's seed and settings (the profile's).
        tol: the profile's constraint tolerance.

    Returns:
        ``InfoMaps.to_frame`` rows (``value``: mean pixel-wise CID, nats; ``constraint``: achieved
        ratio r) with ``network``, ``keep``, ``achieved fraction`` in front and ``on_constraint``
        (``|r - 1| <= tol``) at the end; nets in the order of ``nets``.
    """
    frames = []
    for keep, trained, achieved in nets:
        maps = deepinfo.cid(trained.model, x, [layer], seed=seed, progress=True, settings=settings)
        df = maps.to_frame()
        df.insert(0, "network", names[keep])
        df.insert(1, "keep", keep)
        df.insert(2, "achieved fraction", achieved)
        frames.append(df)
    cid_df = pd.concat(frames, ignore_index=True)
    cid_df["on_constraint"] = on_constraint(cid_df["constraint"].to_numpy(), tol)
    return cid_df


def cid_by_network(cid_df: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """The last-layer CID as a grid: one row per image, one column per net (in ``order``), nats.

    Args:
        cid_df: :func:`last_layer_cid`'s frame (columns ``image``, ``network``, ``value``).
        order: the nets' names, original first.
    """
    return cid_df.pivot(index="image", columns="network", values="value")[list(order)]


def perturbation_rows(res: Robustness, network: str, keep: float) -> pd.DataFrame:
    """One row per (image, target rank) of one net's :func:`~deepinfo.techniques.robustness.robustness`.

    Args:
        res: the net's result (``distance [B, k]`` L2 in pixel units, NaN where not reached).
        network: the net's name; keep: its keep target.

    Returns:
        Columns ``network, keep, image, rank`` (1 = most probable wrong class), ``predicted,
        target, distance, reached, out_of_range`` (pixel values of ``x + delta`` outside [0, 1]),
        image-major.
    """
    B, k = res.distance.shape
    return pd.DataFrame({
        "network": network, "keep": keep, "image": np.repeat(np.arange(B), k), "rank": np.tile(np.arange(1, k + 1), B),
        "predicted": np.repeat(res.predicted.numpy(), k), "target": res.targets.flatten().numpy(),
        "distance": res.distance.flatten().numpy(), "reached": res.reached.flatten().numpy(),
        "out_of_range": res.out_of_range.flatten().numpy()})


def perturbations(nets: Nets, x: torch.Tensor, top_k: int, names: Mapping[float, str], *,
                  max_steps: int) -> tuple[pd.DataFrame, dict[float, Robustness]]:
    """Minimal perturbations of every image towards its ``top_k`` wrong classes in every net (measurement).

    Args:
        nets: ``[(keep, trained, achieved)]``; x: ``[B, C, H, W]`` images.
        top_k: targets per image; names: :func:`net_names`; max_steps: DeepFool steps at most.

    Returns:
        ``(frame, results)``: the :func:`perturbation_rows` of all nets concatenated, and
        ``{keep: Robustness}``.
    """
    frames, results = [], {}
    for keep, trained, _ in nets:
        res = robustness(trained.model, x, top_k, max_steps=max_steps, progress=True)
        results[keep] = res
        frames.append(perturbation_rows(res, names[keep], keep))
    return pd.concat(frames, ignore_index=True), results


def perturbation_summary(rob_df: pd.DataFrame) -> pd.DataFrame:
    """Per net (in order of appearance): ``mean_l2`` (mean ``distance``, NaN skipped, pixel units),
    ``reached`` (share of pairs reaching the boundary) and ``pixels_outside`` (mean count of pixel
    values pushed outside [0, 1]).

    Args:
        rob_df: :func:`perturbations`' frame.
    """
    return rob_df.groupby("network", sort=False).agg(mean_l2=("distance", "mean"), reached=("reached", "mean"),
                                                     pixels_outside=("out_of_range", "mean"))


def bisection_check(model: nn.Module, x: torch.Tensor, *, max_steps: int) -> pd.DataFrame:
    """DeepFool distance to the most probable wrong class against a bisection along its direction.

    The bisection finds the scale t of the found perturbation delta at which the logit gap
    vanishes; ``t * ||delta||`` is the distance to the boundary along delta. Both agree up to the
    curvature of the net over DeepFool's last step (exactly for a linear net).

    Args:
        model: the classifier (the original net); x: ``[B, C, H, W]`` images; max_steps: DeepFool steps.

    Returns:
        Columns ``image``, ``DeepFool L2``, ``bisection L2`` (pixel units) and ``relative difference``
        (``|DeepFool - bisection| / bisection``).
    """
    pred, wrong = top_wrong_classes(model, x, 1)
    delta, dist, reached = minimal_perturbation(model, x, pred, wrong[:, 0], max_steps=max_steps)
    t = boundary_scale(model, x, delta, pred, wrong[:, 0])
    bisected = t * delta.flatten(1).norm(dim=1)
    check = pd.DataFrame({"image": range(x.shape[0]), "DeepFool L2": dist.numpy(), "bisection L2": bisected.numpy()})
    check["relative difference"] = (check["DeepFool L2"] - check["bisection L2"]).abs() / check["bisection L2"]
    return check


def table3(nets: Nets, results: Mapping[float, Robustness], cid_df: pd.DataFrame, layer: str,
           dataset: Dataset) -> pd.DataFrame:
    """Table 3: one row per net, its mean last-layer CID and its adversarial robustness.

    The mean CID is over the images whose map met the constraint (the others are counted);
    ΔCID is relative to the original's mean. The test accuracy is measured (once per net) on
    ``dataset``, in the order of ``nets``.

    Args:
        nets: ``[(keep, trained, achieved)]``, the original (keep 1.0) first.
        results: ``{keep: Robustness}`` from :func:`perturbations`.
        cid_df: :func:`last_layer_cid`'s frame.
        layer: the last FC layer's name (in the CID column's name).
        dataset: the test set for the accuracy.

    Returns:
        Columns ``DNN``, ``fraction of weights kept``, ``test accuracy`` (in [0, 1]),
        ``CID (<layer>)`` (nats), ``ΔCID`` (nats), ``CID maps left out``,
        ``adversarial robustness ||ε||₂`` (mean L2 over reached pairs, pixel units),
        ``pairs reaching the boundary`` (share).
    """
    rows = []
    kept = cid_df[cid_df.on_constraint]  # maps off the constraint are left out of the means
    cid_orig = float(kept[kept.keep == 1.0]["value"].mean())
    for keep, trained, achieved in nets:
        res = results[keep]
        cid_mean = float(kept[kept.keep == keep]["value"].mean())
        rows.append({"DNN": "original" if keep == 1.0 else f"with {achieved:.1%} of the weights",
                     "fraction of weights kept": achieved, "test accuracy": trained.accuracy(dataset),
                     f"CID ({layer})": cid_mean, "ΔCID": cid_mean - cid_orig,
                     "CID maps left out": int((~cid_df[cid_df.keep == keep].on_constraint).sum()),
                     ROBUSTNESS: res.mean, "pairs reaching the boundary": res.reached_fraction})
    return pd.DataFrame(rows)


def cid_vs_robustness_figure(table: pd.DataFrame, cid_col: str, data_name: str, n_images: int, top_k: int,
                             figsize: tuple[float, float]) -> Figure:
    """Scatter of the nets' mean last-layer CID (x) against their robustness (y), one colour per net.

    Args:
        table: :func:`table3` or :func:`second_line_measure`'s table (columns ``DNN``, ``cid_col``
            and :data:`ROBUSTNESS`).
        cid_col: the CID column.
        data_name, n_images, top_k: for the title (``"<data_name>: <n> images, top-<k> wrong classes"``).
        figsize: inches.

    Returns:
        The figure (the notebook saves and shows it).
    """
    fig, ax = plt.subplots(figsize=figsize)
    sns.scatterplot(table, x=cid_col, y=ROBUSTNESS, hue="DNN", s=60, ax=ax)
    ax.set_xlabel("mean CID of the last FC layer (nats)")
    ax.set_ylabel("mean minimal L2 perturbation")
    ax.set_title(f"{data_name}: {n_images} images, top-{top_k} wrong classes", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def rho_over_nets(table: pd.DataFrame, cid_col: str) -> float:
    """Spearman correlation over the nets between mean CID and robustness, nets with a missing
    value (NaN) left out; NaN with fewer than 3 nets left.

    Args:
        table: :func:`second_line_measure`'s (or :func:`table3`'s) table; cid_col: its CID column.
    """
    pts = table[[cid_col, ROBUSTNESS]].dropna()
    return correlation(pts[cid_col], pts[ROBUSTNESS], "spearman")


def nets_verdict(table: pd.DataFrame, cid_col: str, *, threshold: float, side: str, method: str, unit: str,
                 confidence: float, too_few: str, effect: float = float("nan")) -> Verdict:
    """The nets-as-units verdict: the correlation over the nets between mean CID and robustness.

    Nets with a missing CID (every map off the constraint) or robustness are left out; with fewer
    than 3 nets left no correlation exists and the verdict is inconclusive.

    Args:
        table: :func:`table3` or :func:`second_line_measure`'s table; cid_col: its CID column.
        threshold, side, method, unit, confidence: the rule fixed before the run
            (:func:`~deepinfo.book.verdicts.decide_correlation`).
        too_few: the reason when fewer than 3 nets are left, ``{n}`` standing for their number.
        effect: the effect reported with that reason.

    Returns:
        The :class:`~deepinfo.book.verdicts.Verdict`.
    """
    pts = table[[cid_col, ROBUSTNESS]].dropna()
    if len(pts) >= 3:
        return decide_correlation(pts[cid_col], pts[ROBUSTNESS], threshold=threshold, side=side, method=method,
                                  unit=unit, confidence=confidence)
    return undecidable(too_few.format(n=len(pts)), unit=unit, n_units=len(pts), effect=effect)


def mean_reached_distance(distance: np.ndarray) -> list[float]:
    """Per image, the mean distance to the boundary over its targets that reached it.

    Args:
        distance: ``[B, k]`` L2 distances, NaN where the search did not reach the boundary.

    Returns:
        ``B`` floats, NaN for an image none of whose targets was reached.
    """
    return [float(d[np.isfinite(d)].mean()) if np.isfinite(d).any() else float("nan") for d in distance]


def per_image_rho(cid_df: pd.DataFrame, distances: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Our per-image design: per image, the Spearman correlation across the nets between the image's
    last-layer CID and its mean distance to the boundary.

    A map off the constraint counts as missing (NaN), and so does an image with no reached target
    in a net; the correlation of an image with a missing value is NaN (left out of the verdict).

    Args:
        cid_df: :func:`last_layer_cid`'s frame (``image``, ``network``, ``value``, ``on_constraint``).
        distances: ``{net name: [B, k] distances}`` in the nets' order (original first).

    Returns:
        Columns ``image``, ``spearman_rho``, ``cid_<net>`` (nats, NaN off the constraint) and
        ``l2_<net>`` (pixel units) for every net.
    """
    order = list(distances)
    cid_img = cid_df.assign(value=cid_df.value.where(cid_df.on_constraint)).pivot(
        index="image", columns="network", values="value")[order]
    rob_img = pd.DataFrame({name: mean_reached_distance(d) for name, d in distances.items()})
    rob_img.index = cid_img.index
    per_image = pd.DataFrame({"image": cid_img.index,
                              "spearman_rho": [correlation(cid_img.loc[i], rob_img.loc[i], "spearman")
                                               for i in cid_img.index]})
    return per_image.join(cid_img.add_prefix("cid_"), on="image").join(rob_img.add_prefix("l2_"), on="image")


def per_net_numbers(table: pd.DataFrame, cid_col: str) -> dict[str, float]:
    """``cid_last_<DNN>`` then ``robustness_l2_<DNN>`` for every net of a Table 3, for a claim's numbers."""
    return {**{f"cid_last_{n}": float(v) for n, v in zip(table["DNN"], table[cid_col])},
            **{f"robustness_l2_{n}": float(v) for n, v in zip(table["DNN"], table[ROBUSTNESS])}}


def trained_words(profile: Profile) -> str:
    """How the bird nets were obtained, in words (from ``networks.cub.weights``)."""
    return "fine-tuned from ImageNet" if profile.networks.cub.weights == "imagenet" else "trained from scratch"


def table3_setup(profile: Profile, table: pd.DataFrame, cid_df: pd.DataFrame, *, n_images: int, top_k: int,
                 max_steps: int, paper_accuracy: float, accuracy_fraction: float,
                 min_reached: float) -> list[Condition]:
    """The paper's setup conditions for Table 3's claims.

    Args:
        profile: the run's profile (the bird data and nets, the estimator's tolerance).
        table: :func:`table3`; cid_df: :func:`last_layer_cid`'s frame.
        n_images, top_k, max_steps: the search's size, for the words.
        paper_accuracy: the paper's accuracy (assumed); accuracy_fraction: the share of it every net
            must reach; min_reached: the share of (image, target) pairs every net must push to the boundary.

    Returns:
        ``[accuracy of the nets, pairs reaching the boundary, maps on the constraint]``.
    """
    P = profile
    lowest = float(table["pairs reaching the boundary"].min())
    return [
        Condition("accuracy of the nets", bool((table["test accuracy"] >= accuracy_fraction * paper_accuracy).all()),
                  ", ".join(f"{n} {a:.1%}" for n, a in zip(table["DNN"], table["test accuracy"]))
                  + f" ({trained_words(P)}, {P.data.cub.num_classes} classes, {P.data.cub.image_size} px)",
                  f"VGG-16 fine-tuned from ImageNet on CUB-200 (200 classes, 224 px), ~{paper_accuracy:.0%}, "
                  "its compressions about as accurate"),
        Condition("pairs reaching the boundary", lowest >= min_reached,
                  ", ".join(f"{n} {r:.0%}" for n, r in zip(table["DNN"], table["pairs reaching the boundary"]))
                  + f" of {n_images} images x top-{top_k} targets ({max_steps} steps at most)",
                  "every (image, top-20 target) pair pushed to the boundary"),
        constraint_condition(cid_df["constraint"].to_numpy(), P.estimator.tol),
    ]


def table3_data(profile: Profile, nets: Nets, n_images: int, top_k: int) -> str:
    """The data line of Table 3's claims: test set, images x targets, the nets and their compressions."""
    P = profile
    return (f"{P.data.cub.dataset} test set, {n_images} images x top-{top_k} wrong classes; {P.compression.arch} "
            f"(width {P.networks.cub.width}) and its compressions to "
            + ", ".join(f"{a:.1%}" for _, _, a in nets[1:]) + " of the conv + FC weights")


def table3_evidence(table: pd.DataFrame, cid_col: str, *, rho: float, n_off: int, n_maps: int,
                    power_text: str) -> dict[str, dict | str]:
    """The ``numbers`` and ``detail`` of Table 3's claim (the nets as units).

    Args:
        table: :func:`table3`; cid_col: its CID column.
        rho: the Spearman correlation over the nets; n_off, n_maps: CID maps off the constraint, and all.
        power_text: :func:`design_power_text`.

    Returns:
        ``{"numbers": {spearman_rho, n_maps_off_constraint, n_nets (nets with both a CID and a
        robustness), cid_last_<net>..., robustness_l2_<net>...}, "detail": str}``.
    """
    pts = table[[cid_col, ROBUSTNESS]].dropna()
    lowest = float(table["pairs reaching the boundary"].min())
    numbers = {"spearman_rho": rho, "n_maps_off_constraint": n_off, "n_nets": len(pts),
               **per_net_numbers(table, cid_col)}
    detail = (f"Power: {power_text} Spearman rho over the nets = {rho:.2f}; CID "
              + ", ".join(f"{v:.4f}" for v in table[cid_col]) + " nats; L2 "
              + ", ".join(f"{v:.4g}" for v in table[ROBUSTNESS]) + " (nets in the order " + ", ".join(table["DNN"])
              + f"); lowest share of pairs reaching the boundary {lowest:.0%}; {n_off} of {n_maps} CID maps "
              "left out (off the constraint).")
    return {"numbers": numbers, "detail": detail}


def per_image_verdict(per_image: pd.DataFrame, *, threshold: float, side: str, confidence: float) -> Verdict:
    """Our per-image verdict: the mean over images of the per-image Spearman correlation.

    Images without a correlation (NaN: a map off the constraint or no reached target in some net)
    are left out; with none left the verdict is inconclusive.

    Args:
        per_image: :func:`per_image_rho`'s frame.
        threshold, side, confidence: the rule fixed before the run (:func:`~deepinfo.book.verdicts.decide`).
    """
    rhos = per_image.spearman_rho.dropna()
    if len(rhos):
        return decide(rhos.to_numpy(), threshold=threshold, side=side, unit="images", confidence=confidence,
                      design="" if len(rhos) > 1 else "one image only: no spread over images to resample")
    return undecidable("no image has a CID map on the constraint and a distance to the boundary in every net",
                       unit="images")


def per_image_evidence(per_image: pd.DataFrame, n_nets: int) -> dict[str, dict | str]:
    """The ``numbers`` and ``detail`` of our per-image claim.

    Args:
        per_image: :func:`per_image_rho`'s frame (images with a NaN correlation are left out).
        n_nets: nets per image.

    Returns:
        ``{"numbers": {mean_per_image_rho, n_images, n_images_left_out}, "detail": str}``.
    """
    rhos = per_image.spearman_rho.dropna()
    n_left_out = int(per_image.spearman_rho.isna().sum())
    numbers = {"mean_per_image_rho": float(rhos.mean()) if len(rhos) else float("nan"),
               "n_images": int(len(rhos)), "n_images_left_out": n_left_out}
    detail = (f"Per image, the Spearman correlation across the {n_nets} nets between the image's last-layer CID and "
              f"its mean distance to the boundary over its reached targets; mean over {len(rhos)} images "
              f"({n_left_out} left out: a map off the constraint or no target reached in some net). Our design: "
              "the nets are fixed (the very nets of Table 3); the images are the units.")
    return {"numbers": numbers, "detail": detail}


# --- the second line: CIFAR ResNets --------------------------------------------------------------

def second_line_nets(profile: Profile) -> dict[str, Trained]:
    """The second line's nets by name: the CIFAR ResNet of ``second_line.base_depth``, its pruned
    stages (``"ResNet-32, 38.0% kept"``) and the ResNets of ``second_line.robustness_depths``
    (loaded or trained, in that order)."""
    SL = profile.second_line
    sl_nets = {(f"ResNet-{SL.base_depth}" if keep == 1.0 else f"ResNet-{SL.base_depth}, {achieved:.1%} kept"): trained
               for keep, trained, achieved in ex.cifar_compressed_models(profile, progress=True)}
    sl_nets.update({f"ResNet-{d}": ex.cifar_resnet_model(profile, d)
                    for d in SL.robustness_depths if d != SL.base_depth})
    return sl_nets


def mean_on_constraint(cid: torch.Tensor, ok: np.ndarray) -> float:
    """Mean of the ``[B]`` per-image CIDs whose map met the constraint (``ok``), NaN when none did."""
    return float(cid[torch.from_numpy(ok)].mean()) if ok.any() else float("nan")


def second_line_measure(sl_nets: Mapping[str, Trained], x: torch.Tensor, top_k: int, dataset: Dataset, *,
                        max_steps: int, seed: int, settings: deepinfo.Settings,
                        tol: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Last-layer CID, robustness and accuracy of every second-line net (measurement).

    Args:
        sl_nets: :func:`second_line_nets`; x: ``[B, C, H, W]`` CIFAR test images.
        top_k: wrong classes per image; dataset: the test set for the accuracy.
        max_steps, seed, settings, tol: the search's steps and the estimator's seed, settings, tolerance.

    Returns:
        ``(table, cid_frame)``: one row per net with ``DNN``, ``test accuracy``, ``CID (last FC)``
        (nats, mean over maps on the constraint), ``CID maps left out``, :data:`ROBUSTNESS` and
        ``pairs reaching the boundary``; and the maps' ``to_frame`` rows with ``network`` and
        ``on_constraint``.
    """
    sl_rows, sl_frames = [], []
    for name, trained in sl_nets.items():
        fc = last_linear(trained.model)
        maps = deepinfo.cid(trained.model, x, [fc], seed=seed, progress=True, settings=settings)
        ok = on_constraint(maps.constraint[0].numpy(), tol)
        res = robustness(trained.model, x, top_k, max_steps=max_steps, progress=True)
        sl_frames.append(maps.to_frame().assign(network=name, on_constraint=ok))
        sl_rows.append({"DNN": name, "test accuracy": trained.accuracy(dataset),
                        "CID (last FC)": mean_on_constraint(maps.mean()[0], ok),
                        "CID maps left out": int((~ok).sum()), ROBUSTNESS: res.mean,
                        "pairs reaching the boundary": res.reached_fraction})
    return pd.DataFrame(sl_rows), pd.concat(sl_frames, ignore_index=True)


def second_line_setup(profile: Profile, sl_nets: Mapping[str, Trained], table: pd.DataFrame, cid_frame: pd.DataFrame,
                      dataset: Dataset, *, n_images: int, top_k: int, accuracy_fraction: float,
                      min_reached: float) -> list[Condition]:
    """The setup conditions of the second line's claim.

    Args:
        profile: the run's profile; sl_nets: :func:`second_line_nets`.
        table, cid_frame: :func:`second_line_measure`'s results; dataset: the CIFAR test set.
        n_images, top_k: the search's size, for the words.
        accuracy_fraction: the share of the published accuracy every unpruned net must reach.
        min_reached: the share of pairs every net must push to the boundary.

    Returns:
        ``[the paper's network and data (never met), accuracy of the unpruned nets, pairs reaching
        the boundary, maps on the constraint]``.
    """
    P, SL = profile, profile.second_line
    depths = sorted({SL.base_depth, *SL.robustness_depths})
    lowest = float(table["pairs reaching the boundary"].min())
    return [
        Condition("the paper's network and data", False, f"CIFAR ResNets on {P.data.cifar.dataset} (second line)",
                  "VGG-16 and its compressions on CUB-200-2011"),
        Condition("accuracy of the unpruned nets",
                  all(sl_nets[f"ResNet-{d}"].accuracy(dataset) >= accuracy_fraction * PUBLISHED_ACCURACY[d]
                      for d in depths),
                  ", ".join(f"ResNet-{d} {sl_nets[f'ResNet-{d}'].accuracy(dataset):.1%}" for d in depths)
                  + f" ({ex.cifar_weights_words(P)})",
                  "published: " + ", ".join(f"ResNet-{d} {PUBLISHED_ACCURACY[d]:.1%}" for d in depths)),
        Condition("pairs reaching the boundary", lowest >= min_reached,
                  f"lowest {lowest:.0%} of {n_images} images x top-{top_k} targets",
                  "every (image, target) pair pushed to the boundary"),
        constraint_condition(cid_frame["constraint"].to_numpy(), P.estimator.tol),
    ]


def second_line_evidence(table: pd.DataFrame, *, rho: float) -> dict[str, dict | str]:
    """The ``numbers`` and ``detail`` of the second line's claim.

    Args:
        table: :func:`second_line_measure`'s table; rho: the Spearman correlation over its nets.

    Returns:
        ``{"numbers": {spearman_rho, n_nets, cid_last_<net>..., robustness_l2_<net>...}, "detail": str}``.
    """
    cid_col = "CID (last FC)"
    n_nets = len(table[[cid_col, ROBUSTNESS]].dropna())
    numbers = {"spearman_rho": rho, "n_nets": n_nets, **per_net_numbers(table, cid_col)}
    detail = (f"Spearman rho over {n_nets} nets = {rho:.2f}; " + "; ".join(
        f"{n}: CID {c:.4f}, L2 {r:.4g}" for n, c, r in zip(table["DNN"], table[cid_col], table[ROBUSTNESS]))
        + ".")
    return {"numbers": numbers, "detail": detail}


def second_line_data(profile: Profile, sl_nets: Mapping[str, Trained], n_images: int, top_k: int) -> str:
    """The data line of the second line's claim: test set, images x targets, the nets and their weights."""
    P = profile
    return (f"{P.data.cifar.dataset} test set, {n_images} images x top-{top_k} wrong classes; "
            + ", ".join(sl_nets) + f" ({ex.cifar_weights_words(P)}; pruned stages retrained {P.second_line.retrain.epochs} "
            "epochs each)")

"""The analysis behind ``notebooks/12_dynamics.ipynb``: Fig. 9 (App. F.3), the CID of every block
of a ResNet over training epochs, and the information-bottleneck claim for the high blocks.

The page tabulates the training run's snapshots (:func:`snapshot_table`), measures the CID of every
block at every snapshot (:func:`cid_over_snapshots`, one row per snapshot, block and image) and
averages it per block (:func:`mean_per_block`, :func:`cid_per_block_grid`), draws Fig. 9
(:func:`cid_over_epochs_figure`), and turns the high blocks' curves into the claim's per-image
fall and rise (:func:`high_block_curves`, :func:`fall_and_rise`), its setup condition
(:func:`convergence_condition`), numbers and detail. The notebook keeps the rule's constants, the
``decide``/``combine`` calls and the claim's words.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from torch import nn

import deepinfo
from deepinfo.book.experiments import layers_for
from deepinfo.book.verdicts import HELD, INCONCLUSIVE, Condition, Verdict, on_constraint, parts_text
from deepinfo.models import resolve_layers
from deepinfo.toolkit.profile import Profile
from deepinfo.toolkit.training import History

#: ``{epoch: (held-out accuracy in [0, 1], held-out mean cross-entropy in nats)}``
Scores = Mapping[int, tuple[float, float]]


def snapshot_table(history: History, epochs: Sequence[int], scores: Scores) -> pd.DataFrame:
    """One row per snapshot: where in learning it is.

    Args:
        history: the run's per-epoch history (``train_loss``, ``train_acc``, ``lr``; entry ``e - 1``
            is epoch ``e``).
        epochs: the snapshots' epochs (0 = the initial network).
        scores: held-out accuracy and loss of every snapshot.

    Returns:
        Columns ``epoch``, ``train_loss`` and ``train_accuracy`` (of the epoch that ended at the
        snapshot, augmented images; NaN at epoch 0), ``lr`` (at the start of that epoch),
        ``test_accuracy`` and ``test_loss`` (the snapshot on held-out images).
    """
    h = history
    return pd.DataFrame({
        "epoch": epochs,
        "train_loss": [h.train_loss[e - 1] if e > 0 else float("nan") for e in epochs],
        "train_accuracy": [h.train_acc[e - 1] if e > 0 else float("nan") for e in epochs],
        "lr": [h.lr[e - 1] if e > 0 else float("nan") for e in epochs],
        "test_accuracy": [scores[e][0] for e in epochs],
        "test_loss": [scores[e][1] for e in epochs],
    })


def snapshot_rows(epoch: int, layers: Sequence[str], cid: torch.Tensor, ratio: torch.Tensor) -> list[dict]:
    """One row per (block, image) of one snapshot's maps.

    Args:
        epoch: the snapshot's epoch; layers: the measured blocks, first to last.
        cid: ``[L, B]`` mean pixel-wise CID (nats per grid cell); ratio: ``[L, B]`` achieved constraint ratio r.

    Returns:
        Dicts with ``epoch, block, block_index`` (0 = first measured), ``n_blocks, image, cid, ratio``,
        block-major.
    """
    rows = []
    for l, name in enumerate(layers):
        for b in range(cid.shape[1]):
            rows.append({"epoch": epoch, "block": name, "block_index": l, "n_blocks": len(layers), "image": b,
                         "cid": float(cid[l, b]), "ratio": float(ratio[l, b])})
    return rows


def cid_over_snapshots(profile: Profile, snapshots: Mapping[int, nn.Module], x: torch.Tensor, arch: str,
                       settings: deepinfo.Settings) -> pd.DataFrame:
    """The CID of every block's output at every snapshot, on the same images (measurement).

    The blocks are ``dynamics.layers`` when the profile sets it, otherwise the profile's layers of
    ``arch``; the estimator's seed is the profile's.

    Args:
        profile: the run's profile; snapshots: ``{epoch: model}``; x: ``[B, C, H, W]`` test images.
        arch: e.g. ``"resnet32"``; settings: the estimator's settings.

    Returns:
        :func:`snapshot_rows` of every snapshot, with ``on_constraint`` (``|r - 1| <= estimator.tol``).
    """
    P, D = profile, profile.dynamics
    rows = []
    for epoch, model in snapshots.items():
        layers = resolve_layers(model, D.layers) if D.layers is not None else layers_for(P, arch, model)
        maps = deepinfo.cid(model, x, layers, settings=settings, seed=P.seed, progress=True)
        rows += snapshot_rows(epoch, layers, maps.mean(), maps.constraint)  # mean(): [L, B] nats per grid cell
    per_image = pd.DataFrame(rows)
    per_image["on_constraint"] = on_constraint(per_image.ratio.to_numpy(), P.estimator.tol)
    return per_image


def mean_per_block(per_image: pd.DataFrame) -> pd.DataFrame:
    """Mean ``cid`` (nats) and ``ratio`` over the images, per (epoch, block, block_index), in order
    of appearance (every map, on the constraint or not).

    Args:
        per_image: :func:`cid_over_snapshots`' frame.
    """
    return (per_image.groupby(["epoch", "block", "block_index"], sort=False)[["cid", "ratio"]]
            .mean().reset_index())


def cid_per_block_grid(per_block: pd.DataFrame) -> pd.DataFrame:
    """The mean CID as a grid: one row per snapshot (column ``epoch``), one column per block from the
    first to the last.

    Args:
        per_block: :func:`mean_per_block`'s frame.
    """
    return (per_block.pivot(index="epoch", columns="block", values="cid")
            [list(dict.fromkeys(per_block.block))].reset_index())


def high_blocks(blocks: Sequence[str], fraction: float) -> list[str]:
    """The "high layers": the last ``round(len(blocks) * fraction)`` blocks, at least one.

    Args:
        blocks: the measured blocks, first to last; fraction: the share of them that is "high".
    """
    n_blocks = len(blocks)
    return list(blocks[n_blocks - max(1, round(n_blocks * fraction)):])


def cid_over_epochs_figure(per_block: pd.DataFrame, training: pd.DataFrame, high: Sequence[str],
                           arch: str) -> Figure:
    """Fig. 9: left, one CID curve per block over the epochs (the high blocks thicker); right, the
    training loss and the held-out loss and accuracy of every snapshot.

    Args:
        per_block: :func:`mean_per_block`; training: :func:`snapshot_table`.
        high: the high blocks (:func:`high_blocks`); arch: for the title.

    Returns:
        The figure (the notebook saves and shows it).
    """
    blocks = list(dict.fromkeys(per_block.block))
    n_blocks = len(blocks)
    colors = sns.color_palette("viridis", n_blocks)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    for i, b in enumerate(blocks):
        d = per_block[per_block.block == b]
        ax0.plot(d.epoch, d.cid, marker="o", ms=3, color=colors[i], lw=2 if b in high else 1,
                 label=b + (" (high)" if b in high else ""))
    ax0.set_xlabel("epoch")
    ax0.set_ylabel("CID (nats per grid cell)")
    ax0.set_title(f"CID of each block's output over training ({arch})")
    ax0.legend(fontsize=7, ncol=2 if n_blocks > 8 else 1, loc="best")
    ax1.plot(training.epoch, training.train_loss, marker="o", color="k", label="training loss")
    ax1.plot(training.epoch, training.test_loss, marker="s", color="0.5", ls="--", label="held-out loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss (cross-entropy)")
    ax1b = ax1.twinx()
    ax1b.plot(training.epoch, 100 * training.test_accuracy, marker="^", color="tab:red", label="held-out accuracy")
    ax1b.set_ylabel("held-out accuracy (%)", color="tab:red")
    ax1.set_title("training and held-out data")
    ax1.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    return fig


def high_block_curves(per_image: pd.DataFrame, high: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each image's high-block curve: its CID averaged over the high blocks, per snapshot.

    A (block, image) pair enters only if its map met the constraint at every snapshot, so that
    every snapshot of an image averages the same blocks.

    Args:
        per_image: :func:`cid_over_snapshots`' frame; high: the high blocks.

    Returns:
        ``(hi, curves)``: the high blocks' rows with a ``kept`` column (the pair met the constraint
        at every snapshot), and ``[snapshots, images]`` mean CID (nats; index ``epoch``, sorted;
        columns the images with at least one kept pair).
    """
    hi = per_image[per_image.block.isin(high)].copy()
    hi["kept"] = hi.groupby(["block", "image"]).on_constraint.transform("all")
    curves = hi[hi.kept].groupby(["epoch", "image"]).cid.mean().unstack("image").sort_index()
    return hi, curves


def high_block_table(curves: pd.DataFrame, snap: Sequence[int]) -> pd.DataFrame:
    """The mean high-block CID per snapshot with its standard error over images.

    Args:
        curves: :func:`high_block_curves`' ``[snapshots, images]`` frame; snap: the snapshots' epochs.

    Returns:
        Columns ``epoch``, ``cid_high`` (mean over images, nats), ``se`` (sample sd / sqrt(n)),
        ``n_images``.
    """
    n_units = curves.shape[1]
    c = curves.mean(axis=1)
    return pd.DataFrame({"epoch": snap, "cid_high": c.reindex(snap).to_numpy(),
                         "se": (curves.std(axis=1, ddof=1) / math.sqrt(max(n_units, 1))).reindex(snap).to_numpy(),
                         "n_images": n_units})


def convergence_condition(epochs: Sequence[int], scores: Scores, history: History, n_train: int, *, plateau: float,
                          converged_fraction: float, paper_accuracy: float, paper_epochs: int) -> Condition:
    """Setup: training converged, judged on held-out data (a decaying schedule flattens the training
    loss whatever the model): the held-out accuracy moves by less than ``plateau`` between the last
    two snapshots and reaches ``converged_fraction * paper_accuracy``.

    Args:
        epochs: the snapshots' epochs; scores: their held-out accuracy and loss.
        history: the run's history (for the number of epochs and the learning rates).
        n_train: training images.
        plateau, converged_fraction, paper_accuracy, paper_epochs: the rule's constants.

    Returns:
        The :class:`~deepinfo.book.verdicts.Condition` ("training converged"; never met with one snapshot).
    """
    h = history
    if len(epochs) >= 2:
        (e_a, e_b), (acc_a, acc_b) = epochs[-2:], (scores[epochs[-2]][0], scores[epochs[-1]][0])
        flat, level = abs(acc_b - acc_a) < plateau, acc_b >= converged_fraction * paper_accuracy
        return Condition(
            "training converged", flat and level,
            f"{len(h.train_loss)} epochs on {n_train} images; held-out accuracy {acc_a:.1%} at epoch {e_a} -> "
            f"{acc_b:.1%} at epoch {e_b} ({100 * (acc_b - acc_a):+.1f} points), "
            f"{'at least' if level else 'below'} {converged_fraction:.0%} of a fully trained ResNet-32's; learning "
            f"rate {h.lr[-1]:.2g} at the start of the last epoch (peak {max(h.lr):.2g})",
            f"{paper_epochs} epochs on CIFAR-10, ResNet-32 at {paper_accuracy:.1%}")
    return Condition("training converged", False, f"only {len(epochs)} snapshot", f"{paper_epochs} epochs")


def claim_numbers(hi: pd.DataFrame, curves: pd.DataFrame, snap: Sequence[int], high: Sequence[str],
                  scores: Scores) -> dict:
    """The claim's numbers known before deciding: ``n_snapshots``, ``high_blocks``, ``n_images``,
    ``n_high_pairs_left_out`` ((block, image) pairs off the constraint at some snapshot),
    ``cid_high_epoch<e>`` (mean high-block CID, nats) and ``test_accuracy_epoch<e>``.

    Args:
        hi, curves: :func:`high_block_curves`; snap: the snapshots' epochs; high: the high blocks;
        scores: held-out accuracy and loss per snapshot.
    """
    return {"n_snapshots": len(snap), "high_blocks": ", ".join(high), "n_images": curves.shape[1],
            "n_high_pairs_left_out": int((~hi.groupby(["block", "image"]).kept.first()).sum()),
            **{f"cid_high_epoch{e}": float(v) for e, v in curves.mean(axis=1).items()},
            **{f"test_accuracy_epoch{e}": s[0] for e, s in scores.items()}}


def fall_and_rise(curves: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image, the fall of its high-block CID to the interior minimum e* and the rise after it.

    e* is the interior snapshot (neither first nor last) where the mean curve over the *other*
    images is lowest (leave-one-out), so an image's own noise never picks the epoch it is tested at.

    Args:
        curves: ``[S, n]`` curves (S >= 3 snapshots in order, n >= 2 images).

    Returns:
        ``(fall, rise, star)``: ``fall = c_i(first) - c_i(e*)`` and ``rise = c_i(last) - c_i(e*)``
        (``[n]``, nats), and ``star`` (``[n]``, e*'s row index in ``curves``).
    """
    v = curves.to_numpy()  # [S, n]
    n_units = v.shape[1]
    inner = np.arange(1, v.shape[0] - 1)
    others = (v.sum(1, keepdims=True) - v) / (n_units - 1)  # [S, n]: mean curve over the other images
    star = inner[np.argmin(others[inner], axis=0)]  # [n]: interior minimum, leave-one-out
    cols = np.arange(n_units)
    return v[0] - v[star, cols], v[-1] - v[star, cols], star


def mean_curve_minimum(curves: pd.DataFrame) -> tuple[int, bool]:
    """The epoch where the mean high-block curve (over images) is lowest, and whether it is interior
    (neither the first nor the last snapshot).

    Args:
        curves: ``[S, n]`` curves indexed by epoch.
    """
    c = curves.mean(axis=1)
    e_min = int(c.idxmin())
    return e_min, e_min not in (c.index[0], c.index[-1])


def held_only_at_interior_minimum(verdict: Verdict, interior: bool) -> Verdict:
    """The rule's last check: "held" needs the mean curve's minimum at an interior snapshot;
    otherwise the verdict becomes inconclusive, saying why (cannot happen with both the fall and
    the rise above 0, kept as the rule says)."""
    if verdict.verdict == HELD and not interior:
        return dataclasses.replace(verdict, verdict=INCONCLUSIVE, n_needed=None,
                                   design=verdict.design + "; the mean curve's minimum is at an end point")
    return verdict


def parts_numbers(parts: Mapping[str, Verdict], e_min: int) -> dict:
    """``epoch_of_min_mean_curve``, then ``<part>_effect``, ``<part>_lo``, ``<part>_hi`` of every part."""
    return {"epoch_of_min_mean_curve": e_min,
            **{f"{k}_{q}": val for k, p in parts.items()
               for q, val in (("effect", p.effect), ("lo", p.interval[0]), ("hi", p.interval[1]))}}


def fall_rise_detail(parts: Mapping[str, Verdict], star: np.ndarray, curves: pd.DataFrame, e_min: int,
                     interior: bool) -> str:
    """The claim's detail: the parts' verdicts, the epochs picked as e* (how many images each), the mean
    curve's own minimum and the mean high-block CID per snapshot.

    Args:
        parts: ``{"fall": ..., "rise": ...}``; star: :func:`fall_and_rise`'s row indices;
        curves: the ``[S, n]`` curves indexed by epoch; e_min, interior: :func:`mean_curve_minimum`.
    """
    snap = list(curves.index)
    c = curves.mean(axis=1)
    picked = pd.Series([snap[i] for i in star]).value_counts().sort_index()
    return (parts_text(parts) + " Interior minimum e* (leave-one-out) per image: "
            + ", ".join(f"epoch {e} for {k} image{'s' if k != 1 else ''}" for e, k in picked.items())
            + f"; the mean curve's own minimum is at epoch {e_min} ({'interior' if interior else 'an end point'}). "
            + "Mean high-block CID per snapshot: " + ", ".join(f"epoch {e} {val:.4f}" for e, val in c.items())
            + " nats.")

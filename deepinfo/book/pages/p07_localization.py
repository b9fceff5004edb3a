"""The analysis behind book page ``07_localization``: weakly supervised localization, the paper's
Table 2 (CID against CAM, Grad-CAM and LRP).

The notebook measures the CID maps (``deepinfo.cid``) and decides the claim; the functions here
take the baselines' importance maps, score every map by its recall of the object box (Schulz et
al., 2020), lay the scores out as Table 2, draw the example maps, and build the per-image
comparisons, setup conditions, numbers and detail of the claim.

The per-image scores (``scores``, the ``recall_per_image`` table) have one row per (network,
method, image): network, method, image (its index in the test set), recall (in [0, 1]),
box_fraction (the box's share of the image), cid_layer and cid_ratio (the CID map's constraint
ratio r; "" and NaN on the other methods' rows).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from deepinfo.attribution.baselines import attribute
from deepinfo.attribution.evaluation import localization_recall
from deepinfo.plotting import overlay
from deepinfo.toolkit.profile import Profile
from deepinfo.book.verdicts import HELD, NOT_HELD, Condition, Verdict, constraint_condition, decide, on_constraint

__all__ = ["RANDOM", "importance_maps", "recall_rows", "table2", "table2_sem", "maps_figure", "images_on_constraint",
           "compare_with_cid", "combined_words", "cid_margins", "cid_summary", "setup_conditions", "claim_numbers",
           "claim_detail"]

#: Table 2's last row: what a random ranking scores on average (the boxes' mean area fraction)
RANDOM = "Random (expected)"


# --- importance maps and scores ----------------------------------------------------------------

def importance_maps(model: nn.Module, x: torch.Tensor, minus_cid: torch.Tensor
                    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every method's importance map of ``x`` (higher = more important), baselines for the
    predicted class.

    CAM needs a global average pool before one final linear layer; where the network has none,
    CAM is left out and the reason returned.

    Args:
        model: the classifier.
        x: ``[B, C, H, W]`` images in ``[0, 1]``.
        minus_cid: ``[B, Gh, Gw]`` minus the pixel-wise CID of the network's last hidden layer.

    Returns:
        ``(importance, skipped)``: ``{"CID", "CAM", "Grad-CAM", "LRP": [B, h, w] map}`` in that order
        (CAM absent when skipped) and ``{method: why}`` for the methods left out.
    """
    importance, skipped = {"CID": minus_cid}, {}
    try:
        importance["CAM"] = attribute("cam", model, x)
    except ValueError as err:  # CAM needs global average pooling before one final linear layer
        skipped["CAM"] = str(err).split(";")[0]
    importance["Grad-CAM"] = attribute("gradcam", model, x)
    importance["LRP"] = attribute("lrp", model, x)
    return importance, skipped


def recall_rows(network: str, importance: Mapping[str, torch.Tensor], masks: torch.Tensor, image_ids: torch.Tensor,
                box_fraction: torch.Tensor, methods: Sequence[str], cid_layer: str, cid_ratio: torch.Tensor, *,
                seed: int) -> list[dict]:
    """Each method's recall of the object box on each image, as rows of the ``recall_per_image`` table.

    The recall of an image is the share of its ``n`` most important pixels inside the box, ``n``
    the box's pixel count (:func:`deepinfo.attribution.evaluation.localization_recall`; maps coarser
    than the image resized bilinearly, ties broken by ``seed``).

    Args:
        network: the network's name.
        importance: ``{method: [B, h, w]}`` (:func:`importance_maps`); methods absent here are skipped.
        masks: ``[B, H, W]`` bool object masks.
        image_ids: ``[B]`` the images' indices in the test set.
        box_fraction: ``[B]`` each box's share of its image.
        methods: the methods, in the table's order.
        cid_layer: the layer CID was measured at.
        cid_ratio: ``[B]`` the CID maps' constraint ratios r.
        seed: the tie-breaking seed.

    Returns:
        One dict per (method, image), method-major (the columns are in the module docstring).
    """
    rows = []
    for method in methods:
        if method not in importance:
            continue
        recall = localization_recall(importance[method], masks, upsample="bilinear", seed=seed)
        for b, image_id in enumerate(image_ids.tolist()):
            rows.append({"network": network, "method": method, "image": image_id, "recall": float(recall[b]),
                         "box_fraction": float(box_fraction[b]),
                         "cid_layer": cid_layer if method == "CID" else "",
                         "cid_ratio": float(cid_ratio[b]) if method == "CID" else np.nan})
    return rows


def table2(scores: pd.DataFrame, random_score: float, methods: Sequence[str], networks: Sequence[str]) -> pd.DataFrame:
    """The paper's Table 2: mean recall per method (rows) and network (columns).

    Args:
        scores: the per-image scores.
        random_score: the last row's value on every network (the boxes' mean area fraction).
        methods, networks: the rows and columns, in order.

    Returns:
        Index method (``methods``, then :data:`RANDOM`), one column per network; NaN where a
        method is not defined on a network.
    """
    order = list(methods) + [RANDOM]
    table = scores.pivot_table(index="method", columns="network", values="recall", aggfunc="mean")
    table.loc[RANDOM] = random_score
    return table.reindex(index=order, columns=list(networks))


def table2_sem(scores: pd.DataFrame, methods: Sequence[str], networks: Sequence[str]) -> pd.DataFrame:
    """The standard error over images of each mean recall of :func:`table2` (same layout, no
    random row; NaN for a method not defined on a network or seen on one image only)."""
    return (scores.groupby(["method", "network"]).recall.sem().unstack("network")
            .reindex(index=list(methods), columns=list(networks)))


def maps_figure(x: torch.Tensor, masks: torch.Tensor, examples: Mapping[str, Mapping[str, torch.Tensor]],
                networks: Sequence[str], methods: Sequence[str], image: int = 0) -> Figure:
    """One image's importance maps: a row per network, a column per method, the box outlined.

    Args:
        x: ``[B, C, H, W]`` images in ``[0, 1]``; masks: ``[B, H, W]`` object masks.
        examples: ``{network: {method: [B, h, w] map}}``; a missing method is drawn as "n/a".
        networks, methods: the rows and columns.
        image: which image is shown.

    Returns:
        The figure.
    """
    fig, axes = plt.subplots(len(networks), len(methods) + 1, figsize=(1.9 * (len(methods) + 1), 2.0 * len(networks)),
                             squeeze=False)
    b = image
    for r, arch in enumerate(networks):
        axes[r, 0].imshow(x[b].permute(1, 2, 0).clamp(0, 1).numpy())
        axes[r, 0].contour(masks[b].float().numpy(), levels=[0.5], colors="w", linewidths=1)
        axes[r, 0].set_axis_off()
        axes[r, 0].set_title(arch, fontsize=9)
        for c, method in enumerate(methods):
            ax = axes[r, c + 1]
            if method in examples[arch]:
                overlay(x[b], examples[arch][method][b], ax, cmap="viridis", alpha=0.7,
                        title=method if r == 0 else None)
                ax.contour(np.linspace(0.5, x.shape[-1] - 0.5, x.shape[-1]), np.linspace(0.5, x.shape[-2] - 0.5, x.shape[-2]),
                           masks[b].float().numpy(), levels=[0.5], colors="w", linewidths=1)
            else:
                ax.set_axis_off()
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
                if r == 0:
                    ax.set_title(method, fontsize=9)
    fig.suptitle("importance maps (bright = important; CID shown as minus CID); white: object", fontsize=9)
    fig.tight_layout()
    return fig


# --- the claim ---------------------------------------------------------------------------------

def images_on_constraint(scores: pd.DataFrame, networks: Sequence[str], n_images: int, tol: float
                         ) -> tuple[dict[str, set], dict[str, int]]:
    """The images whose CID map met the distortion constraint, per network.

    Args:
        scores: the per-image scores (its CID rows carry ``cid_ratio``); not modified.
        networks: the networks.
        n_images: the images measured on each network.
        tol: the constraint tolerance (``|r - 1| <= tol``).

    Returns:
        ``(ok_images, left_out)``: ``{network: set of image ids on the constraint}`` and
        ``{network: n_images minus that many}``.
    """
    scores = scores.copy()
    scores["on_constraint"] = False
    cid_rows = scores.method == "CID"
    scores.loc[cid_rows, "on_constraint"] = on_constraint(scores.loc[cid_rows, "cid_ratio"].to_numpy(), tol)
    ok_images = {a: set(scores[cid_rows & (scores.network == a) & scores.on_constraint].image) for a in networks}
    left_out = {a: n_images - len(ok_images[a]) for a in networks}
    return ok_images, left_out


def compare_with_cid(scores: pd.DataFrame, networks: Sequence[str], ok_images: Mapping[str, set],
                     methods: Sequence[str], *, threshold: float, side: str, unit: str
                     ) -> tuple[dict[str, Verdict], pd.DataFrame]:
    """CID against each other method, image by image, on each network.

    Per (network, method) the units are the images on the constraint, each with the paired
    difference recall(CID) - recall(method); :func:`deepinfo.book.verdicts.decide` decides its mean.

    Args:
        scores: the per-image scores.
        networks: the networks, in order.
        ok_images: from :func:`images_on_constraint` (the other images are left out).
        methods: every method, CID among them (the others in this order, where defined).
        threshold, side, unit: the page's rule.

    Returns:
        ``(verdicts, comparisons)``: ``{"<method> on <network>": verdict}`` and the ``comparisons``
        table (network, method, mean recall difference (CID - method), lo, hi, n_images, verdict,
        images needed).
    """
    verdicts, rows = {}, []
    for arch in networks:
        wide = scores[scores.network == arch].pivot(index="image", columns="method", values="recall")
        wide = wide[wide.index.isin(ok_images[arch])]  # maps off the constraint are left out
        for method in [m for m in methods if m != "CID" and m in wide.columns]:
            if not len(wide):
                continue
            v = decide((wide["CID"] - wide[method]).to_numpy(), threshold=threshold, side=side, unit=unit)
            verdicts[f"{method} on {arch}"] = v
            rows.append({"network": arch, "method": method, "mean recall difference (CID - method)": v.effect,
                         "lo": v.interval[0], "hi": v.interval[1], "n_images": v.n_units, "verdict": v.verdict,
                         "images needed": v.n_needed})
    return verdicts, pd.DataFrame(rows)


def combined_words(verdict: Verdict, decider: str) -> str:
    """The claim's combined verdict in words, naming the comparison that decides it."""
    return ("held: CID beats every other method on every network" if verdict.verdict == HELD else
            f"not held: CID does not beat {decider}" if verdict.verdict == NOT_HELD else
            f"inconclusive: the comparison with {decider} does not decide")


def cid_margins(table: pd.DataFrame, networks: Sequence[str]) -> dict[str, float]:
    """Per network, CID's mean recall minus the best other method's defined on it (the random row
    excluded), from :func:`table2`."""
    margins = {}
    for arch in networks:
        col = table[arch]
        margins[arch] = float(col["CID"] - col.drop(["CID", RANDOM]).dropna().max())
    return margins


def cid_summary(table: pd.DataFrame, margins: Mapping[str, float], networks: Sequence[str]) -> str:
    """``"<network> <CID's mean recall> (margin <+margin>); ..."`` for the page's text."""
    return "; ".join(f"{a} {table.loc['CID', a]:.3f} (margin {margins[a]:+.3f})" for a in networks)


def setup_conditions(profile: Profile, accuracy: pd.DataFrame, networks: Sequence[str], ok_images: Mapping[str, set],
                     scores: pd.DataFrame, *, paper_accuracy: float, accuracy_fraction: float,
                     min_images: int) -> list[Condition]:
    """The paper's setup the claim relies on, checked with this run's numbers.

    Every network's accuracy at least ``accuracy_fraction`` of ``paper_accuracy``; at least
    ``min_images`` images in the verdict on every network; enough CID maps on the constraint
    (:func:`deepinfo.book.verdicts.constraint_condition`).

    Args:
        profile: the run's profile (network and data settings, for the words).
        accuracy: the ``accuracy`` table (network, accuracy in [0, 1]).
        networks: the networks.
        ok_images: from :func:`images_on_constraint`.
        scores: the per-image scores (the CID rows' ``cid_ratio``).
        paper_accuracy, accuracy_fraction, min_images: the page's thresholds.

    Returns:
        The conditions: classifier accuracy, images, maps on the constraint.
    """
    P = profile
    trained = "fine-tuned from ImageNet" if P.networks.cub.weights == "imagenet" else "trained from scratch"
    acc = accuracy.set_index("network").accuracy
    cid_ratios = scores.loc[scores.method == "CID", "cid_ratio"].to_numpy()
    return [
        Condition("classifier accuracy", all(acc[a] >= accuracy_fraction * paper_accuracy for a in networks),
                  ", ".join(f"{a} {acc[a]:.1%}" for a in networks)
                  + f" ({trained} on whole images, {P.data.cub.num_classes} classes, {P.data.cub.image_size} px)",
                  f"ResNet-50 / VGG-16 fine-tuned from ImageNet on whole CUB-200 images (200 classes, 224 px), "
                  f"~{paper_accuracy:.0%}"),
        Condition("images", min(len(ok_images[a]) for a in networks) >= min_images,
                  ", ".join(f"{len(ok_images[a])} on {a}" for a in networks) + " test images in the verdict",
                  f"the CUB-200 test images with a box of at most a third of the image (at least {min_images} asked here)"),
        constraint_condition(cid_ratios, P.estimator.tol),
    ]


def _key(name: str) -> str:
    """A method or comparison name as a numbers key: no hyphens, underscores for spaces, lower case."""
    return name.replace("-", "").replace(" ", "_").lower()


def claim_numbers(table: pd.DataFrame, margins: Mapping[str, float], verdicts: Mapping[str, Verdict],
                  left_out: Mapping[str, int], networks: Sequence[str], methods: Sequence[str],
                  n_images: int) -> dict[str, float | int]:
    """The claim's ``numbers``.

    Returns:
        ``recall_<method>_<network>`` (each defined mean recall of :func:`table2`),
        ``cid_margin_<network>``, ``diff_<method>_on_<network>`` (each comparison's mean paired
        difference), ``n_images_left_out_<network>`` and ``n_images``, in that order.
    """
    numbers = {f"recall_{_key(m)}_{a}": float(table.loc[m, a])
               for m in methods for a in networks if np.isfinite(table.loc[m, a])}
    numbers.update({f"cid_margin_{a}": margins[a] for a in networks})
    numbers.update({f"diff_{_key(k)}": v.effect for k, v in verdicts.items()})
    numbers.update({f"n_images_left_out_{a}": left_out[a] for a in networks})
    numbers["n_images"] = n_images
    return numbers


def claim_detail(combined: str, decider: str, verdicts: Mapping[str, Verdict], table: pd.DataFrame,
                 networks: Sequence[str], methods: Sequence[str], random_score: float,
                 left_out: Mapping[str, int]) -> str:
    """The claim's ``detail``: the combined verdict, every comparison, the mean recalls of CID and
    of the best other method per network, the random ranking's score and the images left out."""
    return (f"{combined} (the verdict shown is CID vs {decider}; held only if CID beats every other method on "
            "every network). " + "; ".join(f"vs {k}: {v.summary('{:+.3f}')}" for k, v in verdicts.items())
            + ". Mean recalls: " + "; ".join(f"{a}: CID {table.loc['CID', a]:.3f}, best other "
                                             f"{table.loc[list(methods), a].drop('CID').max():.3f}" for a in networks)
            + f". A random ranking scores {random_score:.3f} on these images. Images left out (CID map "
            "off the constraint): " + ", ".join(f"{left_out[a]} on {a}" for a in networks) + ".")

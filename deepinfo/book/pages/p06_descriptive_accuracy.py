"""The analysis behind ``notebooks/06_descriptive_accuracy.ipynb``: the paper's Fig. 6.

Descriptive accuracy (Warnecke et al., 2020): the pixels an importance map ranks least important
are replaced, in growing fractions, and the classifier's accuracy on the altered images is tracked;
a slower fall is better. The page compares CID (minus the pixel-wise CID map) with the input-space
baselines, image by image: each image's area under its own accuracy curve, paired between CID and
each baseline.

* :func:`importance_maps`, figure :func:`maps_figure`: the maps compared;
* :func:`method_curves`, :func:`auc_table`, :func:`per_image_auc`, figure :func:`curves_figure`:
  the accuracy curves and their areas;
* :func:`paired_verdicts`, :func:`comparisons_frame`, :func:`overall_verdict`,
  :func:`combined_words`, :func:`setup_conditions`, :func:`claim_evidence`, :func:`data_text`:
  the claim.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd
import torch
from torch import nn

from deepinfo.attribution.baselines import attribute
from deepinfo.attribution.evaluation import descriptive_accuracy
from deepinfo.plotting import overlay
from deepinfo.result import InfoMaps
from deepinfo.book.verdicts import (HELD, NOT_HELD, Condition, Verdict, combine, constraint_condition, decide,
                                     undecidable)


def importance_maps(model: nn.Module, x: torch.Tensor, cid_maps: InfoMaps, cid_layer: str,
                    baselines: Mapping[str, str], seed: int) -> dict[str, torch.Tensor]:
    """Each method's importance map (higher = more important), by name.

    Args:
        cid_maps, cid_layer: the pixel-wise CID and its layer; the importance is minus the CID map.
        baselines: display name -> ``deepinfo.attribution.baselines.attribute`` method, each computed
            in input space for the class the network predicts.
        seed: seed of the ``"Random"`` reference ranking.

    Returns:
        ``{"CID": [B, Gh, Gw], <baseline>: [B, H, W] ..., "Random": [B, H, W]}`` in that order.
    """
    importance = {"CID": -cid_maps.layer(cid_layer)}
    for name, method in baselines.items():
        importance[name] = attribute(method, model, x)  # target None: the predicted class
    importance["Random"] = torch.rand(x.shape[0], *x.shape[-2:], generator=torch.Generator().manual_seed(seed))
    return importance


def maps_figure(x: torch.Tensor, labels: torch.Tensor, predicted: torch.Tensor,
                importance: Mapping[str, torch.Tensor], methods: Sequence[str]):
    """Figure ``maps``: the first two images with each method's importance map over them."""
    show = list(range(min(2, len(labels))))
    fig, axes = plt.subplots(len(show), len(methods) + 1, figsize=(1.9 * (len(methods) + 1), 2.0 * len(show)),
                             squeeze=False)
    for r, b in enumerate(show):
        axes[r, 0].imshow(x[b].permute(1, 2, 0).clamp(0, 1).numpy())
        axes[r, 0].set_axis_off()
        axes[r, 0].set_title(f"label {int(labels[b])}, pred {int(predicted[b])}", fontsize=8)
        for c, name in enumerate(methods):
            overlay(x[b], importance[name][b], axes[r, c + 1], cmap="viridis", alpha=0.7,
                    title=name if r == 0 else None)
    fig.suptitle("importance maps (bright = important; CID shown as minus CID)", fontsize=9)
    fig.tight_layout()
    return fig


def method_curves(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, importance: Mapping[str, torch.Tensor], *,
                  fractions: Sequence[float], fill, seed: int) -> pd.DataFrame:
    """Each method's accuracy curve over all images (:func:`descriptive_accuracy`, bilinear upsampling).

    Returns:
        ``descriptive_accuracy``'s rows (one per fraction removed) of every method stacked, with a
        first column ``method`` and a last column ``auc`` (the curve's area over the range of
        fractions, repeated on each row of the method).
    """
    curves = []
    for name, imp in importance.items():
        frame = descriptive_accuracy(model, x, labels, imp, fractions=fractions, fill=fill,
                                     upsample="bilinear", seed=seed)
        frame.insert(0, "method", name)
        frame["auc"] = frame.attrs["auc"]
        curves.append(frame)
    return pd.concat(curves, ignore_index=True)


def auc_table(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per method, ``method`` and ``auc``, highest AUC first (ties keep the curves' order)."""
    return (curves.groupby("method", sort=False).auc.first().rename("auc").reset_index()
            .sort_values("auc", ascending=False, ignore_index=True))


def per_image_auc(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, importance: Mapping[str, torch.Tensor],
                  cid_ratio, cid_ok, *, fractions: Sequence[float], fill, seed: int) -> pd.DataFrame:
    """Each image's own AUC per method: :func:`descriptive_accuracy` run on one image at a time.

    Returns:
        One row per image: ``image`` (0..B-1), one column per method (the image's AUC, the share of
        the removal levels, trapezoid-weighted, at which it is still classified correctly),
        ``cid_ratio`` (the CID map's achieved ratio r) and ``cid_on_constraint``.
    """
    per_image = pd.DataFrame({
        name: [descriptive_accuracy(model, x[b:b + 1], labels[b:b + 1], imp[b:b + 1], fractions=fractions, fill=fill,
                                    upsample="bilinear", seed=seed).attrs["auc"] for b in range(len(labels))]
        for name, imp in importance.items()})
    per_image.insert(0, "image", range(len(labels)))
    per_image["cid_ratio"] = cid_ratio
    per_image["cid_on_constraint"] = cid_ok
    return per_image


def auc_gap(per_image: pd.DataFrame, auc: pd.DataFrame, methods: Sequence[str]) -> float:
    """Largest over ``methods`` of |mean of the per-image AUCs - AUC of the curve over all images|
    (a check: the two agree up to rounding)."""
    return max(abs(per_image[m].mean() - float(auc.set_index("method").auc[m])) for m in methods)


def curves_figure(curves: pd.DataFrame, methods: Sequence[str], title: str):
    """Figure ``descriptive_accuracy``: accuracy against the share of pixels removed, per method (CID
    bold, the random ranking dotted), each labelled with its AUC."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in methods:
        d = curves[curves.method == name]
        style = dict(ls=":", color="0.5") if name == "Random" else dict(marker="o", lw=2.2 if name == "CID" else 1.4)
        ax.plot(100 * d.fraction, d.accuracy, label=f"{name} (AUC {d.auc.iloc[0]:.3f})", **style)
    ax.set_xlabel("pixels removed (%), least important first")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def best_baseline(auc_of: Mapping[str, float], baselines: Sequence[str]) -> str:
    """The baseline with the highest AUC of the curve (the first one on a tie)."""
    return max(baselines, key=lambda m: auc_of[m])


def paired_verdicts(per_image: pd.DataFrame, baselines: Sequence[str], *, threshold: float, side: str,
                    unit: str) -> tuple[dict[str, Verdict], int]:
    """One verdict per baseline on the paired per-image differences AUC(CID) - AUC(baseline).

    Images whose CID map is off the constraint (``cid_on_constraint`` False) are left out.

    Returns:
        ``(verdicts, n_left_out)``: ``{baseline: Verdict}`` (empty when no image is left) and the
        number of images left out.
    """
    used = per_image[per_image.cid_on_constraint]  # maps off the constraint are left out
    n_left_out = len(per_image) - len(used)
    verdicts = {m: decide((used["CID"] - used[m]).to_numpy(), threshold=threshold, side=side, unit=unit)
                for m in baselines} if len(used) else {}
    return verdicts, n_left_out


def comparisons_frame(verdicts: Mapping[str, Verdict]) -> pd.DataFrame:
    """Table ``comparisons``: per baseline the mean AUC difference (CID - baseline) with its interval
    ``lo``/``hi``, ``n_images``, ``verdict`` and ``images needed`` (for an inconclusive one)."""
    return pd.DataFrame([{"baseline": m, "mean AUC difference (CID - baseline)": v.effect, "lo": v.interval[0],
                          "hi": v.interval[1], "n_images": v.n_units, "verdict": v.verdict,
                          "images needed": v.n_needed} for m, v in verdicts.items()])


def overall_verdict(verdicts: Mapping[str, Verdict], unit: str) -> tuple[Verdict, str]:
    """The claim's verdict: every baseline must be beaten (:func:`combine`), and the deciding baseline.

    With no comparison at all (every CID map off the constraint) the verdict is undecidable and the
    decider ``"none"``.
    """
    if verdicts:
        verdict = combine(verdicts)
        return verdict, verdict.part
    return undecidable("every CID map missed the constraint", unit=unit), "none"


def combined_words(verdict: Verdict, decider: str) -> str:
    """The combined verdict in words, naming the deciding baseline."""
    return ("held: CID beats every baseline" if verdict.verdict == HELD else
            f"not held: CID does not beat {decider}" if verdict.verdict == NOT_HELD else
            f"inconclusive: the comparison with {decider} does not decide")


def setup_conditions(profile, arch: str, test_accuracy: float, n_used: int, cid_ratio, *, paper_accuracy: float,
                     accuracy_fraction: float, min_images: int) -> list[Condition]:
    """The paper's setup as checked here: the classifier's accuracy (met at ``accuracy_fraction`` of
    ``paper_accuracy``), enough images in the verdict (``n_used >= min_images``), and the CID maps on
    the constraint (:func:`deepinfo.book.verdicts.constraint_condition`)."""
    trained = "fine-tuned from ImageNet" if profile.networks.cub.weights == "imagenet" else "trained from scratch"
    return [
        Condition(f"{arch} accuracy", test_accuracy >= accuracy_fraction * paper_accuracy,
                  f"{test_accuracy:.1%} ({trained}, {profile.data.cub.num_classes} classes, "
                  f"{profile.data.cub.image_size} px)",
                  f"fine-tuned from ImageNet on CUB-200 (200 classes, 224 px), ~{paper_accuracy:.0%}"),
        Condition("images", n_used >= min_images, f"{n_used} test images in the verdict",
                  f"the CUB-200 test set (at least {min_images} asked here)"),
        constraint_condition(cid_ratio, profile.estimator.tol),
    ]


def _key(method: str) -> str:
    """``"Gradient x Input"`` -> ``"gradient_x_input"``: a method's name as a key of the claim's numbers."""
    return method.replace(' ', '_').replace('-', '_').lower()


def claim_evidence(verdicts: Mapping[str, Verdict], auc_of: Mapping[str, float], methods: Sequence[str], *,
                   combined: str, decider: str, n_images: int, n_left_out: int, test_accuracy: float) -> dict:
    """The claim's ``numbers`` and ``detail``.

    Returns:
        ``{"numbers", "detail"}``: numbers ``auc_<method>`` (AUC of the curve over all images, for
        ``methods`` and the random ranking), ``n_images``, ``n_images_left_out``, ``test_accuracy``
        and ``diff_<baseline>`` (mean paired AUC difference CID - baseline).
    """
    return dict(
        numbers={**{f"auc_{_key(m)}": auc_of[m] for m in methods},
                 "auc_random": auc_of["Random"], "n_images": n_images, "n_images_left_out": n_left_out,
                 "test_accuracy": test_accuracy,
                 **{f"diff_{_key(m)}": v.effect for m, v in verdicts.items()}},
        detail=(f"{combined} (the verdict shown is CID vs {decider}; held only if CID beats every baseline). "
                + "; ".join(f"vs {m}: {v.summary('{:+.3f}')}" for m, v in verdicts.items())
                + ". AUCs of the curves: " + ", ".join(f"{m} {auc_of[m]:.3f}" for m in methods)
                + f" (random ranking {auc_of['Random']:.3f}); {n_left_out} images left out (CID map off the "
                  "constraint)."))


def data_text(profile, n_images: int, arch: str, test_accuracy: float, cid_layer: str, fractions: Sequence[float],
              fill) -> str:
    """The claim's ``data``: the bird set, the images, the network, the CID layer, fractions and fill."""
    P = profile
    return (f"{P.data.cub.dataset} birds ({P.data.cub.num_classes} classes, {P.data.cub.image_size} px, "
            f"{P.data.cub.crop} crops); {n_images} test images (all, correct or not); {arch} "
            f"(width {P.networks.cub.width}, test accuracy {test_accuracy:.3f}); CID at {cid_layer}; "
            f"fractions {fractions}, fill {fill!r}")

"""Page ``10_distillation``: knowledge distillation and CID (Fig. 7(b), Appendix L of Ma et al., ICML 2022).

The notebook measures CID on the same test images for an AlexNet trained alone and for its students
distilled from each teacher (CUB-200), then again on CIFAR-10 with a CIFAR ResNet teacher (the
second line). This module holds the page's arithmetic: the accuracy table, the per-(network,
layer, image) CID rows, the per-image paired differences and the per-teacher verdicts on them, the
summary table, the setup conditions and the claim's numbers, and the bodies of its figures
(``cid_per_layer``, ``pixelwise_cid``, ``second_line_cid``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure

import deepinfo
from deepinfo.book import experiments as ex
from deepinfo.book.experiments import Trained
from deepinfo.book.layer_curves import paired_change
from deepinfo.book.verdicts import Condition, Verdict, constraint_condition, decide, on_constraint
from deepinfo.models import PUBLISHED_ACCURACY
from deepinfo.plotting import overlay
from deepinfo.result import InfoMaps
from deepinfo.toolkit.profile import Estimator, Profile

__all__ = ["accuracy_table", "cid_per_layer_image", "per_layer_mean", "cid_per_layer_table", "plot_cid_per_layer",
           "plot_pixelwise_cid", "per_image_difference", "teacher_verdicts",
           "summary_table", "interval_text", "setup_conditions", "claim_numbers", "claim_detail", "claim_data",
           "teacher_label", "second_line_measure", "second_line_cid", "second_line_networks",
           "second_line_difference", "second_line_verdict",
           "plot_second_line", "second_line_setup", "second_line_numbers", "second_line_detail",
           "second_line_data"]


# --- CUB-200: the teachers, the AlexNet trained alone and its students -------------------------

def accuracy_table(teacher_nets: Mapping[str, Trained], nets: Mapping[str, Trained], teacher_of: Mapping[str, str],
                   test_set) -> pd.DataFrame:
    """Top-1 test accuracy of every teacher, then of every AlexNet (trained alone, distilled).

    Args:
        teacher_nets: ``{teacher arch: network}``.
        nets: ``{label: network}`` of the students, the one trained alone first.
        teacher_of: ``{label: teacher arch}``, ``""`` for the network trained alone.
        test_set: the profile's test split.

    Returns:
        One row per network: ``network``, ``role`` (teacher / student / trained alone), ``teacher``,
        ``accuracy`` (fraction in [0, 1]) and ``n_test_images``.
    """
    accuracy = pd.DataFrame(
        [{"network": t, "role": "teacher", "teacher": "", "accuracy": teacher_nets[t].accuracy(test_set)}
         for t in teacher_nets]
        + [{"network": label, "role": "student" if teacher_of[label] else "trained alone",
            "teacher": teacher_of[label], "accuracy": net.accuracy(test_set)} for label, net in nets.items()]
    )
    accuracy["n_test_images"] = len(test_set)
    return accuracy


def cid_per_layer_image(nets: Mapping[str, Trained], teacher_of: Mapping[str, str], x: torch.Tensor,
                        layers: Sequence[str], settings: Estimator, *, seed: int
                        ) -> tuple[pd.DataFrame, dict[str, InfoMaps]]:
    """CID of every layer of every network on the same images and noise seed (a paired design).

    Args:
        nets: ``{label: network}``, measured in this order.
        teacher_of: ``{label: teacher arch}`` (``""`` for the network trained alone).
        x: ``[B, C, H, W]`` test images; layers: the layer names measured in every network.
        settings: the profile's estimator settings (``settings.tol``: the tolerance on the achieved
            ratio ``r``); seed: the noise seed (the same for every net).

    Returns:
        ``(per_image, maps_of)``: one row per (network, layer, image) with ``network``, ``teacher``,
        ``layer``, ``layer_index``, ``image``, ``cid`` (the layer's mean pixel-wise CID, nats),
        ``ratio`` (achieved ``r``), ``n_capped`` and ``on_constraint`` (``|r - 1| <= settings.tol``); and
        ``{label: maps}``.
    """
    rows, maps_of = [], {}
    for label, net in nets.items():
        maps = deepinfo.cid(net.model, x, layers, settings=settings, seed=seed, progress=True)
        maps_of[label] = maps
        layer_cid = maps.mean()  # [L, B] nats
        for l, name in enumerate(layers):
            for b in range(x.shape[0]):
                rows.append({"network": label, "teacher": teacher_of[label], "layer": name, "layer_index": l,
                             "image": b, "cid": float(layer_cid[l, b]), "ratio": float(maps.constraint[l, b]),
                             "n_capped": int(maps.n_capped[l, b])})
    per_image = pd.DataFrame(rows)
    per_image["on_constraint"] = on_constraint(per_image["ratio"].to_numpy(), settings.tol)
    return per_image, maps_of


def per_layer_mean(per_image: pd.DataFrame) -> pd.DataFrame:
    """Mean ``cid`` (nats) and ``ratio`` over the images, per (network, teacher, layer, layer_index),
    in the order the networks and layers first appear (every map, on the constraint or not)."""
    return (per_image.groupby(["network", "teacher", "layer", "layer_index"], sort=False)
            [["cid", "ratio"]].mean().reset_index())


def cid_per_layer_table(per_layer: pd.DataFrame) -> pd.DataFrame:
    """The wide table of the layer CID: one row per (layer_index, layer), one ``cid`` column per network."""
    return per_layer.pivot(index=["layer_index", "layer"], columns="network", values="cid").reset_index()


def plot_cid_per_layer(per_layer: pd.DataFrame, accuracy: pd.DataFrame, networks: Sequence[str], alone: str,
                       layers: Sequence[str], student_arch: str) -> Figure:
    """Fig. 7(b): the layer CID of the network trained alone (solid black) and of each student (dashed),
    each labelled with its test accuracy."""
    palette = dict(zip(networks, ["black"] + sns.color_palette("tab10", len(networks) - 1)))
    fig, ax = plt.subplots(figsize=(7, 4))
    for label in networks:
        d = per_layer[per_layer.network == label]
        acc = float(accuracy.set_index("network").accuracy[label])
        ax.plot(d.layer_index, d.cid, marker="o", color=palette[label], lw=2.2 if label == alone else 1.4,
                ls="-" if label == alone else "--", label=f"{label} (acc {acc:.2f})")
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel("CID (nats per cell, mean over images)")
    ax.set_title(f"{student_arch}: trained alone vs distilled")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_pixelwise_cid(maps_of: Mapping[str, InfoMaps], x: torch.Tensor, layers: Sequence[str],
                       networks: Sequence[str], b: int = 0) -> Figure:
    """Appendix L: image ``b`` and each network's pixel-wise CID at the first, middle and last layer,
    one colour scale per layer (2nd to 98th percentile of the cells shown; a few cells are outliers)."""
    shown_layers = sorted({layers[0], layers[len(layers) // 2], layers[-1]}, key=layers.index)
    fig, axes = plt.subplots(len(networks), len(shown_layers) + 1, squeeze=False, layout="constrained",
                             figsize=(2.0 * (len(shown_layers) + 1), 2.0 * len(networks) + 0.8))
    for c, name in enumerate(shown_layers):
        vals = torch.stack([maps_of[k].layer(name)[b] for k in networks]).flatten()
        vmin, vmax = float(vals.quantile(0.02)), float(vals.quantile(0.98))
        for r, label in enumerate(networks):
            im = overlay(x[b], maps_of[label].layer(name)[b], axes[r, c + 1], vmin=vmin, vmax=vmax,
                         title=name if r == 0 else None)
        fig.colorbar(im, ax=axes[:, c + 1], location="bottom", shrink=0.9, label="CID (nats)")
    for r, label in enumerate(networks):
        axes[r, 0].imshow(x[b].permute(1, 2, 0).numpy())
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=8)
    return fig


def per_image_difference(maps_of: Mapping[str, InfoMaps], alone: str, teacher_of: Mapping[str, str],
                         tol: float) -> pd.DataFrame:
    """Per image and teacher, the student's CID minus the network trained alone's, averaged over the
    layers whose maps met the constraint in both (:func:`deepinfo.book.layer_curves.paired_change`).

    Args:
        maps_of: ``{label: maps}`` on the same layers and images.
        alone: label of the network trained alone.
        teacher_of: ``{label: teacher arch}`` of the AlexNets, ``""`` for the one trained alone
            (left out); the students in this order.
        tol: the estimator's tolerance on the achieved ratio ``r``.

    Returns:
        Index ``image``, one column per teacher: the mean change in nats (NaN for an image with no
        layer left).
    """
    return pd.DataFrame({
        t: paired_change(maps_of[alone], maps_of[label], tol)[0] for label, t in teacher_of.items() if t
    }).rename_axis("image")


def teacher_verdicts(per_image_diff: pd.DataFrame, *, threshold: float, side: str, unit: str,
                     confidence: float) -> dict[str, Verdict]:
    """One verdict per teacher (column of :func:`per_image_difference`), decided over its images with a
    value (the others dropped) by the page's rule; inconclusive, saying why, when no image has one."""
    verdicts = {}
    for t in per_image_diff.columns:
        vals = per_image_diff[t].dropna().to_numpy(float)
        verdicts[t] = decide(vals, threshold=threshold, side=side, unit=unit, confidence=confidence,
                             if_none=f"no image has a pair of maps on the constraint for the student of {t}")
    return verdicts


def summary_table(teacher_of: Mapping[str, str], mean_cid: pd.Series, verdicts: Mapping[str, Verdict],
                  acc_of: pd.Series, n_images: int) -> pd.DataFrame:
    """One row per AlexNet: ``network``, ``teacher``, ``mean_cid`` (nats, every map), the teacher's
    verdict as ``d_cid_vs_alone`` (nats) with its interval ``lo``/``hi``, ``n_images`` and ``verdict``
    (NaN / all images / ``""`` for the network trained alone), and ``accuracy``."""
    return pd.DataFrame([
        {"network": label, "teacher": teacher_of[label], "mean_cid": float(mean_cid[label]),
         "d_cid_vs_alone": verdicts[t].effect if t else float("nan"),
         "lo": verdicts[t].interval[0] if t else float("nan"), "hi": verdicts[t].interval[1] if t else float("nan"),
         "n_images": verdicts[t].n_units if t else n_images, "verdict": verdicts[t].verdict if t else "",
         "accuracy": float(acc_of[label])}
        for label, t in teacher_of.items()])


def interval_text(verdict: Verdict, fmt: str = "{:+.3f}") -> str:
    """``effect [lo, hi]`` of a verdict, each number written with ``fmt``."""
    lo, hi = verdict.interval
    return f"{fmt.format(verdict.effect)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def setup_conditions(P: Profile, acc_of: pd.Series, alexnets: Sequence[str], alone: str, *,
                     paper_accuracy: Mapping[str, float], fraction: float, ratios: np.ndarray) -> list[Condition]:
    """The setup the claim relies on, checked with numbers.

    Args:
        P: the profile (its student and teachers, CUB classes and image size, estimator tolerance).
        acc_of: test accuracy (fraction) by network name (teachers by arch, AlexNets by label).
        alexnets: labels of the AlexNets (trained alone and distilled); alone: the one trained alone.
        paper_accuracy: the paper's accuracy by arch; fraction: the share of it a network must reach.
        ratios: achieved ratios ``r`` of every CID map.

    Returns:
        Conditions: every AlexNet and every teacher near the paper's accuracy, every teacher more
        accurate than the AlexNet trained alone (a teacher that knows no more has nothing to pass
        on), the maps on the constraint.
    """
    student_arch, teachers = P.distillation.student, list(P.distillation.teachers)
    num_classes, image_size, tol = P.data.cub.num_classes, P.data.cub.image_size, P.estimator.tol
    return [
        Condition(f"{student_arch} accuracy", all(acc_of[n] >= fraction * paper_accuracy.get(student_arch, 0.55)
                                                  for n in alexnets),
                  ", ".join(f"{n} {acc_of[n]:.1%}" for n in alexnets)
                  + f" ({num_classes} classes, {image_size} px)",
                  f"AlexNet fine-tuned from ImageNet on CUB-200 (200 classes, 224 px), "
                  f"~{paper_accuracy.get(student_arch, 0.55):.0%}"),
        Condition("teacher accuracy", all(acc_of[t] >= fraction * paper_accuracy.get(t, 0.75) for t in teachers),
                  ", ".join(f"{t} {acc_of[t]:.1%}" for t in teachers),
                  "fine-tuned " + ", ".join(f"{t} ~{paper_accuracy.get(t, 0.75):.0%}" for t in teachers)),
        Condition("teachers more accurate than the student alone", all(acc_of[t] > acc_of[alone] for t in teachers),
                  ", ".join(f"{t} {acc_of[t] - acc_of[alone]:+.1%}" for t in teachers) + f" vs {alone}",
                  "ImageNet-scale teachers well above AlexNet"),
        constraint_condition(ratios, tol),
    ]


def claim_numbers(mean_cid: pd.Series, verdicts: Mapping[str, Verdict], alone: str, student_arch: str, *,
                  n_held: int, n_off: int) -> dict[str, float | int | str]:
    """The claim's numbers: mean CID (nats) of the network trained alone and of each student, each
    teacher's paired effect and verdict, how many students held, and the maps off the constraint."""
    teachers = list(verdicts)
    return {"mean_cid_alone": float(mean_cid[alone]),
            **{f"mean_cid_from_{t}": float(mean_cid[f'{student_arch} from {t}']) for t in teachers},
            **{f"d_cid_from_{t}": v.effect for t, v in verdicts.items()},
            **{f"verdict_from_{t}": v.verdict for t, v in verdicts.items()},
            "n_students_held": n_held, "n_teachers": len(teachers), "n_maps_off_constraint": n_off}


def claim_detail(verdicts: Mapping[str, Verdict], student_arch: str, n_layers: int, n_off: int, n_maps: int) -> str:
    """The claim's per-unit detail in words: the paired effect, each teacher's verdict line, the maps left out."""
    return (f"Per image: the student's CID minus the {student_arch} trained alone's, averaged over the "
            f"{n_layers} measured layers whose maps met the constraint in both nets; per teacher: "
            + "; ".join(f"from {t}: {v.summary()}" for t, v in verdicts.items())
            + f". {n_off} of {n_maps} maps off the constraint (their pairs left out).")


def claim_data(P: Profile, n_images: int) -> str:
    """The claim's data line: data set, images, the student and its teachers, the distillation loss."""
    D = P.distillation
    return (f"{P.data.cub.dataset} birds ({P.data.cub.num_classes} classes, {P.data.cub.image_size} px box crops); "
            f"CID on {n_images} test images; {D.student} (width {P.networks.cub.width}) trained alone and "
            f"distilled from {', '.join(D.teachers)} (T = {D.temperature:g}, alpha = {D.alpha:g})")


# --- the second line: a CIFAR ResNet distilled into a smaller one ------------------------------

def teacher_label(P: Profile) -> str:
    """The second line's teacher as named in its accuracy table: ``ResNet-<depth> (teacher)``."""
    return f"ResNet-{P.second_line.teacher_depth} (teacher)"


def second_line_measure(P: Profile, nets: Mapping[str, Trained], teacher: Trained, x: torch.Tensor,
                        layers: Sequence[str], test_set) -> tuple[dict[str, InfoMaps], dict[str, float]]:
    """CID of both CIFAR students on the same images and noise seed, and the test accuracies.

    Args:
        P: the profile (estimator settings and seed).
        nets: ``{label: network}``, the student trained alone first, then the distilled one.
        teacher: the CIFAR teacher; x: ``[B, C, H, W]`` test images; layers: the stage outputs measured.
        test_set: the CIFAR test split the accuracies are measured on.

    Returns:
        ``({label: maps}, {network: test accuracy})``, the teacher (:func:`teacher_label`) first.
    """
    maps = {label: deepinfo.cid(t.model, x, layers, seed=P.seed, progress=True, settings=P.estimator)
            for label, t in nets.items()}
    accuracy = {teacher_label(P): teacher.accuracy(test_set),
                **{label: t.accuracy(test_set) for label, t in nets.items()}}
    return maps, accuracy


def second_line_cid(maps_of: Mapping[str, InfoMaps], tol: float) -> pd.DataFrame:
    """``maps.to_frame()`` of each network, stacked with a ``network`` column and ``on_constraint``
    (``|r - 1| <= tol`` on the ``constraint`` column): one row per (network, layer, image)."""
    frame = pd.concat([m.to_frame().assign(network=label) for label, m in maps_of.items()], ignore_index=True)
    frame["on_constraint"] = on_constraint(frame["constraint"].to_numpy(), tol)
    return frame


def second_line_networks(accuracy: Mapping[str, float]) -> pd.DataFrame:
    """``{network: accuracy}`` as a table: ``network``, ``test accuracy`` (fraction in [0, 1])."""
    return pd.DataFrame([{"network": n, "test accuracy": a} for n, a in accuracy.items()])


def second_line_difference(maps_of: Mapping[str, InfoMaps], tol: float) -> pd.DataFrame:
    """Per image, the distilled student's CID minus its twin's, averaged over the layers whose maps met
    the constraint in both (:func:`deepinfo.book.layer_curves.paired_change`).

    Args:
        maps_of: ``{label: maps}``, the twin trained alone first, then the distilled student.
        tol: the estimator's tolerance on the achieved ratio ``r``.

    Returns:
        One row per image: ``image``, ``d_cid`` (nats; NaN for an image with no layer left) and
        ``n_layers`` (the layers it is averaged over).
    """
    alone, student = maps_of
    change, n_layers = paired_change(maps_of[alone], maps_of[student], tol)
    return pd.DataFrame({"image": range(len(change)), "d_cid": change, "n_layers": n_layers})


def second_line_verdict(difference: pd.DataFrame, *, threshold: float, side: str, unit: str,
                        confidence: float) -> Verdict:
    """The second line's verdict over the images whose paired change ``d_cid`` (a row of
    :func:`second_line_difference`) is finite, by the page's rule; inconclusive, saying why, when none is."""
    change = difference["d_cid"].to_numpy()
    vals = change[np.isfinite(change)]
    return decide(vals, threshold=threshold, side=side, unit=unit, confidence=confidence,
                  if_none="no image has a pair of maps on the constraint")


def plot_second_line(frame: pd.DataFrame, layers: Sequence[str], n_images: int) -> Figure:
    """The layer CID of both CIFAR students (mean and 95 % interval over images, maps on the constraint)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.pointplot(frame[frame.on_constraint], x="layer", y="value", hue="network", errorbar=("ci", 95), seed=0, dodge=0.2,
                  order=layers, ax=ax)
    ax.set_ylabel("CID (nats per cell; mean, 95 % CI over images)")
    ax.set_title(f"CIFAR-10, {n_images} images", fontsize=10)
    fig.tight_layout()
    return fig


def second_line_setup(P: Profile, accuracy: Mapping[str, float], students: Sequence[str], frame: pd.DataFrame, *,
                      fraction: float) -> list[Condition]:
    """The second line's setup, checked with numbers.

    Args:
        P: the profile (second line, CIFAR data, estimator tolerance).
        accuracy: test accuracy (fraction) by network, the teacher under :func:`teacher_label`.
        students: labels of the student trained alone (first) and of the distilled one.
        frame: the CID rows of :func:`second_line_cid` (its ``constraint`` column: the achieved ratios).
        fraction: the share of the published accuracy a network must reach.

    Returns:
        Conditions: labelled as another network and data set than the paper's (never met); the
        teacher and both students near their published accuracy; the teacher more accurate than the
        student alone; the maps on the constraint.
    """
    SL = P.second_line
    teacher = teacher_label(P)
    student_published = PUBLISHED_ACCURACY[SL.student_depth]
    alone = students[0]
    return [
        Condition("the paper's network and data", False,
                  f"ResNet-{SL.teacher_depth} into ResNet-{SL.student_depth} on {P.data.cifar.dataset} (second line)",
                  "VGG-16 / ResNet-18 / ResNet-34 into AlexNet on CUB-200-2011"),
        Condition("teacher accuracy", accuracy[teacher] >= fraction * PUBLISHED_ACCURACY[SL.teacher_depth],
                  f"{accuracy[teacher]:.1%} ({ex.cifar_weights_words(P)}, {P.data.cifar.dataset} test images)",
                  f"the published ResNet-{SL.teacher_depth}: {PUBLISHED_ACCURACY[SL.teacher_depth]:.1%} on official "
                  "CIFAR-10"),
        Condition("student accuracy", all(accuracy[n] >= fraction * student_published for n in students),
                  ", ".join(f"{n} {accuracy[n]:.1%}" for n in students)
                  + f" ({SL.student_recipe.epochs} epochs of {len(ex.cifar_data(P, 'train'))} images)",
                  f"a fully trained ResNet-{SL.student_depth}: {student_published:.1%}"),
        Condition("teacher more accurate than the student alone", accuracy[teacher] > accuracy[alone],
                  f"{accuracy[teacher] - accuracy[alone]:+.1%}", "teachers well above their students"),
        constraint_condition(frame["constraint"].to_numpy(), P.estimator.tol),
    ]


def second_line_numbers(verdict: Verdict, accuracy: Mapping[str, float], frame: pd.DataFrame) -> dict[str, float]:
    """The second line's numbers: the mean paired change (nats), each network's accuracy, the maps off
    the constraint (rows of :func:`second_line_cid`)."""
    return {"mean_d_cid": verdict.effect, **{f"accuracy_{n}": float(a) for n, a in accuracy.items()},
            "n_maps_off_constraint": int((~frame.on_constraint).sum())}


def second_line_detail(verdict: Verdict) -> str:
    """The second line's per-unit detail in words, ending with the verdict line."""
    return (f"Per image: the distilled student's CID minus its twin's, averaged over the stage outputs whose maps met "
            f"the constraint in both; {verdict.summary()}.")


def second_line_data(P: Profile, n_images: int, layers: Sequence[str]) -> str:
    """The second line's data line: data set, images, teacher and student, the distillation loss, layers."""
    SL, D = P.second_line, P.distillation
    return (f"{P.data.cifar.dataset}: CID on {n_images} test images; ResNet-{SL.teacher_depth} ({ex.cifar_weights_words(P)}) "
            f"distilled into ResNet-{SL.student_depth} (T = {D.temperature:g}, alpha = {D.alpha:g}) and its twin "
            f"trained alone, {SL.student_recipe.epochs} epochs each; layers {', '.join(layers)}")

"""Page ``13_adversarial``: adversarial training, more information discarded, more concentrated.

The analysis behind ``notebooks/13_adversarial.ipynb`` (the paper's Fig. 10, Appendix F.4): the
accuracy table of the PGD-trained AlexNet and its normally trained twin, CID and concentration per
(network, layer, image), the paired differences adversarial minus normal per layer and per image,
the setup conditions and the numbers and detail of each claim, and the figure
``cid_concentration``.

The thresholds are fixed in the notebook before the run and passed in; nothing here chooses a rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from torch.utils.data import Dataset

import deepinfo
from deepinfo.book.experiments import Trained, layers_for
from deepinfo.book.verdicts import Condition, Verdict, constraint_condition, decide, on_constraint, undecidable
from deepinfo.techniques.adversarial import pgd_accuracy
from deepinfo.toolkit.profile import Profile

__all__ = ["accuracy_table", "cid_concentration_per_image", "layer_means", "paired_differences",
           "difference_per_layer", "difference_per_image", "cid_concentration_figure", "pgd_gain",
           "setup_conditions", "accuracy_numbers", "data_text", "decide_difference", "layers_positive",
           "claim_evidence"]


def accuracy_table(nets: Mapping[str, Trained], test_set: Dataset, attack: Mapping[str, Any], *,
                   seed: int) -> pd.DataFrame:
    """Clean and PGD accuracy of each network on the test split (the table ``accuracy``).

    Args:
        nets: ``{"adversarial": ..., "normal": ...}``.
        attack: :func:`deepinfo.techniques.adversarial.pgd_settings`; seed: the attack's random start.

    Returns:
        One row per network: network, checkpoint, epochs, clean_accuracy and pgd_accuracy (in
        [0, 1], top-1), n_test_images.
    """
    return pd.DataFrame([
        {"network": k, "checkpoint": t.key, "epochs": len(t.history.train_loss),
         "clean_accuracy": t.accuracy(test_set),
         "pgd_accuracy": pgd_accuracy(t.model, test_set, **attack, seed=seed, progress=True),
         "n_test_images": len(test_set)}
        for k, t in nets.items()])


def cid_concentration_per_image(P: Profile, nets: Mapping[str, Trained], order: Sequence[str], x: torch.Tensor,
                                masks: torch.Tensor, image_ids: Sequence[int]) -> pd.DataFrame:
    """CID and concentration of both networks at every measured layer, same images and noise seed.

    Args:
        P: the run profile (estimator settings, seed, tolerance, the layers of ``adversarial.arch``).
        nets: the networks by name; order: the names in the order they are measured.
        x: ``[B, C, H, W]`` images; masks: ``[B, H, W]`` their foreground masks; image_ids: their
            test-set indices.

    Returns:
        One row per (network, layer, image): network, layer, layer_index, image, cid (mean CID,
        nats per grid cell), concentration (nats, background minus foreground), ratio (achieved
        ``r``), n_capped, on_constraint (the table ``per_layer_image``).
    """
    rows = []
    for net in order:
        model = nets[net].model
        layers = layers_for(P, P.adversarial.arch, model)
        maps = deepinfo.cid(model, x, layers, settings=P.estimator, seed=P.seed, progress=True)
        conc = deepinfo.concentration(maps, masks)  # [L, B] nats
        cid = maps.mean()  # [L, B] nats per grid cell
        for l, name in enumerate(layers):
            for b, image_id in enumerate(list(image_ids)):
                rows.append({"network": net, "layer": name, "layer_index": l, "image": image_id,
                             "cid": float(cid[l, b]), "concentration": float(conc[l, b]),
                             "ratio": float(maps.constraint[l, b]), "n_capped": int(maps.n_capped[l, b])})
    per_image = pd.DataFrame(rows)
    per_image["on_constraint"] = on_constraint(per_image["ratio"].to_numpy(), P.estimator.tol)
    return per_image


def layer_means(per_image: pd.DataFrame) -> pd.DataFrame:
    """Per (network, layer): the mean over images of cid, concentration (nats) and ratio (the table ``per_layer``)."""
    return (per_image.groupby(["network", "layer", "layer_index"], sort=False)[["cid", "concentration", "ratio"]]
            .mean().reset_index())


def paired_differences(per_image: pd.DataFrame) -> pd.DataFrame:
    """Per (layer, image): adversarial minus normal, maps on the constraint in both nets only.

    Args:
        per_image: :func:`cid_concentration_per_image` (networks ``"adversarial"`` and ``"normal"``).

    Returns:
        Columns layer_index, layer, image, d_cid, d_concentration (nats); a (layer, image) pair
        with a map off the constraint in either net is dropped.
    """
    on = per_image[per_image.on_constraint]
    wide = on.pivot(index=["layer_index", "layer", "image"], columns="network", values=["cid", "concentration"])
    return pd.DataFrame({
        "d_cid": wide["cid"]["adversarial"] - wide["cid"]["normal"],
        "d_concentration": wide["concentration"]["adversarial"] - wide["concentration"]["normal"],
    }).dropna().reset_index()


def difference_per_layer(diff: pd.DataFrame) -> pd.DataFrame:
    """Per layer: the mean paired difference over images and its standard error (the table
    ``difference_per_layer``: layer_index, layer, d_cid, d_cid_se, d_concentration,
    d_concentration_se, n_images)."""
    return (diff.groupby(["layer_index", "layer"])
            .agg(d_cid=("d_cid", "mean"), d_cid_se=("d_cid", lambda v: v.std(ddof=1) / math.sqrt(len(v))),
                 d_concentration=("d_concentration", "mean"),
                 d_concentration_se=("d_concentration", lambda v: v.std(ddof=1) / math.sqrt(len(v))),
                 n_images=("d_cid", "size"))
            .reset_index())


def difference_per_image(diff: pd.DataFrame) -> pd.DataFrame:
    """One value per image, the unit of the verdicts: the paired differences averaged over the layers
    on the constraint (index image; columns d_cid, d_concentration in nats, n_layers)."""
    per_image_diff = diff.groupby("image")[["d_cid", "d_concentration"]].mean()
    per_image_diff["n_layers"] = diff.groupby("image").size()
    return per_image_diff


def cid_concentration_figure(per_image: pd.DataFrame, order: Sequence[str], arch: str, n_images: int) -> Figure:
    """Fig. 10: CID and concentration per layer of both networks (mean over images, bars: SE)."""
    palette = {"adversarial": "tab:red", "normal": "tab:blue"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, value, label in [(axes[0], "cid", "CID (nats per grid cell)"),
                             (axes[1], "concentration", "concentration (nats)")]:
        sns.pointplot(data=per_image, x="layer", y=value, hue="network", hue_order=list(order), palette=palette,
                      errorbar="se", dodge=0.2, markers=["o", "s"], ax=ax)
        ax.set_ylabel(label)
        ax.set_xlabel(f"layer of {arch}")
        ax.tick_params(axis="x", rotation=45)
    axes[0].set_title("information discarded (CID)")
    axes[1].set_title("concentration on the bird")
    axes[1].axhline(0, color="0.6", lw=0.8)
    fig.suptitle(f"PGD-trained vs normally trained {arch} (mean over {n_images} images, bars: SE)")
    fig.tight_layout()
    return fig


def pgd_gain(p_adv: float, p_norm: float, n_test: int) -> tuple[float, float]:
    """``(gain, se)``: PGD accuracy adversarial minus normal, and its binomial standard error over
    ``n_test`` test images (two independent proportions)."""
    gain = p_adv - p_norm
    gain_se = math.sqrt(p_adv * (1 - p_adv) / n_test + p_norm * (1 - p_norm) / n_test)
    return gain, gain_se


def accuracy_numbers(accuracy: pd.DataFrame) -> dict[str, float]:
    """PGD and clean accuracy of both nets from :func:`accuracy_table`, keyed as in the claims' numbers."""
    acc = accuracy.set_index("network")
    return {"pgd_acc_adversarial": float(acc.pgd_accuracy["adversarial"]),
            "pgd_acc_normal": float(acc.pgd_accuracy["normal"]),
            "clean_acc_adversarial": float(acc.clean_accuracy["adversarial"]),
            "clean_acc_normal": float(acc.clean_accuracy["normal"])}


def setup_conditions(P: Profile, accuracy: pd.DataFrame, attack: Mapping[str, Any], n_test: int,
                     per_image: pd.DataFrame, *, robustness_z: float, paper_accuracy: float,
                     accuracy_fraction: float) -> list[Condition]:
    """The setup conditions of both claims, checked with numbers.

    Adversarial training took (PGD accuracy gain above ``robustness_z`` standard errors, see
    :func:`pgd_gain`); the normal twin's clean accuracy at least ``accuracy_fraction`` x
    ``paper_accuracy``; the maps (rows of ``per_image``) on the constraint.
    """
    a = accuracy_numbers(accuracy)
    p_adv, p_norm = a["pgd_acc_adversarial"], a["pgd_acc_normal"]
    clean_adv, clean_norm = a["clean_acc_adversarial"], a["clean_acc_normal"]
    gain, gain_se = pgd_gain(p_adv, p_norm, n_test)
    arch, recipe = P.adversarial.arch, P.adversarial.recipe or P.training.cub
    return [
        Condition("adversarial training took", gain > robustness_z * gain_se,
                  f"PGD accuracy (eps {attack['epsilon']:g}, {attack['steps']} steps of {attack['step_size']:g}) "
                  f"{p_adv:.1%} adversarial vs {p_norm:.1%} normal: gain {gain:+.1%} (SE {gain_se:.1%}, "
                  f"{n_test} test images; needed > {robustness_z:g} SE)",
                  "a PGD-trained AlexNet (Madry et al.) more robust than its twin"),
        Condition(f"{arch} accuracy", clean_norm >= accuracy_fraction * paper_accuracy,
                  f"normal {clean_norm:.1%}, adversarial {clean_adv:.1%} (clean; {P.data.cub.num_classes} classes, "
                  f"{P.data.cub.image_size} px, {recipe.epochs} epochs)",
                  f"AlexNet fine-tuned from ImageNet on CUB-200 (200 classes, 224 px), ~{paper_accuracy:.0%}"),
        constraint_condition(per_image["ratio"].to_numpy(), P.estimator.tol),
    ]


def data_text(P: Profile, n_images: int, n_test: int) -> str:
    """The data, networks and sizes of the claims, in words."""
    recipe = P.adversarial.recipe or P.training.cub
    return (f"{P.data.cub.dataset} birds ({P.data.cub.num_classes} classes, {P.data.cub.image_size} px); "
            f"{n_images} test images ({P.data.cub.concentration_crop} crops) for CID, "
            f"{n_test} for accuracy; {P.adversarial.arch} width {P.networks.cub.width}, PGD-trained vs normally "
            f"trained, {recipe.epochs} epochs each")


def decide_difference(per_image_diff: pd.DataFrame, value: str, *, threshold: float, side: str, unit: str,
                      confidence: float) -> Verdict:
    """The verdict on ``d_<value>`` of :func:`difference_per_image` (images with none dropped);
    inconclusive, saying why, when no image has a pair of maps on the constraint."""
    vals = per_image_diff[f"d_{value}"].dropna().to_numpy(float)
    return (decide(vals, threshold=threshold, side=side, unit=unit, confidence=confidence) if vals.size else
            undecidable(f"no image has a pair of {value} maps on the constraint", unit=unit, threshold=threshold,
                        side=side))


def layers_positive(paired: pd.DataFrame, value: str) -> int:
    """At how many layers the mean paired difference ``d_<value>`` of :func:`difference_per_layer` is above 0."""
    return int((paired[f"d_{value}"].to_numpy() > 0).sum())


def claim_evidence(value: str, verdict: Verdict, paired: pd.DataFrame, accuracy: pd.DataFrame,
                   per_image: pd.DataFrame) -> dict[str, Any]:
    """``numbers`` and ``detail`` of the claim on ``value`` (``"cid"`` or ``"concentration"``).

    The numbers: the effect, the layers with a positive mean difference and each layer's mean
    difference (:func:`difference_per_layer`), both nets' accuracies (:func:`accuracy_numbers`)
    and the maps off the constraint (rows of ``per_image``).
    """
    d = paired[f"d_{value}"].to_numpy()
    n_pos, n_layers = layers_positive(paired, value), len(paired)
    n_off = int((~per_image.on_constraint).sum())
    per_layer_text = ", ".join(f"{name}: {x_:+.4f}" for name, x_ in zip(paired.layer, d))
    return dict(
        numbers={"mean_difference": verdict.effect, "layers_positive": n_pos, "n_layers": n_layers,
                 **{f"d_{value}_{name}": float(x_) for name, x_ in zip(paired.layer, d)},
                 **accuracy_numbers(accuracy), "n_maps_off_constraint": n_off},
        detail=(f"Per image: {value} of the adversarial net minus the normal one, averaged over the layers whose maps "
                f"met the constraint in both nets. Per layer (mean over images, not used to decide): {per_layer_text}; "
                f"positive at {n_pos} of {n_layers} layers. {n_off} of {len(per_image)} maps off the constraint "
                "(their pairs left out)."))

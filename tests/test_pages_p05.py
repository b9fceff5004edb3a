"""Hand-derived checks of the page module of ``05_concentration_accuracy``."""

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from deepinfo.book.pages import p05_concentration_accuracy as page

GROUPS = ("low", "middle", "high")
RULE = dict(threshold=0.0, side="greater", method="spearman", unit="networks")


def test_design_power_perfect_ordering_and_one_swap():
    design = page.design_power(6, **RULE)
    assert list(design.ordering) == ["perfect ordering", "one adjacent swap"]
    # perfect: rho = 1, and every bootstrap resample of identical ranks is 1 too -> held
    assert design.spearman[0] == pytest.approx(1.0)
    assert (design.lo[0], design.hi[0]) == pytest.approx((1.0, 1.0))
    assert design.verdict[0] == "held"
    # ranks 2 and 3 swapped: sum d^2 = 2, rho = 1 - 6 * 2 / (6 * 35) = 1 - 12 / 210
    assert design.spearman[1] == pytest.approx(1 - 12 / 210)


def test_design_power_too_few_networks_gives_nan_and_inconclusive():
    design = page.design_power(2, **RULE)
    assert design.spearman.isna().all() and design.lo.isna().all() and design.hi.isna().all()
    assert list(design.verdict) == ["inconclusive", "inconclusive"]
    # 4 networks: rho of the swap = 1 - 6 * 2 / (4 * 15) = 0.8, but fewer than 5 units never decide
    design = page.design_power(4, **RULE)
    assert design.spearman[1] == pytest.approx(0.8)
    assert list(design.verdict) == ["inconclusive", "inconclusive"]


def test_power_text():
    design = pd.DataFrame({"spearman": [1.0, 0.5], "verdict": ["held", "inconclusive"]})
    text = page.power_text(3, design)
    # 1 / 3! = 1/6 = 0.1667
    assert text == ("With 3 networks a perfect ordering has one-sided permutation p = 1/3! = 0.167; the "
                    "bootstrap rule gives a perfect ordering 'held' and one adjacent swap (rho = 0.50) "
                    "'inconclusive'.")


def test_layer_group_thirds_by_position():
    # 3 * l // 5 for l = 0..4: 0, 0, 1, 1, 2
    assert [page.layer_group(l, 5, GROUPS) for l in range(5)] == ["low", "low", "middle", "middle", "high"]
    # 3 * l // 3: one layer per group
    assert [page.layer_group(l, 3, GROUPS) for l in range(3)] == list(GROUPS)


def test_concentration_rows():
    conc = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    cid = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    ratio = torch.tensor([[1.0, 1.1], [0.9, 1.0]])
    capped = torch.tensor([[0, 1], [2, 3]])
    rows = page.concentration_rows("net", ["a", "b"], [7, 9], conc, cid, ratio, capped, GROUPS)
    assert len(rows) == 4
    # layer-major order; 2 layers: relative depth 0 and 1; groups 3*0//2 = 0 (low), 3*1//2 = 1 (middle)
    assert [(r["layer"], r["image"]) for r in rows] == [("a", 7), ("a", 9), ("b", 7), ("b", 9)]
    assert [r["relative_depth"] for r in rows] == [0.0, 0.0, 1.0, 1.0]
    assert [r["group"] for r in rows] == ["low", "low", "middle", "middle"]
    assert rows[3]["concentration"] == pytest.approx(0.4) and rows[3]["cid"] == 4.0
    assert rows[1]["ratio"] == pytest.approx(1.1) and rows[2]["n_capped"] == 2
    assert rows[0]["n_layers"] == 2 and rows[0]["network"] == "net"
    # a single layer has relative depth 1
    one = page.concentration_rows("net", ["a"], [0], conc[:1], cid[:1], ratio[:1], capped[:1], GROUPS)
    assert one[0]["relative_depth"] == 1.0 and one[0]["group"] == "low"


def _per_image():
    # two networks, two layers (low / high), two images
    return pd.DataFrame({
        "network": ["n1"] * 4 + ["n2"] * 4,
        "layer": ["a", "a", "b", "b"] * 2, "layer_index": [0, 0, 1, 1] * 2,
        "relative_depth": [0.0, 0.0, 1.0, 1.0] * 2, "group": ["low", "low", "high", "high"] * 2,
        "image": [0, 1] * 4,
        "concentration": [1.0, 3.0, 2.0, 4.0, 5.0, 7.0, 6.0, 100.0],
        "cid": [1.0] * 8, "ratio": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0],
        "on_constraint": [True] * 7 + [False],
    })


def test_layer_means_over_images():
    kept = _per_image()
    kept = kept[kept.on_constraint]
    out = page.layer_means(kept)
    assert list(out.columns) == ["network", "layer", "layer_index", "relative_depth", "group", "concentration",
                                 "cid", "ratio"]
    # n1 a: (1 + 3) / 2 = 2; n1 b: (2 + 4) / 2 = 3; n2 a: 6; n2 b: only image 0 left: 6
    assert list(out.concentration) == [2.0, 3.0, 6.0, 6.0]
    assert list(out.network) == ["n1", "n1", "n2", "n2"]


def test_network_summary_and_group_correlations():
    per_image = _per_image()
    kept = per_image[per_image.on_constraint]
    accuracy = pd.DataFrame({"network": ["n1", "n2"], "accuracy": [0.4, 0.6], "n_test_images": 10})
    summary = page.network_summary(accuracy, kept, per_image, ["n1", "n2"], GROUPS)
    assert list(summary.columns) == ["network", "accuracy", "n_test_images", "low", "middle", "high",
                                     "maps_left_out"]
    # n1: low (1 + 3) / 2 = 2, high (2 + 4) / 2 = 3; n2: low (5 + 7) / 2 = 6, high 6 (one map left out)
    assert list(summary.low) == [2.0, 6.0] and list(summary.high) == [3.0, 6.0]
    assert summary.middle.isna().all()
    assert list(summary.maps_left_out) == [0, 1]

    three = pd.DataFrame({"network": ["a", "b", "c"], "accuracy": [0.1, 0.2, 0.3],
                          "low": [3.0, 2.0, 1.0], "middle": [1.0, np.nan, 2.0], "high": [1.0, 2.0, 4.0]})
    corr = page.group_correlations(three, GROUPS).set_index("group")
    # high: same order as accuracy -> rho 1; of the 3! = 6 orderings only this one reaches 1 -> p = 1/6
    assert corr.loc["high", "spearman_rho"] == pytest.approx(1.0)
    assert corr.loc["high", "permutation_p"] == pytest.approx(1 / 6)
    # Pearson of (0.1, 0.2, 0.3) and (1, 2, 4): r = 0.9820 (centered: (-1, 0, 1) x (-4/3, -1/3, 5/3))
    assert corr.loc["high", "pearson_r"] == pytest.approx(3 / math.sqrt(2 * (16 + 1 + 25) / 9), rel=1e-9)
    # low: reversed -> rho -1, every ordering reaches it -> p = 1
    assert corr.loc["low", "spearman_rho"] == pytest.approx(-1.0)
    assert corr.loc["low", "permutation_p"] == pytest.approx(1.0)
    # middle: 2 finite networks -> NaN
    assert corr.loc["middle", "n_networks"] == 2 and math.isnan(corr.loc["middle", "spearman_rho"])


def _profile(weights="scratch"):
    return SimpleNamespace(networks=SimpleNamespace(cub=SimpleNamespace(weights=weights, width=0.25)),
                           data=SimpleNamespace(cub=SimpleNamespace(num_classes=5, image_size=64, dataset="shapes",
                                                                    concentration_crop="box1.5")))


def test_accuracy_condition_all():
    acc = pd.Series({"alexnet": 0.45, "vgg16": 0.61})
    paper = {"alexnet": 0.55, "vgg16": 0.75}
    # 0.8 * 0.55 = 0.44 <= 0.45; 0.8 * 0.75 = 0.60 <= 0.61 -> met
    c = page.accuracy_condition_all(acc, ["alexnet", "vgg16"], paper, 0.8, _profile())
    assert c.met and c.name == "classifier accuracy"
    assert c.observed == "alexnet 45.0%, vgg16 61.0% (trained from scratch, 5 classes, 64 px)"
    assert c.paper == "fine-tuned from ImageNet on CUB-200 (200 classes, 224 px): alexnet ~55%, vgg16 ~75%"
    # a network not listed counts against 0.75: 0.59 < 0.60 -> not met
    c = page.accuracy_condition_all(pd.Series({"resnet9": 0.59}), ["resnet9"], paper, 0.8, _profile("imagenet"))
    assert not c.met and "fine-tuned from ImageNet" in c.observed


def test_accuracy_noise_and_spread_condition():
    # a = b = 0.5 on 100 images: se = 0.05 each, 1.96 * sqrt(2) * 0.05 = 0.138593
    assert page.accuracy_noise(0.5, 0.5, 100) == pytest.approx(1.96 * math.sqrt(0.005))
    # 0.3 and 0.5 on 100 images: variances 0.0021 + 0.0025 = 0.0046 -> noise 1.96 * 0.067823 = 0.13293 < 0.2
    acc = pd.Series({"a": 0.3, "b": 0.5})
    c = page.accuracy_spread_condition(acc, 100)
    assert c.met and "30.0% (a) to 50.0% (b), range 20.0% against 13.3% of test-set noise (100 test images)" \
        in c.observed
    # on 10 images: 0.046 -> 1.96 * 0.21448 = 0.42037 > 0.2 -> not met
    assert not page.accuracy_spread_condition(acc, 10).met
    # equal accuracies of 1: the floor 1e-12 keeps the noise positive, so a zero range is not met
    assert page.accuracy_noise(1.0, 1.0, 4) > 0
    assert not page.accuracy_spread_condition(pd.Series({"a": 1.0, "b": 1.0}), 4).met


def _corr_summary():
    corr = pd.DataFrame({"group": list(GROUPS), "n_networks": [3, 3, 3], "spearman_rho": [0.5, -0.5, 1.0],
                         "pearson_r": [0.4, -0.4, 0.9], "permutation_p": [0.5, 0.8, 1 / 6]})
    summary = pd.DataFrame({"network": ["a", "b", "c"], "accuracy": [0.1, 0.2, 0.3],
                            "high": [1.0, 2.0, 3.0]})
    return corr, summary


def test_claim_numbers():
    corr, summary = _corr_summary()
    numbers = page.claim_numbers(corr, summary, "high", 3, 2)
    assert numbers == {"spearman_rho_high": 1.0, "permutation_p_high": 1 / 6, "n_networks": 3,
                       "pearson_r_high": 0.9, "n_maps_off_constraint": 2, "rho_low": 0.5, "rho_middle": -0.5,
                       "accuracy_a": 0.1, "accuracy_b": 0.2, "accuracy_c": 0.3,
                       "concentration_high_a": 1.0, "concentration_high_b": 2.0, "concentration_high_c": 3.0}


def test_claim_detail():
    corr, _ = _corr_summary()
    text = page.claim_detail(corr, "high", 8, 2, 48, 3, "POWER.")
    assert text == ("Spearman rho between test accuracy and the high-group concentration (mean over 8 images, "
                    "maps on the constraint only; 2 of 48 maps left out) over 3 networks: 1.00, exact one-sided "
                    "permutation p = 0.167. Power: POWER. Not deciding: low: rho = 0.50, middle: rho = -0.50.")


def test_data_text():
    text = page.data_text(_profile(), ["a", "b"], 100, 8)
    assert text == ("shapes birds (5 classes, 64 px); accuracy on 100 test images, concentration on 8 test "
                    "images (box1.5 crops); networks a, b (width 0.25)")


def test_per_image_rho():
    kept = pd.DataFrame({
        "image": [0, 0, 0, 1, 1, 1, 2, 2],
        "network": ["a", "b", "c"] * 2 + ["a", "b"],
        "group": ["high"] * 8,
        "concentration": [1.0, 2.0, 3.0, 3.0, 1.0, 2.0, 1.0, 2.0],
    })
    low = kept.assign(group="low", concentration=-kept.concentration)  # other groups are ignored
    acc = pd.Series({"c": 0.3, "a": 0.1, "b": 0.2})
    rho, n_left_out = page.per_image_rho(pd.concat([kept, low]), acc, ["a", "b", "c"], "high")
    # image 0: (1, 2, 3) vs (0.1, 0.2, 0.3) -> 1; image 1: ranks (2, 0, 1) vs (0, 1, 2):
    # d = (2, -1, -1), sum d^2 = 6, rho = 1 - 6 * 6 / (3 * 8) = -0.5; image 2 lacks network c
    assert rho.name == "spearman_rho" and list(rho.index) == [0, 1]
    assert rho.tolist() == pytest.approx([1.0, -0.5])
    assert n_left_out == 1

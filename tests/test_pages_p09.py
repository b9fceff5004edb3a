"""Hand-derived tests of deepinfo.book.pages.p09_robustness (Table 3: last-layer CID and robustness)."""

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from deepinfo.book.pages import p09_robustness as page
from deepinfo.book.verdicts import HELD, INCONCLUSIVE
from deepinfo.techniques.robustness import Robustness

ROB = page.ROBUSTNESS
NAN = float("nan")


class FakeTrained:
    """A stand-in for experiments.Trained: only ``accuracy(dataset)`` is read."""

    def __init__(self, accuracy):
        self._accuracy = accuracy
        self.calls = 0

    def accuracy(self, dataset):
        self.calls += 1
        return self._accuracy


def profile(cub_weights="imagenet", cifar_weights="published"):
    return SimpleNamespace(
        networks=SimpleNamespace(cub=SimpleNamespace(weights=cub_weights, width=8),
                                 cifar=SimpleNamespace(weights=cifar_weights)),
        data=SimpleNamespace(cub=SimpleNamespace(num_classes=5, image_size=32, dataset="synthetic"),
                             cifar=SimpleNamespace(dataset="cifar10")),
        estimator=SimpleNamespace(tol=0.05),
        compression=SimpleNamespace(arch="vgg16"),
        training=SimpleNamespace(cifar_resnet=SimpleNamespace(epochs=3)),
        second_line=SimpleNamespace(base_depth=20, robustness_depths=(20, 32), retrain=SimpleNamespace(epochs=2)))


def test_design_power_text():
    # 4 nets: 4! * 0.05 / 2 = 0.6 < 1 -> cannot decide; p = 1/24 = 0.0417 -> "0.042";
    # the smallest n with n! * 0.025 >= 1 is 5 (120 * 0.025 = 3)
    text = page.design_power_text(4, 0.95)
    assert text.startswith("With 4 nets a perfect ordering has one-sided permutation p = 1/4! = 0.042; ")
    assert "cannot decide" in text and "a perfect ordering of 5 nets would be needed" in text
    # 7 nets: 5040 * 0.025 = 126 >= 1 -> can decide; p = 1/5040 = 0.000198 -> "0.000"
    assert page.design_power_text(7, 0.95) == ("With 7 nets a perfect ordering has one-sided permutation "
                                               "p = 1/7! = 0.000; the design can decide at 95 %.")


def test_net_names():
    nets = [(1.0, None, 1.0), (0.38, None, 0.381), (0.128, None, 0.13)]
    # keep 0.38 -> "38.0% kept", 0.128 -> "12.8% kept" (the target, not the achieved fraction)
    assert page.net_names(nets) == {1.0: "original", 0.38: "38.0% kept", 0.128: "12.8% kept"}


def test_cid_by_network_orders_the_nets():
    df = pd.DataFrame({"image": [0, 1, 0, 1], "network": ["original", "original", "b", "b"],
                       "value": [1.0, 2.0, 3.0, 4.0]})
    grid = page.cid_by_network(df, ["original", "b"])
    # pivot would sort the columns alphabetically (b, original); the order puts the original first
    assert list(grid.columns) == ["original", "b"]
    assert grid.loc[0].tolist() == [1.0, 3.0] and grid.loc[1].tolist() == [2.0, 4.0]


def test_perturbation_rows_are_image_major():
    res = Robustness(distance=torch.tensor([[1.0, NAN], [3.0, 4.0]]), predicted=torch.tensor([2, 0]),
                     targets=torch.tensor([[0, 1], [1, 2]]), reached=torch.tensor([[True, False], [True, True]]),
                     out_of_range=torch.tensor([[0, 5], [1, 0]]))
    rows = page.perturbation_rows(res, "original", 1.0)
    # B = 2 images x k = 2 targets: (image, rank) = (0,1), (0,2), (1,1), (1,2)
    assert rows["image"].tolist() == [0, 0, 1, 1] and rows["rank"].tolist() == [1, 2, 1, 2]
    assert rows["predicted"].tolist() == [2, 2, 0, 0] and rows["target"].tolist() == [0, 1, 1, 2]
    assert rows["distance"].tolist()[0] == 1.0 and math.isnan(rows["distance"].tolist()[1])
    assert rows["reached"].tolist() == [True, False, True, True]
    assert rows["out_of_range"].tolist() == [0, 5, 1, 0]
    assert set(rows["network"]) == {"original"} and set(rows["keep"]) == {1.0}


def test_perturbation_summary():
    df = pd.DataFrame({"network": ["z", "z", "z", "a"], "distance": [1.0, 3.0, NAN, 5.0],
                       "reached": [True, True, False, True], "out_of_range": [0, 3, 0, 2]})
    s = page.perturbation_summary(df)
    # order of appearance (z first); z: mean(1, 3) = 2 (NaN skipped), reached 2/3, outside (0+3+0)/3 = 1
    assert list(s.index) == ["z", "a"]
    assert s.loc["z"].tolist() == pytest.approx([2.0, 2 / 3, 1.0])
    assert s.loc["a"].tolist() == pytest.approx([5.0, 1.0, 2.0])


def test_bisection_check_is_exact_on_a_linear_net():
    # logits = W x with W rows (1, 0), (0, 1), (0, 0); x = (0.8, 0.2): logits (0.8, 0.2, 0), predicted 0,
    # most probable wrong class 1; the boundary z0 = z1 is at distance (0.8 - 0.2) / ||(1, -1)|| = 0.6 / sqrt(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 3, bias=False)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    x = torch.tensor([0.8, 0.2], dtype=torch.float64).view(1, 1, 1, 2)
    check = page.bisection_check(model, x, max_steps=10)
    assert list(check.columns) == ["image", "DeepFool L2", "bisection L2", "relative difference"]
    assert check["DeepFool L2"].iloc[0] == pytest.approx(0.6 / math.sqrt(2), rel=1e-9)
    assert check["bisection L2"].iloc[0] == pytest.approx(0.6 / math.sqrt(2), rel=1e-9)
    assert check["relative difference"].iloc[0] < 1e-9


def cid_frame():
    # keep 1.0: values 1, 3 on the constraint, 100 off -> mean 2; keep 0.5: 1.5 on, 2.5 off -> mean 1.5
    return pd.DataFrame({"network": ["original"] * 3 + ["50.0% kept"] * 2, "keep": [1.0, 1.0, 1.0, 0.5, 0.5],
                         "image": [0, 1, 2, 0, 1], "value": [1.0, 3.0, 100.0, 1.5, 2.5],
                         "constraint": [1.0, 1.01, 2.0, 0.99, 1.5],
                         "on_constraint": [True, True, False, True, False]})


def test_table3():
    nets = [(1.0, FakeTrained(0.8), 1.0), (0.5, FakeTrained(0.7), 0.48)]
    results = {1.0: SimpleNamespace(mean=2.0, reached_fraction=1.0), 0.5: SimpleNamespace(mean=1.0, reached_fraction=0.5)}
    t = page.table3(nets, results, cid_frame(), "fc", dataset=None)
    assert t["DNN"].tolist() == ["original", "with 48.0% of the weights"]
    assert t["fraction of weights kept"].tolist() == [1.0, 0.48]
    assert t["test accuracy"].tolist() == [0.8, 0.7]
    assert t["CID (fc)"].tolist() == pytest.approx([2.0, 1.5])
    assert t["ΔCID"].tolist() == pytest.approx([0.0, -0.5])  # 1.5 - 2.0
    assert t["CID maps left out"].tolist() == [1, 1]
    assert t[ROB].tolist() == [2.0, 1.0] and t["pairs reaching the boundary"].tolist() == [1.0, 0.5]
    assert list(t.columns) == ["DNN", "fraction of weights kept", "test accuracy", "CID (fc)", "ΔCID",
                               "CID maps left out", ROB, "pairs reaching the boundary"]


def test_mean_reached_distance():
    d = np.array([[1.0, np.nan, 3.0], [np.nan, np.nan, np.nan]], dtype=np.float32)
    out = page.mean_reached_distance(d)
    # row 0: mean(1, 3) = 2; row 1: nothing reached -> NaN
    assert out[0] == 2.0 and math.isnan(out[1])


def test_per_image_rho():
    # three nets ("original", "b", "a": the order of the distances, not alphabetical) and three images
    cid = pd.DataFrame({
        "network": ["original", "b", "a"] * 3, "image": [0] * 3 + [1] * 3 + [2] * 3,
        "value": [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0],
        "on_constraint": [True, True, True, True, False, True, True, True, True]})
    distances = {"original": np.array([[1.0, np.nan], [5.0, 7.0], [9.0, 9.0]]),
                 "b": np.array([[2.0, 4.0], [np.nan, np.nan], [5.0, np.nan]]),
                 "a": np.array([[4.0, 4.0], [1.0, 1.0], [1.0, 2.0]])}
    out = page.per_image_rho(cid, distances)
    assert list(out.columns) == ["image", "spearman_rho", "cid_original", "cid_b", "cid_a",
                                 "l2_original", "l2_b", "l2_a"]
    # image 0: CID (1, 2, 3), L2 (1, mean(2, 4) = 3, 4): same order -> rho = 1
    assert out.spearman_rho[0] == pytest.approx(1.0)
    assert out.loc[0, ["l2_original", "l2_b", "l2_a"]].tolist() == [1.0, 3.0, 4.0]
    # image 1: b's map is off the constraint -> CID NaN -> rho NaN (left out)
    assert math.isnan(out.cid_b[1]) and math.isnan(out.spearman_rho[1])
    # image 2: CID (1, 2, 3), L2 (9, 5, 1.5): reversed order -> rho = -1
    assert out.spearman_rho[2] == pytest.approx(-1.0)
    assert out.l2_a[2] == 1.5


def test_rho_over_nets_leaves_out_missing_nets():
    t = pd.DataFrame({"CID (last FC)": [1.0, 2.0, NAN, 3.0], ROB: [1.0, 3.0, 9.0, 2.0]})
    # rows 0, 1, 3: CID ranks (1, 2, 3), L2 ranks (1, 3, 2): d = (0, -1, 1), rho = 1 - 6 * 2 / (3 * 8) = 0.5
    assert page.rho_over_nets(t, "CID (last FC)") == pytest.approx(0.5)


def test_nets_verdict():
    rule = dict(threshold=0.0, side="greater", method="spearman", unit="networks", confidence=0.95)
    # two nets left (one NaN): no correlation -> inconclusive with the reason and the effect given
    t = pd.DataFrame({"c": [1.0, 2.0, NAN], ROB: [1.0, 2.0, 3.0]})
    v = page.nets_verdict(t, "c", too_few="only {n} nets", effect=0.3, **rule)
    assert v.verdict == INCONCLUSIVE and v.design == "only 2 nets" and v.n_units == 2 and v.effect == 0.3
    # seven nets in the same order: rho = 1, every resample 1 (or undefined) -> held
    t = pd.DataFrame({"c": np.arange(7.0), ROB: np.arange(7.0) ** 2})
    v = page.nets_verdict(t, "c", too_few="only {n} nets", **rule)
    assert v.verdict == HELD and v.effect == pytest.approx(1.0) and v.n_units == 7


def test_per_image_verdict():
    rule = dict(threshold=0.0, side="greater", confidence=0.95)
    none = pd.DataFrame({"spearman_rho": [NAN, NAN]})
    v = page.per_image_verdict(none, **rule)
    assert v.verdict == INCONCLUSIVE and v.n_units == 0 and v.design.startswith("no image has a CID map")
    one = pd.DataFrame({"spearman_rho": [0.5, NAN]})
    v = page.per_image_verdict(one, **rule)
    # one image: effect 0.5, the design says there is no spread; fewer than 5 units never decide
    assert v.verdict == INCONCLUSIVE and v.effect == 0.5 and v.n_units == 1
    assert v.design.startswith("one image only: no spread over images to resample")
    many = pd.DataFrame({"spearman_rho": [1.0, 0.8, 0.5, 1.0, 0.8, 0.5, NAN]})
    v = page.per_image_verdict(many, **rule)
    # six images all > 0: mean (2.3 * 2) / 6 = 0.7667, every bootstrap mean > 0 -> held
    assert v.verdict == HELD and v.effect == pytest.approx(4.6 / 6) and v.n_units == 6


def table():
    return pd.DataFrame({"DNN": ["original", "with 38.0% of the weights"], "test accuracy": [0.7, 0.5],
                         "CID (fc)": [1.25, NAN], ROB: [0.002, 0.001], "pairs reaching the boundary": [1.0, 0.85]})


def test_per_net_numbers():
    n = page.per_net_numbers(table(), "CID (fc)")
    assert list(n) == ["cid_last_original", "cid_last_with 38.0% of the weights",
                       "robustness_l2_original", "robustness_l2_with 38.0% of the weights"]
    assert n["cid_last_original"] == 1.25 and math.isnan(n["cid_last_with 38.0% of the weights"])
    assert n["robustness_l2_with 38.0% of the weights"] == 0.001


def test_table3_setup():
    P = profile(cub_weights="scratch")
    cid = pd.DataFrame({"constraint": [1.0, 1.01, 1.2, 0.97]})
    setup = page.table3_setup(P, table(), cid, n_images=4, top_k=3, max_steps=10, paper_accuracy=0.75,
                              accuracy_fraction=0.8, min_reached=0.9)
    acc, reached, constraint = setup
    # 0.8 * 0.75 = 0.6: 0.7 passes, 0.5 fails -> not met
    assert not acc.met
    assert acc.observed == ("original 70.0%, with 38.0% of the weights 50.0% (trained from scratch, 5 classes, "
                            "32 px)")
    assert acc.paper.endswith("~75%, its compressions about as accurate")
    # lowest share 0.85 < 0.9 -> not met
    assert not reached.met
    assert reached.observed == ("original 100%, with 38.0% of the weights 85% of 4 images x top-3 targets "
                                "(10 steps at most)")
    # 3 of 4 ratios within 5 % of 1: 3 >= 0.9 * 4 = 3.6 is false -> not met
    assert constraint.name == "maps on the constraint" and not constraint.met
    ok = page.table3_setup(profile(), table().assign(**{"test accuracy": [0.7, 0.61],
                                                        "pairs reaching the boundary": [1.0, 0.9]}),
                           cid.iloc[:2], n_images=4, top_k=3, max_steps=10, paper_accuracy=0.75,
                           accuracy_fraction=0.8, min_reached=0.9)
    assert [c.met for c in ok] == [True, True, True] and "fine-tuned from ImageNet" in ok[0].observed


def test_table3_data():
    nets = [(1.0, None, 1.0), (0.38, None, 0.381), (0.08, None, 0.0804)]
    assert page.table3_data(profile(), nets, 4, 3) == (
        "synthetic test set, 4 images x top-3 wrong classes; vgg16 (width 8) and its compressions to "
        "38.1%, 8.0% of the conv + FC weights")


def test_table3_evidence():
    ev = page.table3_evidence(table(), "CID (fc)", rho=0.5, n_off=2, n_maps=8, power_text="P.")
    # one net has no mean CID -> n_nets = 1
    assert list(ev["numbers"])[:3] == ["spearman_rho", "n_maps_off_constraint", "n_nets"]
    assert ev["numbers"]["n_nets"] == 1 and ev["numbers"]["n_maps_off_constraint"] == 2
    assert ev["numbers"]["cid_last_original"] == 1.25
    assert ev["detail"] == ("Power: P. Spearman rho over the nets = 0.50; CID 1.2500, nan nats; L2 0.002, 0.001 "
                            "(nets in the order original, with 38.0% of the weights); lowest share of pairs "
                            "reaching the boundary 85%; 2 of 8 CID maps left out (off the constraint).")


def test_per_image_evidence():
    pi = pd.DataFrame({"spearman_rho": [1.0, NAN, 0.0, NAN]})
    ev = page.per_image_evidence(pi, 4)
    # two images with a rho: mean (1 + 0) / 2 = 0.5; two left out
    assert ev["numbers"] == {"mean_per_image_rho": 0.5, "n_images": 2, "n_images_left_out": 2}
    assert "across the 4 nets" in ev["detail"] and "mean over 2 images (2 left out" in ev["detail"]
    empty = page.per_image_evidence(pd.DataFrame({"spearman_rho": [NAN]}), 4)["numbers"]
    assert math.isnan(empty["mean_per_image_rho"]) and empty["n_images"] == 0 and empty["n_images_left_out"] == 1


def test_mean_on_constraint():
    cid = torch.tensor([1.0, 2.0, 6.0])
    # images 0 and 2 on the constraint: (1 + 6) / 2 = 3.5; none -> NaN
    assert page.mean_on_constraint(cid, np.array([True, False, True])) == 3.5
    assert math.isnan(page.mean_on_constraint(cid, np.array([False, False, False])))


def test_weights_and_trained_words():
    assert page.ex.cifar_weights_words(profile()) == "published weights"
    assert page.ex.cifar_weights_words(profile(cifar_weights="train")) == "trained here, 3 epochs"
    assert page.trained_words(profile()) == "fine-tuned from ImageNet"
    assert page.trained_words(profile(cub_weights="none")) == "trained from scratch"


def test_second_line_setup():
    P = profile()
    # published: ResNet-20 91.25 %, ResNet-32 92.49 %; 0.8 of that is 73.0 % and 74.0 %
    sl_nets = {"ResNet-20": FakeTrained(0.9), "ResNet-20, 50.0% kept": FakeTrained(0.1), "ResNet-32": FakeTrained(0.5)}
    t = pd.DataFrame({"pairs reaching the boundary": [1.0, 0.95, 0.9]})
    cid = pd.DataFrame({"constraint": [1.0, 1.0, 1.0]})
    paper, acc, reached, constraint = page.second_line_setup(P, sl_nets, t, cid, None, n_images=2, top_k=9,
                                                             accuracy_fraction=0.8, min_reached=0.9)
    assert not paper.met and paper.observed == "CIFAR ResNets on cifar10 (second line)"
    # ResNet-32 at 50 % is below 74 % -> not met; the pruned net is not checked
    assert not acc.met
    assert acc.observed == "ResNet-20 90.0%, ResNet-32 50.0% (published weights)"
    assert acc.paper.startswith("published: ResNet-20 ") and ", ResNet-32 " in acc.paper
    # lowest share 0.9 >= 0.9 -> met
    assert reached.met and reached.observed == "lowest 90% of 2 images x top-9 targets"
    assert constraint.met


def test_second_line_evidence():
    t = pd.DataFrame({"DNN": ["ResNet-20", "ResNet-32"], "CID (last FC)": [1.0, 2.5], ROB: [0.5, 0.25]})
    ev = page.second_line_evidence(t, rho=-1.0)
    assert ev["numbers"] == {"spearman_rho": -1.0, "n_nets": 2, "cid_last_ResNet-20": 1.0, "cid_last_ResNet-32": 2.5,
                             "robustness_l2_ResNet-20": 0.5, "robustness_l2_ResNet-32": 0.25}
    assert ev["detail"] == ("Spearman rho over 2 nets = -1.00; ResNet-20: CID 1.0000, L2 0.5; "
                            "ResNet-32: CID 2.5000, L2 0.25.")


def test_second_line_data():
    sl_nets = {"ResNet-20": None, "ResNet-20, 50.0% kept": None, "ResNet-32": None}
    assert page.second_line_data(profile(), sl_nets, 2, 9) == (
        "cifar10 test set, 2 images x top-9 wrong classes; ResNet-20, ResNet-20, 50.0% kept, ResNet-32 "
        "(published weights; pruned stages retrained 2 epochs each)")

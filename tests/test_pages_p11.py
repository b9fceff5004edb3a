"""Hand-derived checks of the numbers page 11 (architecture damage) computes for its tables and claims."""

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from deepinfo.book.pages import p11_damage as page
from deepinfo.book.verdicts import HELD, NOT_HELD, Verdict
from deepinfo.result import InfoMaps

VARIANT = {None: "original", -1: "conv -1 damaged"}


def _maps(layers: list[str], means: list[list[float]], ratio: list[list[float]]) -> InfoMaps:
    """Maps whose [L, B] cell means are ``means`` (one cell per map)."""
    pix = torch.tensor(means)[:, :, None, None]
    L, B = pix.shape[:2]
    return InfoMaps(layers=layers, pixelwise=pix, constraint=torch.tensor(ratio), constraint_se=torch.zeros(L, B),
                    sigma=torch.ones_like(pix), delta_f2=torch.ones(L, B),
                    n_capped=torch.arange(L * B).reshape(L, B), kind="cid", method="optimize", beta=1.0,
                    sigma_max=1.0, grid=(1, 1), image_size=(4, 4), seed=0)


def test_pair_tag():
    assert page.pair_tag("vgg16", -2) == "vgg16 conv -2"


def test_accuracy_table():
    class Net:
        def __init__(self, acc):
            self.acc = acc

        def accuracy(self, dataset):
            return self.acc

    nets = {("vgg16", None): Net(0.9), ("vgg16", -1): Net(0.7)}
    table = page.accuracy_table(nets, [0] * 10, VARIANT)
    assert list(table.columns) == ["network", "variant", "conv_index", "accuracy", "n_test_images"]
    assert table.variant.tolist() == ["original", "conv -1 damaged"]
    # the original's conv_index None becomes NaN in the numeric column
    assert np.isnan(table.conv_index.iloc[0]) and table.conv_index.iloc[1] == -1
    assert table.accuracy.tolist() == [0.9, 0.7] and table.n_test_images.tolist() == [10, 10]


def test_measured_layers_add_the_damaged_layers_in_module_order():
    model = nn.Module()
    # 0 conv, 1 relu, 2 pool, 3 conv, 4 relu, 5 conv, 6 relu, 7 pool
    model.features = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(), nn.MaxPool2d(1), nn.Conv2d(1, 1, 1), nn.ReLU(),
                                   nn.Conv2d(1, 1, 1), nn.ReLU(), nn.MaxPool2d(1))
    nets = {("tiny", None): SimpleNamespace(model=model)}
    # conv -1 is features.5, its ReLU features.6; conv -2 is features.3 -> features.4; layers "features.7" added
    layers_of, damaged_of = page.measured_layers(nets, ["tiny"], [-1, -2], ["features.7"])
    assert damaged_of == {"tiny": {-1: "features.6", -2: "features.4"}}
    assert layers_of == {"tiny": ["features.4", "features.6", "features.7"]}


def _per_image():
    # one arch, layers a (index 0) and d (the damaged one, index 1), two images (ids 10, 11)
    maps_of = {("vgg", None): _maps(["a", "d"], [[1.0, 2.0], [3.0, 4.0]], [[1.0, 1.0], [1.0, 0.5]]),
               ("vgg", -1): _maps(["a", "d"], [[1.5, 2.0], [4.0, 6.0]], [[1.0, 1.0], [1.05, 1.0]])}
    conc_of = {("vgg", None): torch.tensor([[0.1, 0.2], [0.3, 0.4]]),
               ("vgg", -1): torch.tensor([[0.2, 0.2], [0.3, 0.7]])}
    return page.per_image_table(maps_of, conc_of, {"vgg": ["a", "d"]}, {"vgg": {-1: "d"}}, VARIANT,
                                torch.tensor([10, 11]), 0.1)


def test_per_image_table():
    per_image = _per_image()
    assert list(per_image.columns) == ["network", "variant", "conv_index", "layer", "layer_index", "damaged_here",
                                       "image", "cid", "concentration", "ratio", "n_capped", "on_constraint"]
    assert per_image.image.tolist() == [10, 11, 10, 11, 10, 11, 10, 11]
    assert per_image.cid.tolist() == [1.0, 2.0, 3.0, 4.0, 1.5, 2.0, 4.0, 6.0]
    assert per_image.concentration.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.2, 0.2, 0.3, 0.7])
    # only the damaged net at its damaged layer d
    assert per_image.damaged_here.tolist() == [False] * 6 + [True, True]
    # the original's map at (d, 11) has ratio 0.5: off the constraint
    assert per_image.on_constraint.tolist() == [True, True, True, False, True, True, True, True]
    assert per_image.n_capped.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]


def test_per_layer_means():
    per_layer = page.per_layer_means(_per_image())
    assert per_layer[["variant", "layer", "layer_index"]].values.tolist() == [
        ["original", "a", 0], ["original", "d", 1], ["conv -1 damaged", "a", 0], ["conv -1 damaged", "d", 1]]
    # mean over the two images, all maps
    assert per_layer.cid.tolist() == pytest.approx([1.5, 3.5, 1.75, 5.0])
    assert per_layer.ratio.tolist() == pytest.approx([1.0, 0.75, 1.0, 1.025])


def test_paired_differences_leave_out_maps_off_the_constraint():
    per_image = _per_image()
    on = per_image[per_image.on_constraint]
    frame = page.paired_differences(on, "vgg", -1, "original", "conv -1 damaged", "d")
    assert list(frame.columns) == ["network", "conv_index", "image", "d_cid", "d_conc", "d_cid_minus_d_conc"]
    assert frame.image.tolist() == [10, 11]
    # image 10: d_cid at d = 4 - 3 = 1; d_conc over a and d = ((0.2 - 0.1) + (0.3 - 0.3)) / 2 = 0.05
    # image 11: (d, 11) off in the original -> d_cid NaN; d_conc over a only = 0.2 - 0.2 = 0
    assert frame.d_cid.iloc[0] == pytest.approx(1.0) and np.isnan(frame.d_cid.iloc[1])
    assert frame.d_conc.tolist() == pytest.approx([0.05, 0.0])
    assert frame.d_cid_minus_d_conc.iloc[0] == pytest.approx(0.95) and np.isnan(frame.d_cid_minus_d_conc.iloc[1])


def _verdict(verdict, effect, lo, hi, n=5):
    return Verdict(verdict, effect, (lo, hi), n, "images", 0.05, "greater")


def _verdicts():
    cid = {"vgg conv -1": _verdict(HELD, 1.0, 0.5, 1.5)}
    conc = {"vgg conv -1, concentration rise": _verdict(NOT_HELD, -0.1, -0.2, -0.05, 4),
            "vgg conv -1, CID rise minus concentration rise": _verdict(HELD, 0.9, 0.4, 1.4)}
    return cid, conc


def test_summary_table_and_glue_texts():
    cid, conc = _verdicts()
    summary = page.summary_table(_per_image(), ["vgg"], [-1], {"vgg": {-1: "d"}}, VARIANT, cid, conc)
    row = summary.iloc[0]
    # layer means at d over both images (all maps): original (3 + 4) / 2, damaged (4 + 6) / 2; ratios 0.75, 1.025
    assert (row.cid_original, row.cid_damaged) == (pytest.approx(3.5), pytest.approx(5.0))
    assert (row.ratio_at_layer_original, row.ratio_at_layer_damaged) == (pytest.approx(0.75), pytest.approx(1.025))
    assert (row.d_cid, row.d_cid_lo, row.d_cid_verdict) == (1.0, 0.5, HELD)
    assert (row.d_conc, row.d_conc_hi, row.d_conc_verdict) == (-0.1, -0.05, NOT_HELD)
    assert (row.d_cid_minus_d_conc, row.lo, row.hi, row.verdict) == (0.9, 0.4, 1.4, HELD)
    assert (row.n_images_cid, row.n_images_conc) == (5, 4)
    assert page.dcid_text(cid) == "vgg conv -1: +1.000 [+0.500, +1.500]"
    assert page.dconc_text(summary) == "vgg conv -1: -0.100 [-0.200, -0.050]"


def test_setup_conditions():
    accuracy = pd.DataFrame({"network": ["vgg", "vgg"], "variant": ["original", "conv -1 damaged"],
                             "accuracy": [0.8, 0.75]})
    # 0.8 * 0.95 = 0.76: the damaged net's 75 % misses it
    acc, neg = page.setup_conditions(accuracy, 20, "cifar10", 0.95, 0.8)
    assert not acc.met and acc.observed == "vgg original 80.0%, vgg conv -1 damaged 75.0% (20 test images, chance 50 %)"
    assert not neg.met and neg.observed == "'cifar10'"
    acc, neg = page.setup_conditions(accuracy.assign(accuracy=[0.8, 0.76]), 20, "imagenet", 0.95, 0.8)
    assert acc.met and neg.met


def test_data_text():
    profile = SimpleNamespace(
        data=SimpleNamespace(cub=SimpleNamespace(dataset="synthetic", image_size=32, concentration_crop="box1.5")),
        networks=SimpleNamespace(cub=SimpleNamespace(width=8)),
        damage=SimpleNamespace(negatives="synthetic", archs=["vgg16", "vgg19"], conv_index=[-1, -2], n_filters=4,
                               kernel_size=7))
    assert page.data_text(profile, 100, 40, 6) == (
        "synthetic birds vs synthetic non-birds (100 training, 40 test images, 32 px); CID and concentration on "
        "6 bird test images (box1.5 crops); vgg16, vgg19 (width 8), original and with conv -1, -2 replaced by 4 "
        "7x7 filters")


def test_maps_at_damaged_layers():
    at = page.maps_at_damaged_layers(_per_image(), {"vgg": {-1: "d"}}, "original")
    # the original at d (2 images) and the damaged net at d (2 images)
    assert at[["variant", "layer"]].values.tolist() == [["original", "d"]] * 2 + [["conv -1 damaged", "d"]] * 2
    assert at.ratio.tolist() == pytest.approx([1.0, 0.5, 1.05, 1.0])


def test_claim_evidence():
    cid, conc = _verdicts()
    summary = pd.DataFrame({"network": ["vgg"], "conv_index": [-1], "damaged_layer": ["d"],
                            "cid_original": [3.5], "cid_damaged": [5.0]})
    ev = page.cid_claim_evidence(cid, summary, 1, 1)
    assert ev["numbers"] == {"d_cid_vgg conv -1": 1.0, "verdict_vgg conv -1": HELD, "n_pairs_held": 1, "n_pairs": 1}
    assert ev["detail"].endswith("Layer means (all maps): vgg conv -1 (d): 3.500 -> 5.000 nats.")
    assert "per pair: vgg conv -1: held: effect +1.0000 [+0.5000, +1.5000] over 5 images." in ev["detail"]
    ev = page.concentration_claim_evidence(conc, 3, 8, 0.05)
    assert ev["numbers"]["effect_vgg conv -1, concentration rise"] == -0.1
    assert ev["numbers"]["verdict_vgg conv -1, CID rise minus concentration rise"] == HELD
    assert ev["numbers"]["n_maps_off_constraint"] == 3
    assert "- d_conc > 0.05 nats. " in ev["detail"]
    assert ev["detail"].endswith(". 3 of 8 maps off the constraint (left out).")
    assert not math.isnan(ev["numbers"]["effect_vgg conv -1, CID rise minus concentration rise"])

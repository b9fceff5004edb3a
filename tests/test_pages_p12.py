"""Hand-derived tests of deepinfo.book.pages.p12_dynamics (Fig. 9: CID of the blocks over training)."""

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from deepinfo.book.pages import p12_dynamics as page
from deepinfo.book.verdicts import HELD, INCONCLUSIVE, NOT_HELD, Verdict

NAN = float("nan")


def verdict(kind=HELD, effect=0.5, interval=(0.1, 0.9), design=""):
    return Verdict(kind, effect, interval, 8, "images", 0.0, "greater", 0.95, None, design)


def test_snapshot_table():
    h = SimpleNamespace(train_loss=[0.9, 0.5], train_acc=[0.3, 0.6], lr=[0.1, 0.05])
    t = page.snapshot_table(h, [0, 2], {0: (0.1, 2.3), 2: (0.5, 1.2)})
    assert list(t.columns) == ["epoch", "train_loss", "train_accuracy", "lr", "test_accuracy", "test_loss"]
    # epoch 0: nothing trained yet -> NaN; epoch 2 reads entry 1 of the history
    assert math.isnan(t.train_loss[0]) and math.isnan(t.train_accuracy[0]) and math.isnan(t.lr[0])
    assert t.loc[1, ["epoch", "train_loss", "train_accuracy", "lr"]].tolist() == [2, 0.5, 0.6, 0.05]
    assert t.test_accuracy.tolist() == [0.1, 0.5] and t.test_loss.tolist() == [2.3, 1.2]


def test_snapshot_rows_are_block_major():
    cid = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    ratio = torch.tensor([[1.0, 0.9], [1.1, 1.0]])
    rows = page.snapshot_rows(5, ["b1", "b2"], cid, ratio)
    # (block, image): (b1, 0), (b1, 1), (b2, 0), (b2, 1)
    assert [(r["block"], r["image"], r["cid"]) for r in rows] == [("b1", 0, 1.0), ("b1", 1, 2.0), ("b2", 0, 3.0),
                                                                 ("b2", 1, 4.0)]
    assert rows[1]["ratio"] == pytest.approx(0.9) and rows[2]["block_index"] == 1
    assert {r["epoch"] for r in rows} == {5} and {r["n_blocks"] for r in rows} == {2}


def per_image():
    # high blocks b2, b3; b1 is low. (b3, image 0) misses the constraint at epoch 1 -> left out at every epoch
    rows = [(0, "b1", 0, 0, 9.0, True), (1, "b1", 0, 0, 9.0, True),
            (0, "b2", 1, 0, 1.0, True), (1, "b2", 1, 0, 3.0, True),
            (0, "b3", 2, 0, 5.0, True), (1, "b3", 2, 0, 7.0, False),
            (0, "b2", 1, 1, 2.0, True), (1, "b2", 1, 1, 4.0, True),
            (0, "b3", 2, 1, 6.0, True), (1, "b3", 2, 1, 8.0, True)]
    df = pd.DataFrame(rows, columns=["epoch", "block", "block_index", "image", "cid", "on_constraint"])
    return df.assign(ratio=np.where(df.on_constraint, 1.0, 2.0))


def test_mean_per_block_and_grid():
    pb = page.mean_per_block(per_image())
    # (epoch 0, b2): mean(1, 2) = 1.5; (epoch 1, b3): mean(7, 8) = 7.5 (every map counts here)
    assert pb.set_index(["epoch", "block"]).loc[(0, "b2"), "cid"] == 1.5
    assert pb.set_index(["epoch", "block"]).loc[(1, "b3"), "cid"] == 7.5
    assert pb.set_index(["epoch", "block"]).loc[(1, "b3"), "ratio"] == 1.5  # (2 + 1) / 2
    grid = page.cid_per_block_grid(pb)
    assert list(grid.columns) == ["epoch", "b1", "b2", "b3"]
    assert grid.loc[1].tolist() == [1, 9.0, 3.5, 7.5]


def test_high_blocks():
    # 6 blocks x 1/3 = 2 -> the last two; 2 blocks x 1/3 = 0.67 -> round 1; 1 block -> at least one
    assert page.high_blocks(["a", "b", "c", "d", "e", "f"], 1 / 3) == ["e", "f"]
    assert page.high_blocks(["a", "b"], 1 / 3) == ["b"]
    assert page.high_blocks(["a"], 0.1) == ["a"]


def test_high_block_curves_and_table():
    hi, curves = page.high_block_curves(per_image(), ["b2", "b3"])
    assert set(hi.block) == {"b2", "b3"}
    # image 0 keeps only b2: (1, 3); image 1 averages b2 and b3: ((2 + 6) / 2, (4 + 8) / 2) = (4, 6)
    assert curves.to_numpy().tolist() == [[1.0, 4.0], [3.0, 6.0]]
    assert list(curves.index) == [0, 1]
    t = page.high_block_table(curves, [0, 1])
    # means (1 + 4) / 2 = 2.5 and (3 + 6) / 2 = 4.5; sd (ddof 1) of (1, 4) is 3 / sqrt(2), se = 3 / 2 = 1.5
    assert t.cid_high.tolist() == [2.5, 4.5]
    assert t.se.tolist() == pytest.approx([1.5, 1.5])
    assert t.n_images.tolist() == [2, 2]
    numbers = page.claim_numbers(hi, curves, [0, 1], ["b2", "b3"], {0: (0.1, 2.0), 1: (0.3, 1.5)})
    assert numbers == {"n_snapshots": 2, "high_blocks": "b2, b3", "n_images": 2, "n_high_pairs_left_out": 1,
                       "cid_high_epoch0": 2.5, "cid_high_epoch1": 4.5,
                       "test_accuracy_epoch0": 0.1, "test_accuracy_epoch1": 0.3}


def test_convergence_condition():
    h = SimpleNamespace(train_loss=[1.0, 0.8, 0.6], lr=[0.1, 0.2, 0.01])
    rule = dict(plateau=0.01, converged_fraction=0.8, paper_accuracy=0.926, paper_epochs=200)
    # 0.70 -> 0.745: +4.5 points (no plateau); 0.745 >= 0.8 * 0.926 = 0.7408 (level) -> not met
    c = page.convergence_condition([0, 1, 2], {0: (0.1, 0), 1: (0.70, 0), 2: (0.745, 0)}, h, 100, **rule)
    assert not c.met
    assert c.observed == ("3 epochs on 100 images; held-out accuracy 70.0% at epoch 1 -> 74.5% at epoch 2 "
                          "(+4.5 points), at least 80% of a fully trained ResNet-32's; learning rate 0.01 at the "
                          "start of the last epoch (peak 0.2)")
    assert c.paper == "200 epochs on CIFAR-10, ResNet-32 at 92.6%"
    # 0.750 -> 0.755: +0.5 point (plateau) and above 0.7408 -> met
    assert page.convergence_condition([1, 2], {1: (0.75, 0), 2: (0.755, 0)}, h, 100, **rule).met
    # plateau but below the level -> not met, "below"
    low = page.convergence_condition([1, 2], {1: (0.5, 0), 2: (0.5, 0)}, h, 100, **rule)
    assert not low.met and "below 80%" in low.observed
    one = page.convergence_condition([0], {0: (0.1, 0)}, h, 100, **rule)
    assert not one.met and one.observed == "only 1 snapshot" and one.paper == "200 epochs"


def test_fall_and_rise_leave_one_out():
    # 4 snapshots x 2 images. Image 0's own minimum is at row 2, but its e* comes from image 1's curve
    # (5, 2, 4, 6): interior rows 1, 2 -> lowest at row 1. Image 1's e* from image 0's (3, 2, 1, 4): row 2.
    curves = pd.DataFrame({0: [3.0, 2.0, 1.0, 4.0], 1: [5.0, 2.0, 4.0, 6.0]}, index=[0, 1, 2, 3])
    fall, rise, star = page.fall_and_rise(curves)
    assert star.tolist() == [1, 2]
    # image 0: fall 3 - 2 = 1, rise 4 - 2 = 2; image 1: fall 5 - 4 = 1, rise 6 - 4 = 2
    assert fall.tolist() == [1.0, 1.0] and rise.tolist() == [2.0, 2.0]


def test_mean_curve_minimum():
    # mean curves (3, 1, 2) -> epoch 5 interior; (1, 2, 3) -> epoch 0, an end point
    assert page.mean_curve_minimum(pd.DataFrame({0: [3.0, 1.0, 2.0]}, index=[0, 5, 9])) == (5, True)
    assert page.mean_curve_minimum(pd.DataFrame({0: [2.0, 3.0, 4.0], 1: [0.0, 1.0, 2.0]}, index=[0, 5, 9])) == (0, False)


def test_held_only_at_interior_minimum():
    held = verdict(design="all 2 parts must hold")
    out = page.held_only_at_interior_minimum(held, interior=False)
    assert out.verdict == INCONCLUSIVE and out.n_needed is None
    assert out.design == "all 2 parts must hold; the mean curve's minimum is at an end point"
    assert page.held_only_at_interior_minimum(held, interior=True) == held
    assert page.held_only_at_interior_minimum(verdict(NOT_HELD, -0.5, (-0.9, -0.1)), interior=False).verdict == NOT_HELD


def test_parts_numbers():
    parts = {"fall": verdict(effect=0.5, interval=(0.1, 0.9)), "rise": verdict(effect=-0.2, interval=(-0.4, 0.0))}
    assert page.parts_numbers(parts, 3) == {"epoch_of_min_mean_curve": 3, "fall_effect": 0.5, "fall_lo": 0.1,
                                            "fall_hi": 0.9, "rise_effect": -0.2, "rise_lo": -0.4, "rise_hi": 0.0}


def test_fall_rise_detail():
    parts = {"fall": verdict(), "rise": verdict()}
    curves = pd.DataFrame({0: [3.0, 2.0, 1.0, 4.0], 1: [5.0, 2.0, 4.0, 6.0], 2: [1.0, 1.0, 1.0, 1.0]},
                          index=[0, 2, 4, 6])
    # e* rows (1, 2, 1) -> epochs 2 (two images) and 4 (one image); mean curve (3, 1.6667, 2, 3.6667)
    text = page.fall_rise_detail(parts, np.array([1, 2, 1]), curves, 2, True)
    assert text.startswith("Part fall: held: effect +0.5000 [+0.1000, +0.9000] over 8 images. Part rise: ")
    assert text.endswith(" Interior minimum e* (leave-one-out) per image: epoch 2 for 2 images, epoch 4 for 1 image; "
                         "the mean curve's own minimum is at epoch 2 (interior). Mean high-block CID per snapshot: "
                         "epoch 0 3.0000, epoch 2 1.6667, epoch 4 2.0000, epoch 6 3.6667 nats.")
    assert "(an end point)" in page.fall_rise_detail(parts, np.array([1]), curves, 0, False)

"""Hand-derived checks of the page module behind ``07_localization`` (the numbers of Table 2 and its verdict)."""

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from deepinfo.book.pages import p07_localization as page
from deepinfo.book.verdicts import HELD, INCONCLUSIVE, NOT_HELD, Verdict

METHODS = ["CAM", "Grad-CAM", "LRP", "CID"]


def _scores(rows):
    """Per-image scores from (network, method, image, recall, cid_ratio) tuples."""
    return pd.DataFrame([dict(network=n, method=m, image=i, recall=r, box_fraction=0.25,
                              cid_layer="fc" if m == "CID" else "", cid_ratio=c if m == "CID" else np.nan)
                         for n, m, i, r, c in rows])


def test_recall_rows_scores_the_box_by_its_most_important_pixels():
    masks = torch.zeros(1, 2, 2, dtype=torch.bool)
    masks[0, 0, 0] = True  # the box: one pixel, so the recall is 1 if that pixel ranks first, else 0
    importance = {"CID": torch.tensor([[[9.0, 1.0], [2.0, 3.0]]]), "LRP": torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])}
    rows = page.recall_rows("vgg", importance, masks, torch.tensor([17]), torch.tensor([0.25]), METHODS, "fc",
                            torch.tensor([1.02]), seed=0)
    assert [(r["method"], r["image"], r["recall"]) for r in rows] == [("LRP", 17, 0.0), ("CID", 17, 1.0)]
    assert rows[1]["cid_layer"] == "fc" and rows[1]["cid_ratio"] == pytest.approx(1.02)
    assert rows[0]["cid_layer"] == "" and math.isnan(rows[0]["cid_ratio"]) and rows[0]["box_fraction"] == 0.25


def test_table2_means_per_method_and_network_with_the_random_row():
    scores = _scores([("a", "CID", 0, 0.5, 1), ("a", "CID", 1, 0.7, 1), ("a", "LRP", 0, 0.1, 0), ("a", "LRP", 1, 0.2, 0),
                      ("b", "CID", 0, 0.4, 1), ("b", "CAM", 0, 0.9, 0)])
    table = page.table2(scores, 0.3, METHODS, ["b", "a"])
    assert table.index.tolist() == METHODS + ["Random (expected)"] and table.columns.tolist() == ["b", "a"]
    # a: CID (0.5 + 0.7) / 2 = 0.6, LRP 0.15; b: CID 0.4, CAM 0.9; CAM on a and LRP on b not measured
    assert table.loc["CID"].tolist() == pytest.approx([0.4, 0.6])
    assert table.loc["LRP", "a"] == pytest.approx(0.15) and table.loc["CAM", "b"] == pytest.approx(0.9)
    assert math.isnan(table.loc["CAM", "a"]) and table.loc["Random (expected)"].tolist() == [0.3, 0.3]
    sem = page.table2_sem(scores, METHODS, ["b", "a"])
    # sem of (0.5, 0.7): sd 0.1414 / sqrt 2 = 0.1; of (0.1, 0.2): 0.05; one image: NaN
    assert sem.loc["CID", "a"] == pytest.approx(0.1) and sem.loc["LRP", "a"] == pytest.approx(0.05)
    assert math.isnan(sem.loc["CID", "b"]) and sem.index.tolist() == METHODS


def test_images_on_constraint_per_network_without_touching_the_scores():
    scores = _scores([("a", "CID", 0, 0.5, 1.0), ("a", "CID", 1, 0.5, 1.2), ("a", "LRP", 0, 0.5, 0),
                      ("b", "CID", 0, 0.5, np.nan), ("b", "CID", 1, 0.5, 0.97)])
    before = scores.copy()
    ok, left_out = page.images_on_constraint(scores, ["a", "b"], 2, tol=0.05)
    # a: image 1 has r = 1.2 (off); b: image 0 has no ratio (off), image 1 within 0.05 of 1
    assert ok == {"a": {0}, "b": {1}} and left_out == {"a": 1, "b": 1}
    pd.testing.assert_frame_equal(scores, before)


def test_compare_with_cid_pairs_the_images_on_the_constraint():
    rows = []
    for i, d in enumerate([0.1, 0.2, 0.3, 0.2, 0.2, 0.9]):  # CID minus LRP per image
        rows += [("a", "CID", i, 0.5 + d, 1.0), ("a", "LRP", i, 0.5, 0)]
    scores = _scores(rows)
    verdicts, table = page.compare_with_cid(scores, ["a"], {"a": {0, 1, 2, 3, 4}}, METHODS, threshold=0.0,
                                            side="greater", unit="images")
    # image 5 is left out: mean of 0.1, 0.2, 0.3, 0.2, 0.2 = 0.2, every difference > 0 -> held
    v = verdicts["LRP on a"]
    assert list(verdicts) == ["LRP on a"] and v.verdict == HELD and v.effect == pytest.approx(0.2) and v.n_units == 5
    assert table.to_dict("records")[0]["mean recall difference (CID - method)"] == pytest.approx(0.2)
    assert table.columns.tolist() == ["network", "method", "mean recall difference (CID - method)", "lo", "hi",
                                      "n_images", "verdict", "images needed"]
    none, empty = page.compare_with_cid(scores, ["a"], {"a": set()}, METHODS, threshold=0.0, side="greater",
                                        unit="images")
    assert none == {} and empty.empty


def _verdict(verdict, effect=0.1):
    return Verdict(verdict, effect, (effect - 0.05, effect + 0.05), 10, "images", 0.0, "greater")


def test_combined_words_name_the_deciding_comparison():
    assert page.combined_words(_verdict(HELD), "x") == "held: CID beats every other method on every network"
    assert page.combined_words(_verdict(NOT_HELD), "LRP on a") == "not held: CID does not beat LRP on a"
    assert page.combined_words(_verdict(INCONCLUSIVE), "CAM on b") == \
        "inconclusive: the comparison with CAM on b does not decide"


def _table():
    return pd.DataFrame({"a": [np.nan, 0.30, 0.20, 0.50, 0.9], "b": [0.6, 0.7, 0.1, 0.65, 0.9]},
                        index=METHODS + ["Random (expected)"])


def test_cid_margins_and_summary_ignore_the_random_row_and_missing_methods():
    margins = page.cid_margins(_table(), ["a", "b"])
    # a: 0.50 - max(0.30, 0.20) = 0.20 (CAM missing, random 0.9 ignored); b: 0.65 - 0.7 = -0.05
    assert margins == pytest.approx({"a": 0.2, "b": -0.05})
    assert page.cid_summary(_table(), margins, ["a", "b"]) == "a 0.500 (margin +0.200); b 0.650 (margin -0.050)"


def test_setup_conditions_accuracy_images_and_constraint():
    P = SimpleNamespace(networks=SimpleNamespace(cub=SimpleNamespace(weights=None)),
                        data=SimpleNamespace(cub=SimpleNamespace(num_classes=5, image_size=32)),
                        estimator=SimpleNamespace(tol=0.05))
    accuracy = pd.DataFrame({"network": ["a", "b"], "accuracy": [0.6, 0.5]})
    scores = _scores([("a", "CID", 0, 0.5, 1.0), ("a", "CID", 1, 0.5, 1.0), ("b", "CID", 0, 0.5, 1.5),
                      ("a", "LRP", 0, 0.5, 0)])
    setup = page.setup_conditions(P, accuracy, ["a", "b"], {"a": {0, 1}, "b": set()}, scores, paper_accuracy=0.7,
                                  accuracy_fraction=0.8, min_images=2)
    # accuracy: b 0.5 < 0.8 * 0.7 = 0.56 -> not met; images: b has 0 < 2; constraint: 2 of 3 CID maps < 90 %
    assert [c.name for c in setup] == ["classifier accuracy", "images", "maps on the constraint"]
    assert [c.met for c in setup] == [False, False, False]
    assert setup[0].observed == "a 60.0%, b 50.0% (trained from scratch on whole images, 5 classes, 32 px)"
    assert setup[1].observed == "2 on a, 0 on b test images in the verdict"
    assert setup[2].observed.startswith("2 of 3 within 5%")
    accuracy.loc[1, "accuracy"] = 0.57  # above 0.56; 2 images on each network; the 2 CID maps of a on the constraint
    assert [c.met for c in page.setup_conditions(P, accuracy, ["a", "b"], {"a": {0, 1}, "b": {0, 1}}, scores.iloc[:2],
                                                 paper_accuracy=0.7, accuracy_fraction=0.8, min_images=2)] == [True] * 3


def test_claim_numbers_keys_and_values():
    verdicts = {"Grad-CAM on a": _verdict(HELD, 0.25), "LRP on b": _verdict(NOT_HELD, -0.5)}
    numbers = page.claim_numbers(_table(), {"a": 0.2, "b": -0.05}, verdicts, {"a": 1, "b": 0}, ["a", "b"], METHODS, 7)
    # recall_<method without hyphen, lower case>_<network> for every defined mean (CAM on a is NaN: left out)
    assert list(numbers) == ["recall_cam_b", "recall_gradcam_a", "recall_gradcam_b", "recall_lrp_a", "recall_lrp_b",
                             "recall_cid_a", "recall_cid_b", "cid_margin_a", "cid_margin_b", "diff_gradcam_on_a",
                             "diff_lrp_on_b", "n_images_left_out_a", "n_images_left_out_b", "n_images"]
    assert numbers["recall_gradcam_b"] == 0.7 and numbers["diff_lrp_on_b"] == -0.5 and numbers["n_images"] == 7
    assert numbers["n_images_left_out_a"] == 1 and numbers["cid_margin_b"] == -0.05


def test_claim_detail_words():
    verdicts = {"LRP on a": _verdict(HELD, 0.25)}
    detail = page.claim_detail("held: CID beats every other method on every network", "LRP on a", verdicts, _table(),
                               ["a", "b"], METHODS, 0.125, {"a": 1, "b": 0})
    # best other on a: max(NaN, 0.30, 0.20) = 0.300; on b: max(0.6, 0.7, 0.1) = 0.700
    assert detail == ("held: CID beats every other method on every network (the verdict shown is CID vs LRP on a; "
                      "held only if CID beats every other method on every network). vs LRP on a: "
                      + verdicts["LRP on a"].summary("{:+.3f}")
                      + ". Mean recalls: a: CID 0.500, best other 0.300; b: CID 0.650, best other 0.700. "
                      "A random ranking scores 0.125 on these images. Images left out (CID map off the "
                      "constraint): 1 on a, 0 on b.")

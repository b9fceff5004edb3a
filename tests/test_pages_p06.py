"""deepinfo.book.pages.p06_descriptive_accuracy: the arithmetic behind Fig. 6's page, on hand-built
frames whose answers are derived by hand in the comments."""

from types import SimpleNamespace

import pandas as pd
import pytest

from deepinfo.book.pages import p06_descriptive_accuracy as page
from deepinfo.book.verdicts import HELD, INCONCLUSIVE, NOT_HELD, Verdict, decide

BASELINES = ["Gradient", "Gradient x Input", "Guided-BP", "LRP"]


def test_auc_table_sorts_methods_by_auc():
    curves = pd.DataFrame({"method": ["CID", "CID", "Gradient", "Gradient", "Random", "Random"],
                           "fraction": [0, 0.5] * 3, "accuracy": [1, 1, 1, 0, 1, 0.5],
                           "auc": [0.6, 0.6, 0.8, 0.8, 0.6, 0.6]})
    auc = page.auc_table(curves)
    # highest first; CID and Random tie at 0.6 and keep the curves' order (stable sort)
    assert auc.method.tolist() == ["Gradient", "CID", "Random"] and auc.auc.tolist() == [0.8, 0.6, 0.6]
    assert auc.index.tolist() == [0, 1, 2]


def test_auc_gap_is_the_largest_difference_of_means():
    per_image = pd.DataFrame({"image": [0, 1], "CID": [0.5, 1.0], "Gradient": [0.2, 0.2]})
    auc = pd.DataFrame({"method": ["CID", "Gradient"], "auc": [0.7, 0.2]})
    # CID: |0.75 - 0.7| = 0.05; Gradient: |0.2 - 0.2| = 0
    assert page.auc_gap(per_image, auc, ["CID", "Gradient"]) == pytest.approx(0.05)


def test_best_baseline_takes_the_highest_auc_and_the_first_on_a_tie():
    auc_of = {"CID": 0.9, "Gradient": 0.4, "Gradient x Input": 0.6, "Guided-BP": 0.6, "LRP": 0.1}
    assert page.best_baseline(auc_of, BASELINES) == "Gradient x Input"


def per_image_frame():
    # six images; image 5's CID map is off the constraint.
    # CID - Gradient over the 5 kept images: 0.1 each -> effect 0.1, interval [0.1, 0.1] > 0: held
    # CID - LRP: -0.2 each -> not held
    return pd.DataFrame({"image": range(6), "CID": [0.5] * 6, "Gradient": [0.4] * 5 + [0.0],
                         "LRP": [0.7] * 5 + [0.0], "cid_on_constraint": [True] * 5 + [False]})


def test_paired_verdicts_leave_out_maps_off_the_constraint():
    verdicts, n_left_out = page.paired_verdicts(per_image_frame(), ["Gradient", "LRP"], threshold=0.0,
                                                side="greater", unit="images")
    assert n_left_out == 1 and list(verdicts) == ["Gradient", "LRP"]
    assert verdicts["Gradient"].effect == pytest.approx(0.1) and verdicts["Gradient"].verdict == HELD
    assert verdicts["Gradient"].n_units == 5
    assert verdicts["LRP"].effect == pytest.approx(-0.2) and verdicts["LRP"].verdict == NOT_HELD
    # every map off the constraint: no comparison
    none = per_image_frame().assign(cid_on_constraint=False)
    assert page.paired_verdicts(none, ["Gradient"], threshold=0.0, side="greater", unit="images") == ({}, 6)


def test_comparisons_frame_and_overall_verdict():
    verdicts, _ = page.paired_verdicts(per_image_frame(), ["Gradient", "LRP"], threshold=0.0, side="greater",
                                       unit="images")
    table = page.comparisons_frame(verdicts)
    assert table.baseline.tolist() == ["Gradient", "LRP"]
    assert table["mean AUC difference (CID - baseline)"].tolist() == pytest.approx([0.1, -0.2])
    assert table.n_images.tolist() == [5, 5] and table.verdict.tolist() == [HELD, NOT_HELD]
    # one comparison not held -> not held, decided by it
    verdict, decider = page.overall_verdict(verdicts, "images")
    assert verdict.verdict == NOT_HELD and decider == "LRP"
    verdict, decider = page.overall_verdict({}, "images")
    assert verdict.verdict == INCONCLUSIVE and decider == "none" and verdict.unit == "images"
    assert verdict.design == "every CID map missed the constraint"


def test_combined_words():
    v = decide([1.0] * 5)
    assert page.combined_words(v, "LRP") == "held: CID beats every baseline"
    assert page.combined_words(decide([-1.0] * 5), "LRP") == "not held: CID does not beat LRP"
    open_ = Verdict(INCONCLUSIVE, 0.0, (-1.0, 1.0), 5, "images", 0.0, "greater")
    assert page.combined_words(open_, "Gradient") == "inconclusive: the comparison with Gradient does not decide"


def profile():
    cub = SimpleNamespace(num_classes=20, image_size=64, dataset="synthetic", crop="box")
    return SimpleNamespace(networks=SimpleNamespace(cub=SimpleNamespace(weights="scratch", width=0.5)),
                           data=SimpleNamespace(cub=cub), estimator=SimpleNamespace(tol=0.1))


def test_setup_conditions():
    # accuracy 0.45 >= 0.8 * 0.55 = 0.44: met; 99 images < 100: not met; ratios 1.0, 1.05, 2.0: 2 of 3 < 90 %
    acc, images, constraint = page.setup_conditions(profile(), "alexnet", 0.45, 99, [1.0, 1.05, 2.0],
                                                    paper_accuracy=0.55, accuracy_fraction=0.8, min_images=100)
    assert acc.met and acc.name == "alexnet accuracy"
    assert acc.observed == "45.0% (trained from scratch, 20 classes, 64 px)"
    assert acc.paper == "fine-tuned from ImageNet on CUB-200 (200 classes, 224 px), ~55%"
    assert not images.met and images.observed == "99 test images in the verdict"
    assert not constraint.met and constraint.observed.startswith("2 of 3 within 10%")
    acc, images, _ = page.setup_conditions(profile(), "alexnet", 0.43, 100, [1.0], paper_accuracy=0.55,
                                           accuracy_fraction=0.8, min_images=100)
    assert not acc.met and images.met


def test_claim_evidence_numbers_and_detail():
    auc_of = {"CID": 0.5, "Gradient": 0.25, "Gradient x Input": 0.125, "Guided-BP": 0.75, "LRP": 0.0, "Random": 0.5}
    verdicts = {"Gradient x Input": decide([0.25] * 5), "Guided-BP": decide([-0.25] * 5)}
    ev = page.claim_evidence(verdicts, auc_of, ["CID", *BASELINES], combined="not held: CID does not beat Guided-BP",
                             decider="Guided-BP", n_images=6, n_left_out=1, test_accuracy=0.3)
    assert ev["numbers"] == {"auc_cid": 0.5, "auc_gradient": 0.25, "auc_gradient_x_input": 0.125,
                             "auc_guided_bp": 0.75, "auc_lrp": 0.0, "auc_random": 0.5, "n_images": 6,
                             "n_images_left_out": 1, "test_accuracy": 0.3, "diff_gradient_x_input": 0.25,
                             "diff_guided_bp": -0.25}
    assert ev["detail"].startswith("not held: CID does not beat Guided-BP (the verdict shown is CID vs Guided-BP; "
                                   "held only if CID beats every baseline). vs Gradient x Input: held: effect +0.250 "
                                   "[+0.250, +0.250] "
                                   "over 5 images; vs Guided-BP: not held: effect -0.250")
    assert ev["detail"].endswith(". AUCs of the curves: CID 0.500, Gradient 0.250, Gradient x Input 0.125, "
                                 "Guided-BP 0.750, LRP 0.000 (random ranking 0.500); 1 images left out "
                                 "(CID map off the constraint).")


def test_data_text():
    text = page.data_text(profile(), 6, "alexnet", 0.3, "classifier.4", [0.0, 0.5], "mean")
    assert text == ("synthetic birds (20 classes, 64 px, box crops); 6 test images (all, correct or not); alexnet "
                    "(width 0.5, test accuracy 0.300); CID at classifier.4; fractions [0.0, 0.5], fill 'mean'")

"""deepinfo.book.pages.p10_distillation: the arithmetic of the distillation page, on hand-built inputs."""

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from deepinfo.book.pages import p10_distillation as page
from deepinfo.book.verdicts import HELD, INCONCLUSIVE, Verdict
from deepinfo.models import PUBLISHED_ACCURACY
from deepinfo.result import InfoMaps


def maps(values, ratios):
    """InfoMaps whose every cell of (layer l, image b) holds ``values[l][b]``, with ratios ``r``."""
    v = torch.tensor(values, dtype=torch.float32)
    L, B = v.shape
    pix = v[:, :, None, None].expand(L, B, 2, 2).clone()
    r = torch.tensor(ratios, dtype=torch.float32)
    return InfoMaps(layers=[f"l{i}" for i in range(L)], pixelwise=pix, constraint=r, constraint_se=torch.zeros(L, B),
                    sigma=torch.ones(L, B, 2, 2), delta_f2=torch.ones(L, B),
                    n_capped=torch.zeros(L, B, dtype=torch.long), kind="cid", method="optimize", beta=0.1,
                    sigma_max=1.0, grid=(2, 2), image_size=(4, 4), seed=0)


class Net:
    def __init__(self, acc):
        self.acc = acc

    def accuracy(self, test_set):
        return self.acc


def verdict(effect, lo, hi, n=6, v=HELD):
    return Verdict(v, effect, (lo, hi), n, "images", 0.0, "less")


def profile(**over):
    P = SimpleNamespace(
        distillation=SimpleNamespace(student="alexnet", teachers=("vgg16", "resnet18"), temperature=4.0, alpha=0.9),
        data=SimpleNamespace(cub=SimpleNamespace(dataset="cub", num_classes=10, image_size=64),
                             cifar=SimpleNamespace(dataset="cifar10")),
        estimator=SimpleNamespace(tol=0.05),
        networks=SimpleNamespace(cub=SimpleNamespace(width=32), cifar=SimpleNamespace(weights="published")),
        training=SimpleNamespace(cifar_resnet=SimpleNamespace(epochs=3)),
        second_line=SimpleNamespace(teacher_depth=56, student_depth=20, student_recipe=SimpleNamespace(epochs=2)))
    for k, v in over.items():
        setattr(P, k, v)
    return P


def test_accuracy_table_lists_teachers_then_alexnets():
    nets = {"a alone": Net(0.3), "a from t": Net(0.4)}
    table = page.accuracy_table({"t": Net(0.5)}, nets, {"a alone": "", "a from t": "t"}, test_set=[0] * 7)
    assert table.network.tolist() == ["t", "a alone", "a from t"]
    assert table.role.tolist() == ["teacher", "trained alone", "student"]
    assert table.teacher.tolist() == ["", "", "t"]
    assert table.accuracy.tolist() == [0.5, 0.3, 0.4] and (table.n_test_images == 7).all()


def test_per_layer_mean_and_wide_table():
    # network A, layer l0: images 1.0 and 3.0 -> mean 2.0; ratios 0.9, 1.1 -> 1.0
    per_image = pd.DataFrame({"network": ["A", "A", "A", "A", "B", "B", "B", "B"],
                              "teacher": ["", "", "", "", "t", "t", "t", "t"],
                              "layer": ["l0", "l0", "l1", "l1"] * 2, "layer_index": [0, 0, 1, 1] * 2,
                              "image": [0, 1] * 4,
                              "cid": [1.0, 3.0, 5.0, 7.0, 0.0, 2.0, 4.0, 4.0],
                              "ratio": [0.9, 1.1, 1.0, 1.0, 1.0, 1.0, 1.2, 1.0]})
    per_layer = page.per_layer_mean(per_image)
    assert per_layer.network.tolist() == ["A", "A", "B", "B"]
    assert per_layer.cid.tolist() == [2.0, 6.0, 1.0, 4.0]
    assert per_layer.ratio.tolist() == pytest.approx([1.0, 1.0, 1.0, 1.1])
    wide = page.cid_per_layer_table(per_layer)
    assert wide.layer.tolist() == ["l0", "l1"] and wide["A"].tolist() == [2.0, 6.0] and wide["B"].tolist() == [1.0, 4.0]


def test_per_image_difference_pairs_layers_on_the_constraint_in_both():
    alone = maps([[1.0, 1.0], [2.0, 2.0]], [[1.0, 1.0], [1.0, 1.0]])
    # student of t: image 0: layer 0 -0.5, layer 1 -1.0 -> mean -0.75; image 1: layer 1 off (r 1.5): -0.2 only
    student = maps([[0.5, 0.8], [1.0, 0.0]], [[1.0, 1.0], [1.0, 1.5]])
    # student of u: every map off the constraint for image 1 -> NaN
    other = maps([[2.0, 0.0], [2.0, 0.0]], [[1.0, 2.0], [1.0, 2.0]])
    diff = page.per_image_difference({"A": alone, "A from t": student, "A from u": other}, "A",
                                     {"A": "", "A from t": "t", "A from u": "u"}, tol=0.05)
    assert list(diff.columns) == ["t", "u"] and diff.index.name == "image"
    assert diff["t"].tolist() == pytest.approx([-0.75, -0.2])
    assert diff["u"].iloc[0] == pytest.approx(0.5) and math.isnan(diff["u"].iloc[1])


def test_teacher_verdicts_decide_each_teacher_and_say_why_none():
    diff = pd.DataFrame({"t": [-1.0, -1.1, -0.9, -1.2, -0.8, -1.0, np.nan], "u": [np.nan] * 7})
    v = page.teacher_verdicts(diff, threshold=0.0, side="less", unit="images", confidence=0.95)
    # six values all below 0 (mean -1.0): the whole interval lies below 0 -> held over 6 images
    assert v["t"].verdict == HELD and v["t"].effect == pytest.approx(-1.0) and v["t"].n_units == 6
    assert v["u"].verdict == INCONCLUSIVE and v["u"].n_units == 0
    assert v["u"].design == "no image has a pair of maps on the constraint for the student of u"
    assert v["u"].side == "less" and v["u"].threshold == 0.0


def test_summary_table_reads_each_teachers_verdict():
    teacher_of = {"A": "", "A from t": "t"}
    table = page.summary_table(teacher_of, pd.Series({"A": 2.0, "A from t": 1.5}), {"t": verdict(-0.5, -0.7, -0.3)},
                               pd.Series({"A": 0.3, "A from t": 0.35}), n_images=9)
    alone, student = table.iloc[0], table.iloc[1]
    assert math.isnan(alone.d_cid_vs_alone) and alone.n_images == 9 and alone.verdict == ""
    assert (student.d_cid_vs_alone, student.lo, student.hi) == (-0.5, -0.7, -0.3)
    assert student.n_images == 6 and student.verdict == HELD and student.accuracy == 0.35


def test_interval_text():
    assert page.interval_text(verdict(-0.5, -0.7, 0.25)) == "-0.500 [-0.700, +0.250]"
    assert page.interval_text(verdict(0.01, 0.0, 0.02), "{:+.4f}") == "+0.0100 [+0.0000, +0.0200]"


def test_setup_conditions_check_accuracy_teachers_and_constraint():
    P = profile()
    acc = pd.Series({"vgg16": 0.7, "resnet18": 0.5, "alexnet alone": 0.45, "alexnet from vgg16": 0.44,
                     "alexnet from resnet18": 0.40})
    alexnets = ["alexnet alone", "alexnet from vgg16", "alexnet from resnet18"]
    ratios = np.array([1.0, 1.01, 1.2, 0.99])  # 3 of 4 within 0.05: 75 % < 90 %
    conds = page.setup_conditions(P, acc, alexnets, "alexnet alone", paper_accuracy={"alexnet": 0.55, "vgg16": 0.75},
                                  fraction=0.8, ratios=ratios)
    # alexnet: every net >= 0.8 * 0.55 = 0.44? 0.40 is not -> not met
    assert [c.met for c in conds] == [False, False, True, False]
    # teachers: vgg16 0.7 >= 0.6, resnet18 0.5 < 0.8 * 0.75 (default) = 0.6
    assert conds[0].observed == ("alexnet alone 45.0%, alexnet from vgg16 44.0%, alexnet from resnet18 40.0% "
                                 "(10 classes, 64 px)")
    assert conds[2].observed == "vgg16 +25.0%, resnet18 +5.0% vs alexnet alone"
    assert conds[3].observed.startswith("3 of 4")


def test_claim_numbers_detail_and_data():
    vs = {"vgg16": verdict(-0.5, -0.7, -0.3), "resnet18": verdict(0.1, -0.1, 0.3, v=INCONCLUSIVE)}
    mean_cid = pd.Series({"alexnet alone": 2.0, "alexnet from vgg16": 1.5, "alexnet from resnet18": 2.1})
    numbers = page.claim_numbers(mean_cid, vs, "alexnet alone", "alexnet", n_held=1, n_off=3)
    assert numbers == {"mean_cid_alone": 2.0, "mean_cid_from_vgg16": 1.5, "mean_cid_from_resnet18": 2.1,
                       "d_cid_from_vgg16": -0.5, "d_cid_from_resnet18": 0.1, "verdict_from_vgg16": HELD,
                       "verdict_from_resnet18": INCONCLUSIVE, "n_students_held": 1, "n_teachers": 2,
                       "n_maps_off_constraint": 3}
    detail = page.claim_detail(vs, "alexnet", 4, 3, 40)
    assert detail.startswith("Per image: the student's CID minus the alexnet trained alone's, averaged over the 4 ")
    assert f"from vgg16: {vs['vgg16'].summary()}; from resnet18: " in detail
    assert detail.endswith(". 3 of 40 maps off the constraint (their pairs left out).")
    assert page.claim_data(profile(), 8) == ("cub birds (10 classes, 64 px box crops); CID on 8 test images; alexnet "
                                             "(width 32) trained alone and distilled from vgg16, resnet18 "
                                             "(T = 4, alpha = 0.9)")


def test_second_line_frames_difference_and_verdict():
    alone = maps([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0]], [[1.0] * 6])
    student = maps([[0.5, 0.6, 0.4, 0.5, 0.5, 9.0]], [[1.0] * 5 + [1.5]])
    frame = page.second_line_cid({"r20 alone": alone, "r20 from r56": student}, tol=0.05)
    assert frame.network.tolist() == ["r20 alone"] * 6 + ["r20 from r56"] * 6
    assert int((~frame.on_constraint).sum()) == 1
    diff = page.second_line_difference({"r20 alone": alone, "r20 from r56": student}, tol=0.05)
    # student minus alone per image; image 5 is off the constraint -> NaN, no layer
    assert diff.image.tolist() == list(range(6)) and diff.n_layers.tolist() == [1, 1, 1, 1, 1, 0]
    assert diff.d_cid.iloc[:5].tolist() == pytest.approx([-0.5, -0.4, -0.6, -0.5, -0.5])
    assert math.isnan(diff.d_cid.iloc[5])
    v = page.second_line_verdict(diff, threshold=0.0, side="less", unit="images", confidence=0.95)
    assert v.verdict == HELD and v.n_units == 5 and v.effect == pytest.approx(-0.5)
    none = page.second_line_verdict(diff.assign(d_cid=np.nan), threshold=0.0, side="less", unit="images",
                                    confidence=0.95)
    assert none.verdict == INCONCLUSIVE and none.design == "no image has a pair of maps on the constraint"
    numbers = page.second_line_numbers(v, {"t": 0.9, "s": 0.8}, frame)
    assert numbers == {"mean_d_cid": v.effect, "accuracy_t": 0.9, "accuracy_s": 0.8, "n_maps_off_constraint": 1}
    assert page.second_line_networks({"t": 0.9}).to_dict("list") == {"network": ["t"], "test accuracy": [0.9]}


def test_second_line_setup(monkeypatch):
    monkeypatch.setattr(page.ex, "cifar_data", lambda P, split: [0] * 100)
    P = profile()
    assert page.teacher_label(P) == "ResNet-56 (teacher)"
    assert page.ex.cifar_weights_words(P) == "published weights"
    assert page.ex.cifar_weights_words(profile(networks=SimpleNamespace(cifar=SimpleNamespace(weights="trained")))) \
        == "trained here, 3 epochs"
    acc = {"ResNet-56 (teacher)": 0.92, "s alone": 0.80, "s from t": 0.70}
    frame = pd.DataFrame({"constraint": [1.0, 1.0]})
    conds = page.second_line_setup(P, acc, ["s alone", "s from t"], frame, fraction=0.8)
    # teacher 0.92 >= 0.8 * 0.9339; students: 0.70 < 0.8 * 0.9173 = 0.734 -> not met; teacher above alone
    assert [c.met for c in conds] == [False, True, False, True, True]
    assert 0.8 * PUBLISHED_ACCURACY[20] > 0.70
    assert conds[2].observed == "s alone 80.0%, s from t 70.0% (2 epochs of 100 images)"
    assert conds[3].observed == "+12.0%"
    assert page.second_line_data(P, 5, ["a", "b"]).endswith("trained alone, 2 epochs each; layers a, b")

"""Hand-derived checks of the numbers page 04 (the rescaling test) computes for its tables and claims."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from deepinfo.book.pages import p04_rescaling as page
from deepinfo.book.verdicts import Condition
from deepinfo.result import InfoMaps


class _VGGish(nn.Module):
    """features: conv relu pool | conv relu conv [bn] relu pool | conv relu pool (indices 0..10, or 0..11 with bn)."""

    def __init__(self, batch_norm: bool = False):
        super().__init__()
        bn = [nn.BatchNorm2d(1)] if batch_norm else []
        self.features = nn.Sequential(
            nn.Conv2d(1, 1, 1), nn.ReLU(), nn.MaxPool2d(1),
            nn.Conv2d(1, 1, 1), nn.ReLU(), nn.Conv2d(1, 1, 1), *bn, nn.ReLU(), nn.MaxPool2d(1),
            nn.Conv2d(1, 1, 1), nn.ReLU(), nn.MaxPool2d(1))


def _maps(kind: str, layers: list[str], pixelwise: torch.Tensor, constraint: torch.Tensor) -> InfoMaps:
    L, B = constraint.shape
    return InfoMaps(layers=layers, pixelwise=pixelwise, constraint=constraint, constraint_se=torch.zeros(L, B),
                    sigma=torch.ones_like(pixelwise), delta_f2=torch.ones(L, B),
                    n_capped=torch.zeros(L, B, dtype=torch.long),
                    kind=kind, method="optimize", beta=1.0, sigma_max=1.0, grid=tuple(pixelwise.shape[-2:]),
                    image_size=(4, 4), seed=0)


def test_pair_layers_without_batch_norm():
    # pools at 2, 7, 10 -> middle = pools[1] = 7; convs 0, 3, 5, 8: L = 5 (last conv before 7), L+1 = 8;
    # ReLU after 5 is 6, after 8 is 9; the scaled outputs are features.5 .. features.7
    pair = page.pair_layers(_VGGish())
    assert (pair.conv_L, pair.conv_L1, pair.first) == ("features.5", "features.8", "features.5")
    assert (pair.relu_L, pair.relu_L1, pair.stage_L, pair.last_stage) == (
        "features.6", "features.9", "features.7", "features.10")
    assert pair.scaled == {"features.5", "features.6", "features.7"}
    assert list(pair.roles) == ["features.6", "features.7", "features.9", "features.10", None]
    assert not pair.batch_norm
    assert "no batch norm" in page.batch_norm_note(pair)


def test_pair_layers_with_batch_norm_rescales_through_the_bn():
    # the BN sits at 6 after conv 5: first = features.6, ReLU 7, pool 8, next conv 9, ReLU 10, last pool 11;
    # the scaled outputs start at the BN: features.6 .. features.8
    pair = page.pair_layers(_VGGish(batch_norm=True))
    assert (pair.conv_L, pair.first, pair.relu_L, pair.stage_L, pair.conv_L1) == (
        "features.5", "features.6", "features.7", "features.8", "features.9")
    assert pair.scaled == {"features.6", "features.7", "features.8"}
    assert pair.batch_norm and "(features.6)" in page.batch_norm_note(pair)


def test_output_change():
    out0 = torch.tensor([[1.0, 2.0], [3.0, -4.0]])
    out1 = torch.tensor([[1.0, 2.5], [3.0, 5.0]])
    # largest |change| = |5 - (-4)| = 9, largest |logit| of out0 = 4 -> 2.25; argmax 1,0 vs 1,1 -> half agree
    assert page.output_change(out0, out1) == (pytest.approx(2.25), pytest.approx(0.5))


def test_feature_ratios_and_table():
    model, rescaled = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False)), nn.Sequential(nn.Conv2d(1, 1, 1, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(2.0)
        rescaled[0].weight.fill_(0.5)
    x = torch.ones(2, 1, 2, 2)
    roles = {"0": "L (scaled 1/k)", None: "input space"}
    # mean |f| before 2, after 0.5 -> 4; the None key (input space) is skipped
    ratios = page.feature_ratios(model, rescaled, x, roles)
    assert ratios == {"0": pytest.approx(4.0)}
    table = page.feature_table(ratios, roles)
    assert table.to_dict("records") == [{"layer": "0", "role": "L (scaled 1/k)", "mean_abs_before_over_after": 4.0}]


def test_ru_layers_keep_scaled_stage_outputs():
    model = _VGGish()  # stages (the max-pools): features.2, features.7, features.10
    cid_layers = ["features.6", "features.7", "features.9", "features.10"]
    scaled = {"features.5", "features.6", "features.7"}
    # scaled and a stage: features.7 only; without the stage rule: features.6 and features.7
    assert page.ru_layers(model, cid_layers, scaled, "stages") == ["features.7"]
    assert page.ru_layers(model, cid_layers, scaled, "blocks") == ["features.6", "features.7"]


def test_per_image_and_before_after_frames():
    roles = {"a": "L"}
    # layer a, two images, 1x2 cells; before means 1 and 2, after means 1.5 and 2
    before = _maps("cid", ["a"], torch.tensor([[[[1.0, 1.0]], [[2.0, 2.0]]]]), torch.tensor([[1.0, 0.9]]))
    after = _maps("cid", ["a"], torch.tensor([[[[1.0, 2.0]], [[2.0, 2.0]]]]), torch.tensor([[1.1, 1.0]]))
    per_image = page.per_image_frame({("cid", "before"): before, ("cid", "after"): after}, roles)
    assert list(per_image.columns[:2]) == ["network", "kind"] and per_image.columns[-1] == "role"
    assert per_image.network.tolist() == ["before", "before", "after", "after"]
    assert per_image.value.tolist() == [1.0, 2.0, 1.5, 2.0]
    wide = page.before_after_frame(per_image)
    assert wide[["kind", "layer", "role", "image"]].values.tolist() == [["cid", "a", "L", 0], ["cid", "a", "L", 1]]
    assert wide.delta_value.tolist() == pytest.approx([0.5, 0.0])
    assert wide.constraint_before.tolist() == pytest.approx([1.0, 0.9])
    assert wide.constraint_after.tolist() == pytest.approx([1.1, 1.0])


def _ratio_inputs():
    cases = [("gradient", "a", "gradient w.r.t. the layer output"), ("lrp", None, "LRP (input relevance)")]
    attributions = {
        # gradient: mean |.| before 1 (per image 1, 1), after 4 (per image 4, 4) -> ratio 4
        ("gradient", "a"): (torch.ones(2, 2), torch.full((2, 2), 4.0)),
        # lrp: before per image 1 and 2 (mean 1.5), after per image 1 and 2 -> ratio 1
        ("lrp", None): (torch.tensor([[1.0, -1.0], [2.0, 2.0]]), torch.tensor([[1.0, 1.0], [2.0, -2.0]])),
    }
    b = _maps("cid", ["a"], torch.tensor([[[[1.0, 1.0]], [[1.0, 1.0]]]]), torch.ones(1, 2))
    a = _maps("cid", ["a"], torch.tensor([[[[1.0, 1.1]], [[1.0, 1.0]]]]), torch.ones(1, 2))
    ru = _maps("ru", [], torch.zeros(0, 2, 1, 2), torch.zeros(0, 2))
    maps = {("cid", "before"): b, ("cid", "after"): a, ("ru", "before"): ru, ("ru", "after"): ru}
    return cases, attributions, maps


def test_ratio_table():
    cases, attributions, maps = _ratio_inputs()
    roles = {"a": "L (scaled 1/k)", None: "input space"}
    ratios = page.ratio_table(cases, attributions, maps, roles, math.log(1.1))
    assert ratios.key.tolist() == ["gradient", "lrp", "cid"]
    assert ratios.layer.tolist() == ["a", "input", "a"]
    assert ratios.role.tolist() == ["L (scaled 1/k)", "input space", "L (scaled 1/k)"]
    # CID: mean |.| before 1, after (1 + 1.1 + 1 + 1) / 4 = 1.025; largest cell change 0.1;
    # map means: image 0 1 -> 1.05, image 1 unchanged -> largest change of a mean 0.05
    assert ratios.ratio.tolist() == pytest.approx([4.0, 1.0, 1.025])
    assert ratios.changed_10pct.tolist() == [True, False, False]  # |log 1.025| < log 1.1
    # gradient: largest |a1 - a0| 3 over largest |a0| 1; lrp: largest |a1 - a0| 4 (image 1, cell 1) over 2
    assert ratios.max_rel_change.tolist() == pytest.approx([3.0, 2.0, 0.1])
    assert ratios.max_abs_delta_cell_nats.iloc[2] == pytest.approx(0.1)
    assert ratios.max_abs_delta_mean_nats.iloc[2] == pytest.approx(0.05)
    assert np.isnan(ratios.max_abs_delta_cell_nats.iloc[0])
    per_image = page.per_image_ratio_table(cases, attributions)
    assert per_image[["key", "layer", "image"]].values.tolist() == [
        ["gradient", "a", 0], ["gradient", "a", 1], ["lrp", "input", 0], ["lrp", "input", 1]]
    assert per_image.ratio.tolist() == pytest.approx([4.0, 4.0, 1.0, 1.0])


def _wide():
    return pd.DataFrame({"kind": ["cid", "cid", "ru"], "layer": ["a", "b", "b"],
                         "constraint_before": [1.0, 1.0, 1.5], "constraint_after": [1.0, 0.5, 1.0],
                         "delta_value": [-0.02, 0.3, 0.01]})


def test_invariance_units_leave_out_maps_off_the_constraint():
    on, abs_delta = page.invariance_units(_wide(), 0.1)
    # map 2 is off after (0.5), map 3 off before (1.5): only map 1 enters, |-0.02| = 0.02
    assert on.tolist() == [True, False, False]
    assert abs_delta.iloc[0] == pytest.approx(0.02) and abs_delta.iloc[1:].isna().all()
    ratios = pd.DataFrame({"key": ["gradient", "cid", "ru"], "max_abs_delta_cell_nats": [9.0, 0.4, 0.2]})
    # the largest |delta| over all maps is 0.3 (off the constraint or not); cells: CID / RU rows only -> 0.4
    assert page.largest_changes(_wide(), ratios) == (pytest.approx(0.3), pytest.approx(0.4))


def test_invariance_evidence_and_setup():
    wide = _wide()
    on, abs_delta = page.invariance_units(wide, 0.1)
    ev = page.invariance_evidence(wide, on, abs_delta, 0.3, 0.4, 0.1, 0.5 * math.log(1.1))
    n = ev["numbers"]
    assert n["maps on the constraint"] == 1 and n["maps"] == 3
    assert n["CID a max |delta| (nats)"] == pytest.approx(0.02)
    assert np.isnan(n["CID b max |delta| (nats)"]) and np.isnan(n["RU b max |delta| (nats)"])
    assert "1 of 3 maps on the constraint" in ev["detail"] and "= 0.0477 nats." in ev["detail"]
    out = page.output_condition(1e-7, 1.0, 1e-5)
    assert out.met and not page.output_condition(1e-3, 1.0, 1e-5).met
    setup = page.invariance_setup(out, wide, 0.1, nn.Identity(), {}, torch.zeros(1, 1, 2, 2), 0.5)
    # no RU decoders: output and constraint only; of the 6 ratios (before and after) all but 1.5 and 0.5
    # lie within 10 % of 1
    assert [c.name for c in setup] == ["rescaled network's output", "maps on the constraint"]
    assert isinstance(setup[1], Condition) and setup[1].observed.startswith("4 of 6")


def _at_L():
    return pd.DataFrame({"method": ["grad", "gxi", "CID", "ctrl"],
                         "key": ["gradient", "gradient_x_input", "cid", "gradient"],
                         "layer": ["L", "L", "L", "input"], "ratio": [4.0, 1.00001, 1.0, 1.02],
                         "changed_10pct": [True, False, False, False]})


def test_split_and_lists():
    at_L, controls = page.split_baselines(_at_L(), "L")
    assert at_L.method.tolist() == ["grad", "gxi"] and controls.method.tolist() == ["ctrl"]
    assert page.changed_list(at_L) == "grad (x4)"
    assert page.unchanged_list(at_L) == "gxi (x1)"
    assert page.changed_list(at_L.iloc[1:]) == "none"


def test_gradient_log_ratios_and_evidence():
    before = torch.tensor([[1.0, 1.0], [2.0, 2.0], [0.0, 0.0]])
    after = torch.tensor([[2.0, 2.0], [0.0, 0.0], [1.0, 1.0]])
    ratio, log = page.gradient_log_ratios(before, after)
    # ratios 2, 0, NaN (zero before); |log| ln 2, inf, NaN
    assert ratio[:2].tolist() == [2.0, 0.0] and np.isnan(ratio[2])
    assert log[0] == pytest.approx(math.log(2)) and np.isinf(log[1]) and np.isnan(log[2])
    _, controls = page.split_baselines(_at_L(), "L")
    ev = page.gradient_evidence(np.array([4.0, 3.0]), controls, 4.0, "L")
    assert ev["numbers"] == {"gradient @ L, image 0: after/before": 4.0, "gradient @ L, image 1: after/before": 3.0,
                             "k": 4.0, "ctrl @ input: after/before": 1.02}
    assert "ratios 4, 3 (" in ev["detail"] and "largest |ratio - 1| = 2.0e-02." in ev["detail"]


def test_activation_weighted_log_ratios_and_evidence():
    attributions = {
        # image 0: ratio 2 (|log| ln 2), image 1: zero before (undefined)
        ("gradient_x_input", "L"): (torch.tensor([[1.0], [0.0]]), torch.tensor([[2.0], [1.0]])),
        # image 0: ratio 1 (0), image 1: ratio 1/4 (|log| ln 4)
        ("gradcam", "L"): (torch.tensor([[1.0], [4.0]]), torch.tensor([[1.0], [1.0]])),
    }
    methods = ("gradient_x_input", "gradcam", "lrp")
    weighted, aw_log, worst = page.activation_weighted_log_ratios(attributions, methods, "L")
    assert weighted == ["gradient_x_input", "gradcam"]  # no lrp at L
    assert aw_log[0, 0] == pytest.approx(math.log(2)) and np.isnan(aw_log[0, 1])
    assert aw_log[1].tolist() == pytest.approx([0.0, math.log(4)])
    # per image, the largest finite: max(ln 2, 0) and max(NaN, ln 4)
    assert worst.tolist() == pytest.approx([math.log(2), math.log(4)])
    labels = page.method_labels(pd.DataFrame({"key": ["gradcam", "gradient_x_input"], "method": ["Grad-CAM", "gxa"]}),
                                weighted)
    assert labels == {"gradient_x_input": "gxa", "gradcam": "Grad-CAM"}
    ev = page.activation_weighted_evidence(weighted, aw_log, worst, labels, "L", math.log(1.1))
    assert list(ev["numbers"]) == ["gxa @ L, image 0: |log ratio|", "gxa @ L, image 1: |log ratio|",
                                   "Grad-CAM @ L, image 0: |log ratio|", "Grad-CAM @ L, image 1: |log ratio|"]
    assert "1 (method, image) maps undefined" in ev["detail"] and "6.93e-01, 1.39e+00" in ev["detail"]


def test_data_text():
    pair = page.pair_layers(_VGGish())
    text = page.data_text("vgg16", "synthetic", 3, pair, 4.0, ["features.6"], [])
    assert text == ("vgg16 on CUB (synthetic), 3 test images; pair features.5 / features.8, k = 4; "
                    "CID at features.6; RU at ")

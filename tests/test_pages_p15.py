"""Hand-derived checks of the page module of ``15_unet``."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from deepinfo.book.pages import p15_unet as page
from deepinfo.book.verdicts import Verdict


def test_shared_color_range():
    maps = SimpleNamespace(pixelwise=torch.tensor([[[[0.5, -1.0]], [[2.0, 0.0]]]]))
    assert page.shared_color_range(maps) == (-1.0, 2.0)


def test_layer_slice_rows_membrane_and_other_cells():
    # 2 layers, 1 slice, a 2 x 2 grid; membrane cells: the first row (cells 0 and 1)
    pixelwise = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[2.0, 2.0], [0.0, 0.0]]]])
    conc = torch.tensor([[0.7], [-0.7]])
    ratio = torch.tensor([[1.0], [1.3]])
    fg = torch.tensor([[True, True, False, False]])
    rows = page.layer_slice_rows(pixelwise, conc, ratio, fg, ["a", "b"], [42])
    assert list(rows.columns) == ["layer", "layer_index", "slice", "cid", "cid_membrane", "cid_non_membrane",
                                  "concentration", "ratio", "n_membrane_cells"]
    # layer a: mean (1 + 2 + 3 + 4) / 4 = 2.5; membrane (1 + 2) / 2 = 1.5; other (3 + 4) / 2 = 3.5
    assert rows.loc[0, ["cid", "cid_membrane", "cid_non_membrane"]].tolist() == [2.5, 1.5, 3.5]
    # layer b: mean 1; membrane 2; other 0
    assert rows.loc[1, ["cid", "cid_membrane", "cid_non_membrane"]].tolist() == [1.0, 2.0, 0.0]
    assert rows.concentration.tolist() == pytest.approx([0.7, -0.7])
    assert rows.ratio.tolist() == pytest.approx([1.0, 1.3])
    assert rows.slice.tolist() == [42, 42] and rows.n_membrane_cells.tolist() == [2, 2]


def test_layer_summary():
    per_image = pd.DataFrame({
        "layer": ["b", "b", "a", "a"], "layer_index": [1, 1, 0, 0], "slice": [1, 2, 1, 2],
        "cid": [1.0, 3.0, 2.0, 2.0], "cid_membrane": [0.0, 2.0, 1.0, 1.0], "cid_non_membrane": [1.0, 1.0, 3.0, 5.0],
        "concentration": [-1.0, 3.0, 0.5, 1.5], "ratio": [0.9, 1.2, 1.0, 1.0],
        "on_constraint": [True, False, True, True],
    })
    out = page.layer_summary(per_image)
    # sorted by layer_index: a first
    assert out.layer.tolist() == ["a", "b"]
    a, b = out.iloc[0], out.iloc[1]
    assert (a.cid, a.cid_non_membrane, a.concentration) == (2.0, 4.0, 1.0)
    assert (b.cid, b.cid_membrane, b.concentration) == (2.0, 1.0, 1.0)
    # b: concentrations -1 and 3 -> min -1, max 3, one positive; one map on the constraint
    assert (b.concentration_min, b.concentration_max, b.n_positive) == (-1.0, 3.0, 1)
    assert (b.n_slices, b.n_on_constraint, b.ratio_min, b.ratio_max) == (2, 1, 0.9, 1.2)
    assert (a.n_positive, a.n_on_constraint) == (2, 2)


def _control():
    cid = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    cid0 = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    conc = torch.tensor([[0.4, 0.2], [0.6, -0.2]])
    conc0 = torch.tensor([[0.1, 0.1], [0.2, 0.2]])
    ratio = torch.tensor([[1.0, 1.05], [1.5, 1.0]])   # (b, slice 11) off
    ratio0 = torch.tensor([[1.0, 2.0], [1.0, 1.0]])   # (a, slice 11) off
    return page.control_frame(cid, cid0, conc, conc0, ratio, ratio0, ["a", "b"], [10, 11], tol=0.1)


def test_control_frame():
    control = _control()
    assert control.layer.tolist() == ["a", "a", "b", "b"] and control.slice.tolist() == [10, 11, 10, 11]
    assert control.cid_trained.tolist() == [1.0, 2.0, 3.0, 4.0]
    # difference = trained minus untrained concentration: 0.3, 0.1, 0.4, -0.4
    assert control.difference.tolist() == pytest.approx([0.3, 0.1, 0.4, -0.4])
    # |r - 1| <= 0.1: trained off only at (b, 10) (1.5); both on only where neither is off
    assert control.on_trained.tolist() == [True, True, False, True]
    assert control.on_both.tolist() == [True, False, False, True]


def test_per_slice_concentration():
    per_slice = page.per_slice_concentration(_control(), [11, 10, 12])
    assert per_slice.slice.tolist() == [11, 10, 12]
    # slice 11: trained on for a (0.2) and b (-0.2) -> 0.0; both on only for b -> untrained 0.2, difference -0.4
    # slice 10: trained on for a only -> 0.4; both on for a only -> untrained 0.1, difference 0.3
    # slice 12: not measured -> NaN
    assert per_slice.concentration_trained.tolist()[:2] == pytest.approx([0.0, 0.4])
    assert per_slice.concentration_untrained.tolist()[:2] == pytest.approx([0.2, 0.1])
    assert per_slice.trained_minus_untrained.tolist()[:2] == pytest.approx([-0.4, 0.3])
    assert per_slice.n_layers_trained.tolist()[:2] == [2, 1] and per_slice.n_layers_both.tolist()[:2] == [1, 1]
    assert per_slice.iloc[2, 1:].isna().all()


def test_segmentation_condition():
    scores = {"pixel_accuracy": 0.90, "iou_membrane": 0.5, "membrane_fraction": 0.2}
    # 0.9 * 0.94 = 0.846 <= 0.90 and 0.90 > 1 - 0.2 -> met
    c = page.segmentation_condition(scores, 4, "slices", 0.9, 0.94)
    assert c.met and c.observed == ("pixel accuracy 90.0%, membrane IoU 0.500 on 4 held-out slices "
                                    "(all-'cell' baseline 80.0%)")
    assert c.paper.startswith("~94% pixel accuracy")
    # above 90 % of the paper's but not above the all-"cell" baseline of 95 % -> not met
    assert not page.segmentation_condition({**scores, "membrane_fraction": 0.05}, 4, "slices", 0.9, 0.94).met
    # above the baseline but below 0.846 -> not met
    assert not page.segmentation_condition({**scores, "pixel_accuracy": 0.84}, 4, "slices", 0.9, 0.94).met


def test_data_condition():
    assert page.data_condition("isbi2012", 512, 2, 5, "slices", 512).met
    assert not page.data_condition("isbi2012", 256, 2, 5, "slices", 512).met
    c = page.data_condition("shapes", 32, 2, 5, "synthetic images", 512)
    assert not c.met
    assert c.observed == "shapes at 32 px, 2 of 5 held-out synthetic images measured"
    assert c.paper == "ISBI 2012 EM slices at 512 x 512 px"


def test_setup_conditions():
    profile = SimpleNamespace(data=SimpleNamespace(segmentation=SimpleNamespace(dataset="isbi2012", image_size=512)),
                              estimator=SimpleNamespace(tol=0.1))
    scores = {"pixel_accuracy": 0.95, "iou_membrane": 0.5, "membrane_fraction": 0.2}
    setup = page.setup_conditions(scores, profile, 2, 5, "slices", _control(), fraction=0.9, paper_accuracy=0.94,
                                  paper_size=512)
    assert [c.name for c in setup] == ["U-Net segmentation", "data", "maps on the constraint"]
    assert [c.met for c in setup[:2]] == [True, True]
    # 8 ratios (4 trained, 4 untrained), 2 off -> 6 of 8 < 90 % -> not met
    assert not setup[2].met and setup[2].observed.startswith("6 of 8 ")


def _verdict(effect, lo, hi):
    return Verdict("held", effect, (lo, hi), 5, "slices", 0.0, "greater")


def test_claim_numbers():
    per_layer = pd.DataFrame({"layer": ["a", "b"], "concentration": [0.25, 0.5]})
    numbers = page.claim_numbers(2, 2, {"pixel_accuracy": 0.9, "iou_membrane": 0.4, "membrane_fraction": 0.1},
                                 _verdict(0.1, 0.05, 0.2), _verdict(-0.1, -0.3, 0.1), per_layer, _control())
    assert numbers == pytest.approx({
        "n_layers": 2, "n_slices": 2, "pixel_accuracy": 0.9, "iou_membrane": 0.4,
        "direction_effect": 0.1, "direction_lo": 0.05, "direction_hi": 0.2,
        "control_effect": -0.1, "control_lo": -0.3, "control_hi": 0.1,
        "concentration_a": 0.25, "concentration_b": 0.5,
        "untrained_concentration_a_slice10": 0.1, "untrained_concentration_a_slice11": 0.1,
        "untrained_concentration_b_slice10": 0.2, "untrained_concentration_b_slice11": 0.2})


def test_claim_detail():
    parts = {"one": _verdict(0.1, 0.05, 0.2)}
    text = page.claim_detail(parts, _control())
    # per layer, over both slices: a trained (0.4 + 0.2) / 2 = 0.3, untrained 0.1; b (0.6 - 0.2) / 2 = 0.2, 0.2
    assert text == ("Part one: held: effect +0.1000 [+0.0500, +0.2000] over 5 slices. Per layer, mean over slices "
                    "(trained / untrained): a +0.300 / +0.100 nats; b +0.200 / +0.200 nats.")


def test_data_text():
    profile = SimpleNamespace(
        data=SimpleNamespace(segmentation=SimpleNamespace(dataset="shapes", image_size=32, n_train=16)),
        networks=SimpleNamespace(unet=SimpleNamespace(base_channels=8, levels=2)))
    assert page.data_text(profile, 8, "synthetic images", 5, 2, ["d1", "u1"]) == (
        "shapes at 32 px: U-Net (base 8, 2 levels) trained on 16 synthetic images, scored on 5 held-out "
        "synthetic images, CID (8x8 cells) on 2 of them, layers d1, u1; control: the same U-Net at its initial "
        "weights")


def test_held_out_slices_picks_seeded_slices_with_their_masks():
    from torch.utils.data import Subset, TensorDataset

    images = torch.arange(6, dtype=torch.float32).reshape(6, 1, 1, 1)
    masks = torch.arange(6).reshape(6, 1, 1) % 2 == 0
    test_set = Subset(TensorDataset(images, masks), [5, 1, 4, 2, 3])  # image value = volume index
    picked, slices, x, membrane = page.held_out_slices(test_set, 3, seed=0)
    assert len(picked) == 3 and len(set(picked)) == 3
    # each picked position gives its volume index, image and mask
    assert slices == [test_set.indices[i] for i in picked]
    assert x[:, 0, 0, 0].tolist() == [float(s) for s in slices]
    assert membrane[:, 0, 0].tolist() == [s % 2 == 0 for s in slices]
    assert np.array_equal(page.held_out_slices(test_set, 3, seed=0)[0], picked)

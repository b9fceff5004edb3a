"""The helpers the notebooks used to define for themselves, now in the library: hand-derived answers."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from deepinfo.book import layer_curves as lc
from deepinfo.book.report import scoreboard_table
from deepinfo.book.verdicts import INCONCLUSIVE, decide, permutation_p
from deepinfo.models import block_position, cifar_resnet, evenly_spaced, last_linear
from deepinfo.techniques.rescaling import Prescaled, mean_abs_ratio
from deepinfo.toolkit.training import autoencoder_mse, held_out, predict


# ------------------------------------------------------------------------------ verdicts


def test_permutation_p_is_the_share_of_orderings_at_least_as_correlated():
    # perfectly ordered: only the identity ordering reaches rho = 1 among 3! = 6
    assert permutation_p([1, 2, 3], [10, 20, 30]) == pytest.approx(1 / 6)
    # perfectly reversed: every ordering has rho >= -1
    assert permutation_p([1, 2, 3], [30, 20, 10]) == pytest.approx(1.0)
    # a non-finite pair is dropped first; more than max_units pairs: NaN
    assert permutation_p([1, 2, 3, np.nan], [10, 20, 30, 40]) == pytest.approx(1 / 6)
    assert math.isnan(permutation_p(range(9), range(9)))


def test_decide_with_min_units_is_inconclusive_below_it():
    v = decide([1.0, 2.0, np.nan], threshold=0.0, if_none="too few", min_units=3)
    assert v.verdict == INCONCLUSIVE and v.n_units == 2 and "too few" in v.design
    assert decide([1.0, 2.0, 3.0], threshold=0.0, if_none="too few", min_units=3).n_units == 3


# ------------------------------------------------------------------------------ models


def test_block_position_counts_blocks_passed():
    net = cifar_resnet(20)  # 3 stages of 3 blocks
    assert block_position(net, "layer1.0") == pytest.approx(1 / 9)
    assert block_position(net, "layer2") == pytest.approx(6 / 9)  # a stage ends at its last block
    assert block_position(net, "layer3.2") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="neither a residual block nor a stage"):
        block_position(net, "conv1")


def test_last_linear_and_evenly_spaced():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert last_linear(net) == "2"
    with pytest.raises(ValueError, match="no nn.Linear"):
        last_linear(nn.Sequential(nn.ReLU()))
    assert evenly_spaced(list("abcdefghij"), 4) == ["a", "d", "g", "j"]
    assert evenly_spaced(["a", "b"], 4) == ["a", "b"]


# ------------------------------------------------------------------------------ rescaling


def test_prescaled_decoder_and_mean_abs_ratio():
    dec = Prescaled(nn.Identity(), 4.0)
    assert torch.equal(dec(torch.ones(2)), torch.full((2,), 4.0))
    before = torch.tensor([[1.0, -1.0], [0.0, 0.0]])
    after = torch.tensor([[2.0, 2.0], [1.0, 1.0]])
    r = mean_abs_ratio(before, after)
    assert r[0] == pytest.approx(2.0) and math.isnan(r[1])


# ------------------------------------------------------------------------------ training


def test_predict_held_out_and_autoencoder_mse():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([0, 1, 1])
    net = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.eye(2))
    data = TensorDataset(x, y)
    assert torch.equal(predict(net, data, batch_size=2), x)
    acc, loss = held_out(net, data)
    # logits (1, 0), (0, 1), (1, 1): the first two right, the tie picks class 0 (wrong)
    assert acc == pytest.approx(2 / 3)
    expected = (2 * math.log(1 + math.exp(-1)) + math.log(2)) / 3
    assert loss == pytest.approx(expected, rel=1e-6)
    half = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        half.weight.copy_(0.5 * torch.eye(2))
    # reconstruction 0.5 x: squared error 0.25 per non-zero pixel, 4 of 6 pixels non-zero
    assert autoencoder_mse(half, TensorDataset(x)) == pytest.approx(0.25 * 4 / 6)


# ------------------------------------------------------------------------------ layer curves


def test_slope_over_depth_last_block_and_strictly_increasing():
    frame = pd.DataFrame({"image": [0, 0, 0, 1, 1], "depth": [20, 32, 44, 20, 32], "cid": [1.0, 1.5, 2.0, 3.0, 1.0]})
    slopes = lc.slope_over_depth(frame, [20, 32, 44])
    assert list(slopes.index) == [0] and slopes[0] == pytest.approx(0.5)  # image 1 lacks a depth
    rows = pd.DataFrame({"network": ["a", "a", "b"], "position": [0.5, 1.0, 0.3], "v": [1, 2, 3]})
    assert lc.last_block(rows).v.tolist() == [2, 3]
    assert lc.strictly_increasing([1, 2, 3]) and not lc.strictly_increasing([1, 1, 2])


def test_change_from_original_pairs_layers_and_images():
    frame = pd.DataFrame({"network": ["o", "o", "c", "c"], "keep": [1.0, 1.0, 0.5, 0.5], "layer": ["l", "l", "l", "l"],
                          "image": [0, 1, 0, 1], "value": [1.0, 2.0, 1.5, 1.0], "on_constraint": [True, False, True, True]})
    out = lc.change_from_original(frame, "value", "CID")
    assert out.delta.tolist() == [0.5, -1.0] and out.on_constraint.tolist() == [True, False]
    assert set(out.quantity) == {"CID"}


def test_layer_rise_is_highest_minus_lowest_layer_on_the_constraint():
    values = pd.DataFrame({"network": "n", "kind": "cid", "layer": ["a", "a", "b", "b"], "layer_index": [0, 0, 1, 1],
                           "image": [0, 1, 0, 1], "constraint": [1.0, 1.0, 1.01, 1.5], "x": [1.0, 2.0, 3.0, 5.0]})
    rows, r = lc.layer_rise(values, "n", "cid", "x", tol=0.05)
    assert rows.difference.iloc[0] == pytest.approx(2.0) and math.isnan(rows.difference.iloc[1])
    assert sorted(r.tolist()) == [1.0, 1.0, 1.01, 1.5]


# ------------------------------------------------------------------------------ report


def test_scoreboard_table_escapes_the_text_and_colours_the_verdict():
    row = {"page": "01_maps", "paper item": "Fig. 1", "claim": "a <b> claim", "rule": "r", "rationale": "why",
           "data": "d", "verdict": "held", "effect and interval": "+1 [0, 2]", "setup": "met"}
    html = scoreboard_table(pd.DataFrame([row]), "caption").to_html()
    assert "a &lt;b&gt; claim" in html and "#c8e6c9" in html and 'href="01_maps.html"' in html


# ------------------------------------------------------------------------------ experiments


def test_measured_images_keep_objects_with_background_and_layers_take_a_prefix(tmp_path, monkeypatch):
    from deepinfo.book import experiments as E
    from deepinfo.estimators import has_object_and_background
    from deepinfo.models import cifar_resnet_autoencoder
    from deepinfo.toolkit.profile import load_profile

    monkeypatch.setenv("DEEPINFO_ARTIFACTS", str(tmp_path))
    P = load_profile("smoke")
    x, labels, masks = E.measured_images(P, E.cub_data(P, "test"), 3)
    assert x.shape[0] == 3 and all(has_object_and_background(m, P.estimator.grid) for m in masks)
    plain = TensorDataset(torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))  # no masks
    x, labels, masks = E.measured_images(P, plain, 2)
    assert masks is None and x.shape[0] == 2
    ae = cifar_resnet_autoencoder(20, image_size=32)
    classifier = E.layers_for(P, "resnet20", cifar_resnet(20))
    assert E.layers_for(P, "resnet20", ae, prefix="encoder.") == [
        n if n.startswith("encoder.") else "encoder." + n for n in classifier]
    assert E.decoder_layers(P, cifar_resnet(20), ["layer1.0"]) in (["layer1.0"], ["layer1", "layer2", "layer3"])


def test_report_show_rounds_and_turns_a_named_index_into_columns(tmp_path, monkeypatch):
    from deepinfo.book import report as R

    shown = []
    monkeypatch.setattr(R, "_display", shown.append)
    monkeypatch.setenv("DEEPINFO_ARTIFACTS", str(tmp_path))
    rep = R.Report("99_test", "smoke")
    frame = pd.DataFrame({"block": [1, 2], "cid": [1.23456789, 2.0]}).set_index("block")
    rep.show(frame)
    html = shown[-1].to_html()
    assert "1.235" in html and "1.23456789" not in html and ">block<" in html
    rep.show(pd.Series([0.5], name="x"))
    assert "0.5" in shown[-1].to_html()
    rep.show("not a table")
    assert shown[-1] == "not a table"


def test_a_claim_states_its_effect_once_then_its_detail(tmp_path, monkeypatch):
    from deepinfo.book import report as R

    shown = []
    monkeypatch.setattr(R, "_display_markdown", shown.append)
    monkeypatch.setenv("DEEPINFO_ARTIFACTS", str(tmp_path))
    rep = R.Report("99_test", "smoke")
    c = rep.claim("A claim.", decide([0.3, 0.2, 0.25, 0.1] * 5), rationale="why", item="Fig. 1", data="d",
                  detail="per image, the detail")
    text = shown[-1]
    assert text.count(f"{c.effect:+.4g}") == 1 and "per image, the detail" in text
    assert c.evidence.startswith("held: effect") and c.evidence.endswith("per image, the detail")
    assert c.environment["torch"] == str(torch.__version__)

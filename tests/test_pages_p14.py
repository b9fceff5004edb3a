"""deepinfo.book.pages.p14_decoders: the arithmetic of the decoder-depth page, on hand-built inputs."""

import math
from collections import OrderedDict
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from deepinfo.book.pages import p14_decoders as page
from deepinfo.book.verdicts import HELD, INCONCLUSIVE, NOT_HELD
from deepinfo.result import InfoMaps


def maps(cells, ratios):
    """RU InfoMaps from ``cells`` ``[L][B][4]`` (a 2 x 2 grid per map) and ratios ``r`` ``[L][B]``."""
    pix = torch.tensor(cells, dtype=torch.float32)
    L, B = pix.shape[:2]
    pix = pix.reshape(L, B, 2, 2)
    return InfoMaps(layers=[f"l{i}" for i in range(L)], pixelwise=pix,
                    constraint=torch.tensor(ratios, dtype=torch.float32), constraint_se=torch.zeros(L, B),
                    sigma=torch.ones(L, B, 2, 2), delta_f2=torch.ones(L, B),
                    n_capped=torch.zeros(L, B, dtype=torch.long), kind="ru", method="optimize", beta=0.1,
                    sigma_max=1.0, grid=(2, 2), image_size=(4, 4), seed=0)


def flat(v):
    return [v] * 4


def test_reconstruction_errors_of_a_known_decoder():
    model = nn.Sequential(OrderedDict(f=nn.Identity()))
    half = nn.Conv2d(3, 3, 1, bias=False)  # 9 parameters, output 0.5 x input
    with torch.no_grad():
        half.weight.copy_(0.5 * torch.eye(3)[:, :, None, None])
    x_rec = torch.ones(2, 3, 4, 4)  # (0.5 - 1)^2 = 0.25 everywhere
    x = 2 * torch.ones(1, 3, 4, 4)  # (1 - 2)^2 = 1
    df = page.reconstruction_errors(model, {6: {"f": half}}, ["f"], [6], x_rec, x, pixel_var=0.5)
    row = df.iloc[0]
    assert (row.layer, row.decoder_blocks, row.parameters) == ("f", 6, 9)
    assert row.test_mse == pytest.approx(0.25) and row.mse_over_pixel_variance == pytest.approx(0.5)
    assert row.ru_images_mse == pytest.approx(1.0) and row.pixel_variance == 0.5


def test_mean_ru_by_decoder_pivots_the_layer_means():
    ru_df = pd.DataFrame({"layer_index": [0, 0, 0, 0], "layer": ["a"] * 4, "decoder_blocks": [6, 6, 8, 8],
                          "value": [1.0, 3.0, 2.0, 2.5]})
    wide = page.mean_ru_by_decoder(ru_df)
    assert wide.loc[(0, "a"), 6] == 2.0 and wide.loc[(0, "a"), 8] == 2.25


def test_reference_layer_ru_and_range_leave_out_maps_off_the_constraint():
    # layer 0: images 1.0 and 3.0 (both on) -> 2.0; layer 1: 5.0 on, 100.0 off -> 5.0; layer 2: none on -> NaN
    ref = maps([[flat(1.0), flat(3.0)], [flat(5.0), flat(100.0)], [flat(7.0), flat(7.0)]],
               [[1.0, 1.0], [1.0, 2.0], [0.5, 1.5]])
    layer_ru = page.reference_layer_ru(ref, tol=0.05)
    assert layer_ru[:2].tolist() == [2.0, 5.0] and math.isnan(layer_ru[2])
    assert page.range_across_layers(layer_ru) == 3.0
    assert math.isnan(page.range_across_layers(np.array([2.0, np.nan])))


def test_decoder_pairs_comparison_and_correlations():
    # reference (6 blocks) and other (8 blocks): 2 layers x 2 images
    ref = maps([[[0, 1, 2, 3], [1, 1, 1, 1]], [[2, 2, 2, 2], [0, 1, 0, 1]]], [[1.0, 1.0], [1.0, 1.0]])
    # layer 0 image 0: maps 0,1,2,3 vs 0,2,4,6 -> Pearson 1; mean 1.5 vs 3.0 -> delta 1.5
    # layer 0 image 1: other 2,2,2,2 vs constant -> correlation NaN; delta 1.0
    # layer 1 image 0: other 3,3,3,3 -> delta +1.0; image 1: 1,0,1,0 -> Pearson -1, delta 0; off the constraint
    other = maps([[[0, 2, 4, 6], [2, 2, 2, 2]], [[3, 3, 3, 3], [1, 0, 1, 0]]], [[1.0, 1.0], [1.0, 1.5]])
    pairs = page.decoder_pairs({6: ref, 8: other}, 6, [8], ["l0", "l1"], tol=0.05)
    assert pairs.delta_ru.tolist() == pytest.approx([1.5, 1.0, 1.0, 0.0])
    assert pairs.map_corr.iloc[0] == pytest.approx(1.0) and pairs.map_corr.iloc[3] == pytest.approx(-1.0)
    assert math.isnan(pairs.map_corr.iloc[1]) and math.isnan(pairs.map_corr.iloc[2])
    assert pairs.on_constraint.tolist() == [True, True, True, False]
    assert (pairs.reference_blocks == 6).all() and (pairs.decoder_blocks == 8).all()

    kept = pairs[pairs.on_constraint]
    comp = page.decoder_comparison(kept, ru_range=2.0)
    # layer 0: delta mean (1.5 + 1.0) / 2 = 1.25 -> 1.25 / 2 = 0.625 of the range; layer 1: one image, 1.0 -> 0.5
    assert comp.layer.tolist() == ["l0", "l1"] and comp.n_images.tolist() == [2, 1]
    assert comp.delta_ru.tolist() == pytest.approx([1.25, 1.0])
    assert comp.abs_delta_over_range.tolist() == pytest.approx([0.625, 0.5])
    assert comp.mean_map_corr.iloc[0] == pytest.approx(1.0)  # the NaN correlation is skipped by the mean
    assert (page.decoder_comparison(kept, ru_range=0.0).abs_delta_over_range == math.inf).all()
    assert page.max_abs_delta(comp) == pytest.approx(1.25)
    assert math.isnan(page.max_abs_delta(comp.iloc[:0]))

    corr = page.map_correlation_per_image(kept, [8])
    # image 0: layers 0 (1.0) and 1 (NaN) -> 1.0; image 1: layer 0 NaN only -> NaN
    assert corr[8].loc[0] == pytest.approx(1.0) and math.isnan(corr[8].loc[1])


def test_mean_test_mse_per_decoder():
    recon = pd.DataFrame({"decoder_blocks": [6, 6, 8], "test_mse": [0.1, 0.3, 0.5]})
    assert page.mean_test_mse(recon, 6) == pytest.approx(0.2) and page.mean_test_mse(recon, 8) == 0.5


def test_decoder_parts_decide_each_layer_and_the_maps():
    kept = pd.DataFrame({"decoder_blocks": 8, "layer": ["a"] * 6 + ["b"],
                         "delta_ru": [0.01, -0.01, 0.0, 0.02, -0.02, 0.0, 0.5]})
    corr = {8: pd.Series([0.95, 0.97, 0.96, 0.94, 0.98, np.nan])}
    parts = page.decoder_parts(kept, corr, ["a", "b"], [8], 6, margin=0.1, min_map_corr=0.8, min_units=2,
                               unit="images")
    assert list(parts) == ["a RU change (8 vs 6 blocks)", "b RU change (8 vs 6 blocks)",
                           "map correlation (8 vs 6 blocks)"]
    # a: six changes within +-0.02, margin 0.1 -> held; b: one image < 2 -> undecidable
    assert parts["a RU change (8 vs 6 blocks)"].verdict == HELD
    b = parts["b RU change (8 vs 6 blocks)"]
    assert b.verdict == INCONCLUSIVE and b.design == "1 image(s) on the constraint" and b.threshold == 0.1
    m = parts["map correlation (8 vs 6 blocks)"]
    assert m.verdict == HELD and m.n_units == 5 and m.effect == pytest.approx(0.96)
    far = page.decoder_parts(kept.assign(delta_ru=kept.delta_ru + 1.0), corr, ["a"], [8], 6, margin=0.1,
                             min_map_corr=0.99, min_units=2, unit="images")
    assert far["a RU change (8 vs 6 blocks)"].verdict == NOT_HELD
    assert far["map correlation (8 vs 6 blocks)"].verdict == NOT_HELD


def test_setup_conditions_claim_numbers_and_data():
    paper = page.load_profile("paper").decoder
    P = SimpleNamespace(decoder=SimpleNamespace(epochs=paper.epochs, n_train=None, width=16),
                        estimator=SimpleNamespace(tol=0.05), data=SimpleNamespace(cifar=SimpleNamespace(dataset="c10")),
                        networks=SimpleNamespace(cifar=SimpleNamespace(weights="published")))
    recon = pd.DataFrame({"layer": ["a", "a"], "decoder_blocks": [6, 8], "mse_over_pixel_variance": [0.2, 0.6]})
    ru = {6: maps([[flat(1.0)]], [[1.0]]), 8: maps([[flat(1.0)]], [[1.3]])}
    conds = page.setup_conditions(P, 20, 0.75, 0.917, recon, ru, mse_fraction=0.5)
    # 0.75 >= 0.8 * 0.917 = 0.7336 met; 0.6 is not below 0.5; training as the paper profile's; 1 of 2 maps on
    assert [c.met for c in conds] == [True, False, True, False]
    assert conds[1].observed == "test MSE / pixel variance 0.20-0.60 (worst: a, 8 blocks)"
    assert conds[2].observed.startswith(f"{paper.epochs} epoch") and conds[2].observed.endswith("width 16")

    per_pair = pd.DataFrame({"on_constraint": [True, False, False]})
    comp = pd.DataFrame({"layer": ["a"], "decoder_blocks": [8], "reference_blocks": [6], "delta_ru": [0.1]})
    numbers = page.claim_numbers(2.0, 0.5, 0.1, per_pair, comp, {8: 0.9}, 6, recon)
    assert numbers == {"ru_range_across_layers": 2.0, "margin": 0.5, "max_abs_delta_layer_ru": 0.1,
                       "n_pairs_left_out": 2, "delta_ru_a_8v6": 0.1, "mean_map_corr_8v6": 0.9,
                       "decoder_mse_over_var_a_6": 0.2, "decoder_mse_over_var_a_8": 0.6}
    assert page.claim_data(P, 4, 20, ["a", "b"], [6, 8]) == (
        "c10 test set, 4 images; ResNet-20 (published weights), RU layers a, b; decoders with 6, 8 blocks, "
        f"width 16, {paper.epochs} epochs on all training images")

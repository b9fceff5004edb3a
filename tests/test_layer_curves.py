"""deepinfo.book.layer_curves: the regimes' per-image rows, their per-block summary and depth slopes."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import deepinfo
from deepinfo.book.layer_curves import (BARE, CALIBRATED, COLUMNS, PAPER_LOOP, depth_slopes, paper_loop_rows, per_image,
                                   paired_change, sampled_ratio, summarize)


class Linear(nn.Module):
    def __init__(self, n_in=3 * 4 * 4, n_out=5, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a = nn.Linear(n_in, n_out, bias=False)
        self.a.weight.data = torch.randn(n_out, n_in, generator=g)
        self.b = nn.Identity()

    def forward(self, x):
        return self.b(self.a(x.flatten(1)))


def rows(values, estimator="e", network="n", beta=1e-4, r=1.0):
    """values [B, L] -> per-image rows."""
    return pd.DataFrame([{"network": network, "layer": f"l{li}", "block_index": li + 1, "image": b,
                          "estimator": estimator, "beta": beta, "cid": float(v), "r": r, "delta_f2": 1.0}
                         for b, row in enumerate(values) for li, v in enumerate(row)])


def test_depth_slopes_recover_each_images_least_squares_slope():
    values = np.array([[0.0, 0.1, 0.2, 0.3], [1.0, 0.9, 0.8, 0.7], [0.0, 0.0, 0.0, 0.3]])
    s = depth_slopes(rows(values))
    assert s.slope.tolist() == pytest.approx([0.1, -0.1, 0.09])
    assert s.rise.tolist() == pytest.approx([0.3, -0.3, 0.3]) and (s.n_blocks == 4).all()


def test_depth_slopes_leave_out_maps_off_the_constraint():
    df = rows(np.array([[0.0, 0.1, 0.2, 5.0], [0.0, 0.1, 0.2, 0.3]]))
    df.loc[(df.image == 0) & (df.block_index == 4), "r"] = 1.5
    s = depth_slopes(df, tol=0.05)
    assert s.slope.tolist() == pytest.approx([0.1, 0.1]) and s.n_blocks.tolist() == [3, 4]
    df.loc[(df.image == 1) & (df.block_index > 1), "r"] = float("nan")
    assert depth_slopes(df, tol=0.05).image.tolist() == [0]  # fewer than 3 blocks left: no slope


def test_summary_has_the_issue_columns_and_a_bootstrap_interval_over_images():
    values = np.random.default_rng(0).normal(0.5, 0.1, size=(40, 3))
    table = summarize(rows(values, r=1.02))
    assert list(table.columns) == COLUMNS and len(table) == 3
    first = table.iloc[0]
    assert first.cid == pytest.approx(values[:, 0].mean()) and first.n_images == 40 and first.r == pytest.approx(1.02)
    se = values[:, 0].std() / math.sqrt(40)
    assert first.cid_lo < first.cid < first.cid_hi
    assert first.cid_hi - first.cid_lo == pytest.approx(2 * 1.96 * se, rel=0.2)


def test_per_image_rows_and_the_bare_closed_form_on_a_linear_layer():
    torch.manual_seed(0)
    model, x = Linear(), torch.rand(2, 3, 4, 4)
    bare = deepinfo.cid(model, x, "a", method="linear", calibrate=False, n_probes=64, progress=False)
    cal = deepinfo.cid(model, x, "a", method="linear", n_probes=64, progress=False)
    frame = pd.concat([per_image(bare, "lin", BARE), per_image(cal, "lin", CALIBRATED)])
    assert set(frame.estimator) == {BARE, CALIBRATED} and (frame.block_index == 1).all()
    # a linear layer: the closed form is exact, both regimes agree and meet the constraint
    assert frame.r.to_numpy() == pytest.approx(1.0, abs=0.05)
    a, c = frame[frame.estimator == BARE].cid.to_numpy(), frame[frame.estimator == CALIBRATED].cid.to_numpy()
    assert a == pytest.approx(c, abs=0.03)


def test_sampled_ratio_of_the_closed_form_is_one_on_a_linear_layer_and_scales_with_sigma():
    model, x = Linear(), torch.rand(1, 3, 4, 4)
    maps = deepinfo.cid(model, x, "a", method="linear", calibrate=False, n_probes=64, progress=False)
    log_sigma = (maps.pixelwise[0, 0] - 0.5 * math.log(2 * math.pi * math.e)).flatten()
    d = float(maps.delta_f2[0, 0])
    r, se = sampled_ratio(model, "a", x[0], log_sigma, d, 1.5e-4, None, draws=4000)
    assert r == pytest.approx(1.0, abs=4 * se + 0.02)
    r2, _ = sampled_ratio(model, "a", x[0], log_sigma + math.log(2), d, 1.5e-4, None, draws=4000)
    assert r2 == pytest.approx(4 * r, rel=0.1)  # doubling sigma quadruples the distortion of a linear layer


def test_paper_loop_rows_measure_the_ratio_of_the_loops_sigma():
    model, x = Linear(), torch.rand(2, 3, 4, 4)

    def loop(m, xb, layer, beta, grid, seed):  # a stand-in loop: sigma = sqrt(beta) everywhere
        ls = torch.full((16,), 0.5 * math.log(beta))  # one cell per pixel, shared by the channels
        return (ls + 0.5 * math.log(2 * math.pi * math.e)).reshape(4, 4), ls

    delta = torch.full((1, 2), float((model.a.weight.detach() ** 2).sum()))
    out = paper_loop_rows(model, x, ["a"], delta, network="lin", beta=1e-4, grid=None, loop=loop, draws=2000,
                          progress=False)
    assert len(out) == 2 and (out.estimator == PAPER_LOOP).all()
    # sigma^2 = beta for every input unit: E||A eps sigma||^2 = beta ||A||_F^2, so r = 1
    assert out.r.to_numpy() == pytest.approx(1.0, abs=0.1) and (out.r_se < 0.05).all()
    assert out.cid.to_numpy() == pytest.approx(0.5 * math.log(1e-4) + 0.5 * math.log(2 * math.pi * math.e))


def _maps(values, ratios, layers=("a", "b")):
    """InfoMaps with a constant map per (layer, image): values [L, B] nats, ratios [L, B]."""
    v = torch.as_tensor(values, dtype=torch.float32)
    L, B = v.shape
    pix = v[:, :, None, None].expand(L, B, 2, 2).clone()
    return deepinfo.InfoMaps(layers=list(layers), pixelwise=pix, constraint=torch.as_tensor(ratios, dtype=torch.float32),
                             constraint_se=torch.zeros(L, B), sigma=torch.ones(L, B, 2, 2),
                             delta_f2=torch.ones(L, B), n_capped=torch.zeros(L, B, dtype=torch.long), kind="cid", method="linear", beta=1e-4,
                             sigma_max=10.0, grid=(2, 2), image_size=(4, 4), seed=0)


def test_paired_change_averages_the_layers_on_the_constraint_in_both_nets():
    base = _maps([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]], [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    # image 0: both layers used -> ((1.5-1) + (1.0-2)) / 2; image 1: layer b off in `other` -> 2.5-2;
    # image 2: layer a off in `base`, b off in `other` -> no layer left
    other = _maps([[1.5, 2.5, 9.0], [1.0, 7.0, 9.0]], [[1.0, 1.01, 1.0], [1.02, 1.5, 1.3]])
    base.constraint[0, 2] = 0.5
    change, n = paired_change(base, other, tol=0.05)
    assert change[:2].tolist() == pytest.approx([-0.25, 0.5])
    assert math.isnan(change[2]) and n.tolist() == [2, 1, 0]


def test_paired_change_refuses_maps_of_other_layers():
    with pytest.raises(ValueError, match="same layers"):
        paired_change(_maps([[1.0]], [[1.0]], layers=("a",)), _maps([[1.0]], [[1.0]], layers=("b",)), tol=0.05)

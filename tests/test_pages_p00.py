"""deepinfo.book.pages.p00_validation: the arithmetic behind the estimator-validation page, on
hand-built maps and frames whose answers are derived by hand in the comments."""

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from deepinfo._grid import Grid
from deepinfo.result import InfoMaps
from deepinfo.book.pages import p00_validation as page
from deepinfo.book.verdicts import HELD, INCONCLUSIVE

C0 = 0.5 * math.log(2 * math.pi * math.e)


def maps(pixelwise, constraint, layers=None) -> InfoMaps:
    """InfoMaps from ``pixelwise [L, B, Gh, Gw]`` and ``constraint [L, B]`` (other fields filler)."""
    pw = torch.tensor(pixelwise, dtype=torch.float64)
    r = torch.tensor(constraint, dtype=torch.float64)
    L, B = r.shape
    zeros = torch.zeros(L, B)
    return InfoMaps(layers or [f"l{i}" for i in range(L)], pw, r, zeros, pw.exp(), torch.ones(L, B),
                    torch.zeros(L, B, dtype=torch.long), "cid", "linear", 0.1, 1.0, tuple(pw.shape[-2:]),
                    tuple(pw.shape[-2:]), 0)


def test_closed_form_cid_sums_each_cells_columns_over_channels():
    # image 1 x 2 with C = 2 channels, a 1 x 2 grid (one pixel per cell). A has one row
    # [c0p0, c0p1, c1p0, c1p1] = [1, 0, 1, 2]: W_0 = 1 + 1 = 2, W_1 = 0 + 4 = 4, mean(W) = 3.
    # beta = 0.5: sigma_0^2 = 0.5 * 3 / 2 = 0.75, sigma_1^2 = 0.5 * 3 / 4 = 0.375.
    grid = Grid.make((1, 2), (1, 2))
    A = torch.tensor([[1.0, 0.0, 1.0, 2.0]])
    closed = page.closed_form_cid(A, grid, 2, 0.5)
    assert closed.tolist() == pytest.approx([0.5 * math.log(0.75) + C0, 0.5 * math.log(0.375) + C0])


def test_probe_error_sd_uses_the_smallest_cell():
    # 1 x 3 image on a 1 x 2 grid: columns 0, 1 -> cell 0, column 2 -> cell 1; smallest cell 1 pixel,
    # C = 3 -> 3 units; K = 6 probes: 0.5 * sqrt(2 / 18) = 1/6
    assert page.probe_error_sd(Grid.make((1, 2), (1, 3)), 3, 6) == pytest.approx(1 / 6)


def test_scaled_linear_layer_computes_a_x_with_its_weight():
    grid = Grid.make((2, 2), (4, 4))
    layer, A = page.scaled_linear_layer(grid, (3, 4, 4), 5, seed=0)
    x = torch.rand(2, 3, 4, 4)
    assert A.shape == (5, 48) and layer[1].bias is None
    assert torch.allclose(layer(x), x.flatten(1) @ A.T, atol=1e-5)
    # the same seed gives the same A; each column is a standard normal times a factor in [0.2, 2]
    assert torch.equal(page.scaled_linear_layer(grid, (3, 4, 4), 5, seed=0)[1], A)


def test_linear_runs_judge_exact_probes_with_as_many_probes_as_outputs():
    runs = page.linear_runs(7, {"init": "constant", "steps": 9})
    assert list(runs) == ["linear", "linear, exact probes", "optimize", "optimize, flat start (long)",
                          "optimize, flat start (profile schedule)"]
    assert runs["linear, exact probes"] == {"method": "linear", "n_probes": 7}
    assert runs["optimize, flat start (long)"] == {"method": "optimize", "init": "constant", "steps": 9}


def linear_frame():
    # closed form [0, 1] on a 1 x 2 grid. Run "a" (judged, tol 0.05):
    #   image 0 map [0.5, 1.0] -> err [0.5, 0]: mean |err| 0.25, max 0.5, mean 0.25, corr +1
    #   image 1 map [1.0, 0.0] -> err [1, -1]:  mean |err| 1.0,  max 1.0, mean 0.0,  corr -1
    # run "b" (not judged): image 0 [0, 1] (exact, corr 1), image 1 [0.1, 1.3] -> err [0.1, 0.3]
    closed = torch.tensor([0.0, 1.0], dtype=torch.float64)
    runs = {"a": maps([[[[0.5, 1.0]], [[1.0, 0.0]]]], [[1.0, 2.0]]),
            "b": maps([[[[0.0, 1.0]], [[0.1, 1.3]]]], [[0.9, 1.1]])}
    return page.linear_error_frame(runs, closed, {"a": 0.05})


def test_linear_error_frame_rows_per_run_and_image():
    df = linear_frame()
    assert df.run.tolist() == ["a", "a", "b", "b"] and df.image.tolist() == [0, 1, 0, 1]
    assert df.mean_abs_error.tolist() == pytest.approx([0.25, 1.0, 0.0, 0.2])
    assert df.max_abs_error.tolist() == pytest.approx([0.5, 1.0, 0.0, 0.3])
    assert df.mean_error.tolist() == pytest.approx([0.25, 0.0, 0.0, 0.2])
    assert df.corr_with_closed_form.tolist() == pytest.approx([1.0, -1.0, 1.0, 1.0])
    assert df.ratio_r.tolist() == [1.0, 2.0, 0.9, 1.1]
    assert df.in_rule.tolist() == [True, True, False, False]
    assert df.tolerance.iloc[0] == 0.05 and df.tolerance.iloc[2:].isna().all()


def test_linear_summary_worst_errors_and_mean_error():
    df = linear_frame()
    s = page.linear_summary(df)
    # run a: mean of (0.25, 1.0) = 0.625, worst image 1.0, largest cell error 1.0, bias 0.125, corr min -1
    assert s.index.tolist() == ["a", "b"]
    assert s.loc["a"].tolist()[:5] == pytest.approx([0.625, 1.0, 1.0, 0.125, -1.0])
    assert s.loc["b", "worst_image"] == pytest.approx(0.2) and bool(s.loc["a", "in_rule"])
    assert page.worst_errors(df, ["a"]) == pytest.approx({"a": 1.0})
    assert page.mean_error(df, "b") == pytest.approx(0.1)


def two_methods():
    # one layer, two images, a 1 x 2 grid.
    # linear:   image 0 [1, 2] (mean 1.5), image 1 [0, 2] (mean 1)
    # optimize: image 0 [2, 3] (mean 2.5, corr +1, gap 1), image 1 [2, 0] (mean 1, corr -1, gap 0)
    lin = maps([[[[1.0, 2.0]], [[0.0, 2.0]]]], [[1.0, 1.0]])
    opt = maps([[[[2.0, 3.0]], [[2.0, 0.0]]]], [[1.0, 1.0]])
    return {"linear": lin, "optimize": opt}


def test_agreement_per_layer():
    row = page.agreement_per_layer(two_methods(), ["l0"]).iloc[0]
    # cid_linear = (1.5 + 1) / 2, cid_optimize = (2.5 + 1) / 2; |gap| = (1, 0); corr = (+1, -1)
    assert row.layer == "l0"
    assert [row.cid_linear, row.cid_optimize, row.mean_abs_gap, row.max_abs_gap] == pytest.approx([1.25, 1.75, 0.5, 1])
    assert [row.mean_map_corr, row.min_map_corr] == pytest.approx([0.0, -1.0])


def test_methods_frame_stacks_methods_with_the_network_first():
    df = page.methods_frame(two_methods(), "net")
    assert df.columns[0] == "network" and (df.network == "net").all()
    assert df.method.tolist() == ["linear", "linear", "optimize", "optimize"]
    assert df.value.tolist() == pytest.approx([1.5, 1.0, 2.5, 1.0])


def test_per_image_agreement_takes_the_worst_kept_layer():
    # two layers, two images; tol 0.1.
    # layer 0: lin means (0, 0), opt means (0.2, 0.5); layer 1: lin (0, 0), opt (0.4, 0.1)
    # ratios: layer 1 image 1 of linear is 1.5 (off) -> kept [[T, T], [T, F]]
    # image 0: gap max(0.2, 0.4) = 0.4; image 1: only layer 0 -> 0.5
    # maps: image 0 layer 0 lin [0, 0]... constant maps have no correlation, so use slopes:
    # lin rows [-1, 1] (mean 0); opt = lin + shift or reversed. corr: l0 b0 +1, l1 b0 -1, l0 b1 +1
    lin = maps([[[[-1.0, 1.0]], [[-1.0, 1.0]]], [[[-1.0, 1.0]], [[-1.0, 1.0]]]], [[1.0, 1.0], [1.0, 1.5]])
    opt = maps([[[[-0.8, 1.2]], [[-0.5, 1.5]]], [[[1.4, -0.6]], [[-0.9, 1.1]]]], [[1.0, 1.05], [0.95, 1.0]])
    gap, corr, kept = page.per_image_agreement(lin, opt, 0.1)
    assert kept.tolist() == [[True, True], [True, False]]
    assert gap.tolist() == pytest.approx([0.4, 0.5])
    assert corr.tolist() == pytest.approx([-1.0, 1.0])
    # nothing kept for an image -> NaN
    gap, corr, kept = page.per_image_agreement(lin, maps(opt.pixelwise.tolist(), [[1.0, 2.0], [1.0, 2.0]]), 0.1)
    assert np.isnan(gap[1]) and np.isnan(corr[1]) and not np.isnan(gap[0])


def test_worst_pair_ratio_takes_the_ratio_farther_from_one():
    lin = maps([[[[0.0]], [[0.0]]]], [[1.1, 0.8]])
    opt = maps([[[[0.0]], [[0.0]]]], [[0.95, 1.3]])
    # image 0: |0.1| > |0.05| -> 1.1; image 1: |0.2| < |0.3| -> 1.3
    assert page.worst_pair_ratio(lin, opt)[0].tolist() == pytest.approx([1.1, 1.3])


def test_agreement_conditions_count_the_worst_map_of_each_pair():
    profile = SimpleNamespace(networks=SimpleNamespace(cifar=SimpleNamespace(weights="published")),
                              estimator=SimpleNamespace(tol=0.1))
    m = {"linear": maps([[[[0.0]], [[0.0]]]], [[1.05, 1.0]]), "optimize": maps([[[[0.0]], [[0.0]]]], [[1.0, 1.5]])}
    network, constraint = page.agreement_conditions(m, profile, 20, 0.9)
    assert network.met and network.observed.startswith("ResNet-20, published weights, test accuracy 90.0%")
    # worst ratios (1.05, 1.5): 1 of 2 within 10 % -> below the 90 % share
    assert not constraint.met and constraint.observed.startswith("1 of 2 within 10%")


def test_constraint_ratios_and_summary():
    linear_df = pd.DataFrame({"run": ["optimize", "linear"], "ratio_r": [1.02, 0.5]})
    net_df = pd.DataFrame({"method": ["optimize", "optimize"], "constraint": [1.2, 0.97]})
    paper_df = pd.DataFrame({"method": ["paper loop"], "constraint": [3.0]})
    ratios = page.constraint_ratios(linear_df, net_df, paper_df, "R", 0.05)
    assert ratios.setting.tolist() == ["linear layer", "linear layer", "R", "R", "R"]
    assert ratios.method.tolist() == ["optimize", "linear", "optimize", "optimize", "paper loop"]
    # |r - 1| <= 0.05: 1.02 yes, 0.5 no, 1.2 no, 0.97 yes, 3 no
    assert ratios.within_tol.tolist() == [True, False, False, True, False]
    s = page.ratio_summary(ratios)
    assert s[["setting", "method"]].values.tolist() == [["linear layer", "optimize"], ["linear layer", "linear"],
                                                       ["R", "optimize"], ["R", "paper loop"]]
    row = s.iloc[2]  # R, optimize: 2 maps, 1 within, r from 0.97 to 1.2, median 1.085
    assert [row.n, row.within_tol] == [2, 1]
    assert [row.r_min, row.r_max, row.r_median] == pytest.approx([0.97, 1.2, 1.085])
    assert page.optimize_ratios(ratios).ratio_r.tolist() == [1.02, 1.2, 0.97]


def test_timing_table_speed_up_against_the_paper_loop():
    seconds = {"linear": 2.0, "optimize": 4.0, "linear, uncalibrated": 1.0, "paper loop": 3.0}
    t = page.timing_table(seconds, n_layers=2, n_images=2, paper_images=1, threads=3)
    # maps 4, 4, 4, 2 -> seconds per map 0.5, 1, 0.25, 1.5 -> speed-up 1.5 / that = 3, 1.5, 6, 1
    assert t.method.tolist() == list(page.TIMED) and t.maps.tolist() == [4, 4, 4, 2]
    assert t.seconds_per_map.tolist() == pytest.approx([0.5, 1.0, 0.25, 1.5])
    assert t.speed_up_vs_paper_loop.tolist() == pytest.approx([3.0, 1.5, 6.0, 1.0]) and (t.threads == 3).all()


def test_range_text():
    assert page.range_text(np.array([1.2345, 0.5]), "{:.2f}") == "0.50 to 1.23"
    assert page.range_text(torch.tensor([[2.0, 1.0]]), "{:.3f}") == "1.000 to 2.000"


def test_closed_form_evidence_parts_and_numbers():
    # run "a": 5 images at 0.01 -> interval [0.01, 0.01] below 0.05: held; run "b": 5 images at 0.002 vs
    # 0.001: not below -> not held; combined: not held, shown part b
    df = pd.DataFrame({"run": ["a"] * 5 + ["b"] * 5, "mean_abs_error": [0.01] * 5 + [0.002] * 5})
    ev = page.closed_form_evidence(df, {"a": 0.05}, {"steps": 200, "draws": 8, "lr": 0.05})
    assert ev["verdict"].verdict == HELD and ev["verdict"].n_units == 5
    assert ev["numbers"] == pytest.approx({"worst_mean_abs_error[a]": 0.01, "mean_abs_error[a]": 0.01})
    assert "Flat start: 200 steps of 8 draws, lr 0.05. Worst image: a 0.0100 nats." in ev["detail"]
    ev = page.closed_form_evidence(df, {"a": 0.05, "b": 0.001}, {"steps": 1, "draws": 1, "lr": 1})
    assert ev["verdict"].verdict == "not held" and ev["verdict"].part == "b"


def test_constraint_evidence_counts_the_maps_within():
    opt = pd.DataFrame({"setting": ["L"] * 4 + ["R"] * 6, "method": ["optimize"] * 10,
                        "ratio_r": [1.0] * 9 + [1.5], "within_tol": [True] * 9 + [False]})
    ev = page.constraint_evidence(opt, 0.9, 0.1)
    # share 9 / 10 = 0.9, the interval reaches below 0.9 -> not held or inconclusive, never held
    assert ev["verdict"].effect == pytest.approx(0.9) and ev["verdict"].verdict != HELD
    assert ev["numbers"] == {"n_optimize_ratios": 10, "n_within_tol": 9, "r_min": 1.0, "r_max": 1.5, "tol": 0.1}
    assert ev["detail"].endswith("r ranged from 1.000 to 1.500. Per run: L, optimize: 4 of 4; R, optimize: 5 of 6.")


def test_agreement_evidence_numbers_and_left_out_maps():
    m = two_methods()
    m["optimize"] = maps(m["optimize"].pixelwise.tolist(), [[1.0, 3.0]])  # image 1 off the constraint
    agree = page.agreement_per_layer(m, ["l0"])
    ev = page.agreement_evidence(m, agree, 0.1, 0.1, 0.8)
    # one image kept (gap 1, corr +1): fewer than 5 units -> inconclusive
    assert ev["verdict"].verdict == INCONCLUSIVE
    assert ev["numbers"] == pytest.approx({"max_layer_mean_abs_gap": 0.5, "min_layer_mean_map_corr": 0.0,
                                           "n_layers": 1, "n_images": 2, "n_maps_left_out": 1})
    assert "(1 of 2 (layer, image) pairs)" in ev["detail"]
    assert ev["detail"].endswith("l0 0.500; mean correlation: l0 0.00.")


def test_data_text():
    profile = SimpleNamespace(networks=SimpleNamespace(cifar=SimpleNamespace(weights="published")),
                              data=SimpleNamespace(cifar=SimpleNamespace(dataset="cifar10")))
    assert page.data_text(profile, 20, ["a", "b"], 4, 256, 1) == (
        "a linear layer (m = 256) and ResNet-20 (published weights, layers a, b) on 4 cifar10 test images; "
        "original loop on 1 image")

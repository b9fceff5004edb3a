"""Hand-derived checks of the page module of ``03_beta``."""

import math

import numpy as np
import pandas as pd
import pytest

from deepinfo.book.pages import p03_beta as page
from deepinfo.book.verdicts import Verdict


def _frame(beta, values, ratios=None, capped=None):
    """A ``to_frame``-like table: 2 layers x 2 images, ``values`` in layer-major order."""
    return pd.DataFrame({"layer": ["l1", "l1", "l2", "l2"], "layer_index": [0, 0, 1, 1], "image": [0, 1, 0, 1],
                         "value": values, "constraint": ratios or [1.0] * 4, "n_capped": capped or [0] * 4,
                         "beta": beta})


def test_beta_frame_adds_network_and_block():
    cid_df = page.beta_frame([_frame(0.1, [1.0, 2.0, 3.0, 4.0]), _frame(1.0, [5.0, 6.0, 7.0, 8.0])], 20)
    assert list(cid_df.columns) == ["network", "layer", "layer_index", "image", "value", "constraint", "n_capped",
                                    "beta", "block"]
    assert (cid_df.network == "ResNet-20").all() and list(cid_df.index) == list(range(8))
    assert cid_df.block.tolist() == [1, 1, 2, 2] * 2


def _cid_df():
    # beta 0.01: l1 images 1, 3 ; l2 images 2, 4 -- beta 1: l1 2, 4 ; l2 4, 6 (one ratio 1.3, one capped cell)
    return page.beta_frame([_frame(0.01, [1.0, 3.0, 2.0, 4.0]),
                            _frame(1.0, [2.0, 4.0, 4.0, 6.0], ratios=[1.0, 1.0, 1.3, 0.95], capped=[0, 0, 1, 2])], 20)


def test_mean_per_block():
    m = page.mean_per_block(_cid_df())
    assert m[["beta", "block", "layer"]].values.tolist() == [[0.01, 1, "l1"], [0.01, 2, "l2"], [1.0, 1, "l1"],
                                                            [1.0, 2, "l2"]]
    # means (1 + 3) / 2 = 2, (2 + 4) / 2 = 3, 3, 5; sample sd of two values 2 apart = sqrt(2)
    assert m.cid.tolist() == [2.0, 3.0, 3.0, 5.0]
    assert m.cid_sd.tolist() == pytest.approx([math.sqrt(2)] * 4)
    # largest |r - 1|: 0 except (beta 1, l2): max(0.3, 0.05) = 0.3; capped cells 1 + 2 = 3 there
    assert m.max_ratio_error.tolist() == pytest.approx([0.0, 0.0, 0.0, 0.3])
    assert m.capped_cells.tolist() == [0, 0, 0, 3]


def test_slope_per_block_against_log10_beta():
    m = page.mean_per_block(_cid_df())
    slopes = page.slope_per_block(m, 1.151)
    # log10 beta: -2 and 0; l1: 2 -> 3, slope 1 / 2 = 0.5; l2: 3 -> 5, slope 2 / 2 = 1
    assert slopes.columns.tolist() == ["block", "layer", "slope (nats/decade)", "closed form"]
    assert slopes["slope (nats/decade)"].tolist() == pytest.approx([0.5, 1.0])
    assert slopes["closed form"].tolist() == [1.151, 1.151]


def test_by_block_step_correlations_and_summary():
    cid_mean = pd.DataFrame({"beta": [1.0] * 3 + [10.0] * 3, "block": [3, 1, 2] * 2, "layer": ["c", "a", "b"] * 2,
                             "cid": [3.0, 1.0, 2.0, 3.5, 2.5, 1.5]})
    by_block = page.cid_by_block(cid_mean, [10.0, 1.0])
    # blocks sorted, columns in the given order of betas
    assert by_block.index.tolist() == [1, 2, 3] and by_block.columns.tolist() == [10.0, 1.0]
    assert by_block[1.0].tolist() == [1.0, 2.0, 3.0] and by_block[10.0].tolist() == [2.5, 1.5, 3.5]
    # steps from column 10 to column 1: 1 - 2.5 = -1.5, 2 - 1.5 = 0.5, 3 - 3.5 = -0.5 -> smallest -1.5
    assert page.smallest_beta_step(by_block) == pytest.approx(-1.5)
    rho = page.depth_rank_correlations(by_block, [1.0, 10.0])
    # beta 1: ranks 0, 1, 2 -> rho 1; beta 10: ranks (1, 0, 2) vs (0, 1, 2): sum d^2 = 2, rho = 1 - 12 / 24 = 0.5
    assert rho[1.0] == pytest.approx(1.0) and rho[10.0] == pytest.approx(0.5)
    summary = page.depth_trend_summary(by_block, rho, [1.0, 10.0])
    assert summary.columns.tolist() == ["beta", "Spearman rho (block index, CID)", "last - first block (nats)"]
    # last minus first block: 3 - 1 = 2; 3.5 - 2.5 = 1
    assert summary["last - first block (nats)"].tolist() == [2.0, 1.0]
    # fewer than 3 blocks: no rank correlation
    assert math.isnan(page.depth_rank_correlations(by_block.iloc[:2], [1.0])[1.0])


def test_rows_on_constraint_and_beta_slopes():
    rows = page.rows_on_constraint(_cid_df(), 0.1)
    # only (beta 1, l2, image 0) has |r - 1| = 0.3 > 0.1
    assert len(rows) == 7 and "cid" in rows and "r" in rows and "value" not in rows
    per_block = page.beta_slopes(rows)
    assert per_block.columns.tolist() == ["image", "layer", "slope"]
    # (image 0, l2) keeps one beta only: left out. log10 beta -2 and 0:
    # (0, l1): 1 -> 2, slope 0.5; (1, l1): 3 -> 4, 0.5; (1, l2): 4 -> 6, 1
    assert per_block[["image", "layer"]].values.tolist() == [[0, "l1"], [1, "l1"], [1, "l2"]]
    assert per_block.slope.tolist() == pytest.approx([0.5, 0.5, 1.0])
    # per image: image 0 -> 0.5; image 1 -> (0.5 + 1) / 2 = 0.75
    assert page.mean_slope_per_image(per_block).tolist() == pytest.approx([0.5, 0.75])
    # nothing left: an empty table with the columns
    assert page.beta_slopes(rows[rows.beta == 1.0]).empty


def test_beta_claim_numbers_and_detail():
    by_block = pd.DataFrame({0.01: [1.0, 2.0], 1.0: [3.0, 5.0]}, index=pd.Index([1, 2], name="block"))
    numbers = page.beta_claim_numbers(by_block, [0.01, 1.0], 2.0)
    assert numbers == {"cid_block1_beta0.01": 1.0, "cid_block1_beta1": 3.0, "cid_block2_beta0.01": 2.0,
                       "cid_block2_beta1": 5.0, "min_step_between_betas": 2.0}
    slopes = pd.DataFrame({"slope (nats/decade)": [0.5, 1.25]})
    assert page.beta_claim_detail(slopes, 1.1513, 2.0) == (
        "Fitted rate per block (means over images): 0.500 to 1.250 nats per decade (closed form for a linear "
        "layer: 1.151); smallest step between neighbouring betas 2.000 nats.")


def _verdict(effect, lo, hi, verdict="held", n=5):
    return Verdict(verdict, effect, (lo, hi), n, "images", 0.0, "greater")


def test_trend_table_and_depth_claim_numbers():
    per_beta = {0.01: _verdict(0.2, 0.1, 0.3), 1.0: _verdict(-0.1, -0.2, 0.05, "inconclusive", 4)}
    table = page.trend_table(per_beta)
    assert table.columns.tolist() == ["beta", "slope (nats/block)", "lo", "hi", "n_images", "verdict"]
    assert table.values.tolist() == [[0.01, 0.2, 0.1, 0.3, 5, "held"], [1.0, -0.1, -0.2, 0.05, 4, "inconclusive"]]
    numbers = page.depth_claim_numbers(per_beta, {0.01: 1.0, 1.0: np.nan}, [0.01, 1.0])
    assert numbers["slope_beta0.01"] == 0.2 and numbers["slope_beta1"] == -0.1
    assert numbers["spearman_means_beta0.01"] == 1.0 and math.isnan(numbers["spearman_means_beta1"])
    assert len(numbers) == 4

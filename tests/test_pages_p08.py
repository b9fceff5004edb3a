"""deepinfo.book.pages.p08_compression: the arithmetic behind the compression page (Fig. 7(a)).

Every expected number below is derived by hand from the tiny frames built in each test.
"""

import math
from types import SimpleNamespace as NS

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import known_maps
from deepinfo.book.pages import p08_compression as page
from deepinfo.book.verdicts import HELD, INCONCLUSIVE, NOT_HELD, Verdict

TOL = 0.05


def nets(*keeps_achieved):
    """``[(keep, stub net, achieved)]`` with the original first."""
    return [(1.0, NS(key="k-orig"), 1.0)] + [(k, NS(key=f"k-{k}"), a) for k, a in keeps_achieved]


def cid_frame():
    """Original (keep 1) and one compressed net (keep 0.5), layers a and b, images 0 and 1.

    value (CID):          original a: 1.0, 2.0   b: 3.0, 4.0
                          compressed a: 0.5, 2.5 b: 2.0, 4.4
    concentration:        original a: 0.2, 0.4   b: 1.0, 9.0
                          compressed a: 0.3, 0.1 b: 1.5, 8.0
    constraint:           all 1.0 except the original's (b, image 1) = 1.5 (off the constraint)
    """
    rows = []
    values = {1.0: [[1.0, 2.0], [3.0, 4.0]], 0.5: [[0.5, 2.5], [2.0, 4.4]]}
    conc = {1.0: [[0.2, 0.4], [1.0, 9.0]], 0.5: [[0.3, 0.1], [1.5, 8.0]]}
    for keep, name in ((1.0, "original"), (0.5, "50.0% kept")):
        for li, layer in enumerate("ab"):
            for image in (0, 1):
                r = 1.5 if (keep == 1.0 and layer == "b" and image == 1) else 1.0
                rows.append({"network": name, "keep": keep, "layer": layer, "layer_index": li, "image": image,
                             "value": values[keep][li][image], "constraint": r,
                             "concentration": conc[keep][li][image]})
    df = pd.DataFrame(rows)
    df["on_constraint"] = np.abs(df["constraint"] - 1) <= TOL
    return df


def empty_ru():
    return pd.DataFrame(columns=["network", "keep", "layer", "image", "value", "constraint", "on_constraint"])


def test_network_labels_name_the_original_and_the_kept_fraction():
    assert page.network_labels(nets((0.38, 0.4), (0.128, 0.13))) == {1.0: "original", 0.38: "38.0% kept",
                                                                      0.128: "12.8% kept"}


def test_network_table_reads_the_pruning_result_and_zeros_for_the_original():
    pr = NS(kept_conv=0.4, kept_fc=0.3, s_conv=1.2, s_fc=2.0)
    ns = [(1.0, NS(info={}, key="o", accuracy=lambda ds: 0.7), 1.0),
          (0.38, NS(info={"pruning": pr}, key="c", accuracy=lambda ds: 0.6), 0.36)]
    P = NS(compression=NS(retrain=NS(epochs=3)))
    t = page.network_table(P, ns, page.network_labels(ns), eval_set=None)
    assert t.iloc[0].to_dict() == {"network": "original", "target fraction": 1.0, "achieved fraction": 1.0,
                                   "achieved conv": 1.0, "achieved FC": 1.0, "s_conv": 0.0, "s_fc": 0.0,
                                   "retraining epochs": 0, "test accuracy": 0.7, "weights": "o"}
    assert t.iloc[1].to_dict() == {"network": "38.0% kept", "target fraction": 0.38, "achieved fraction": 0.36,
                                   "achieved conv": 0.4, "achieved FC": 0.3, "s_conv": 1.2, "s_fc": 2.0,
                                   "retraining epochs": 3, "test accuracy": 0.6, "weights": "c"}


def test_largest_ratio_error_spans_the_frames_and_skips_an_empty_one():
    cid = pd.DataFrame({"constraint": [1.02, 0.9, 1.05]})  # |r - 1|: 0.02, 0.1, 0.05
    assert page.largest_ratio_error(cid) == pytest.approx(0.1)
    assert page.largest_ratio_error(cid, empty_ru()) == pytest.approx(0.1)
    assert page.largest_ratio_error(cid, pd.DataFrame({"constraint": [1.3]})) == pytest.approx(0.3)


def test_layer_means_average_over_images_per_net_and_layer():
    m = page.layer_means(cid_frame())
    # original a: (1+2)/2, (0.2+0.4)/2; original b: (3+4)/2, (1+9)/2; compressed a: (0.5+2.5)/2, (0.3+0.1)/2 ...
    assert m.network.tolist() == ["original", "original", "50.0% kept", "50.0% kept"]
    assert m.value.tolist() == pytest.approx([1.5, 3.5, 1.5, 3.2])
    assert m.concentration.tolist() == pytest.approx([0.3, 5.0, 0.2, 4.75])


def test_changes_from_original_pair_the_same_layer_and_image():
    d = page.changes_from_original(cid_frame(), empty_ru(), ["a", "b"])
    cid = d[d.quantity == "CID"].sort_values(["layer", "image"])
    # compressed - original: a: 0.5-1, 2.5-2; b: 2-3, 4.4-4 (the last pair off: the original's map missed r = 1)
    assert cid.delta.tolist() == pytest.approx([-0.5, 0.5, -1.0, 0.4])
    assert cid.on_constraint.tolist() == [True, True, True, False]
    assert cid.layer_index.tolist() == [0, 0, 1, 1]
    conc = d[d.quantity == "concentration"].sort_values(["layer", "image"])
    assert conc.delta.tolist() == pytest.approx([0.1, -0.3, 0.5, -1.0])
    assert set(d.quantity) == {"CID", "concentration"}  # no RU measured: no RU rows
    assert len(page.on_constraint_pairs(d)) == 6


def test_per_image_deltas_average_the_layers_on_the_constraint():
    p = page.per_image_deltas(page.changes_from_original(cid_frame(), empty_ru(), ["a", "b"]))
    cid = p[p.quantity == "CID"].set_index("image")
    # image 0: (-0.5 + -1.0) / 2 over 2 layers; image 1: 0.5 alone (layer b's pair is off)
    assert cid.delta.tolist() == pytest.approx([-0.75, 0.5]) and cid.n_layers.tolist() == [2, 1]
    conc = p[p.quantity == "concentration"].set_index("image")
    assert conc.delta.tolist() == pytest.approx([0.3, -0.3])  # (0.1 + 0.5) / 2, -0.3


def test_margins_come_from_the_original_nets_range_over_layers():
    by_layer, margin = page.margins_from_original(cid_frame(), None, 0.25)
    # original on the constraint: a (0.2 + 0.4) / 2 = 0.3; b 1.0 (image 1 off); range 0.7 -> 0.25 x 0.7
    assert by_layer["concentration"].to_dict() == pytest.approx({"a": 0.3, "b": 1.0})
    assert margin == pytest.approx({"concentration": 0.175}) and "RU" not in by_layer
    ru = pd.DataFrame({"keep": [1.0, 1.0, 0.5], "layer": ["a", "a", "a"], "value": [2.0, 4.0, 9.0],
                       "on_constraint": [True, True, True]})
    by_layer, margin = page.margins_from_original(cid_frame(), ru, 0.25)
    assert by_layer["RU"].to_dict() == {"a": 3.0} and math.isnan(margin["RU"])  # one layer: no range


def per_image_rows(quantity, network, values):
    return [{"quantity": quantity, "network": network, "keep": 0.5, "image": i, "delta": v, "n_layers": 1}
            for i, v in enumerate(values)]


def test_decide_changes_applies_the_sign_rule_to_cid_and_the_margin_to_the_rest():
    cid_down = [-0.1, -0.2, -0.15, -0.12, -0.18, -0.11]  # mean -0.86 / 6; every resample below 0
    small = [0.01, -0.01, 0.02, -0.02, 0.0, 0.01]  # mean 0.01 / 6, every resample inside +-0.05
    per_image = pd.DataFrame(per_image_rows("CID", "n1", cid_down) + per_image_rows("concentration", "n1", small)
                             + per_image_rows("RU", "n1", small))
    v = page.decide_changes(per_image, ["CID", "RU", "concentration"], ["n1", "n2"],
                            {"concentration": 0.05, "RU": float("nan")}, 0.0, "less", "within", "images", 0.95)
    assert list(v) == ["CID", "RU", "concentration"] and list(v["CID"]) == ["n1", "n2"]
    assert v["CID"]["n1"].verdict == HELD and v["CID"]["n1"].effect == pytest.approx(-0.86 / 6)
    assert v["CID"]["n1"].side == "less" and v["CID"]["n1"].n_units == 6
    assert v["concentration"]["n1"].verdict == HELD and v["concentration"]["n1"].threshold == 0.05
    # no margin: inconclusive, but the effect is still reported
    assert v["RU"]["n1"].verdict == INCONCLUSIVE and "no equivalence margin" in v["RU"]["n1"].design
    assert v["RU"]["n1"].effect == pytest.approx(0.01 / 6) and v["RU"]["n1"].n_units == 6
    # a net with no image left
    assert v["CID"]["n2"].verdict == INCONCLUSIVE and v["CID"]["n2"].n_units == 0
    assert v["CID"]["n2"].design == "no image of n2 has a pair of CID maps on the constraint"
    assert v["concentration"]["n2"].side == "within" and v["CID"]["n2"].side == "less"


def test_decide_changes_says_not_held_when_cid_rises():
    per_image = pd.DataFrame(per_image_rows("CID", "n1", [0.1, 0.2, 0.15, 0.12, 0.18, 0.11]))
    v = page.decide_changes(per_image, ["CID"], ["n1"], {}, 0.0, "less", "within", "images", 0.95)
    assert v["CID"]["n1"].verdict == NOT_HELD


def verdict(v, effect, lo, hi, n=6, side="less", threshold=0.0):
    return Verdict(v, effect, (lo, hi), n, "images", threshold, side)


def test_summary_table_has_a_row_per_quantity_and_net_with_the_nets_size_and_accuracy():
    vs = {"CID": {"n1": verdict(HELD, -0.1, -0.2, -0.05), "n2": verdict(NOT_HELD, 0.1, 0.05, 0.2)},
          "concentration": {"n1": verdict(HELD, 0.0, -0.01, 0.01, side="within", threshold=0.05)}}
    networks = pd.DataFrame({"network": ["original", "n1", "n2"], "achieved fraction": [1.0, 0.4, 0.1],
                             "test accuracy": [0.7, 0.6, 0.5]})
    t = page.summary_table(vs, ["CID", "concentration"], networks)
    # the rows keep the verdicts' order (quantity, then net); an inner merge keeps the left order
    assert list(zip(t.quantity, t.network)) == [("CID", "n1"), ("CID", "n2"), ("concentration", "n1")]
    row = t.iloc[1]
    assert (row.mean_delta, row.lo, row.hi, row.verdict, row["achieved fraction"], row["test accuracy"]) == (
        0.1, 0.05, 0.2, NOT_HELD, 0.1, 0.5)
    assert t.iloc[2].threshold_or_margin == 0.05 and t.iloc[2].side == "within" and t.iloc[2].n_images == 6


def test_texts_of_the_per_net_verdicts():
    vs = {"n1": verdict(HELD, -0.1, -0.2, -0.05), "n2": verdict(NOT_HELD, 0.1, 0.05, 0.2)}
    assert page.intervals_text(vs, ["n2", "n1"]) == "+0.1000 [+0.0500, +0.2000], -0.1000 [-0.2000, -0.0500]"
    assert page.verdicts_text(vs) == ("n1: -0.1000 [-0.2000, -0.0500] (held); "
                                      "n2: +0.1000 [+0.0500, +0.2000] (not held)")
    assert page.net_summaries(vs) == f"n1: {vs['n1'].summary()}; n2: {vs['n2'].summary()}"
    t = page.verdict_table(vs)
    assert t.columns.tolist() == ["network", "mean ΔCID", "lo", "hi", "images", "verdict"]
    assert t.iloc[1].tolist() == ["n2", 0.1, 0.05, 0.2, 6, NOT_HELD]


def test_n_off_constraint_counts_the_rows_off_it():
    assert page.n_off_constraint(cid_frame()) == 1
    assert page.n_off_constraint(pd.DataFrame({"on_constraint": [True, False, False]})) == 2


def profile():
    return NS(compression=NS(arch="vgg16", retrain=NS(epochs=3)), networks=NS(cub=NS(weights="none", width=8)),
              data=NS(cub=NS(num_classes=5, image_size=32, dataset="synthetic", concentration_crop="1.5x")),
              estimator=NS(tol=TOL), decoder=NS(n_blocks=2, epochs=4))


def test_network_conditions_check_accuracy_retraining_and_targets():
    ns = nets((0.38, 0.40), (0.128, 0.16))
    networks = pd.DataFrame({"network": ["original", "38.0% kept", "12.8% kept"], "test accuracy": [0.7, 0.65, 0.62]})
    c = page.network_conditions(profile(), ns, networks, 0.75, 0.8, 0.9, 0.1)
    # 0.7 >= 0.8 x 0.75 = 0.6: met; 0.62 < 0.9 x 0.7 = 0.63: not met; 0.16 / 0.128 - 1 = 0.25 > 0.1: not met
    assert [x.met for x in c] == [True, False, False]
    assert c[0].name == "vgg16 accuracy (original)"
    assert c[0].observed.startswith("70.0% (trained from scratch, 5 classes")
    assert c[1].observed.startswith("38.0% kept 65.0%, 12.8% kept 62.0% vs the original's 70.0% (3 retraining")
    assert c[2].observed == "38.0% -> 40.0%, 12.8% -> 16.0% of the conv + FC weights"
    networks["test accuracy"] = [0.7, 0.65, 0.63]  # 0.63 >= 0.63: met
    assert page.network_conditions(profile(), nets((0.38, 0.39)), networks.iloc[:2], 0.75, 0.8, 0.9, 0.1)[1].met


def test_claim_evidence_of_cid_and_concentration():
    vs = {"50.0% kept": verdict(HELD, -0.1, -0.2, -0.05)}
    setup = [page.Condition("x", True, "y")]
    e = page.cid_claim_evidence(profile(), vs, cid_frame(), setup)
    assert e["numbers"] == {"mean_dcid_50.0% kept": -0.1, "verdict_50.0% kept": HELD, "n_maps_off_constraint": 1}
    assert e["detail"].endswith("1 of 8 CID maps off the constraint (their pairs left out).")
    # the constraint condition: 7 of 8 maps within tol; 7 < 0.9 x 8: not met
    assert [c.name for c in e["setup"]] == ["x", "maps on the constraint"] and not e["setup"][1].met
    cv = {"concentration": {"50.0% kept": verdict(HELD, 0.01, -0.01, 0.02, side="within", threshold=0.175)}}
    by_layer, margin = page.margins_from_original(cid_frame(), None, 0.25)
    e = page.concentration_claim_evidence(profile(), cv, margin, by_layer, cid_frame(), setup, 0.25)
    assert e["numbers"] == pytest.approx({"margin": 0.175, "mean_dconcentration_50.0% kept": 0.01,
                                          "verdict_50.0% kept": HELD, "concentration_original_a": 0.3,
                                          "concentration_original_b": 1.0})
    assert e["detail"].startswith("Margin ±0.1750 nats = 0.25 x the range over layers of the original net's mean "
                                  "concentration (a +0.3000, b +1.0000 nats).")


def test_ru_claim_without_ru_is_inconclusive_and_says_why():
    setup = [page.Condition("x", True, "y")]
    parts = page.ru_claim_parts(profile(), {}, {}, {}, setup, empty_ru(), pd.DataFrame(), [], "data", "images",
                                "within", 0.25, 0.5)
    assert parts["verdict"].verdict == INCONCLUSIVE and "RU was not measured" in parts["verdict"].design
    assert [(c.name, c.met) for c in parts["setup"]] == [("x", True), ("RU measured", False)]
    assert parts["numbers"] == {} and parts["data"] == "data; no RU"


def test_ru_claim_with_ru_combines_the_nets_and_checks_the_decoders():
    vs = {"RU": {"n1": verdict(HELD, 0.01, -0.01, 0.02, side="within", threshold=0.1),
                 "n2": verdict(INCONCLUSIVE, 0.05, -0.01, 0.2, side="within", threshold=0.1)}}
    recon = pd.DataFrame({"mse_over_pixel_variance": [0.2, 0.6]})  # worst 0.6, not below 0.5
    ru = pd.DataFrame({"constraint": [1.0, 1.0]})
    parts = page.ru_claim_parts(profile(), vs, {"RU": 0.1}, {"RU": pd.Series({"a": 1.0, "b": 1.4})}, [], ru, recon,
                                ["a", "b"], "data", "images", "within", 0.25, 0.5)
    assert parts["verdict"].verdict == INCONCLUSIVE and parts["verdict"].part == "n2"  # held and open: open
    assert [(c.name, c.met) for c in parts["setup"]] == [("decoders reconstruct", False),
                                                         ("maps on the constraint", True)]
    assert parts["numbers"] == {"margin": 0.1, "mean_dru_n1": 0.01, "mean_dru_n2": 0.05, "verdict_n1": HELD,
                                "verdict_n2": INCONCLUSIVE}
    assert parts["data"] == "data; RU at a, b" and "(a +1.0000, b +1.4000 nats)" in parts["detail"]


def second_line_of(base_values, other_values, other_ratio=None):
    """Two nets' maps (layers l0, l1): values [L][B], constant over each map's pixels."""
    base = known_maps(torch.tensor(base_values, dtype=torch.float32)[..., None, None].expand(-1, -1, 2, 2))
    other = known_maps(torch.tensor(other_values, dtype=torch.float32)[..., None, None].expand(-1, -1, 2, 2))
    if other_ratio is not None:
        other.constraint[:] = torch.tensor(other_ratio)
    ns = nets((0.5, 0.5))
    names = page.network_labels(ns)
    cid = pd.DataFrame({"constraint": [1.0, 1.5], "on_constraint": [True, False]})
    networks = pd.DataFrame({"network": ["original", "50.0% kept"], "test accuracy": [0.9, 0.85]})
    return page.SecondLine(ns, names, torch.zeros(len(base_values[0]), 3, 2, 2), ["l0", "l1"],
                           {1.0: base, 0.5: other}, cid, networks)


def test_second_line_changes_pair_each_image_over_its_layers_on_the_constraint():
    base = [[1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0, 2.0, 2.0]]
    other = [[0.9, 0.8, 0.9, 0.8, 0.9, 0.5], [1.9, 1.8, 1.7, 1.8, 1.9, 9.0]]
    ratio = [[1.0] * 6, [1.0] * 5 + [2.0]]  # image 5's layer l1 is off the constraint
    # per image: (-0.1 - 0.1) / 2, (-0.2 - 0.2) / 2, (-0.1 - 0.3) / 2, -0.2, -0.1, then -0.5 (l0 only)
    v, rows = page.second_line_changes(second_line_of(base, other, ratio), TOL, 0.0, "less", "images", 0.95)
    assert rows.network.unique().tolist() == ["50.0% kept"] and rows.image.tolist() == list(range(6))
    assert rows.delta_cid.tolist() == pytest.approx([-0.1, -0.2, -0.2, -0.2, -0.1, -0.5], abs=1e-6)
    assert rows.n_layers.tolist() == [2, 2, 2, 2, 2, 1]
    assert v["50.0% kept"].verdict == HELD and v["50.0% kept"].effect == pytest.approx(-1.3 / 6, abs=1e-6)


def test_second_line_changes_with_no_image_left_is_inconclusive():
    sl = second_line_of([[1.0], [2.0]], [[0.0], [0.0]], [[2.0], [2.0]])
    v, rows = page.second_line_changes(sl, TOL, 0.0, "less", "images", 0.95)
    assert v["50.0% kept"].verdict == INCONCLUSIVE and v["50.0% kept"].n_units == 0
    assert math.isnan(rows.delta_cid[0]) and rows.n_layers.tolist() == [0]


def test_second_line_conditions_and_evidence():
    sl = second_line_of([[1.0], [2.0]], [[1.0], [2.0]])
    P = NS(second_line=NS(base_depth=20, retrain=NS(epochs=2)), data=NS(cifar=NS(dataset="synthetic")),
           networks=NS(cifar=NS(weights="published")), training=NS(cifar_resnet=NS(epochs=1)), estimator=NS(tol=TOL))
    c = page.second_line_conditions(P, sl, 0.8, 0.9, 0.1)
    # never the paper's net; 0.9 >= 0.8 x 0.9173; 0.85 >= 0.9 x 0.9 = 0.81; 0.5 / 0.5 - 1 = 0; 1 of 2 maps on it
    assert [x.met for x in c] == [False, True, True, True, False]
    assert c[1].observed == "90.0% (published weights, synthetic test images)"
    e = page.second_line_evidence({"50.0% kept": verdict(HELD, -0.1, -0.2, -0.05)}, sl)
    assert e["numbers"] == {"mean_dcid_50.0% kept": -0.1, "accuracy_original": 0.9, "accuracy_50.0% kept": 0.85,
                            "n_maps_off_constraint": 1}
    assert page.ex.cifar_weights_words(P) == "published weights"

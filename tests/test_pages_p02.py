"""deepinfo.book.pages.p02_layer_curves: the tables, per-image effects and claim evidence of page 02,
on tiny hand-built frames whose answers are derived by hand in the comments."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from deepinfo.book import experiments as ex
from deepinfo.book import layer_curves as lc
from deepinfo.book.pages import p02_layer_curves as page


# --- helpers ---------------------------------------------------------------------------------------

class FakeTrained:
    """What the page reads of a trained network: its key, model and (cached) accuracy."""

    def __init__(self, key, accuracy=0.5, model=None):
        self.key, self._accuracy, self.model = key, accuracy, model if model is not None else nn.Identity()

    def accuracy(self, dataset):
        return self._accuracy


def cid_rows(values, *, task="classification", depth=20, constraint=1.0):
    """Rows like lc.resnet_rows: values[layer][image]; position = (layer + 1) / number of layers."""
    n_layers = len(values)
    return pd.DataFrame([{"network": f"ResNet-{depth}", "depth": depth, "task": task, "layer": f"l{li}",
                          "module": f"l{li}", "layer_index": li, "position": (li + 1) / n_layers, "image": b,
                          "value": float(v), "constraint": constraint, "beta": 1e-4, "delta_f2": 1.0}
                         for li, row in enumerate(values) for b, v in enumerate(row)])


def mean_rows(curves, column):
    """Per-layer means: curves[(task, depth)] = [value per layer]."""
    return pd.DataFrame([{"network": f"ResNet-{d}", "depth": d, "task": task, "layer": f"l{li}",
                          "position": (li + 1) / len(vals), column: v, "max_ratio_error": 0.0}
                         for (task, d), vals in curves.items() for li, v in enumerate(vals)])


def regime_rows(cid, *, estimator=lc.CALIBRATED, beta=1e-4, r=1.0):
    """Per-image regime rows: cid[(depth, block, image)] = value."""
    return pd.DataFrame([{"network": f"ResNet-{d}", "layer": f"b{k}", "block_index": k, "image": i,
                          "estimator": estimator, "beta": beta, "cid": v, "r": r, "delta_f2": 1.0}
                         for (d, k, i), v in cid.items()])


# --- (a), (b) ----------------------------------------------------------------------------------------

def test_cifar_networks_list_each_depths_classifier_then_its_autoencoder():
    cls, ae = {20: FakeTrained("c20"), 32: FakeTrained("c32")}, {20: FakeTrained("a20"), 32: FakeTrained("a32")}
    order = [(d, task, t.key) for d, task, t in page.cifar_networks(cls, ae)]
    assert order == [(20, "classification", "c20"), (20, "auto-encoder", "a20"),
                     (32, "classification", "c32"), (32, "auto-encoder", "a32")]


def test_network_table_has_accuracy_for_classifiers_and_mse_for_autoencoders():
    # an identity auto-encoder reconstructs exactly: MSE 0; a zero one has MSE = mean(x^2) = 4 for x = 2
    test_set = torch.utils.data.TensorDataset(torch.full((3, 1, 2, 2), 2.0), torch.zeros(3))
    zero = nn.Conv2d(1, 1, 1, bias=False)
    nn.init.zeros_(zero.weight)
    table = page.network_table({20: FakeTrained("c20", 0.8), 32: FakeTrained("c32", 0.9)},
                               {20: FakeTrained("a20", model=nn.Identity()), 32: FakeTrained("a32", model=zero)},
                               test_set)
    assert table.task.tolist() == ["classification"] * 2 + ["auto-encoder"] * 2
    assert table.weights.tolist() == ["c20", "c32", "a20", "a32"]
    assert table["test accuracy"].tolist()[:2] == [0.8, 0.9] and table["test accuracy"][2:].isna().all()
    assert table["test reconstruction MSE"].tolist()[2:] == pytest.approx([0.0, 4.0])
    assert table["test reconstruction MSE"][:2].isna().all()


def test_cid_layer_means_average_images_and_keep_the_worst_ratio():
    # layer l0: values 1, 3 -> mean 2, sd sqrt(2); ratios 1.1 and 0.95 -> worst |r - 1| = 0.1
    df = cid_rows([[1.0, 3.0], [2.0, 2.0]])
    df.loc[(df.layer == "l0") & (df.image == 0), "constraint"] = 1.1
    df.loc[(df.layer == "l0") & (df.image == 1), "constraint"] = 0.95
    m = page.cid_layer_means(df)
    assert list(m.columns) == ["network", "depth", "task", "layer", "position", "cid", "cid_sd", "max_ratio_error"]
    assert m.cid.tolist() == [2.0, 2.0] and m.cid_sd.tolist() == pytest.approx([2 ** 0.5, 0.0])
    assert m.max_ratio_error.tolist() == pytest.approx([0.1, 0.0])


def test_ru_layer_means_keep_the_decoder_error():
    df = cid_rows([[1.0, 3.0]]).assign(decoder_mse=0.25)
    m = page.ru_layer_means(df)
    assert list(m.columns) == ["network", "depth", "task", "layer", "position", "ru", "ru_sd", "decoder_mse",
                               "max_ratio_error"]
    assert m.ru.tolist() == [2.0] and m.decoder_mse.tolist() == [0.25]


def test_last_layer_values_pick_the_largest_position():
    mean = mean_rows({("classification", 20): [1.0, 2.0, 3.0], ("auto-encoder", 20): [5.0, 4.0]}, "cid")
    last = page.last_layer_values(mean.sample(frac=1, random_state=0), "cid")
    assert last[("classification", 20)] == 3.0 and last[("auto-encoder", 20)] == 4.0


def test_curve_similarity_is_the_pearson_r_of_the_two_mean_curves():
    # depth 20: (1, 2, 3) vs (2, 4, 6) -> r = 1; depth 32: (1, 2, 3) vs (3, 2, 1) -> r = -1
    mean = mean_rows({("classification", 20): [1, 2, 3], ("auto-encoder", 20): [2, 4, 6],
                      ("classification", 32): [1, 2, 3], ("auto-encoder", 32): [3, 2, 1]}, "cid")
    assert page.curve_similarity(mean, "cid", [20, 32]) == pytest.approx({20: 1.0, 32: -1.0})
    other = mean.copy()
    other.loc[(other.task == "auto-encoder") & (other.depth == 20) & (other.layer == "l0"), "layer"] = "x"
    with pytest.raises(AssertionError):
        page.curve_similarity(other, "cid", [20], same_layers=True)
    assert page.curve_similarity(other, "cid", [20])[20] == pytest.approx(1.0)  # not checked for RU


def test_last_layer_summary_table_and_numbers():
    # last layers: CID cls 3 / 6, AE 6 / 4; RU cls 0.3 / 0.6, AE 0.6 / 0.4; r as above (1, -1)
    cid_mean = mean_rows({("classification", 20): [1, 2, 3], ("auto-encoder", 20): [2, 4, 6],
                          ("classification", 32): [1, 2, 6], ("auto-encoder", 32): [6, 5, 4]}, "cid")
    ru_mean = mean_rows({("classification", 20): [0.1, 0.2, 0.3], ("auto-encoder", 20): [0.2, 0.4, 0.6],
                         ("classification", 32): [0.1, 0.2, 0.6], ("auto-encoder", 32): [0.6, 0.5, 0.4]}, "ru")
    cid_mean.loc[0, "max_ratio_error"] = 0.02
    ru_mean.loc[3, "max_ratio_error"] = 0.07
    table, n_layers, worst = page.last_layer_summary(cid_mean, ru_mean, [20, 32])
    assert table["last-layer CID, classifier"].tolist() == [3.0, 6.0]
    assert table["last-layer CID, auto-encoder"].tolist() == [6.0, 4.0]
    assert table["last-layer RU, classifier"].tolist() == pytest.approx([0.3, 0.6])
    assert table["last-layer RU, auto-encoder"].tolist() == pytest.approx([0.6, 0.4])
    # depth 32: (1, 2, 6) vs (6, 5, 4): centred (-2, -1, 3) and (1, 0, -1) -> r = -5 / sqrt(14 * 2)
    assert table["Pearson r (CID curves, cls vs AE)"].tolist() == pytest.approx([1.0, -5 / 28 ** 0.5])
    assert n_layers == 3 and worst == pytest.approx(0.07)
    assert page.fewest_layers(cid_mean[~((cid_mean.depth == 32) & (cid_mean.layer == "l2"))]) == 2


# --- (d) ---------------------------------------------------------------------------------------------

def test_regime_image_counts_default_and_clip():
    n = lambda **kw: SimpleNamespace(n_images=SimpleNamespace(**{"regimes": None, "regimes_beta": None,  # noqa: E731
                                                                   "paper_loop": None, **kw}))
    assert page.regime_image_counts(n(), 8) == (8, 8, 1)          # every count falls back
    assert page.regime_image_counts(n(regimes=20, regimes_beta=50, paper_loop=30), 8) == (20, 20, 8)
    assert page.regime_image_counts(n(regimes=20, regimes_beta=5, paper_loop=2), 8) == (20, 5, 2)


def test_part_a_ids_are_the_images_part_a_measures():
    ds = torch.utils.data.TensorDataset(torch.arange(30.0).reshape(30, 1, 1, 1), torch.zeros(30))
    x, _, _ = ex.images(ds, 6, seed=3)
    ids = page.part_a_ids(ds, 6, 3)
    assert x.flatten().tolist() == [float(i) for i in ids] and ids == sorted(ids)


def test_at_beta_matches_numerically():
    f = pd.DataFrame({"beta": [1e-4, 1e-4 * (1 + 1e-12), 1e-3], "v": [1, 2, 3]})
    assert page.at_beta(f, 1e-4).v.tolist() == [1, 2]


def test_regime_slopes_drop_off_constraint_maps_only_for_held_regimes():
    # image 0: cid 0, 1, 2, 10 over blocks 1-4 with r = 2 at block 4. Held regime: blocks 1-3 -> slope 1;
    # bare regime keeps block 4: least-squares slope of (0, 1, 2, 10) over (1, 2, 3, 4): centred x (-1.5, -0.5,
    # 0.5, 1.5), centred y (-3.25, -2.25, -1.25, 6.75): sum xy = 15.5, sum xx = 5 -> 3.1
    cid = {(20, k, 0): v for k, v in zip(range(1, 5), (0.0, 1.0, 2.0, 10.0))}
    held = regime_rows(cid, estimator=lc.CALIBRATED)
    bare = regime_rows(cid, estimator=lc.BARE)
    for f in (held, bare):
        f.loc[f.block_index == 4, "r"] = 2.0
    s = page.regime_slopes(pd.concat([bare, held], ignore_index=True), tol=0.05)
    assert s.estimator.tolist() == [lc.BARE, lc.CALIBRATED]
    assert s.slope.tolist() == pytest.approx([3.1, 1.0]) and s.n_blocks.tolist() == [4, 3]


def test_trend_table_words_and_ratios():
    # 6 images, each with slope 0.1 (rises) for ResNet-20 and -0.2 (falls) for ResNet-32
    slopes = pd.DataFrame([{"network": net, "estimator": lc.BARE, "beta": 1e-4, "image": i, "slope": s,
                            "n_blocks": 3, "rise": 2 * s} for net, s in (("ResNet-20", 0.1), ("ResNet-32", -0.2))
                           for i in range(6)])
    table = pd.DataFrame([{"network": net, "estimator": lc.BARE, "beta": 1e-4, "block_index": k, "r": r}
                          for net in ("ResNet-20", "ResNet-32") for k, r in ((2, 1.5), (1, 0.5), (3, 3.0))])
    t = page.trend_table(slopes, table, threshold=0.0, seed=0)
    assert t["trend with depth"].tolist() == ["rises", "falls"]
    assert t["slope (nats/block)"].tolist() == pytest.approx([0.1, -0.2]) and t.n_images.tolist() == [6, 6]
    assert t["r first block"].tolist() == [0.5, 0.5] and t["r last block"].tolist() == [3.0, 3.0]
    # the same through regime_trends, from per-image rows: cid = 0.1 * block for 6 images
    rows = regime_rows({(20, k, i): 0.1 * k for k in (1, 2, 3) for i in range(6)}, estimator=lc.BARE)
    slopes2, trends2 = page.regime_trends(rows, lc.summarize(rows), tol=0.05, threshold=0.0, seed=0)
    assert slopes2.slope.tolist() == pytest.approx([0.1] * 6) and trends2["trend with depth"].tolist() == ["rises"]


def test_regime_text_names_the_rising_regimes():
    row = dict(beta=1e-4, slope_lo=0.0, slope_hi=0.0, **{"r first block": 1.0, "r last block": 1.0})
    trends = pd.DataFrame([
        {"network": "ResNet-20", "estimator": lc.BARE, "slope (nats/block)": 0.1, "trend with depth": "rises", **row},
        {"network": "ResNet-32", "estimator": lc.BARE, "slope (nats/block)": 0.1, "trend with depth": "rises", **row},
        {"network": "ResNet-20", "estimator": lc.CALIBRATED, "slope (nats/block)": 0.1, "trend with depth": "rises",
         **row},
        {"network": "ResNet-32", "estimator": lc.CALIBRATED, "slope (nats/block)": -0.1, "trend with depth": "falls",
         **row}])
    text = page.regime_text(trends, 1e-4, 20)
    assert f"on every ResNet in: {lc.BARE}. " in text
    assert f"**Over beta** (ResNet-20): {lc.BARE}: rises; {lc.CALIBRATED}: rises" in text


# --- (c) ---------------------------------------------------------------------------------------------

def conc_mean_rows():
    # vgg: layers 0, 1, 2 with concentration 0.1, 0.2, 0.5; alex: layers 0, 1 with 0.3, 0.1
    return pd.DataFrame([{"network": n, "layer_index": i, "layer": f"l{i}", "position": 0.0, "concentration": c,
                          "concentration_sd": 0.0, "cid": 0.0, "accuracy": acc}
                         for n, cs, acc in (("vgg", (0.1, 0.2, 0.5), 0.7), ("alex", (0.3, 0.1), 0.3))
                         for i, c in enumerate(cs)]).sample(frac=1, random_state=1)


def test_end_layer_values_and_table():
    first, last = page.end_layer_values(conc_mean_rows())
    assert first["vgg"] == 0.1 and last["vgg"] == 0.5 and first["alex"] == 0.3 and last["alex"] == 0.1
    table = page.end_layer_concentration(conc_mean_rows())
    assert table.loc["vgg", "last - first"] == pytest.approx(0.4)
    assert table.loc["alex", "last - first"] == pytest.approx(-0.2)


def test_concentration_layer_means():
    rows = pd.DataFrame([{"network": "vgg", "layer_index": 0, "layer": "l0", "position": 1.0, "image": i,
                          "concentration": c, "value": v, "test accuracy": 0.6}
                         for i, (c, v) in enumerate(((0.1, 1.0), (0.3, 2.0)))])
    m = page.concentration_layer_means(rows)
    assert m.concentration.tolist() == pytest.approx([0.2]) and m.cid.tolist() == [1.5]
    assert m.accuracy.tolist() == [0.6] and m.concentration_sd.tolist() == pytest.approx([2 ** 0.5 * 0.1])


def conc_rows():
    # vgg: image 0: first 0.1, last 0.4 (+0.3); image 1: 0.2 -> 0.0 (-0.2); image 2: last map off (r = 2)
    # alex: image 0: 0.0 -> 0.1 (+0.1); image 1: 0.5 -> 0.6 (+0.1); image 2: 0.0 -> 0.0
    data = {("vgg", 0): (0.1, 0.4), ("vgg", 1): (0.2, 0.0), ("vgg", 2): (0.0, 9.0),
            ("alex", 0): (0.0, 0.1), ("alex", 1): (0.5, 0.6), ("alex", 2): (0.0, 0.0)}
    rows = []
    for (net, image), (lo, hi) in data.items():
        for li, c in ((0, lo), (1, 0.0), (2, hi)):
            r = 2.0 if (net, image, li) == ("vgg", 2, 2) else 1.0
            rows.append({"network": net, "layer_index": li, "image": image, "concentration": c, "constraint": r})
    return pd.DataFrame(rows)


def test_concentration_gain_per_image_averages_networks_on_the_constraint():
    # image 0: (0.3 + 0.1) / 2 = 0.2; image 1: (-0.2 + 0.1) / 2 = -0.05; image 2: vgg off -> left out
    gain = page.concentration_gain_per_image(conc_rows(), tol=0.05)
    assert gain.index.tolist() == [0, 1] and gain.tolist() == pytest.approx([0.2, -0.05])


def test_concentrated_high_layers_evidence():
    setup = page.bird_setup(conc_mean_rows(), ["vgg", "alex"], 0.6, fraction=0.8)
    # 0.7 >= 0.48: met; 0.3 < 0.48: not met
    assert [c.met for c in setup] == [True, False] and setup[0].name == "vgg accuracy"
    ev = page.concentrated_high_layers_evidence(conc_rows(), conc_mean_rows(), ["vgg", "alex"], paper=0.6,
                                                fraction=0.8, tol=0.05, threshold=0.0, seed=0)
    assert ev["verdict"].n_units == 2 and ev["verdict"].effect == pytest.approx((0.2 - 0.05) / 2)
    assert ev["numbers"] == pytest.approx({"concentration_first_vgg": 0.1, "concentration_first_alex": 0.3,
                                           "concentration_last_vgg": 0.5, "concentration_last_alex": 0.1})
    assert ev["detail"] == "Mean last minus first per network: vgg +0.400, alex -0.200 nats."
    # 18 maps, one off the constraint: 17 of 18 >= 90 %
    assert ev["setup"][-1].name == "maps on the constraint" and ev["setup"][-1].met and ev["setup"][:2] == setup


# --- the CIFAR claims --------------------------------------------------------------------------------

def test_classifier_and_autoencoder_setup():
    cls = {20: FakeTrained("c20", 0.80), 56: FakeTrained("c56", 0.70)}
    cond = page.classifier_setup(cls, None, {20: 0.9}, fraction=0.85)
    # 0.80 >= 0.85 * 0.9 = 0.765 (met); depth 56 is not listed: 0.70 < 0.85 * 0.92 = 0.782 (not met)
    assert [c.met for c in cond] == [True, False]
    assert cond[1].paper.startswith("published 92.0% on the official set")
    # images 0 and 2 of (0, 1, 2, 3) -> values (0, 0, 2, 2): mean 1, unbiased variance 4 / 3
    ds = torch.utils.data.TensorDataset(torch.arange(4.0).repeat_interleave(2).reshape(4, 1, 1, 2), torch.zeros(4))
    assert page.image_variance(ds, [0, 2]) == pytest.approx(4 / 3)
    networks = pd.DataFrame({"network": ["ResNet-20", "ResNet-20", "ResNet-32"],
                             "task": ["classification", "auto-encoder", "auto-encoder"],
                             "test reconstruction MSE": [np.nan, 0.1, 0.2]})
    # r2 = 1 - 0.1 / (4/3) = 0.925 >= 0.9 (met); 1 - 0.2 / (4/3) = 0.85 (not met)
    ae = page.autoencoder_setup(networks, [20, 32], ds, [0, 2], 0.9)
    assert [c.met for c in ae] == [True, False] and ae[1].observed == "test MSE 0.2000 = 15% of the pixel variance"


def depth_regimes():
    """Calibrated rows of ResNet-20/32/44, blocks 1-2, images 0-6: last-block cid = 0.1 * step + 0.01 * image
    (step 0, 1, 2); image 6's ResNet-32 last block is off the constraint (r = 1.5)."""
    cid = {}
    for step, d in enumerate((20, 32, 44)):
        for i in range(7):
            cid[(d, 1, i)] = 0.0
            cid[(d, 2, i)] = 0.1 * step + 0.01 * i
    f = regime_rows(cid)
    f.loc[(f.network == "ResNet-32") & (f.block_index == 2) & (f.image == 6), "r"] = 1.5
    other = regime_rows(cid, beta=1e-3)  # another beta: ignored
    return pd.concat([f, other], ignore_index=True)


def test_last_blocks_and_slopes_on_constraint():
    last = page.last_blocks_at_beta(depth_regimes(), 1e-4)
    assert (last.block_index == 2).all() and len(last) == 21 and sorted(set(last.depth)) == [20, 32, 44]
    s = page.slopes_on_constraint(last, [20, 32, 44], tol=0.05)
    # image 6 left out (off the constraint at one depth); every other image rises 0.1 per depth step
    assert s.index.tolist() == [0, 1, 2, 3, 4, 5] and s.tolist() == pytest.approx([0.1] * 6)


def test_deeper_classifiers_evidence():
    ru_mean = mean_rows({("classification", d): [0.0, ru] for d, ru in ((20, 0.5), (32, 0.25), (44, 0.125))}, "ru")
    ev = page.deeper_classifiers_evidence(depth_regimes(), ru_mean, [20, 32, 44], [], deciding=lc.CALIBRATED,
                                          beta=1e-4, tol=0.05, threshold=0.0, seed=0, n_ru=2)
    v = ev["verdict"]
    assert v.verdict == "held" and v.n_units == 6 and v.effect == pytest.approx(0.1)
    # mean over all 7 images (0..6): 0.1 * step + 0.01 * 3
    assert ev["numbers"] == pytest.approx({f"cid_last_{lc.CALIBRATED}_resnet20": 0.03,
                                           f"cid_last_{lc.CALIBRATED}_resnet32": 0.13,
                                           f"cid_last_{lc.CALIBRATED}_resnet44": 0.23,
                                           "ru_last_cls_resnet20": 0.5, "ru_last_cls_resnet32": 0.25,
                                           "ru_last_cls_resnet44": 0.125})
    assert ev["detail"].startswith(f"Last-block CID ({lc.CALIBRATED}, mean over images): ResNet-20 0.0300, ")
    assert ev["detail"].endswith("RU at the last stage (classifiers, 2 images, weak decoders): "
                                 "0.500, 0.250, 0.125 nats.")
    # 21 last-block maps at the paper's beta, one off: 20 of 21
    assert ev["setup"][-1].observed.startswith("20 of 21")
    one = page.deeper_classifiers_evidence(depth_regimes()[lambda f: f.network == "ResNet-20"], ru_mean, [20], [],
                                           deciding=lc.CALIBRATED, beta=1e-4, tol=0.05, threshold=0.0, seed=0, n_ru=2)
    assert one["verdict"].verdict == "inconclusive" and "only one depth" in one["verdict"].design


def ae_cid_rows():
    """Auto-encoder rows of ResNet-20/32/44 (2 layers, 6 images): last-layer CID = 0.2 * step - 0.01 * image."""
    return pd.concat([cid_rows([[0.0] * 6, [0.2 * step - 0.01 * i for i in range(6)]], task="auto-encoder", depth=d)
                      for step, d in enumerate((20, 32, 44))], ignore_index=True)


def test_deeper_autoencoders_evidence():
    df = ae_cid_rows()
    df.loc[(df.depth == 44) & (df.layer_index == 1) & (df.image == 0), "constraint"] = 0.5  # left out
    last = page.autoencoder_last_layers(df, tol=0.05)
    assert len(last) == 17 and (last.cid == last.value).all()
    ru_mean = mean_rows({("auto-encoder", d): [0.0, 1.0] for d in (20, 32, 44)}, "ru")
    ev = page.deeper_autoencoders_evidence(df, ru_mean, [20, 32, 44], [], tol=0.05, threshold=0.0, seed=0)
    # images 1-5 keep every depth: slope 0.2 each
    assert ev["verdict"].n_units == 5 and ev["verdict"].effect == pytest.approx(0.2)
    # ResNet-44: images 1-5 -> 0.4 - 0.01 * mean(1..5) = 0.37; ResNet-20: -0.01 * 2.5 = -0.025
    assert ev["numbers"]["cid_last_ae_resnet44"] == pytest.approx(0.37)
    assert ev["numbers"]["cid_last_ae_resnet20"] == pytest.approx(-0.025)
    assert ev["numbers"]["ru_last_ae_resnet32"] == 1.0
    assert ev["detail"] == ("Last-layer CID of the auto-encoders (optimize, mean over images): "
                            "ResNet-20 -0.0250, ResNet-32 0.1750, ResNet-44 0.3700 nats.")


def test_per_image_curve_correlation_and_similarity_evidence():
    # image 0: cls (1, 2, 3), AE (2, 4, 6) -> r = 1; image 1: cls (1, 2, 3), AE (3, 2, 1) -> r = -1;
    # image 2: AE constant -> r undefined -> left out
    cls = cid_rows([[1, 1, 1], [2, 2, 2], [3, 3, 3]])
    ae = cid_rows([[2, 3, 5], [4, 2, 5], [6, 1, 5]], task="auto-encoder")
    df = pd.concat([cls, ae], ignore_index=True)
    assert page.per_image_curve_correlation(df, [20], tol=0.05) == pytest.approx([1.0, -1.0])
    # a map off the constraint leaves image 0 with 2 common layers: no correlation for it
    off = df.copy()
    off.loc[(off.task == "auto-encoder") & (off.layer == "l0") & (off.image == 0), "constraint"] = 2.0
    assert page.per_image_curve_correlation(off, [20], tol=0.05) == pytest.approx([-1.0])
    cid_mean = mean_rows({("classification", 20): [1, 2, 3], ("auto-encoder", 20): [2, 4, 6]}, "cid")
    ru_mean = mean_rows({("classification", 20): [1, 2, 3], ("auto-encoder", 20): [3, 2, 1]}, "ru")
    ev = page.similar_curves_evidence(df, cid_mean, ru_mean, [20], [], n_layers=3, tol=0.05, threshold=0.5, seed=0)
    assert ev["verdict"].n_units == 2 and ev["verdict"].effect == pytest.approx(0.0)
    assert ev["numbers"] == pytest.approx({"pearson_cid_mean_curves_resnet20": 1.0,
                                           "pearson_ru_mean_curves_resnet20": -1.0, "n_layers": 3})
    assert ev["detail"] == "Pearson r of the mean curves (not deciding): ResNet-20 1.00 over 3 layers; RU curves -1.00."
    two = page.similar_curves_evidence(df, cid_mean, ru_mean, [20], [], n_layers=2, tol=0.05, threshold=0.5, seed=0)
    assert two["verdict"].verdict == "inconclusive" and "only 2 measured layers" in two["verdict"].design


def test_per_image_block_slope_and_rising_blocks_evidence():
    # calibrated slopes at beta 1e-4: image 0 on both nets (0.1, 0.3) -> 0.2; image 1 on one net only -> out
    slopes = pd.DataFrame([
        {"network": "ResNet-20", "estimator": lc.CALIBRATED, "beta": 1e-4, "image": 0, "slope": 0.1},
        {"network": "ResNet-32", "estimator": lc.CALIBRATED, "beta": 1e-4, "image": 0, "slope": 0.3},
        {"network": "ResNet-20", "estimator": lc.CALIBRATED, "beta": 1e-4, "image": 1, "slope": 0.5},
        {"network": "ResNet-32", "estimator": lc.BARE, "beta": 1e-4, "image": 1, "slope": 9.0},
        {"network": "ResNet-32", "estimator": lc.CALIBRATED, "beta": 1e-3, "image": 1, "slope": 9.0}])
    s = page.per_image_block_slope(slopes, lc.CALIBRATED, 1e-4, 2)
    assert s.index.tolist() == [0] and s.tolist() == pytest.approx([0.2])
    trends = pd.DataFrame([{"network": "ResNet-20", "estimator": lc.BARE, "beta": 1e-4, "slope (nats/block)": 0.5},
                           {"network": "ResNet-20", "estimator": lc.BARE, "beta": 1e-3, "slope (nats/block)": 9.0}])
    regimes = regime_rows({(20, 1, 0): 0.0}, r=1.0)
    ev = page.rising_blocks_evidence(slopes, regimes, trends, [20, 32], [], deciding=lc.CALIBRATED, beta=1e-4,
                                     n_layers=3, tol=0.05, threshold=0.0, seed=0)
    assert ev["verdict"].n_units == 1 and ev["verdict"].effect == pytest.approx(0.2)
    assert ev["numbers"] == {f"slope_{lc.BARE}_ResNet-20": 0.5}
    assert ev["detail"] == f"Per network and regime (mean slope, nats per block): ResNet-20 {lc.BARE} +0.5000."
    few = page.rising_blocks_evidence(slopes, regimes, trends, [20, 32], [], deciding=lc.CALIBRATED, beta=1e-4,
                                      n_layers=2, tol=0.05, threshold=0.0, seed=0)
    assert few["verdict"].verdict == "inconclusive" and "only 2 measured layers" in few["verdict"].design


def test_data_texts():
    P = SimpleNamespace(
        estimator=SimpleNamespace(n_images=SimpleNamespace(regimes=16, regimes_beta=None, paper_loop=None)),
        data=SimpleNamespace(cifar=SimpleNamespace(dataset="cifar10"),
                             cub=SimpleNamespace(dataset="cub", concentration_crop="box1.5")),
        networks=SimpleNamespace(cifar=SimpleNamespace(weights="published"),
                                 cub=SimpleNamespace(width=0.5, weights=None)),
        training=SimpleNamespace(cifar_autoencoder=SimpleNamespace(epochs=3)))
    assert page.cifar_data_text(P, [20, 32], "closed form, calibrated", 8) == (
        "cifar10 test set; ResNet-20/32 classifiers (published weights): closed form, calibrated on 16 images, "
        "optimize on 8; auto-encoders (3 epochs) on 8")
    assert page.bird_data_text(P, ["vgg16", "alexnet"], 5) == (
        "cub test set cropped by the box1.5 box, 5 images; vgg16, alexnet (width 0.5, weights random init, "
        "trained here)")

"""Hand-derived checks of the page module behind ``01_maps`` (the numbers its tables and verdicts use)."""

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from deepinfo.book.pages import p01_maps as page
from deepinfo.book.verdicts import HELD, INCONCLUSIVE
from deepinfo.result import InfoMaps


def _maps(pixelwise, ratios, kind="cid", layers=("a", "b")):
    """InfoMaps from ``pixelwise`` [L, B, 2, 2] on a 2x2 grid over 4x4 images, ratios [L, B]."""
    pix = torch.as_tensor(pixelwise, dtype=torch.float32)
    L, B = pix.shape[:2]
    z = torch.zeros(L, B)
    return InfoMaps(layers=list(layers), pixelwise=pix, constraint=torch.as_tensor(ratios, dtype=torch.float32),
                    constraint_se=z, sigma=pix.exp(), delta_f2=z + 1, n_capped=z.long(), kind=kind,
                    method="linear", beta=1e-4, sigma_max=10.0, grid=(2, 2), image_size=(4, 4), seed=0)


def test_network_overview_one_row_per_network():
    nets = {"vgg16": dict(data="CUB (synthetic)", accuracy=0.25, x=torch.zeros(3, 3, 8, 8), layers=["a", "b"],
                          ru_layers=["b"])}
    out = page.network_overview(nets)
    # 3 images of 8 px; the layers joined by ", "
    assert out.to_dict("records") == [dict(network="vgg16", data="CUB (synthetic)", test_accuracy=0.25, images=3,
                                           image_size=8, cid_layers="a, b", ru_layers="b")]


def test_baseline_magnitudes_mean_abs_per_image_with_the_layer_position():
    a = torch.tensor([[[1.0, -3.0], [0.0, 4.0]], [[2.0, 2.0], [-2.0, 2.0]]])  # [B=2, 2, 2]
    nets = {"n": dict(layers=["l0", "l1", "l2"], x=torch.zeros(2, 3, 4, 4),
                      baselines={("gradcam", "l2"): a, ("gradient", "l1"): -a})}
    out = page.baseline_magnitudes(nets)
    # image 0: (1 + 3 + 0 + 4) / 4 = 2; image 1: (2 + 2 + 2 + 2) / 4 = 2, the same for -a
    assert list(out.columns) == ["network", "method", "layer", "layer_index", "image", "mean_abs"]
    assert out.layer_index.tolist() == [2, 2, 1, 1]  # positions of l2 and l1 in the layers
    assert out.method.tolist() == ["gradcam", "gradcam", "gradient", "gradient"]
    assert out.mean_abs.tolist() == pytest.approx([2.0, 2.0, 2.0, 2.0])
    nets["n"]["baselines"] = {("cam", "l0"): torch.tensor([[[1.0, 1.0], [1.0, 5.0]], [[0.0, 0.0], [0.0, -1.0]]])}
    # image 0: 8 / 4 = 2; image 1: 1 / 4 = 0.25
    assert page.baseline_magnitudes(nets).mean_abs.tolist() == pytest.approx([2.0, 0.25])


def test_layer_values_adds_depth_morans_i_and_concentration():
    # layer a: image 0 a checkerboard (Moran's I -1), image 1 two rows (I 0); layer b: image 0 top-left cell 0,
    # the other cells 3 -> concentration with the top-left cell as foreground = 3 - 0 = 3
    cid = _maps([[[[1, 0], [0, 1]], [[1, 1], [0, 0]]], [[[0, 3], [3, 3]], [[2, 2], [2, 6]]]], [[1.0, 1.0], [1.0, 1.0]])
    ru = _maps([[[[0, 1], [1, 0]]], [[[5, 1], [1, 1]]]], [[1.0], [1.0]], kind="ru")  # RU on the first image only
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[:, :2, :2] = True  # foreground: the top-left cell
    out = page.layer_values({"n": dict(cid=cid, ru=ru, masks=masks)})
    assert len(out) == 4 + 2 and out.columns[0] == "network"
    assert out.relative_depth.tolist() == [0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    # Moran's I of [[1, 0], [0, 1]]: z = +-0.5, every neighbour pair -0.25, 4 pairs -> -1 / (4 * 0.25) * 4/4 = -1;
    # of [[1, 1], [0, 0]]: horizontal pairs +0.5, vertical -0.5 -> 0
    assert out.morans_i.iloc[:2].tolist() == pytest.approx([-1.0, 0.0])
    # concentration = mean(background) - foreground: layer a image 0 (0+0+1)/3 - 1 = -2/3; image 1 (1+0+0)/3 - 1;
    # layer b image 0 3 - 0, image 1 (2+2+6)/3 - 2 = 4/3; RU: a (1+1+0)/3 - 0, b 1 - 5
    assert out.concentration.tolist() == pytest.approx([-2 / 3, -2 / 3, 3.0, 4 / 3, 2 / 3, -4.0])
    no_masks = page.layer_values({"n": dict(cid=cid, ru=ru, masks=None)})
    assert no_masks.concentration.isna().all()


def test_per_layer_means_average_over_images_in_first_seen_order():
    values = pd.DataFrame(dict(network=["z", "z", "a", "a"], kind="cid", layer_index=[0, 0, 0, 0],
                               layer=["l", "l", "l", "l"], value=[1.0, 3.0, 5.0, 7.0], constraint=[1.0, 0.8, 1, 1],
                               n_capped=[0, 2, 0, 0], concentration=[0.5, 1.5, np.nan, np.nan],
                               morans_i=[0.2, 0.4, 0.0, 1.0]))
    out = page.per_layer_means(values)
    assert out.network.tolist() == ["z", "a"]  # not sorted
    # z: value (1+3)/2 = 2, constraint 0.9, n_capped 1, concentration 1, morans_i 0.3
    assert out.iloc[0][["value", "constraint", "n_capped", "concentration", "morans_i"]].tolist() == pytest.approx(
        [2.0, 0.9, 1.0, 1.0, 0.3])
    assert out.iloc[1].value == 6.0 and math.isnan(out.iloc[1].concentration)


def test_baseline_layer_means_and_table():
    mags = pd.DataFrame(dict(network="n", method=["gradcam", "gradcam", "cam", "gradcam", "gradcam"],
                             layer=["l1", "l1", "l1", "l0", "l0"], layer_index=[1, 1, 1, 0, 0], image=[0, 1, 0, 0, 1],
                             mean_abs=[1.0, 3.0, 10.0, 0.5, 1.5]))
    means = page.baseline_layer_means(mags)
    # gradcam l1 (1+3)/2 = 2, cam l1 10, gradcam l0 (0.5+1.5)/2 = 1
    assert list(zip(means.method, means.layer, means.mean_abs)) == [("gradcam", "l1", 2.0), ("cam", "l1", 10.0),
                                                                     ("gradcam", "l0", 1.0)]
    table = page.baseline_layer_table(means)
    assert table.layer.tolist() == ["l0", "l1"]  # sorted by layer_index
    assert table.gradcam.tolist() == [1.0, 2.0]
    assert math.isnan(table.cam[0]) and table.cam[1] == 10.0


def test_layer_spread_baselines_as_ratios_and_cid_in_nats():
    layer_mag = pd.DataFrame(dict(network="n", method=["g", "g", "g", "c", "z", "z"],
                                  mean_abs=[2.0, 8.0, 4.0, 5.0, 0.0, 1.0]))
    per_layer = pd.DataFrame(dict(network="n", kind=["cid", "cid", "ru"], value=[-1.0, 0.5, 9.0]))
    frame, spread = page.layer_spread({"n": {}}, layer_mag, per_layer)
    # g: 8 / 2 = 4; c: one layer only, left out; z: smallest 0 -> NaN; CID: 0.5 - (-1) = 1.5 nats, factor e^1.5
    assert spread == {"n": 1.5}
    assert frame.method.tolist() == ["g", "z", "CID"]
    assert frame.max_over_min_layer_mean.iloc[0] == 4.0 and math.isnan(frame.max_over_min_layer_mean.iloc[1])
    assert frame.max_over_min_layer_mean.iloc[2] == pytest.approx(math.exp(1.5))
    assert frame.spread_nats.iloc[2] == 1.5 and math.isnan(frame.spread_nats.iloc[0])


def _values(network, kind, lowest, highest, ratios_high=None):
    """A layer_values-like frame: two layers (0 and 1) of one network and kind, one row per image."""
    n = len(lowest)
    ratios_high = [1.0] * n if ratios_high is None else ratios_high
    rows = [dict(network=network, kind=kind, layer="lo", layer_index=0, image=i, constraint=1.0,
                 concentration=lowest[i], morans_i=-lowest[i]) for i in range(n)]
    rows += [dict(network=network, kind=kind, layer="hi", layer_index=1, image=i, constraint=ratios_high[i],
                  concentration=highest[i], morans_i=-highest[i]) for i in range(n)]
    return pd.DataFrame(rows)


def test_layer_rises_per_network_and_kind():
    lo = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    hi = [1.0, 2.0, 3.0, 4.0, 5.0, 100.0]
    # image 5 of the CID maps is off the constraint (r = 2): the rises are 1..5, mean 3, all > 0 -> held
    values = pd.concat([_values("m", "cid", lo, hi, [1, 1, 1, 1, 1, 2.0]), _values("m", "ru", lo, hi),
                        _values("p", "cid", lo, hi), _values("p", "ru", lo, hi)], ignore_index=True)
    nets = {"m": dict(masks=torch.ones(1)), "p": dict(masks=None)}
    rises, ratios, parts = page.layer_rises(values, nets, tol=0.05, min_rise=0.0)
    assert list(parts["concentration"]) == ["m CID", "m RU"]  # p has no masks: no concentration
    assert list(parts["morans_i"]) == ["m CID", "m RU", "p CID", "p RU"]
    v = parts["concentration"]["m CID"]
    assert v.verdict == HELD and v.effect == pytest.approx(3.0) and v.n_units == 5
    assert parts["concentration"]["m RU"].effect == pytest.approx(115 / 6)  # (1+2+3+4+5+100) / 6
    assert parts["morans_i"]["p CID"].effect == pytest.approx(-115 / 6)  # morans_i is minus the value here
    assert len(rises) == 6 * 6 and rises.quantity.tolist()[:12] == ["concentration"] * 12
    assert len(ratios["concentration"]) == 2 and ratios["concentration"][0].tolist() == [1] * 6 + [1, 1, 1, 1, 1, 2]


def test_layer_rises_with_every_map_off_the_constraint_is_undecided():
    values = pd.concat([_values("m", "cid", [0, 0], [1, 1], [3.0, 3.0]), _values("m", "ru", [0, 0], [1, 1])])
    _, _, parts = page.layer_rises(values, {"m": dict(masks=None)}, tol=0.05, min_rise=0.0)
    v = parts["morans_i"]["m CID"]
    assert v.verdict == INCONCLUSIVE and v.n_units == 0 and "no image of m has both CID maps" in v.design


def _profile(dataset="synthetic"):
    return SimpleNamespace(networks=SimpleNamespace(cub=SimpleNamespace(weights=None, width=16),
                                                    cifar=SimpleNamespace(weights="trained", width=16)),
                           data=SimpleNamespace(cub=SimpleNamespace(dataset=dataset),
                                                cifar=SimpleNamespace(dataset="synthetic")))


def test_setup_conditions_per_claim():
    nets = {"vgg16": dict(accuracy=0.7, x=torch.zeros(4, 3, 32, 32), masks=torch.ones(1),
                          decoder_mse={"a": 0.01}, pixel_variance=0.1),
            "resnet20": dict(accuracy=0.5, x=torch.zeros(4, 3, 16, 16), masks=None,
                             decoder_mse={"b": 0.06}, pixel_variance=0.1)}
    ratios = {"concentration": [np.array([1.0, 1.0])], "morans_i": [np.array([1.0, 1.0]), np.array([1.0, 2.0])]}
    setups = page.setup_conditions(_profile("cub200"), nets, ratios, cub_arch="vgg16", depth=20,
                                   paper_accuracy={"cub": (0.75, "cub words"), "cifar": (0.9, "cifar words")},
                                   accuracy_fraction=0.8, max_mse_share=0.5, tol=0.05)
    conc = setups["concentration"]  # only vgg16 has masks: 3 conditions + the constraint
    assert [c.name for c in conc] == ["VGG-16 (from scratch, width 16, 32 px) accuracy", "VGG-16 images",
                                      "VGG-16 decoders reconstruct", "maps on the constraint"]
    # 0.7 >= 0.8 * 0.75 = 0.6 -> met; cub200 is real; MSE 0.01 <= 0.5 * 0.1; 2 of 2 on the constraint
    assert [c.met for c in conc] == [True, True, True, True]
    assert conc[1].observed == "4 cub200 test images, object masks from the boxes"
    mor = setups["morans_i"]
    assert len(mor) == 7 and mor[3].name == "ResNet-20 (trained weights) accuracy"
    # ResNet: 0.5 < 0.8 * 0.9 = 0.72; synthetic images; MSE 0.06 > 0.05; 3 of 4 maps on the constraint < 90 %
    assert [c.met for c in mor] == [True, True, True, False, False, False, False]
    assert mor[1].observed == "4 cub200 test images"  # no masks named for Moran's I
    assert page.setup_conditions(_profile(), {"r": dict(masks=None, accuracy=0.9, x=torch.zeros(1, 3, 4, 4),
                                                         decoder_mse={"a": 0.0}, pixel_variance=1.0)},
                                 {"concentration": [], "morans_i": [np.ones(2)]}, cub_arch="vgg16", depth=20,
                                 paper_accuracy={"cub": (0.75, ""), "cifar": (0.9, "")}, accuracy_fraction=0.8,
                                 max_mse_share=0.5, tol=0.05)["concentration"] == []


def test_rise_summary_counts_and_summarises_the_differences():
    rises = pd.DataFrame(dict(quantity="q", network="n", kind=["CID", "CID", "CID", "RU"],
                              on_constraint=[True, True, False, True], difference=[1.0, 3.0, np.nan, -2.0]))
    out = page.rise_summary(rises)
    # CID: 3 images, 2 on the constraint, mean (1+3)/2 = 2, min 1, max 3; RU: one image, -2
    assert out.iloc[0][["images", "on_constraint", "mean_difference", "min_difference", "max_difference"]].tolist() \
        == [3, 2, 2.0, 1.0, 3.0]
    assert out.iloc[1].mean_difference == -2.0


def test_rise_numbers_and_data_text():
    parts = {"vgg16 CID": SimpleNamespace(effect=0.25), "vgg16 RU": SimpleNamespace(effect=-1.0)}
    assert page.rise_numbers(parts, "Moran's I rise") == {"vgg16 CID Moran's I rise": 0.25,
                                                          "vgg16 RU Moran's I rise": -1.0}
    P = SimpleNamespace(estimator=SimpleNamespace(n_images=SimpleNamespace(ru=2)))
    nets = {"vgg16": dict(data="CUB (x)", x=torch.zeros(4, 3, 8, 8), layers=["a", "b"], ru_layers=["b"]),
            "resnet20": dict(data="CIFAR (y)", x=torch.zeros(3, 3, 8, 8), layers=["c"], ru_layers=["c"])}
    assert page.data_text(P, nets) == ("vgg16: CUB (x), 4 test images (2 for RU), layers a, b (RU at b); "
                                       "resnet20: CIFAR (y), 3 test images (2 for RU), layers c (RU at c)")

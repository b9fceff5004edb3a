"""deepinfo.book.pages.p13_adversarial: the arithmetic behind the adversarial-training page (Fig. 10).

Every expected number below is derived by hand from the tiny frames built in each test.
"""

import math
from types import SimpleNamespace as NS

import numpy as np
import pandas as pd
import pytest

from deepinfo.book.pages import p13_adversarial as page
from deepinfo.book.verdicts import HELD, INCONCLUSIVE

TOL = 0.05


def per_image_frame():
    """Two nets x layers (conv1, conv2) x images (7, 9).

    cid:            adversarial conv1: 1.0, 2.0  conv2: 3.0, 5.0
                    normal      conv1: 0.5, 1.0  conv2: 2.0, 5.5
    concentration:  adversarial conv1: 0.4, 0.2  conv2: 0.1, 0.3
                    normal      conv1: 0.1, 0.1  conv2: 0.2, 0.0
    ratio:          all 1.0 except the normal net's (conv2, image 9) = 1.2 (off the constraint)
    """
    cid = {"adversarial": [[1.0, 2.0], [3.0, 5.0]], "normal": [[0.5, 1.0], [2.0, 5.5]]}
    conc = {"adversarial": [[0.4, 0.2], [0.1, 0.3]], "normal": [[0.1, 0.1], [0.2, 0.0]]}
    rows = []
    for net in ("adversarial", "normal"):
        for l, layer in enumerate(("conv1", "conv2")):
            for b, image in enumerate((7, 9)):
                ratio = 1.2 if (net == "normal" and layer == "conv2" and image == 9) else 1.0
                rows.append({"network": net, "layer": layer, "layer_index": l, "image": image,
                             "cid": cid[net][l][b], "concentration": conc[net][l][b], "ratio": ratio, "n_capped": 0})
    df = pd.DataFrame(rows)
    df["on_constraint"] = np.abs(df["ratio"] - 1) <= TOL
    return df


def test_layer_means_average_over_images():
    m = page.layer_means(per_image_frame())
    assert list(zip(m.network, m.layer)) == [("adversarial", "conv1"), ("adversarial", "conv2"),
                                             ("normal", "conv1"), ("normal", "conv2")]
    assert m.cid.tolist() == pytest.approx([1.5, 4.0, 0.75, 3.75])
    assert m.concentration.tolist() == pytest.approx([0.3, 0.2, 0.1, 0.1])
    assert m.ratio.tolist() == pytest.approx([1.0, 1.0, 1.0, 1.1])


def test_paired_differences_drop_pairs_off_the_constraint():
    d = page.paired_differences(per_image_frame())
    # adversarial - normal: conv1 image 7: 0.5, image 9: 1.0; conv2 image 7: 1.0; conv2 image 9: dropped
    assert list(zip(d.layer, d.image)) == [("conv1", 7), ("conv1", 9), ("conv2", 7)]
    assert d.d_cid.tolist() == pytest.approx([0.5, 1.0, 1.0])
    assert d.d_concentration.tolist() == pytest.approx([0.3, 0.1, -0.1])


def test_difference_per_layer_gives_the_mean_and_its_standard_error():
    p = page.difference_per_layer(page.paired_differences(per_image_frame()))
    # conv1: d_cid 0.5, 1.0 -> mean 0.75, sd (ddof 1) = 0.5 / sqrt(2), SE = sd / sqrt(2) = 0.25
    #        d_concentration 0.3, 0.1 -> mean 0.2, SE 0.1; conv2: one image, SE undefined (NaN)
    assert p.layer.tolist() == ["conv1", "conv2"] and p.n_images.tolist() == [2, 1]
    assert p.d_cid.tolist() == pytest.approx([0.75, 1.0])
    assert p.d_cid_se[0] == pytest.approx(0.25) and math.isnan(p.d_cid_se[1])
    assert p.d_concentration.tolist() == pytest.approx([0.2, -0.1]) and p.d_concentration_se[0] == pytest.approx(0.1)
    assert page.layers_positive(p, "cid") == 2 and page.layers_positive(p, "concentration") == 1


def test_difference_per_image_averages_the_layers_left():
    d = page.difference_per_image(page.paired_differences(per_image_frame()))
    # image 7: d_cid (0.5 + 1.0) / 2, d_conc (0.3 - 0.1) / 2 over 2 layers; image 9: conv1 only
    assert d.index.tolist() == [7, 9]
    assert d.d_cid.tolist() == pytest.approx([0.75, 1.0]) and d.d_concentration.tolist() == pytest.approx([0.1, 0.1])
    assert d.n_layers.tolist() == [2, 1]


def test_pgd_gain_and_its_binomial_standard_error():
    gain, se = page.pgd_gain(0.3, 0.1, 100)
    # sqrt(0.3 x 0.7 / 100 + 0.1 x 0.9 / 100) = sqrt(0.0021 + 0.0009) = sqrt(0.003)
    assert gain == pytest.approx(0.2) and se == pytest.approx(math.sqrt(0.003))


def accuracy_frame(pgd_adv=0.3, pgd_norm=0.1, clean_adv=0.4, clean_norm=0.5):
    return pd.DataFrame({"network": ["adversarial", "normal"], "clean_accuracy": [clean_adv, clean_norm],
                         "pgd_accuracy": [pgd_adv, pgd_norm]})


def test_accuracy_numbers_read_both_nets():
    assert page.accuracy_numbers(accuracy_frame()) == {"pgd_acc_adversarial": 0.3, "pgd_acc_normal": 0.1,
                                                       "clean_acc_adversarial": 0.4, "clean_acc_normal": 0.5}


def profile():
    return NS(adversarial=NS(arch="alexnet", recipe=None), training=NS(cub=NS(epochs=2)),
              data=NS(cub=NS(num_classes=5, image_size=32, dataset="synthetic", concentration_crop="1.5x")),
              networks=NS(cub=NS(width=8)), estimator=NS(tol=TOL))


def test_setup_conditions_check_robustness_accuracy_and_the_constraint():
    attack = {"epsilon": 0.01, "steps": 10, "step_size": 0.001}
    c = page.setup_conditions(profile(), accuracy_frame(), attack, 100, per_image_frame(), robustness_z=2.0,
                              paper_accuracy=0.55, accuracy_fraction=0.8)
    # gain 0.2 > 2 x sqrt(0.003) = 0.11: met; clean 0.5 >= 0.8 x 0.55 = 0.44: met; 7 of 8 maps < 0.9 x 8: not met
    assert [x.met for x in c] == [True, True, False]
    assert c[0].observed.startswith("PGD accuracy (eps 0.01, 10 steps of 0.001) 30.0% adversarial vs 10.0% normal: "
                                    "gain +20.0% (SE 5.5%")
    assert c[1].name == "alexnet accuracy" and "2 epochs" in c[1].observed
    # a gain within 2 SE: 0.15 - 0.1 = 0.05 < 2 x sqrt(0.15 x 0.85 / 100 + 0.0009) = 0.094
    c = page.setup_conditions(profile(), accuracy_frame(pgd_adv=0.15), attack, 100, per_image_frame(),
                              robustness_z=2.0, paper_accuracy=0.55, accuracy_fraction=0.8)
    assert not c[0].met


def test_decide_difference_on_the_per_image_values():
    diff = pd.DataFrame({"d_cid": [0.1, 0.2, 0.15, 0.12, 0.18, np.nan], "d_concentration": [np.nan] * 6})
    v = page.decide_difference(diff, "cid", threshold=0.0, side="greater", unit="images", confidence=0.95)
    # five finite values, all above 0: mean 0.75 / 5
    assert v.verdict == HELD and v.n_units == 5 and v.effect == pytest.approx(0.15)
    v = page.decide_difference(diff, "concentration", threshold=0.0, side="greater", unit="images", confidence=0.95)
    assert v.verdict == INCONCLUSIVE and v.design == "no image has a pair of concentration maps on the constraint"


def test_claim_evidence_numbers_and_detail():
    per_image = per_image_frame()
    paired = page.difference_per_layer(page.paired_differences(per_image))
    v = page.decide_difference(page.difference_per_image(page.paired_differences(per_image)), "cid",
                               threshold=0.0, side="greater", unit="images", confidence=0.95)
    e = page.claim_evidence("cid", v, paired, accuracy_frame(), per_image)
    assert list(e["numbers"]) == ["mean_difference", "layers_positive", "n_layers", "d_cid_conv1", "d_cid_conv2",
                                  "pgd_acc_adversarial", "pgd_acc_normal", "clean_acc_adversarial",
                                  "clean_acc_normal", "n_maps_off_constraint"]
    assert e["numbers"]["mean_difference"] == pytest.approx(0.875)  # (0.75 + 1.0) / 2 images
    assert e["numbers"]["d_cid_conv1"] == pytest.approx(0.75) and e["numbers"]["layers_positive"] == 2
    assert e["numbers"]["n_maps_off_constraint"] == 1
    assert "conv1: +0.7500, conv2: +1.0000; positive at 2 of 2 layers. 1 of 8 maps off" in e["detail"]


def test_data_text_names_the_sizes():
    assert page.data_text(profile(), 4, 100) == (
        "synthetic birds (5 classes, 32 px); 4 test images (1.5x crops) for CID, 100 for accuracy; alexnet width 8, "
        "PGD-trained vs normally trained, 2 epochs each")

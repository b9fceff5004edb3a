"""Evaluation protocols: box recall (Schulz et al. 2020) and descriptive accuracy (the paper's
Fig. 6) on constructed cases with known answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepinfo.attribution.evaluation import accuracy_auc, descriptive_accuracy, gaussian_blur, localization_recall


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _box_masks(boxes, h, w):
    mask = torch.zeros(len(boxes), h, w, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        mask[i, y0:y1, x0:x1] = True
    return mask


BOXES = torch.tensor([[2, 3, 10, 9], [0, 0, 5, 16], [8, 12, 16, 16]])  # (x0, y0, x1, y1), 16x16 images


# ----------------------------------------------------------------------------- localization recall


def test_recall_is_one_for_the_mask_and_zero_for_its_inverse():
    mask = _box_masks(BOXES.tolist(), 16, 16)
    torch.testing.assert_close(localization_recall(mask.float(), mask), torch.ones(3))
    torch.testing.assert_close(localization_recall(-mask.float(), mask), torch.zeros(3))
    # boxes and the equivalent masks agree, on any importance
    imp = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(localization_recall(imp, BOXES), localization_recall(imp, mask))


def test_recall_counts_the_top_n_pixels():
    # one 2x2 box (n = 4); importance ranks 3 box pixels and 1 outside pixel highest
    imp = torch.zeros(1, 4, 4)
    imp[0, 0, 0] = imp[0, 0, 1] = imp[0, 1, 0] = 5.0  # inside
    imp[0, 3, 3] = 4.0                                  # outside, beats the 4th box pixel
    imp[0, 1, 1] = 3.0                                  # inside, 5th
    rec = localization_recall(imp, torch.tensor([[0, 0, 2, 2]]))
    torch.testing.assert_close(rec, torch.tensor([0.75]))


def test_random_importance_gives_about_the_box_fraction():
    gen = torch.Generator().manual_seed(0)
    b = 200
    boxes = torch.tensor([[4, 4, 20, 12]] * b)  # 16 * 8 = 128 of 32 * 32 = 1024 pixels
    rec = localization_recall(torch.rand(b, 32, 32, generator=gen), boxes)
    assert abs(float(rec.mean()) - 0.125) < 0.01
    assert rec.shape == (b,)


def test_ties_are_broken_deterministically_and_without_a_corner_bias():
    # a constant map: every pixel ties. A row-major tie-break would give 0 for a box at the
    # bottom; the fixed random order gives about the box fraction, the same on every call.
    boxes = torch.tensor([[0, 24, 32, 32]] * 8)  # bottom quarter of 32x32
    flat = torch.zeros(8, 32, 32)
    r1 = localization_recall(flat, boxes)
    torch.testing.assert_close(r1, localization_recall(flat, boxes), rtol=0, atol=0)
    assert abs(float(r1[0]) - 0.25) < 0.06
    assert torch.equal(r1, r1[:1].expand(8))  # one tie order shared by all images


def test_low_resolution_importance_is_upsampled():
    # a 4x4 map marking the cell-aligned box, at 16x16 image size (nearest keeps cells whole)
    coarse = torch.zeros(1, 4, 4)
    coarse[0, 1:3, 0:2] = 1.0
    box = torch.tensor([[0, 4, 8, 12]])
    torch.testing.assert_close(localization_recall(coarse, box, size=(16, 16), upsample="nearest"), torch.ones(1))
    mask = _box_masks(box.tolist(), 16, 16)
    torch.testing.assert_close(localization_recall(coarse, mask, upsample="nearest"), torch.ones(1))
    # bilinear smooths the edges but the cells' centres still rank first
    assert float(localization_recall(coarse, mask)) > 0.7


def test_recall_bad_input():
    mask = _box_masks(BOXES.tolist(), 16, 16)
    with pytest.raises(ValueError, match="empty"):
        localization_recall(torch.rand(1, 16, 16), torch.zeros(1, 16, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="leave the 16x16 image"):
        localization_recall(torch.rand(1, 16, 16), torch.tensor([[0, 0, 17, 4]]))
    with pytest.raises(ValueError, match="empty or leave"):
        localization_recall(torch.rand(1, 16, 16), torch.tensor([[5, 0, 5, 4]]))
    with pytest.raises(ValueError, match="mask has 3 images but importance has 2"):
        localization_recall(torch.rand(2, 16, 16), mask)
    with pytest.raises(ValueError, match="3 boxes but importance has 2"):
        localization_recall(torch.rand(2, 16, 16), BOXES)
    with pytest.raises(ValueError, match="NaN"):
        localization_recall(torch.full((3, 16, 16), float("nan")), mask)
    with pytest.raises(ValueError, match="boxes"):
        localization_recall(torch.rand(3, 16, 16), torch.zeros(3, 16, 16))  # float mask
    with pytest.raises(ValueError, match="size"):
        localization_recall(torch.rand(3, 16, 16), mask, size=(8, 8))


# ----------------------------------------------------------------------------- descriptive accuracy


class RegionModel(nn.Module):
    """Looks only at the top-left 4x4 pixels: logits = (mean of channel 1, mean of channel 0) there.
    Class 1 images are bright in channel 0 there, class 0 images in channel 1; elsewhere noise."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))  # gives the model a device and a train flag

    def forward(self, x):
        region = x[:, :2, :4, :4].mean(dim=(2, 3))
        return torch.stack([region[:, 1], region[:, 0]], dim=1) + 0 * self.dummy


def _region_data(n=20, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 16, 16, generator=gen) * 0.5
    labels = torch.arange(n) % 2
    images[labels == 1, 0, :4, :4] = 1.0
    images[labels == 0, 1, :4, :4] = 1.0
    region = torch.zeros(16, 16)
    region[:4, :4] = 1.0
    return images, labels, region


FRACTIONS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)


def test_region_ranked_first_keeps_accuracy_and_reverse_collapses():
    images, labels, region = _region_data()
    model = RegionModel().train()
    noise = torch.rand(20, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.1
    good = descriptive_accuracy(model, images, labels, (region + noise).expand(20, 16, 16), FRACTIONS, fill="zero")
    # the region is the top 6.25 % of pixels: it survives every removal up to 90 %
    assert good["accuracy"].tolist() == [1.0] * 6
    assert good["n_removed"].tolist() == [0, 26, 77, 128, 179, 230]
    assert good.attrs["auc"] == 1.0
    bad = descriptive_accuracy(model, images, labels, (-region + noise).expand(20, 16, 16), FRACTIONS, fill="zero")
    # removing 10 % already removes the whole region: both logits 0, argmax 0, chance accuracy
    assert bad["accuracy"].tolist() == [1.0, 0.5, 0.5, 0.5, 0.5, 0.5]
    expected_auc = (0.1 * (1.0 + 0.5) / 2 + 0.8 * 0.5) / 0.9
    assert bad.attrs["auc"] == pytest.approx(expected_auc)
    assert accuracy_auc(bad) == pytest.approx(expected_auc)
    assert model.training  # left as found
    # removing the MOST important first (Warnecke et al.'s direction) swaps the two
    most = descriptive_accuracy(model, images, labels, (region + noise).expand(20, 16, 16), FRACTIONS,
                                fill="zero", order="most")
    assert most["accuracy"].tolist() == [1.0, 0.5, 0.5, 0.5, 0.5, 0.5]


def test_descriptive_accuracy_with_coarse_importance_and_small_batches():
    images, labels, _ = _region_data()
    coarse = torch.zeros(20, 4, 4)
    coarse[:, 0, 0] = 1.0  # the top-left 4x4 cell of a 4x4 grid on 16x16 images
    for batch_size in (3, 64):
        frame = descriptive_accuracy(RegionModel(), images, labels, coarse, FRACTIONS, fill="zero",
                                     batch_size=batch_size, upsample="nearest")
        assert frame["accuracy"].tolist() == [1.0] * 6
    frame = descriptive_accuracy(RegionModel(), images, labels, -coarse, FRACTIONS, fill="zero",
                                 upsample="nearest")
    assert frame["accuracy"].tolist() == [1.0] + [0.5] * 5


class Recorder(nn.Module):
    """Records its inputs; predicts class 0."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.zeros(x.shape[0], 2)


def test_fill_values():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 8, 8, generator=gen)
    imp = torch.rand(2, 8, 8, generator=gen)
    lowest = imp.flatten(1).argsort(dim=1)[:, :32]  # the half removed at fraction 0.5
    removed = torch.zeros(2, 64, dtype=torch.bool)
    removed.scatter_(1, lowest, True)
    removed = removed.view(2, 1, 8, 8)
    blurred = gaussian_blur(images, 1.5)
    cases = {
        "mean": images.mean(dim=(2, 3), keepdim=True).expand_as(images),
        "zero": torch.zeros_like(images),
        "blur": blurred,
        0.25: torch.full_like(images, 0.25),
    }
    for fill, expected in cases.items():
        rec = Recorder()
        descriptive_accuracy(rec, images, torch.zeros(2, dtype=torch.long), imp, (0.0, 0.5), fill=fill, blur_sigma=1.5)
        torch.testing.assert_close(rec.seen[0], images)
        torch.testing.assert_close(rec.seen[1], torch.where(removed, expected, images))
    rec = Recorder()
    descriptive_accuracy(rec, images, torch.zeros(2, dtype=torch.long), imp, (1.0,), fill=torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(rec.seen[0][:, :, 0, 0], torch.tensor([[0.1, 0.2, 0.3]] * 2))
    # the blur keeps a constant image constant and smooths an impulse symmetrically
    torch.testing.assert_close(gaussian_blur(torch.full((1, 1, 9, 9), 0.3), 2.0), torch.full((1, 1, 9, 9), 0.3))
    impulse = torch.zeros(1, 1, 9, 9)
    impulse[0, 0, 4, 4] = 1.0
    out = gaussian_blur(impulse, 1.0)
    torch.testing.assert_close(out, out.flip(-1).flip(-2))
    torch.testing.assert_close(out.sum(), torch.tensor(1.0))


def test_descriptive_accuracy_bad_input():
    images, labels, region = _region_data(n=4)
    imp = region.expand(4, 16, 16)
    model = RegionModel()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        descriptive_accuracy(model, images, labels, imp, (0.0, 1.5))
    with pytest.raises(ValueError, match=r"\[4, h, w\]"):
        descriptive_accuracy(model, images, labels, imp[:3])
    with pytest.raises(ValueError, match="labels"):
        descriptive_accuracy(model, images, labels.float(), imp)
    with pytest.raises(ValueError, match="fill"):
        descriptive_accuracy(model, images, labels, imp, fill="noise")
    with pytest.raises(ValueError, match="order"):
        descriptive_accuracy(model, images, labels, imp, order="lowest")
    with pytest.raises(ValueError, match="non-finite"):
        descriptive_accuracy(model, images * float("nan"), labels, imp)

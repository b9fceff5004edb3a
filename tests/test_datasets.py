"""Tests of deepinfo.datasets: the generated set, the real loaders and the download path."""

from __future__ import annotations

import hashlib
import io
import math
import shutil
import tarfile
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from deepinfo import datasets
from deepinfo.datasets import (CUB200, ISBI2012, MaskedItem, Synthetic, cifar10, get_dataset,
                               imagenet_val, subset)
from deepinfo.datasets import cub as cub_module
from deepinfo.datasets.cub import snap_box
from deepinfo.datasets.synthetic import SHAPES

# --------------------------------------------------------------------------------------------
# Synthetic
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("image_size", [16, 32, 97, 224])
def test_synthetic_items_have_the_documented_form(image_size):
    ds = Synthetic(16, image_size=image_size, num_classes=8)
    for i in range(len(ds)):
        item = ds[i]
        assert isinstance(item, MaskedItem)
        image, label, mask = item
        assert image.shape == (3, image_size, image_size) and image.dtype == torch.float32
        assert mask.shape == (image_size, image_size) and mask.dtype == torch.bool
        assert isinstance(label, int) and label == i % 8 == ds.targets[i]
        assert image.min() >= 0.0 and image.max() <= 1.0
        assert mask.any() and not mask.all()
    assert ds.has_masks and ds.num_classes == 8 and ds.classes == list(SHAPES)


@pytest.mark.parametrize("image_size", [16, 40, 128])
def test_synthetic_mask_is_exactly_where_the_object_is_painted(image_size):
    ds = Synthetic(24, image_size=image_size, num_classes=8, seed=5)
    for i in range(len(ds)):
        image, _, mask = ds[i]
        # Paint the same object over an impossible background value: the pixels that changed
        # are the object, and they must be exactly the mask.
        on_marker, mask2 = ds.render(i, background=-1.0)
        painted = (on_marker != -1.0).any(dim=0)
        assert torch.equal(painted, mask), f"item {i}: mask and painted pixels differ"
        assert torch.equal(mask2, mask)
        assert torch.equal(on_marker[:, mask], image[:, mask])
        # Outside the mask the image is the background alone, and the object stands out of it.
        background, empty = ds.render(i, draw_object=False)
        assert not empty.any()
        assert torch.equal(image[:, ~mask], background[:, ~mask])
        assert (image[:, mask] - background[:, mask]).abs().mean() > 0.2


def test_synthetic_mask_matches_the_scene_geometry():
    """Masks agree with the stated pose: area, centre, size and orientation (not tautological:
    these come from the parameters, not from the rasterized mask)."""
    size = 128
    ds = Synthetic(64, image_size=size, num_classes=8, seed=1)
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    expected_area = {"disc": math.pi, "square": 1.64**2, "ring": math.pi * (1 - 0.55**2),
                     "bar": 2.24 * 0.56, "cross": 2 * 2.0 * 0.6 - 0.6**2}
    for i in range(len(ds)):
        p = ds.params(i)
        mask = ds[i].mask
        cx, cy, r = p.center[0] * size, p.center[1] * size, p.size * size
        dist = torch.hypot(xx[mask] - cx, yy[mask] - cy)
        assert dist.max() <= 1.16 * r + 1.0, f"item {i}: object pixels too far from its centre"
        if p.shape in expected_area:  # shapes symmetric about their centre
            area = mask.sum().item()
            assert area == pytest.approx(expected_area[p.shape] * r * r, rel=0.08), p.shape
            assert xx[mask].mean().item() == pytest.approx(cx, abs=0.6)
            assert yy[mask].mean().item() == pytest.approx(cy, abs=0.6)
        if p.shape == "bar":  # the long axis of the pixels follows the angle
            coords = torch.stack([xx[mask] - cx, yy[mask] - cy])
            eigvals, eigvecs = torch.linalg.eigh(coords @ coords.T)
            axis = eigvecs[:, 1]
            assert abs(axis[0] * math.cos(p.angle) + axis[1] * math.sin(p.angle)) > 0.99


def test_synthetic_is_deterministic_per_seed_split_and_index():
    a = Synthetic(10, image_size=32, seed=3)
    b = Synthetic(50, image_size=32, seed=3)  # item i does not depend on n
    for i in (0, 4, 9):
        assert torch.equal(a[i].image, b[i].image) and torch.equal(a[i].mask, b[i].mask)
        assert torch.equal(a[i].image, a[i].image)
    assert not torch.equal(a[4].image, Synthetic(10, image_size=32, seed=4)[4].image)
    assert not torch.equal(a[4].image, Synthetic(10, image_size=32, seed=3, split="test")[4].image)
    assert not torch.equal(a[4].image, a[5].image)
    # The background stream never sees the class count.
    c = Synthetic(10, image_size=32, num_classes=6, seed=3)
    assert torch.equal(a.render(7, draw_object=False)[0], c.render(7, draw_object=False)[0])
    # The same scene at two resolutions: the object sits at the same place.
    small, large = Synthetic(4, image_size=32, seed=3), Synthetic(4, image_size=96, seed=3)
    pooled = nn.functional.avg_pool2d(large[2].mask[None, None].float(), 3)[0, 0]
    assert ((pooled > 0.5) == small[2].mask).float().mean() > 0.95


def _anova_f(values: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """One-way ANOVA F statistic per feature column of ``values`` [N, F]."""
    n = values.shape[0]
    grand = values.mean(0)
    between = torch.zeros(values.shape[1], dtype=torch.float64)
    within = torch.zeros(values.shape[1], dtype=torch.float64)
    for c in range(k):
        group = values[labels == c]
        between += len(group) * (group.mean(0) - grand) ** 2
        within += ((group - group.mean(0)) ** 2).sum(0)
    return (between / (k - 1)) / (within / (n - k))


def test_synthetic_background_does_not_depend_on_the_class():
    k, n = 4, 400
    ds = Synthetic(n, image_size=32, num_classes=k, seed=11)
    labels = torch.tensor(ds.targets)
    feats, outside = [], []
    for i in range(n):
        bg, _ = ds.render(i, draw_object=False)
        grad = ((bg[:, 1:, :] - bg[:, :-1, :]).abs().mean()
                + (bg[:, :, 1:] - bg[:, :, :-1]).abs().mean())
        feats.append(torch.cat([bg.mean((1, 2)), bg.std((1, 2)), grad[None]]))
        image, _, mask = ds[i]
        outside.append(image[:, ~mask].mean(1))
    feats = torch.stack(feats).double()
    outside = torch.stack(outside).double()
    critical = 7.0  # F(3, 396) at p ~ 1e-4
    assert _anova_f(feats, labels, k).max() < critical
    assert _anova_f(outside, labels, k).max() < critical
    # Positive control: the same test flags a background that shifts slightly with the class.
    shifted = feats.clone()
    shifted[:, 0] += 0.06 * labels
    assert _anova_f(shifted, labels, k)[0] > critical


@pytest.fixture
def one_thread():
    # Training with several threads on a shared 2-core machine is slower, not faster.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_synthetic_is_learnable_by_a_small_cnn(one_thread):
    torch.manual_seed(0)
    train = Synthetic(1024, image_size=32, num_classes=4, split="train")
    test = Synthetic(256, image_size=32, num_classes=4, split="test")
    x = torch.stack([train[i].image for i in range(len(train))])
    y = torch.tensor(train.targets)
    xt = torch.stack([test[i].image for i in range(len(test))])
    yt = torch.tensor(test.targets)

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    net = nn.Sequential(*block(3, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2),
                        *block(32, 32), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(32, 4))
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    for _ in range(3):
        net.train()
        for idx in torch.randperm(len(x)).split(32):
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(xt).argmax(1) == yt).float().mean().item()
    assert accuracy > 0.40, f"test accuracy {accuracy:.2f} (chance 0.25; 0.54 when written)"


def test_synthetic_batches_and_rejects_bad_arguments():
    batch = next(iter(DataLoader(Synthetic(8, image_size=24), batch_size=4)))
    assert isinstance(batch, MaskedItem)
    assert batch.image.shape == (4, 3, 24, 24) and batch.mask.shape == (4, 24, 24)
    assert batch.label.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="num_classes"):
        Synthetic(4, num_classes=9)
    with pytest.raises(ValueError, match="split"):
        Synthetic(4, split="validation")
    with pytest.raises(ValueError, match="image_size"):
        Synthetic(4, image_size=4)
    with pytest.raises(IndexError):
        Synthetic(4)[4]


# --------------------------------------------------------------------------------------------
# registry and subsets
# --------------------------------------------------------------------------------------------


def test_get_dataset_names_and_unknown_name():
    assert datasets.names() == ["synthetic", "cifar10", "cub200", "isbi2012", "imagenet"]
    ds = get_dataset("synthetic", n=6, image_size=16, seed=2)
    assert isinstance(ds, Synthetic) and len(ds) == 6 and ds.split == "train"
    assert get_dataset("synthetic", "test", n=2).split == "test"
    with pytest.raises(KeyError, match="synthetic, cifar10, cub200, isbi2012, imagenet"):
        get_dataset("mnist")
    with pytest.raises(ValueError, match="val"):
        get_dataset("imagenet", split="train")


def test_subset_is_deterministic_nested_and_keeps_attributes():
    ds = Synthetic(100, image_size=16)
    a, b = subset(ds, 10, seed=1), subset(ds, 10, seed=1)
    assert a.indices == b.indices == sorted(a.indices) and len(set(a.indices)) == 10
    assert subset(ds, 10, seed=2).indices != a.indices
    assert set(a.indices) <= set(subset(ds, 30, seed=1).indices)
    assert a.classes == ds.classes and a.num_classes == 4 and a.has_masks
    assert a.targets == [ds.targets[i] for i in a.indices]
    assert torch.equal(a[3].image, ds[a.indices[3]].image)
    with pytest.raises(ValueError, match="between 0 and"):
        subset(ds, 101, seed=0)


# --------------------------------------------------------------------------------------------
# missing data
# --------------------------------------------------------------------------------------------


def test_missing_data_gives_helpful_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True") as err:
        cifar10("test", root=tmp_path)
    assert str(tmp_path / "cifar10" / "test") in str(err.value)
    with pytest.raises(FileNotFoundError, match="download=True") as err:
        CUB200(root=tmp_path)
    assert str(tmp_path / "CUB_200_2011") in str(err.value) and cub_module.CUB_MD5 in str(err.value)
    with pytest.raises(FileNotFoundError, match="cannot be downloaded") as err:
        ISBI2012(root=tmp_path)
    assert "train-volume.tif" in str(err.value) and str(tmp_path / "isbi2012") in str(err.value)
    with pytest.raises(FileNotFoundError, match="cannot be downloaded automatically"):
        imagenet_val(tmp_path)


# --------------------------------------------------------------------------------------------
# real data (the offline copy)
# --------------------------------------------------------------------------------------------


def test_cifar10_imagefolder_copy(shared_data):
    ds = get_dataset("cifar10", "test", root=shared_data)
    assert len(ds) == 10_000 and not ds.has_masks
    assert ds.classes == ["airplane", "automobile", "bird", "cat", "deer",
                          "dog", "frog", "horse", "ship", "truck"]
    assert Counter(ds.targets) == {c: 1000 for c in range(10)}
    for i in (0, 4321, 9999):
        image, label = ds[i]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.01
        assert label == ds.targets[i] and isinstance(label, int)
    assert len(cifar10("train", root=shared_data)) == 50_000


@pytest.fixture(scope="module")
def cub_train(shared_data):
    return CUB200(root=shared_data, split="train", crop=None)


def test_cub_reads_the_offline_subset(shared_data, cub_train):
    test = CUB200(root=shared_data, split="test")
    assert len(cub_train) == 1500 and len(test) == 1389
    assert cub_train.num_classes == test.num_classes == 50
    assert cub_train.class_ids == list(range(1, 51))
    assert cub_train.classes[0] == "Black_footed_Albatross"
    assert sorted(set(cub_train.targets)) == list(range(50))
    explicit = CUB200(root=shared_data, split="train", classes=range(1, 51))
    assert [r.path for r in explicit.records] == [r.path for r in cub_train.records]
    two = CUB200(root=shared_data, split="test", classes=[3, 7])
    assert two.class_ids == [3, 7] and sorted(set(two.targets)) == [0, 1]
    assert len(two) == sum(r.class_id in (3, 7) for r in test.records)
    with pytest.raises(ValueError, match="unknown CUB class ids"):
        CUB200(root=shared_data, classes=[999])


def test_cub_boxes_lie_inside_their_images(shared_data, cub_train):
    # A few official boxes overshoot the image edge (here 23 of 2,889, one by 16 px); the loader
    # clips them, so check the clipped box is inside and the raw box mostly is.
    test = CUB200(root=shared_data, split="test")
    overshooting = 0
    for rec in cub_train.records + test.records:
        with Image.open(rec.path) as im:
            width, height = im.size
        x, y, w, h = rec.box
        assert w > 0 and h > 0
        x0, y0, x1, y1 = snap_box(rec.box, width, height)
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        inside = (min(x + w, width) - max(x, 0)) * (min(y + h, height) - max(y, 0))
        assert inside >= 0.9 * w * h, rec
        overshooting += x < 0 or y < 0 or x + w > width or y + h > height
    assert overshooting < 50


def test_cub_crops_contain_the_box(shared_data, cub_train):
    box = CUB200(root=shared_data, split="train", crop="box")
    enlarged = CUB200(root=shared_data, split="train", crop="box1.5")
    resized = CUB200(root=shared_data, split="train", crop="box1.5", image_size=64)
    box_resized = CUB200(root=shared_data, split="train", crop="box", image_size=48)
    unclipped = 0
    for i in range(0, 1500, 150):
        full_image, label, full_mask = cub_train[i]
        x, y, w, h = cub_train.records[i].box
        assert full_mask.sum().item() == pytest.approx(w * h, rel=0.05, abs=2 * (w + h))
        # crop="box": the crop is the full image under the box, and the mask covers all of it.
        b_image, b_label, b_mask = box[i]
        rows, cols = full_mask.any(1).nonzero()[:, 0], full_mask.any(0).nonzero()[:, 0]
        crop = full_image[:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        assert b_label == label and torch.equal(b_image, crop) and b_mask.all()
        assert box_resized[i].image.shape == (3, 48, 48) and box_resized[i].mask.all()
        # crop="box1.5": the mask is a rectangle holding the whole box, centred when not clipped.
        for ds in (enlarged, resized):
            e_image, _, e_mask = ds[i]
            assert e_image.shape[1:] == e_mask.shape
            rect = e_mask.any(1)[:, None] & e_mask.any(0)[None, :]
            assert torch.equal(rect, e_mask) and not e_mask.all()
        e_mask = enlarged[i].mask
        assert e_mask.sum() == full_mask.sum()  # no resize: the same box pixels
        H, W = full_mask.shape
        if x - 0.25 * w >= 0 and y - 0.25 * h >= 0 and x + 1.25 * w <= W and y + 1.25 * h <= H:
            unclipped += 1
            for mask in (e_mask, resized[i].mask):
                mh, mw = mask.shape
                assert mask.float().mean().item() == pytest.approx(1 / 2.25, abs=0.06)
                r, c = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
                assert abs((r[0] + r[-1] + 1) / 2 - mh / 2) <= 1.0
                assert abs((c[0] + c[-1] + 1) / 2 - mw / 2) <= 1.0
    assert unclipped >= 2  # the centring check really ran


# --------------------------------------------------------------------------------------------
# CUB download path, on a tiny fake archive in the official format
# --------------------------------------------------------------------------------------------


def _fake_cub_archive(tmp_path: Path) -> Path:
    src = tmp_path / "src" / "CUB_200_2011"
    files = {1: ("001.Black_footed_Albatross", "Black_Footed_Albatross_0001_1.jpg", 1),
             2: ("001.Black_footed_Albatross", "Black_Footed_Albatross_0002_2.jpg", 0),
             3: ("002.Laysan_Albatross", "Laysan_Albatross_0003_3.jpg", 1)}
    rng = np.random.default_rng(0)
    for image_id, (folder, name, _) in files.items():
        (src / "images" / folder).mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(src / "images" / folder / name, quality=90)
    (src / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    (src / "images.txt").write_text(
        "".join(f"{i} {f}/{n}\n" for i, (f, n, _) in files.items()))
    (src / "image_class_labels.txt").write_text(
        "".join(f"{i} {int(f[:3])}\n" for i, (f, _, _) in files.items()))
    (src / "train_test_split.txt").write_text(
        "".join(f"{i} {t}\n" for i, (_, _, t) in files.items()))
    (src / "bounding_boxes.txt").write_text("1 5.0 4.0 20.0 15.0\n2 0.0 0.0 40.0 30.0\n"
                                            "3 10.5 6.2 12.3 9.9\n")
    (tmp_path / "src" / "attributes.txt").write_text("1 has_bill_shape::dagger\n")
    archive = tmp_path / "CUB_200_2011.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="CUB_200_2011")
        tar.add(tmp_path / "src" / "attributes.txt", arcname="attributes.txt")
    return archive


def _serve(monkeypatch, payload: bytes) -> list[str]:
    """Replace the network: every urlopen answers with ``payload``; returns the URLs asked."""
    asked = []

    class Response(io.BytesIO):
        def __init__(self, url):
            super().__init__(payload)
            self.url = url
            self.length = len(payload)

    def fake_urlopen(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        asked.append(url)
        return Response(url)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return asked


def test_cub_download_verifies_and_extracts_the_archive(tmp_path, monkeypatch):
    archive = _fake_cub_archive(tmp_path)
    payload = archive.read_bytes()
    monkeypatch.setattr(cub_module, "CUB_MD5", hashlib.md5(payload).hexdigest())
    asked = _serve(monkeypatch, payload)
    root = tmp_path / "data"
    train = CUB200(root=root, split="train", crop="box", download=True)
    assert cub_module.CUB_URL in asked
    assert (root / "CUB_200_2011.tgz").is_file() and (root / "CUB_200_2011" / "images").is_dir()
    assert len(train) == 2 and train.num_classes == 2 and train.targets == [0, 1]
    image, label, mask = train[0]
    assert image.shape == (3, 15, 20) and mask.all()
    test = CUB200(root=root, split="test", crop=None, download=True)
    assert len(test) == 1 and test[0].mask.all()  # box 2 is the whole image
    # Present now: a second call with download=True fetches nothing.
    asked.clear()
    CUB200(root=root, split="train", download=True)
    assert asked == []
    # classes=None keeps the classes whose image folders exist; asking for a missing one fails.
    shutil.rmtree(root / "CUB_200_2011" / "images" / "002.Laysan_Albatross")
    only_first = CUB200(root=root, split="train")
    assert only_first.class_ids == [1] and len(only_first) == 1
    with pytest.raises(FileNotFoundError, match="missing"):
        CUB200(root=root, classes=[1, 2])


def test_cub_download_rejects_a_corrupted_archive(tmp_path, monkeypatch):
    archive = _fake_cub_archive(tmp_path)
    good = archive.read_bytes()
    expected = hashlib.md5(good).hexdigest()
    monkeypatch.setattr(cub_module, "CUB_MD5", expected)
    corrupted = good[:-100] + bytes(100)
    _serve(monkeypatch, corrupted)
    with pytest.raises(RuntimeError, match="md5 mismatch") as err:
        CUB200(root=tmp_path / "data", download=True)
    assert expected in str(err.value) and hashlib.md5(corrupted).hexdigest() in str(err.value)
    assert not (tmp_path / "data" / "CUB_200_2011").exists()


def test_cub_official_archive_constants():
    assert cub_module.CUB_MD5 == "97eceeb196236b17998738112f37df78"
    assert cub_module.CUB_URL.startswith("https://data.caltech.edu/records/65de6-vp158/")


# --------------------------------------------------------------------------------------------
# ISBI 2012 and ImageNet
# --------------------------------------------------------------------------------------------


def test_isbi_volumes_load(shared_data):
    train = get_dataset("isbi2012", "train", root=shared_data)
    assert len(train) == 30 and train.has_labels
    for i in (0, 29):
        image, mask = train[i]
        assert image.shape == (1, 512, 512) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert mask.shape == (512, 512) and mask.dtype == torch.bool
        assert 0.05 < mask.float().mean() < 0.5  # membranes are the thin minority
    test = ISBI2012(root=shared_data, split="test")
    assert len(test) == 30 and not test.has_labels
    image, mask = test[3]
    assert image.shape == (1, 512, 512) and not mask.any()


def test_imagenet_imagefolder_layout(tmp_path):
    rng = np.random.default_rng(0)
    for wnid in ("n01440764", "n01443537"):
        (tmp_path / "imagenet" / "val" / wnid).mkdir(parents=True)
        for k in range(2):
            pixels = rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imagenet" / "val" / wnid / f"{k}.JPEG")
    ds = imagenet_val(tmp_path / "imagenet", image_size=32)
    assert len(ds) == 4 and ds.classes == ["n01440764", "n01443537"] and not ds.has_masks
    image, label = ds[3]
    assert image.shape == (3, 32, 32) and label == 1
    # A data directory holding imagenet/ works too, through the registry.
    assert len(get_dataset("imagenet", root=tmp_path, image_size=None)) == 4


def test_in_memory_reads_each_item_once_and_keeps_attributes():
    from deepinfo.datasets import InMemory

    class Counting(torch.utils.data.Dataset):
        classes = ["a", "b"]

        def __init__(self):
            self.reads = 0

        def __len__(self):
            return 3

        def __getitem__(self, i):
            if not 0 <= i < 3:
                raise IndexError(i)
            self.reads += 1
            return torch.full((1,), float(i)), i % 2

    base = Counting()
    ds = InMemory(base)
    first = [ds[i] for i in range(3)]
    again = [ds[i] for i in range(3)] + [ds[-1]]
    assert base.reads == 3
    assert [float(x) for x, _ in first] == [0.0, 1.0, 2.0]
    assert again[3] is first[2] and again[0] is first[0]
    assert ds.classes == ["a", "b"] and len(ds) == 3
    with pytest.raises(IndexError):
        ds[3]
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    assert sum(len(b[0]) for b in loader) == 3

"""Helpers of the evaluation notebooks (05-07): uncropped CUB data and filtered image picks."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepinfo.book import experiments
from deepinfo.book.experiments import cub_data, cub_uncropped_data, images, images_where
from deepinfo.toolkit.profile import load_profile


def _fake_cub(root: Path) -> Path:
    """Four 40x30 images of two classes in the official layout (2 train, 2 test)."""
    folder = root / "CUB_200_2011"
    files = {1: ("001.Black_footed_Albatross", "a1.jpg", 1, (4.0, 6.0, 20.0, 12.0)),
             2: ("001.Black_footed_Albatross", "a2.jpg", 0, (10.0, 3.0, 16.0, 15.0)),
             3: ("002.Laysan_Albatross", "b1.jpg", 1, (0.0, 0.0, 40.0, 30.0)),
             4: ("002.Laysan_Albatross", "b2.jpg", 0, (20.0, 15.0, 10.0, 6.0))}
    rng = np.random.default_rng(0)
    for image_id, (cls, name, _, _) in files.items():
        (folder / "images" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)).save(
            folder / "images" / cls / name, quality=90)
    (folder / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    (folder / "images.txt").write_text("".join(f"{i} {c}/{n}\n" for i, (c, n, _, _) in files.items()))
    (folder / "image_class_labels.txt").write_text(
        "".join(f"{i} {int(c[:3])}\n" for i, (c, _, _, _) in files.items()))
    (folder / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, (_, _, t, _) in files.items()))
    (folder / "bounding_boxes.txt").write_text(
        "".join(f"{i} {' '.join(str(v) for v in b)}\n" for i, (_, _, _, b) in files.items()))
    return root


def _cub_profile(root: Path, image_size: int = 20):
    p = load_profile("cpu")
    cub = replace(p.data.cub, dataset="cub200", image_size=image_size, num_classes=2, n_train=None, n_test=None)
    return replace(p, data=replace(p.data, data_dir=str(root), download=False, cub=cub),
                   evaluation=replace(p.evaluation, robustness_top_k=1))


def test_uncropped_cub_keeps_the_whole_image_and_the_box_as_mask(tmp_path):
    p = _cub_profile(_fake_cub(tmp_path), image_size=20)
    whole = cub_uncropped_data(p, "test")
    cropped = cub_data(p, "test")
    assert len(whole) == len(cropped) == 2
    x, label, mask = whole[0]  # image 2: box x 10..26 of 40, y 3..18 of 30
    assert x.shape == (3, 20, 20) and label == 0 and mask.dtype == torch.bool
    # the box covers (16 * 15) / (40 * 30) = 0.2 of the image; the crop's mask is the whole image
    assert float(mask.float().mean()) == pytest.approx(0.2, abs=0.06)
    assert bool(cropped[0][2].all())
    cols = torch.nonzero(mask.any(0)).flatten()
    assert int(cols.min()) == 5 and int(cols.max()) == 12  # x 10..26 of 40 -> 5..13 of 20
    assert cub_uncropped_data(p, "train")[1][1] == 1


def test_uncropped_synthetic_is_the_classification_set():
    a, b = cub_uncropped_data("smoke", "test"), cub_data("smoke", "test")
    assert len(a) == len(b)
    for i in (0, 5):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][2], b[i][2])
    with pytest.raises(ValueError, match="split"):
        cub_uncropped_data("smoke", "val")


def test_uncropped_model_trains_a_separate_network_only_on_real_data(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(experiments, "cub_model", lambda p, arch, **kw: calls.append((arch, kw)) or "net")
    assert experiments.cub_uncropped_model("smoke", "vgg16", progress=False) == "net"
    assert calls[-1] == ("vgg16", {"progress": False})
    p = _cub_profile(_fake_cub(tmp_path))
    experiments.cub_uncropped_model(p, "resnet18", progress=False)
    arch, kw = calls[-1]
    assert arch == "resnet18" and kw["name"] == "resnet18-uncropped" and kw["config"] == {"crop": None}
    assert len(kw["train_data"]()) == 2  # the uncropped training split


def test_images_where_filters_in_the_order_images_draws_from():
    ds = cub_data("smoke", "test")
    x, y, m = images(ds, 6, seed=3)
    x2, y2, m2, idx = images_where(ds, 6, lambda *item: True, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(m, m2)
    assert idx.tolist() == sorted(idx.tolist())
    x3, y3, m3, idx3 = images_where(ds, 5, lambda img, label, mask: label == 1, seed=3)
    assert x3.shape[0] == 5 and bool((y3 == 1).all())
    assert all(int(ds[i][1]) == 1 for i in idx3.tolist())
    with pytest.raises(ValueError, match="pass the filter"):
        images_where(ds, 1, lambda *item: False)

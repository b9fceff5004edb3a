"""Architecture damage (deepinfo.techniques.damage) and the bird vs non-bird data (deepinfo.book.experiments.damage_*)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image
from torch import nn

from deepinfo.techniques.damage import (
    BirdVsNonBird,
    conv_positions,
    damage_vgg,
    damaged_layer,
    negative_images,
)
from deepinfo.datasets import Synthetic
from deepinfo.models import build, conv_layer_names


def _vgg(arch="vgg16", bn=False, size=32, classes=2):
    torch.manual_seed(0)
    return build(arch, num_classes=classes, width=0.125, input_size=size, dropout=0.0, batch_norm=bn)


@pytest.mark.parametrize("arch,n_convs", [("vgg16", 13), ("vgg19", 16)])
@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("conv_index", [-1, -2])
def test_damage_replaces_one_conv_and_adapts_the_next_layer(arch, n_convs, bn, conv_index):
    model = _vgg(arch, bn, size=32)
    names_before = [n for n, _ in model.named_modules()]
    positions = conv_positions(model)
    assert len(positions) == n_convs
    pos = positions[conv_index]
    c_in = model.features[pos].in_channels
    old_next = model.features[positions[conv_index + 1]] if conv_index < -1 else model.classifier[0]
    assert damage_vgg(model, conv_index, n_filters=4, kernel_size=7) is model
    conv = model.features[pos]
    assert isinstance(conv, nn.Conv2d)
    assert tuple(conv.weight.shape) == (4, c_in, 7, 7)
    assert conv.padding == (3, 3) and conv.stride == (1, 1)
    if bn:
        assert isinstance(model.features[pos + 1], nn.BatchNorm2d) and model.features[pos + 1].num_features == 4
    if conv_index < -1:
        nxt = model.features[positions[conv_index + 1]]
        assert nxt.in_channels == 4 and nxt.out_channels == old_next.out_channels
        assert nxt.kernel_size == old_next.kernel_size and nxt.padding == old_next.padding
    else:
        fc = model.classifier[0]
        ph, pw = model.avgpool.output_size
        assert fc.in_features == 4 * ph * pw and fc.out_features == old_next.out_features
    # every module name is kept, so layer names mean the same in both nets
    assert [n for n, _ in model.named_modules()] == names_before
    # forward works; the damaged layer's feature has 4 channels at the original map size
    feats = {}
    layer = damaged_layer(model, conv_index)
    dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: feats.setdefault("f", o))
    out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 2) and torch.isfinite(out).all()
    assert feats["f"].shape[1] == 4 and feats["f"].shape[-1] == 2  # last VGG block: 32 px / 2^4
    assert layer in conv_layer_names(model)


def test_damage_at_224_keeps_the_7x7_pooling():
    torch.manual_seed(0)
    model = build("vgg16", num_classes=2, width=1 / 16, input_size=224, dropout=0.0)
    damage_vgg(model, -1)
    assert model.avgpool.output_size == (7, 7)
    assert model.classifier[0].in_features == 4 * 49
    assert model(torch.rand(1, 3, 224, 224)).shape == (1, 2)


def test_damage_trains_and_other_layers_keep_their_init():
    base, damaged = _vgg(), _vgg()
    damage_vgg(damaged, -2)
    pos = conv_positions(damaged)
    untouched = pos[:-2]  # the convs before the damaged one start from the same weights
    for i in untouched:
        assert torch.equal(base.features[i].weight, damaged.features[i].weight)
    opt = torch.optim.Adam(damaged.parameters(), lr=1e-3)
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 2, (8,))
    loss = nn.functional.cross_entropy(damaged(x), y)
    loss.backward()
    assert damaged.features[pos[-2]].weight.grad is not None
    opt.step()


def test_damage_errors():
    model = _vgg()
    with pytest.raises(ValueError, match="conv_index"):
        damage_vgg(model, -14)
    with pytest.raises(ValueError, match="conv_index"):
        damage_vgg(model, 1.5)
    with pytest.raises(ValueError, match="kernel_size"):
        damage_vgg(model, -1, kernel_size=6)
    with pytest.raises(ValueError, match="n_filters"):
        damage_vgg(model, -1, n_filters=0)
    with pytest.raises(ValueError, match="VGG-style"):
        damage_vgg(nn.Linear(2, 2), -1)
    # a failed call changed nothing
    assert conv_positions(model) == conv_positions(_vgg())
    assert model.features[conv_positions(model)[-1]].out_channels == 64


# --- data ---------------------------------------------------------------------------------------


def test_bird_vs_nonbird_is_balanced_seeded_and_labelled():
    birds = Synthetic(20, image_size=16, num_classes=3, split="train", seed=1)
    negs = negative_images("synthetic", "train", 20, 16, seed=0)
    ds = BirdVsNonBird(birds, negs, seed=0)
    assert len(ds) == 40 and sum(ds.targets) == 20
    again = BirdVsNonBird(birds, negs, seed=0)
    assert ds.targets == again.targets and ds.targets != BirdVsNonBird(birds, negs, seed=1).targets
    bird_images = {tuple(birds[i][0].flatten()[:8].tolist()) for i in range(20)}
    for i in range(len(ds)):
        image, label, mask = ds[i]
        assert image.shape == (3, 16, 16) and mask.shape == (16, 16) and mask.dtype == torch.bool
        assert label == ds.targets[i] == int(i in ds.bird_items)
        if label == 1:
            assert mask.any() and tuple(image.flatten()[:8].tolist()) in bird_images
        else:
            assert not mask.any() and tuple(image.flatten()[:8].tolist()) not in bird_images
    sub = BirdVsNonBird(birds, negs, n_per_class=5, seed=0)
    assert len(sub) == 10 and sum(sub.targets) == 5
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    assert batch[0].shape == (4, 3, 16, 16)


def test_bird_vs_nonbird_errors():
    birds = Synthetic(6, image_size=16, num_classes=2)
    with pytest.raises(ValueError, match="balanced"):
        BirdVsNonBird(birds, negative_images("synthetic", "train", 3, 16))
    with pytest.raises(ValueError, match="n_per_class"):
        BirdVsNonBird(birds, negative_images("synthetic", "train", 9, 16), n_per_class=7)
    with pytest.raises(ValueError, match="negatives must be one of"):
        negative_images("noise", "train", 3, 16)
    with pytest.raises(ValueError, match="split"):
        negative_images("synthetic", "val", 3, 16)


def test_synthetic_negatives_have_no_object_and_differ_between_splits():
    a = negative_images("synthetic", "train", 4, 16)
    b = negative_images("synthetic", "test", 4, 16)
    assert a[0].shape == (3, 16, 16) and 0 <= float(a[0].min()) and float(a[0].max()) <= 1
    assert not torch.equal(a[0], b[0])


def _fake_cifar(root, per_class=3):
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    for split in ("train", "test"):
        for k, c in enumerate(classes):
            folder = root / "cifar10" / split / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                # the bird class is pure red, every other class pure blue
                colour = (255, 0, 0) if c == "bird" else (0, 0, 255)
                Image.new("RGB", (32, 32), colour).save(folder / f"{i:04d}.png")


def test_cifar_negatives_leave_out_birds_and_are_resized(tmp_path):
    _fake_cifar(tmp_path)
    negs = negative_images("cifar10", "train", 27, 20, root=tmp_path, seed=0)
    assert len(negs) == 27  # all 9 non-bird classes x 3
    for i in range(len(negs)):
        x = negs[i]
        assert x.shape == (3, 20, 20)
        assert float(x[0].max()) < 0.05 and float(x[2].min()) > 0.95  # blue, never the red birds
    with pytest.raises(ValueError, match="only 27"):
        negative_images("cifar10", "train", 28, 20, root=tmp_path)


def test_real_cifar_negatives(shared_data):
    negs = negative_images("cifar10", "test", 10, 64, root=shared_data, seed=0)
    base = negs.base.dataset  # the CIFAR-10 set behind the subset
    picked = negs.base.indices
    assert all(base.classes[base.targets[i]] != "bird" for i in picked)
    assert negs[0].shape == (3, 64, 64)


# --- profile-driven data and networks -------------------------------------------------------------


def test_damage_data_smoke_profile():
    from deepinfo.book.experiments import damage_data
    from deepinfo.toolkit.profile import load_profile

    P = load_profile("smoke")
    train = damage_data(P, "train")
    n = min(P.damage.n_negatives, P.data.cub.n_train)
    assert len(train) == 2 * n and sum(train.targets) == n
    test = damage_data(P, "test")
    assert len(test) == 2 * min(P.damage.n_negatives, P.data.cub.n_test)
    image, label, mask = train[0]
    assert image.shape == (3, P.data.cub.image_size, P.data.cub.image_size)


def test_damage_model_trains_through_the_cache(tmp_path, monkeypatch):
    from deepinfo.book.experiments import damage_model
    from deepinfo.toolkit.profile import load_profile
    from deepinfo.toolkit.training import Recipe

    monkeypatch.setenv("DEEPINFO_ARTIFACTS", str(tmp_path))
    P = load_profile("smoke")
    small = dataclasses.replace(P.damage, n_negatives=8, recipe=Recipe(epochs=1, batch_size=8, lr=1e-3,
                                                                        optimizer="adam"))
    P = dataclasses.replace(P, damage=small)
    net = damage_model(P, "vgg16", -1, progress=False)
    assert net.model.classifier[-1].out_features == 2
    pos = conv_positions(net.model)[-1]
    assert tuple(net.model.features[pos].weight.shape)[::2] == (4, 7)
    again = damage_model(P, "vgg16", -1, progress=False)  # loaded, not retrained
    assert again.key == net.key
    assert all(torch.equal(a, b) for a, b in zip(net.model.state_dict().values(), again.model.state_dict().values()))
    original = damage_model(P, "vgg16", None, progress=False)
    assert original.key != net.key and original.model.features[pos].out_channels != 4
    with pytest.raises(ValueError, match="vgg16 / vgg19"):
        damage_model(P, "alexnet", -1)


@pytest.mark.parametrize("value, ok", [('"stages"', True), ('["features.3", "features.6"]', True),
                                       ('"every"', False), ("[]", False)])
def test_profile_damage_layers_is_checked(tmp_path, value, ok):
    import re
    from importlib import resources

    from deepinfo.toolkit.profile import load_profile

    text = resources.files("deepinfo.toolkit").joinpath("profiles", "smoke.toml").read_text()
    start = text.index("[damage]\n")
    end = text.index("[damage.recipe]")
    section = re.sub(r"(?m)^layers = .*$", f"layers = {value}", text[start:end])
    path = tmp_path / "variant.toml"
    path.write_text(text[:start] + section + text[end:])
    if ok:
        assert load_profile(path).damage.layers in ("stages", ("features.3", "features.6"))
    else:
        with pytest.raises(ValueError, match="damage.layers"):
            load_profile(path)
    missing = text[:start] + re.sub(r"(?m)^layers = .*\n", "", text[start:end]) + text[end:]
    path.write_text(missing)
    with pytest.raises(ValueError, match="missing key 'layers' in \\[damage\\]"):
        load_profile(path)

"""deepinfo.models: CIFAR ResNets (published checkpoints), torchvision builders, auto-encoders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import randomize_bn
import torch.nn.functional as F
import torchvision.models as tvm
import torchvision.transforms.functional as TF
from PIL import Image
from torch import nn

from deepinfo.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    IMAGENET_WEIGHTS,
    MIN_INPUT_SIZE,
    PUBLISHED_FILES,
    CifarResNetAutoencoder,
    Normalize,
    block_names,
    build,
    cifar_resnet,
    cifar_resnet_autoencoder,
    conv_layer_names,
    layer_names,
    resolve_layers,
    stage_names,
)
from deepinfo.models.cifar_resnet import PUBLISHED_URL

# Accuracy of the published checkpoints on the whole JPEG copy of the CIFAR-10 test set
# (shared/data/README.md; measured here with deepinfo.models: 81.03 / 82.56 / 82.67 %).
JPEG_TEST_ACCURACY = {20: 0.810, 32: 0.826, 44: 0.827}
PER_CLASS = 100  # the first 100 test images of each class: a fixed, class-balanced 1,000


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def data_env(shared_data, monkeypatch):
    """``data_dir()`` -> the shared data, and any download attempt fails the test."""
    monkeypatch.setenv("DEEPINFO_DATA", str(shared_data))

    def no_download(*args, **kwargs):
        raise AssertionError(f"tried to download {args[0] if args else kwargs}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    return shared_data


@pytest.fixture(scope="module")
def cifar_subset(shared_data) -> tuple[torch.Tensor, torch.Tensor]:
    root = shared_data / "cifar10" / "test"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert len(classes) == 10
    images, labels = [], []
    for label, cls in enumerate(classes):
        files = sorted((root / cls).glob("*.jpg"))[:PER_CLASS]
        assert len(files) == PER_CLASS
        for f in files:
            with Image.open(f) as im:
                images.append(np.asarray(im.convert("RGB")))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255)
    return x, torch.tensor(labels)


def _randomize_bn(model, seed: int = 1) -> None:
    randomize_bn(model, seed, mean_scale=0.2)


# --------------------------------------------------------------------------------------------
# Upstream reference: akamaster/pytorch_resnet_cifar10, resnet.py (option A), condensed.
# Copyright (c) 2018, Yerlan Idelbayev; BSD-2-Clause (shared/data/checkpoints/LICENSE-resnet-cifar10.txt).
# --------------------------------------------------------------------------------------------


class _LambdaLayer(nn.Module):
    def __init__(self, lambd):
        super().__init__()
        self.lambd = lambd

    def forward(self, x):
        return self.lambd(x)


class _UpstreamBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = _LambdaLayer(
                lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class _UpstreamResNet(nn.Module):
    def __init__(self, num_blocks, num_classes=10):
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, num_blocks, stride=1)
        self.layer2 = self._make_layer(32, num_blocks, stride=2)
        self.layer3 = self._make_layer(64, num_blocks, stride=2)
        self.linear = nn.Linear(64, num_classes)

    def _make_layer(self, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(_UpstreamBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3])
        return self.linear(out.view(out.size(0), -1))


# --------------------------------------------------------------------------------------------
# Normalize
# --------------------------------------------------------------------------------------------


def test_normalize_has_no_state_and_normalizes():
    norm = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    assert norm.state_dict() == {}
    x = torch.rand(2, 3, 5, 7)
    expected = TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(norm(x), expected)
    assert norm.double()(x.double()).dtype == torch.float64  # buffers follow dtype moves
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        norm(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match="same length"):
        Normalize((0.5, 0.5), (0.2,))
    with pytest.raises(ValueError, match="std positive"):
        Normalize((0.5,), (0.0,))


# --------------------------------------------------------------------------------------------
# CIFAR ResNets
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [20, 32])
def test_cifar_resnet_matches_upstream_numerically(depth):
    ours = cifar_resnet(depth).eval()
    _randomize_bn(ours)
    ref = _UpstreamResNet((depth - 2) // 6).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        got = ours(x)
        want = ref(TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert got.shape == (4, 10)


def test_cifar_resnet_structure_and_init():
    model = cifar_resnet(44, num_classes=100)
    names = dict(model.named_modules())
    assert [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(7)] == block_names(model)
    for name in ("normalize", "conv1", "bn1", "layer2.0.shortcut", "layer3.6.bn2", "avgpool", "linear"):
        assert name in names
    assert model.linear.out_features == 100
    assert not any(k.startswith("normalize") for k in model.state_dict())
    # Kaiming normal (fan_in, gain sqrt 2) as upstream: std of a conv weight ~ sqrt(2 / fan_in).
    w = model.layer3[0].conv2.weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)


def test_cifar_resnet_bad_input():
    with pytest.raises(ValueError, match="6n\\+2"):
        cifar_resnet(21)
    with pytest.raises(ValueError, match=r"available depths: \[20, 32, 44, 56, 110, 1202\]"):
        cifar_resnet(8, weights="published")
    with pytest.raises(ValueError, match="num_classes=100"):
        cifar_resnet(20, weights="published", num_classes=100)
    with pytest.raises(ValueError, match="'published' or a checkpoint path"):
        cifar_resnet(20, weights="imagenet")


def test_published_download_path_is_wired(tmp_path, monkeypatch):
    """With no local copy, "published" asks torch.hub for the upstream file with check_hash."""
    monkeypatch.setenv("DEEPINFO_DATA", str(tmp_path))
    source = cifar_resnet(20)
    calls = []

    def fake_fetch(url, **kwargs):
        calls.append((url, kwargs))
        return {"best_prec1": 91.0, "state_dict": {"module." + k: v for k, v in source.state_dict().items()}}

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_fetch)
    model = cifar_resnet(20, weights="published")
    assert calls[0][0] == PUBLISHED_URL + "resnet20-12fca82f.th"
    assert calls[0][0].startswith("https://github.com/akamaster/pytorch_resnet_cifar10/")
    assert calls[0][1]["check_hash"] is True
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)


def test_corrupt_local_checkpoint_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPINFO_DATA", str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    torch.save({"state_dict": cifar_resnet(20).state_dict()}, tmp_path / "checkpoints" / PUBLISHED_FILES[20])
    with pytest.raises(ValueError, match="corrupt"):
        cifar_resnet(20, weights="published")


def test_checkpoint_path_roundtrip(tmp_path):
    source = cifar_resnet(20, num_classes=3)
    path = tmp_path / "mine.th"
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}}, path)
    model = cifar_resnet(20, weights=path, num_classes=3)
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)


@pytest.mark.parametrize("depth", [20, 32, 44])
def test_published_weights_accuracy(depth, data_env, cifar_subset):
    """Strict load of the local published file, and accuracy on a fixed balanced 1,000-image subset.

    The subset's accuracy estimates the full-set accuracy p with binomial standard error
    sqrt(p (1 - p) / n * (N - n) / (N - 1)) (n = 1,000 of N = 10,000 images; ~1.15 points at
    p = 0.82); we allow 3 SE (~3.5 points). A broken model (wrong normalization, shortcut or
    weights) lands near 10 %.
    """
    x, y = cifar_subset
    model = cifar_resnet(depth, weights="published").eval()  # data_env forbids downloads
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 250]).argmax(1) for i in range(0, len(x), 250)])
    acc = (pred == y).float().mean().item()
    p, n, N = JPEG_TEST_ACCURACY[depth], len(y), 10_000
    se = math.sqrt(p * (1 - p) / n * (N - n) / (N - 1))
    assert abs(acc - p) < 3 * se, f"ResNet-{depth}: {acc:.3f} on the subset vs {p:.3f} on the full set"


# --------------------------------------------------------------------------------------------
# Auto-encoders
# --------------------------------------------------------------------------------------------


def test_autoencoder_shapes_and_names():
    ae = cifar_resnet_autoencoder(20).eval()
    assert isinstance(ae, CifarResNetAutoencoder)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        out = ae(x)
        code = ae.encoder(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert code.shape == (3, 64, 8, 8)
    names = dict(ae.named_modules())
    assert "encoder.layer2.1" in names and "encoder.normalize" in names and "decoder" in names
    classifier_trunk = {k for k in cifar_resnet(20).state_dict() if not k.startswith("linear.")}
    assert set(ae.encoder.state_dict()) == classifier_trunk
    assert block_names(ae) == ["encoder." + n for n in block_names(cifar_resnet(20))]
    assert len(ae.decoder.blocks) == 6

    small = cifar_resnet_autoencoder(32, image_size=28, n_blocks=8, width=16).eval()
    with torch.no_grad():
        assert small(torch.rand(2, 3, 28, 28)).shape == (2, 3, 28, 28)
    with pytest.raises(ValueError, match="6n\\+2"):
        cifar_resnet_autoencoder(30)


def test_autoencoder_encoder_from_published(data_env):
    ae = cifar_resnet_autoencoder(20, encoder_weights="published")
    classifier = cifar_resnet(20, weights="published")
    for k, v in ae.encoder.state_dict().items():
        assert torch.equal(v, classifier.state_dict()[k])


# --------------------------------------------------------------------------------------------
# torchvision builders
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, width, num_classes, size",
    [
        ("alexnet", 0.25, 10, 63),
        ("alexnet", 0.125, 200, 224),
        ("vgg16", 0.125, 10, 32),
        ("vgg19", 0.0625, 5, 48),
        ("vgg16", 0.0625, 200, 224),
        ("resnet18", 0.25, 10, 32),
        ("resnet18", 0.125, 4, 1),
        ("resnet34", 0.125, 7, 64),
        ("resnet50", 0.125, 200, 96),
    ],
)
def test_builder_shapes(name, width, num_classes, size):
    model = build(name, num_classes=num_classes, width=width, input_size=size).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, size, size)).shape == (2, num_classes)
    assert model.normalize.state_dict() == {}
    names = dict(model.named_modules())
    first_conv = names["features.0"] if name == "alexnet" or name.startswith("vgg") else names["conv1"]
    assert first_conv.out_channels == max(1, round(64 * width))
    if name == "alexnet":
        assert {"features.10", "classifier.4", "avgpool"} <= set(names)
        assert names["classifier.1"].out_features == round(4096 * width)
    elif name.startswith("vgg"):
        assert {"features.10", "features.28", "classifier.3", "avgpool"} <= set(names)
    else:
        assert {"layer4.1", "layer1.0.conv1", "avgpool", "fc"} <= set(names)


@pytest.mark.parametrize("name", ["alexnet", "vgg16", "vgg19"])
def test_small_inputs_pool_what_the_features_give(name):
    model = build(name, width=0.0625, input_size=MIN_INPUT_SIZE[name])
    assert tuple(model.avgpool.output_size) == (1, 1)
    assert build(name, width=0.0625).avgpool.output_size == ((6, 6) if name == "alexnet" else (7, 7))


@pytest.mark.parametrize("name", ["alexnet", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50"])
def test_min_input_size(name):
    weights = IMAGENET_WEIGHTS[name]()
    assert MIN_INPUT_SIZE[name] == weights.meta["min_size"][0]  # torchvision's own statement
    if MIN_INPUT_SIZE[name] > 1:
        with pytest.raises(ValueError, match=f"at least {MIN_INPUT_SIZE[name]}"):
            build(name, width=0.0625, input_size=MIN_INPUT_SIZE[name] - 1)
        # The bound is tight: the architecture really breaks one pixel below it.
        model = build(name, width=0.0625, input_size=MIN_INPUT_SIZE[name]).eval()
        with pytest.raises(RuntimeError):
            model(torch.rand(1, 3, MIN_INPUT_SIZE[name] - 1, MIN_INPUT_SIZE[name] - 1))


@pytest.mark.parametrize("name", ["alexnet", "resnet18", "resnet34", "resnet50"])
def test_width1_state_dict_equals_torchvision(name):
    ours = build(name)
    theirs = getattr(tvm, name)()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)


@pytest.mark.parametrize("name", ["vgg16", "vgg19"])
def test_width1_vgg_state_dict_equals_torchvision_on_meta(name):
    # VGG's 140M parameters take seconds to initialise; on the meta device strict loading still
    # checks every key and shape, which is all the comparison needs.
    with torch.device("meta"):
        ours, theirs, narrow = build(name), getattr(tvm, name)(), build(name, width=0.5)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    with pytest.raises(RuntimeError, match="size mismatch"):
        narrow.load_state_dict(theirs.state_dict(), strict=True)


@pytest.mark.parametrize("name", ["alexnet", "resnet18", "resnet50"])
def test_pixel_space_input_equals_torchvision_on_normalized_input(name):
    ours = build(name).eval()
    _randomize_bn(ours)
    theirs = getattr(tvm, name)().eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    size = max(32, MIN_INPUT_SIZE[name])  # small inputs keep it fast; AlexNet needs 63
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)))


def test_imagenet_weights_request_is_wired(monkeypatch):
    source = tvm.resnet18()
    calls = []

    def fake_fetch(url, **kwargs):
        calls.append((url, kwargs))
        return source.state_dict()

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_fetch)
    model = build("ResNet-18", weights="imagenet")
    assert calls[0][0] == tvm.ResNet18_Weights.IMAGENET1K_V1.url
    assert calls[0][1]["check_hash"] is True
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)

    with pytest.raises(ValueError, match="width=1"):
        build("resnet18", weights="imagenet", width=0.5)
    with pytest.raises(ValueError, match="input_size >= 224"):
        build("vgg16", weights="imagenet", input_size=64)
    assert len(calls) == 1

    # another class count (CUB's 200): every pretrained weight but a new last layer
    tuned = build("resnet18", weights="imagenet", num_classes=200)
    assert len(calls) == 2 and tuned.fc.out_features == 200
    for k, v in source.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(tuned.state_dict()[k], v)


def test_imagenet_weights_with_a_new_head_for_vgg(monkeypatch):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda url, **kw: build("vgg16", batch_norm=True).state_dict())
    tuned = build("vgg16", weights="imagenet", num_classes=200, batch_norm=True)
    assert tuned.classifier[-1].out_features == 200
    assert tuned(torch.rand(1, 3, 224, 224)).shape == (1, 200)


def test_builder_checkpoint_path(tmp_path):
    source = build("alexnet", num_classes=3, width=0.125, input_size=64)
    path = tmp_path / "alex.pth"
    torch.save({"module." + k: v for k, v in source.state_dict().items()}, path)
    model = build("alexnet", num_classes=3, width=0.125, input_size=64, weights=path)
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)


def test_builder_bad_input():
    with pytest.raises(ValueError, match="accepted: alexnet, vgg16, vgg19, resnet18, resnet34, resnet50"):
        build("vgg11")
    with pytest.raises(ValueError, match="width must be a positive"):
        build("resnet18", width=0)
    with pytest.raises(ValueError, match="num_classes must be a positive"):
        build("resnet18", num_classes=0)
    with pytest.raises(ValueError, match="input_size must be"):
        build("resnet18", input_size=(32, 32, 3))
    with pytest.raises(ValueError, match="'imagenet' or a checkpoint path"):
        build("resnet18", weights="no/such/file.pth")


# --------------------------------------------------------------------------------------------
# Layer names
# --------------------------------------------------------------------------------------------


def test_layer_names():
    alex = build("alexnet", width=0.0625)
    assert conv_layer_names(alex) == [
        "features.1", "features.4", "features.7", "features.9", "features.11", "classifier.2", "classifier.5"
    ]
    assert conv_layer_names(alex, include_classifier=False)[-1] == "features.11"
    assert stage_names(alex) == ["features.2", "features.5", "features.12"]
    vgg = build("vgg16", width=0.0625)
    assert len(conv_layer_names(vgg)) == 13 + 2 and conv_layer_names(vgg)[-3] == "features.29"
    assert len(conv_layer_names(build("vgg19", width=0.0625), include_classifier=False)) == 16
    assert stage_names(vgg) == ["features.4", "features.9", "features.16", "features.23", "features.30"]
    r50 = build("resnet50", width=0.0625)
    assert len(block_names(r50)) == 16 and block_names(r50)[-1] == "layer4.2"
    assert stage_names(r50) == ["layer1", "layer2", "layer3", "layer4"]
    assert layer_names(r50) == block_names(r50) and layer_names(alex) == conv_layer_names(alex)
    assert layer_names(tvm.resnet18()) == block_names(build("resnet18", width=0.0625))
    cifar = cifar_resnet(20)
    assert resolve_layers(cifar, "blocks") == block_names(cifar)
    assert resolve_layers(cifar, "stages") == ["layer1", "layer2", "layer3"]
    assert resolve_layers(cifar, "layer2.1") == ["layer2.1"]
    for model in (alex, vgg, r50, cifar):
        names = dict(model.named_modules())
        assert all(n in names for n in layer_names(model) + stage_names(model))
        # forward order: every layer's hook fires, in the listed order
        fired = []
        handles = [names[n].register_forward_hook(lambda m, i, o, n=n: fired.append(n)) for n in layer_names(model)]
        with torch.no_grad():
            model.eval()(torch.rand(1, 3, 64, 64))
        for h in handles:
            h.remove()
        assert fired == layer_names(model)

    with pytest.raises(ValueError, match="For AlexNet/VGG use conv_layer_names"):
        block_names(alex)
    with pytest.raises(ValueError, match="For ResNets use block_names"):
        conv_layer_names(cifar)
    with pytest.raises(ValueError, match="layer_names knows"):
        layer_names(nn.Linear(2, 2))
    with pytest.raises(KeyError, match="features.10"):
        resolve_layers(alex, ["features.100"])

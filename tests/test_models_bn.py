"""deepinfo.models.build(..., batch_norm=True): AlexNet / VGG with a BatchNorm2d after every conv."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import randomize_bn
import torchvision.models as tvm
import torchvision.transforms.functional as TF
from torch import nn

from deepinfo.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MIN_INPUT_SIZE,
    build,
    conv_layer_names,
    layer_names,
    resolve_layers,
    stage_names,
)
from deepinfo.toolkit import profile as prof
from deepinfo.models.vision import IMAGENET_BN_WEIGHTS
from deepinfo.toolkit.profile import load_profile


# BatchNorm's num_batches_tracked buffer stays on the CPU under torch.device("meta"); loading into
# it is a no-op that torch warns about. The meta-device tests only check keys and shapes.
pytestmark = pytest.mark.filterwarnings("ignore:for .*num_batches_tracked:UserWarning")


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def _randomize_bn(model, seed: int = 1) -> None:
    randomize_bn(model, seed, mean_scale=0.1)


def _kinds(seq: nn.Sequential) -> list[type]:
    return [type(m) for m in seq]


@pytest.mark.parametrize(
    "name, width, num_classes, size",
    [("alexnet", 0.25, 50, 64), ("alexnet", 0.125, 3, 63), ("vgg16", 0.25, 50, 64), ("vgg19", 0.125, 7, 32)],
)
def test_bn_shapes_and_structure(name, width, num_classes, size):
    torch.manual_seed(0)
    model = build(name, num_classes=num_classes, width=width, input_size=size, batch_norm=True).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, size, size)).shape == (2, num_classes)
    features = list(model.features)
    convs = [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)]
    assert len(convs) == {"alexnet": 5, "vgg16": 13, "vgg19": 16}[name]
    for i in convs:  # conv -> BN (same channels) -> ReLU, the vgg*_bn pattern
        assert isinstance(features[i + 1], nn.BatchNorm2d)
        assert features[i + 1].num_features == features[i].out_channels
        assert isinstance(features[i + 2], nn.ReLU) and not features[i + 2].inplace
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert n_bn == len(convs)
    # The classifier is untouched: no BN there, same layout as without the flag.
    plain = build(name, num_classes=num_classes, width=width, input_size=size)
    assert _kinds(model.classifier) == _kinds(plain.classifier)
    assert tuple(model.avgpool.output_size) == tuple(plain.avgpool.output_size)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules()) == 0
    assert model.normalize.state_dict() == {}


def test_bn_trains_in_train_mode_and_is_deterministic_in_eval():
    torch.manual_seed(0)
    model = build("vgg16", num_classes=5, width=0.0625, input_size=32, batch_norm=True)
    x = torch.rand(4, 3, 32, 32)
    model.train()
    model(x)  # updates the running statistics
    bn = model.features[1]
    assert int(bn.num_batches_tracked) == 1 and not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x[:1]), model(x)[:1])  # eval: no batch dependence


@pytest.mark.parametrize("name", ["vgg16", "vgg19"])
def test_width1_vgg_bn_state_dict_equals_torchvision(name):
    # On the meta device: strict loading still checks every key and shape, without 140M floats.
    with torch.device("meta"):
        ours, theirs = build(name, batch_norm=True), getattr(tvm, f"{name}_bn")()
        plain = getattr(tvm, name)()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    with pytest.raises(RuntimeError, match="Missing key|Unexpected key"):
        ours.load_state_dict(plain.state_dict(), strict=True)
    names = {n for n, _ in ours.named_modules()}
    assert names - {n for n, _ in theirs.named_modules()} == {"normalize"}


@pytest.mark.parametrize("name, size", [("vgg16", 32), ("alexnet", 64)])
def test_bn_pixel_space_input_equals_torchvision_forward_on_normalized_input(name, size):
    # The width-1 state dicts equal torchvision's (above); here torchvision's own forward code,
    # run on our modules with normalized inputs, must give what ours gives on pixel-space inputs.
    torch.manual_seed(0)
    ours = build(name, num_classes=10, width=0.125, input_size=size, batch_norm=True).eval()
    _randomize_bn(ours)
    tv_forward = tvm.VGG.forward if name.startswith("vgg") else tvm.AlexNet.forward
    x = torch.rand(2, 3, size, size)
    normalized = TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv_forward(ours, normalized))
        # and the input really is pixel space: feeding normalized images changes the output
        assert not torch.allclose(ours(normalized), ours(x), atol=1e-3)


def test_bn_layer_names_follow_the_shifted_indices():
    alex = build("alexnet", width=0.0625, input_size=64, batch_norm=True)
    assert conv_layer_names(alex) == [
        "features.2", "features.6", "features.10", "features.13", "features.16", "classifier.2", "classifier.5"
    ]
    assert stage_names(alex) == ["features.3", "features.7", "features.17"]
    vgg = build("vgg16", width=0.0625, input_size=32, batch_norm=True)
    relus = conv_layer_names(vgg, include_classifier=False)
    assert len(relus) == 13 and relus[0] == "features.2" and relus[-1] == "features.42"
    assert stage_names(vgg) == ["features.6", "features.13", "features.23", "features.33", "features.43"]
    assert len(conv_layer_names(build("vgg19", width=0.0625, input_size=32, batch_norm=True),
                                include_classifier=False)) == 16
    # the names match torchvision's own vgg16_bn
    with torch.device("meta"):
        theirs = tvm.vgg16_bn()
    assert conv_layer_names(theirs) == conv_layer_names(vgg) and stage_names(theirs) == stage_names(vgg)
    for model, size in ((alex, 64), (vgg, 32)):
        names = dict(model.named_modules())
        assert layer_names(model) == conv_layer_names(model)
        assert resolve_layers(model, "blocks") == layer_names(model)
        assert resolve_layers(model, "stages") == stage_names(model)
        # every listed layer is a ReLU output after a BN (or an FC layer), hooks fire in order
        for n in conv_layer_names(model, include_classifier=False):
            i = int(n.split(".")[1])
            assert isinstance(model.features[i], nn.ReLU) and isinstance(model.features[i - 1], nn.BatchNorm2d)
        fired = []
        handles = [names[n].register_forward_hook(lambda m, i, o, n=n: fired.append(n)) for n in layer_names(model)]
        with torch.no_grad():
            model.eval()(torch.rand(1, 3, size, size))
        for h in handles:
            h.remove()
        assert fired == layer_names(model)


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_bn_flag_is_ignored_for_resnets(name):
    torch.manual_seed(0)
    a = build(name, num_classes=4, width=0.125, batch_norm=True)
    torch.manual_seed(0)
    b = build(name, num_classes=4, width=0.125)
    assert list(a.state_dict()) == list(b.state_dict())
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_bn_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    source = build("alexnet", num_classes=3, width=0.125, input_size=64, batch_norm=True)
    _randomize_bn(source)
    path = tmp_path / "alex_bn.pth"
    torch.save(source.state_dict(), path)
    model = build("alexnet", num_classes=3, width=0.125, input_size=64, batch_norm=True, weights=path)
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    with pytest.raises(RuntimeError):  # a BN checkpoint does not load into the plain net
        build("alexnet", num_classes=3, width=0.125, input_size=64, weights=path)


def test_bn_imagenet_weights_request_is_wired(monkeypatch):
    assert set(IMAGENET_BN_WEIGHTS) == {"vgg16", "vgg19"}
    assert MIN_INPUT_SIZE["vgg16"] == IMAGENET_BN_WEIGHTS["vgg16"]().meta["min_size"][0]
    with torch.device("meta"):
        source = tvm.vgg16_bn()
    calls = []

    def fake_fetch(url, **kwargs):
        calls.append((url, kwargs))
        return source.state_dict()

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_fetch)
    with torch.device("meta"):  # strict loading checks every key and shape, without 138M floats
        build("vgg16", weights="imagenet", batch_norm=True)
    assert calls[0][0] == tvm.VGG16_BN_Weights.IMAGENET1K_V1.url and calls[0][1]["check_hash"] is True
    with torch.device("meta"), pytest.raises(RuntimeError, match="Missing key"):
        build("vgg16", weights="imagenet")  # without the flag: the plain weights' URL
    assert calls[1][0] == tvm.VGG16_Weights.IMAGENET1K_V1.url

    with pytest.raises(ValueError, match="no ImageNet weights for alexnet with batch_norm=True"):
        build("alexnet", weights="imagenet", batch_norm=True)
    with pytest.raises(ValueError, match="batch_norm must be a bool"):
        build("vgg16", width=0.0625, batch_norm="yes")  # type: ignore[arg-type]
    assert len(calls) == 2


# --------------------------------------------------------------------------------------------
# The profile key that switches it on for the CUB nets ([networks.cub] batch_norm)
# --------------------------------------------------------------------------------------------


def test_profiles_batch_norm_key(tmp_path):
    assert load_profile("paper").networks.cub.batch_norm is False  # paper: plain ImageNet VGG
    assert load_profile("cpu").networks.cub.batch_norm is True  # from scratch: BN, or chance level
    assert load_profile("smoke").networks.cub.batch_norm is True  # CI runs the cpu book's code path

    text = (Path(prof.__file__).parent / "profiles" / "smoke.toml").read_text()
    line = next(ln for ln in text.splitlines(keepends=True) if ln.startswith("batch_norm = true"))

    def variant(new: str) -> Path:
        path = tmp_path / "variant.toml"
        path.write_text(text.replace(line, new, 1))
        return path

    with pytest.raises(ValueError, match=r"missing key 'batch_norm' in \[networks\.cub\]"):
        load_profile(variant(""))
    with pytest.raises(ValueError, match=r"networks\.cub\.batch_norm must be a bool"):
        load_profile(variant('batch_norm = "yes"\n'))
    assert load_profile(variant("batch_norm = false\n")).networks.cub.batch_norm is False
    # smoke uses AlexNet, and torchvision has no ImageNet weights for AlexNet with BN
    with pytest.raises(ValueError, match="AlexNet with batch norm"):
        load_profile(variant('batch_norm = true\nweights = "imagenet"\n'))
    load_profile(variant('batch_norm = false\nweights = "imagenet"\n'))  # the plain nets have them

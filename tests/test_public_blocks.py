"""The public building blocks: deepinfo.features, deepinfo.wrap, the one image check and the one
layer check (used by the estimators, the baselines, the decoders and the command)."""

import pytest
import torch
from torch import nn

import deepinfo
from deepinfo._images import check_images
from deepinfo.models import Normalize, cifar_resnet, resolve_layers


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))


def test_features_are_the_plain_forward_outputs_and_leave_the_model_as_found():
    model = _net().train()
    x = torch.rand(2, 3, 6, 6)
    f = deepinfo.features(model, x, ["2", "0"])
    assert list(f) == ["2", "0"]
    model.eval()
    with torch.no_grad():
        conv = model[0](x)
        relu = model[2](model[1](conv))
    torch.testing.assert_close(f["0"], conv, rtol=0, atol=0)
    torch.testing.assert_close(f["2"], relu, rtol=0, atol=0)
    model.train()
    deepinfo.features(model, x, "2")
    assert model.training and all(p.requires_grad for p in model.parameters())  # restored
    assert not f["2"].requires_grad
    with pytest.raises(KeyError, match="unknown layer '5'"):
        deepinfo.features(model, x, "5")


def test_features_on_a_cifar_resnet_match_the_estimators_capture():
    model = cifar_resnet(8).eval()
    x = torch.rand(2, 3, 32, 32)
    f = deepinfo.features(model, x, ["layer1", "layer3"])
    assert f["layer1"].shape == (2, 16, 32, 32) and f["layer3"].shape == (2, 64, 8, 8)


def test_wrap_normalizes_then_runs_the_model_and_shares_its_parameters():
    net = _net().eval()
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    model = deepinfo.wrap(net, mean, std)
    x = torch.rand(2, 3, 6, 6)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(model(x), net((x - m) / s))
    assert isinstance(model.normalize, Normalize) and model.model is net
    assert [n for n, _ in model.named_children()] == ["normalize", "model"]
    assert "model.0" in dict(model.named_modules())
    with pytest.raises(ValueError, match="same length"):
        deepinfo.wrap(net, (0.5,), (0.2, 0.2))
    with pytest.raises(TypeError, match="nn.Module"):
        deepinfo.wrap(lambda x: x, mean, std)


def test_one_image_check_names_what_is_wrong():
    good = torch.rand(2, 3, 4, 4)
    assert check_images(good) is good
    with pytest.raises(ValueError, match=r"4 dimensions.*unsqueeze"):
        check_images(good[0], "x")
    with pytest.raises(ValueError, match="floating point"):
        check_images((good * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="holds no images"):
        check_images(good[:0])
    bad = good.clone()
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite pixels .* in images \[1\]"):
        check_images(bad)
    with pytest.raises(ValueError, match=r"outside pixel space \[0, 1\]"):
        check_images(good * 3, pixel_range="error")
    with pytest.warns(UserWarning, match="deepinfo.wrap"):
        check_images(good - 0.5)
    check_images(good - 0.5, pixel_range="ignore")


def test_one_layer_check_with_keywords_on_top():
    model = cifar_resnet(8)
    assert resolve_layers(model, "stages") == ["layer1", "layer2", "layer3"]
    assert resolve_layers(model, ["layer2"]) == ["layer2"]
    with pytest.raises(KeyError, match="nearest valid names"):
        resolve_layers(model, "layer4")
    with pytest.raises(ValueError, match="twice"):
        resolve_layers(model, ["layer1", "layer1"])

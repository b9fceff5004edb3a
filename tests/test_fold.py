"""BatchNorm folding: the same features from a private copy, and only where the data flow allows."""

import pytest
import torch
from torch import nn

import deepinfo
import deepinfo._engine as engine
from deepinfo._features import FeatureTap, ModelGuard
from deepinfo._fold import fold_batchnorm, foldable_pairs
from deepinfo.models import block_names, cifar_resnet
from helpers import randomize_bn


def _resnet():
    model = cifar_resnet(20)
    randomize_bn(model, seed=2)
    return model.eval()


def _features(model, x, layers):
    with torch.no_grad():
        return {k: v.clone() for k, v in FeatureTap(model, layers)(x, layers).items()}


def test_folded_resnet_gives_the_same_features_and_leaves_the_model_alone():
    model = _resnet()
    layers = block_names(model) + ["bn1", "layer2.1.bn2"]
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with ModelGuard(model):
        folded = fold_batchnorm(model, x[:1], layers)
        assert folded is not model
        bns = [n for n, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d)]
        assert bns == []  # all 19 conv -> bn pairs of a ResNet-20 fold
        assert [n for n, _ in folded.named_modules()] == [n for n, _ in model.named_modules()]
        ref, got = _features(model, x, layers), _features(folded, x, layers)
        assert not any(p.requires_grad for p in folded.parameters())  # frozen like the guarded model
    for name in layers:
        scale = ref[name].abs().max()
        assert (got[name] - ref[name]).abs().max() <= 1e-5 * scale, name
    # the model is what it was, and the copy shares its unfolded tensors instead of copying them
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert isinstance(model.bn1, nn.BatchNorm2d) and not isinstance(model.conv1.bias, torch.Tensor)
    assert folded.linear.weight is model.linear.weight
    assert folded.layer1[0].conv1.weight is not model.layer1[0].conv1.weight


def test_a_requested_convolution_keeps_its_own_output():
    model = _resnet()
    x = torch.rand(1, 3, 32, 32)
    pairs = foldable_pairs(model, x, ["layer1.0.conv1"])
    assert ("layer1.0.conv1", "layer1.0.bn1") not in pairs
    assert ("layer1.0.conv2", "layer1.0.bn2") in pairs
    with ModelGuard(model):
        folded = fold_batchnorm(model, x, ["layer1.0.conv1"])
        ref, got = _features(model, x, ["layer1.0.conv1"]), _features(folded, x, ["layer1.0.conv1"])
    # its input comes through the folded stem: equal up to rounding
    assert torch.allclose(ref["layer1.0.conv1"], got["layer1.0.conv1"], rtol=1e-5, atol=1e-5)


class Branch(nn.Module):
    """conv -> bn, but the convolution's output is also read by the residual sum."""

    def __init__(self, read_twice=True, shared=False, stats=True):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3, track_running_stats=stats)
        self.read_twice, self.shared = read_twice, shared

    def forward(self, x):
        c = self.conv(x)
        y = self.bn(c)
        if self.read_twice:
            y = y + c
        if self.shared:  # the same convolution runs a second time
            y = self.conv(y)
        return y


@pytest.mark.parametrize("kw", [dict(read_twice=True), dict(read_twice=False, shared=True),
                                dict(read_twice=False, stats=False)])
def test_pairs_the_data_flow_forbids_are_left_alone(kw):
    model = Branch(**kw).eval()
    x = torch.rand(2, 3, 8, 8)
    assert foldable_pairs(model, x) == []
    assert fold_batchnorm(model, x) is model


def test_plain_pair_folds_and_hooks_or_training_mode_prevent_it():
    model = Branch(read_twice=False).eval()
    randomize_bn(model, seed=3)
    x = torch.rand(2, 3, 8, 8)
    assert foldable_pairs(model, x) == [("conv", "bn")]
    h = model.bn.register_forward_hook(lambda m, i, o: None)
    assert foldable_pairs(model, x) == []
    h.remove()
    model.bn.train()  # a BatchNorm left in training mode inside an eval-mode model
    assert foldable_pairs(model, x) == []
    assert foldable_pairs(model.train(), x) == []


def test_a_model_that_fails_on_the_trace_input_is_run_as_it_is():
    model = Branch(read_twice=False).eval()
    assert fold_batchnorm(model, torch.rand(2, 5, 8, 8)) is model  # wrong channel count


def test_cid_with_and_without_folding_agree(monkeypatch):
    model = _resnet()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    layers = ["layer1.0", "layer2.2", "layer3.2"]
    kw = dict(method="linear", calibrate=False, progress=False, seed=4)
    folded = deepinfo.cid(model, x, layers, **kw)
    monkeypatch.setattr(engine, "fold_batchnorm", lambda model, x, keep=(): model)
    plain = deepinfo.cid(model, x, layers, **kw)
    assert torch.allclose(folded.delta_f2, plain.delta_f2, rtol=1e-4)
    assert torch.allclose(folded.pixelwise, plain.pixelwise, atol=1e-4)
    assert torch.allclose(folded.constraint, plain.constraint, rtol=1e-4)

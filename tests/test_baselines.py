"""Attribution baselines: hand-computed values, Section 3.4 rescaling, LRP conservation on
residual nets (and Captum's failure there), and that the model is left exactly as found."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepinfo.attribution.baselines import METHODS, attribute, default_layer, to_input_size
from deepinfo.models.cifar_resnet import cifar_resnet
from deepinfo.models.normalize import Normalize


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The machine's 2 cores are shared: one intra-op thread avoids oversubscription stalls.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- small models


class LinearNet(nn.Module):
    """logits = W vec(x) + b, no normalization."""

    def __init__(self, c=3, h=4, w=5, k=4):
        super().__init__()
        self.fc = nn.Linear(c * h * w, k)

    def forward(self, x):
        return self.fc(x.flatten(1))


class ReLUCNN(nn.Module):
    """normalize, conv1, relu, conv2, relu, conv3, relu, GAP, fc: a plain ReLU network."""

    def __init__(self, functional=False):
        super().__init__()
        self.functional = functional
        self.normalize = Normalize((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        act = F.relu if self.functional else None
        x = self.conv1(self.normalize(x))
        x = act(x) if act else self.relu1(x)
        x = self.conv2(x)
        x = act(x) if act else self.relu2(x)
        x = self.conv3(x)
        x = act(x) if act else self.relu3(x)
        return self.fc(torch.flatten(self.pool(x), 1))


class ResNetTiny(nn.Module):
    """A small residual net: normalize, stem, an identity block and an option-A (pad) block,
    functional ReLUs after the sums, GAP, fc. ``bias=False`` everywhere for conservation tests."""

    def __init__(self, bias=False, with_normalize=True):
        super().__init__()
        if with_normalize:
            self.normalize = Normalize((0.5, 0.4, 0.3), (0.25, 0.2, 0.3))
        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=bias)
        self.stem_relu = nn.ReLU()
        self.b1c1 = nn.Conv2d(4, 4, 3, padding=1, bias=bias)
        self.b1r = nn.ReLU()
        self.b1c2 = nn.Conv2d(4, 4, 3, padding=1, bias=bias)
        self.b1out = nn.ReLU()
        self.b2c1 = nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=bias)
        self.b2r = nn.ReLU()
        self.b2c2 = nn.Conv2d(8, 8, 3, padding=1, bias=bias)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5, bias=bias)

    def forward(self, x):
        if hasattr(self, "normalize"):
            x = self.normalize(x)
        x = self.stem_relu(self.stem(x))
        x = self.b1out(self.b1c2(self.b1r(self.b1c1(x))) + x)
        short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 2, 2))
        out = self.b2c2(self.b2r(self.b2c1(x)))
        out += short
        x = F.relu(out)
        return self.fc(torch.flatten(self.pool(x), 1))


def _images(b=3, h=8, w=8, seed=1):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _snapshot(model):
    """Everything attribute() must leave alone."""
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "params": [id(p) for p in model.parameters()],
        "attrs": [sorted(vars(m)) for m in model.modules()],
        "modules": [n for n, _ in model.named_modules()],
    }


def _assert_untouched(model, snap):
    assert [m.training for m in model.modules()] == snap["training"]
    assert [p.requires_grad for p in model.parameters()] == snap["requires_grad"]
    assert [id(p) for p in model.parameters()] == snap["params"]
    state = model.state_dict()
    assert state.keys() == snap["state"].keys()
    for k, v in snap["state"].items():
        assert torch.equal(state[k], v), k
    assert [sorted(vars(m)) for m in model.modules()] == snap["attrs"]
    assert [n for n, _ in model.named_modules()] == snap["modules"]
    for m in model.modules():
        for table in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            assert len(getattr(m, table)) == 0, (type(m).__name__, table)
    assert all(p.grad is None for p in model.parameters())


# ----------------------------------------------------------------------------- hand-computed values


def test_gradient_of_linear_model_is_its_weights():
    torch.manual_seed(0)
    model = LinearNet().eval()
    x = torch.rand(2, 3, 4, 5)
    target = torch.tensor([1, 3])
    w = model.fc.weight.detach().view(4, 3, 4, 5)[target]  # [B, C, H, W]
    sal = attribute("gradient", model, x, target)
    assert sal.shape == (2, 4, 5)
    torch.testing.assert_close(sal, w.abs().amax(dim=1))
    torch.testing.assert_close(attribute("gradient", model, x, target, reduce="none"), w)
    gxi = attribute("gradient_x_input", model, x, target)
    torch.testing.assert_close(gxi, (w * x).sum(dim=1))
    # ReLU-free: guided backprop equals the positive part of the gradient
    torch.testing.assert_close(attribute("guided_backprop", model, x, target, reduce="none"), w)


def test_gradient_of_relu_model_matches_hand_formula():
    torch.manual_seed(0)
    lin1, lin2 = nn.Linear(12, 7), nn.Linear(7, 3)
    model = nn.Sequential(nn.Flatten(), lin1, nn.ReLU(), lin2).eval()
    x = torch.rand(2, 3, 2, 2)
    target = torch.tensor([0, 2])
    pre = x.flatten(1) @ lin1.weight.T + lin1.bias
    gate = (pre > 0).float()  # [B, 7]
    grad = torch.einsum("bj,bj,ji->bi", lin2.weight[target], gate, lin1.weight).detach().view(2, 3, 2, 2)
    torch.testing.assert_close(attribute("gradient", model, x, target, reduce="none"), grad)
    # guided: negative gradients at the ReLU are zeroed as well
    guided = torch.einsum("bj,bj,ji->bi", lin2.weight[target].clamp(min=0), gate, lin1.weight)
    torch.testing.assert_close(attribute("guided_backprop", model, x, target, reduce="none"),
                               guided.detach().view(2, 3, 2, 2))
    # at a layer: the gradient w.r.t. the hidden ReLU output (module "2") is lin2's row
    torch.testing.assert_close(attribute("gradient", model, x, target, layer="2", reduce="none"),
                               lin2.weight[target].detach())


def test_cam_and_gradcam_match_hand_formulas():
    torch.manual_seed(0)
    model = ReLUCNN().eval()
    x = _images(b=2)
    target = torch.tensor([4, 1])
    feat = model.relu3(model.conv3(model.relu2(model.conv2(model.relu1(model.conv1(model.normalize(x))))))).detach()
    w, b = model.fc.weight.detach(), model.fc.bias.detach()
    cam = attribute("cam", model, x, target)  # default layer: relu3, the map before pooling
    assert cam.shape == (2, 8, 8)
    hand = torch.einsum("bkhw,bk->bhw", feat, w[target])
    torch.testing.assert_close(cam, hand)
    # the spatial mean of CAM plus the bias is the logit
    torch.testing.assert_close(cam.mean(dim=(1, 2)) + b[target], model(x).gather(1, target[:, None])[:, 0])
    # Grad-CAM: ReLU(sum_k mean_hw(dS/dA_k) A_k); here dS/dA_k = w[t, k] / (h*w)
    gc = attribute("gradcam", model, x, target, layer="relu3")
    alpha = w[target] / 64.0
    torch.testing.assert_close(gc, torch.einsum("bkhw,bk->bhw", feat, alpha).clamp(min=0))
    assert default_layer(model, x) == "relu3" and default_layer(model, x, cam=True) == "relu3"


@pytest.mark.filterwarnings("ignore:Setting backward hooks")
def test_guided_backprop_matches_captum_and_sees_functional_relus():
    from captum.attr import GuidedBackprop

    torch.manual_seed(0)
    modules = ReLUCNN().eval()
    functional = ReLUCNN(functional=True).eval()
    functional.load_state_dict(modules.state_dict())
    x = _images(b=2)
    target = torch.tensor([0, 3])
    ours = attribute("guided_backprop", modules, x, target, reduce="none")
    ref = GuidedBackprop(modules).attribute(x.clone().requires_grad_(True), target=target).detach()
    torch.testing.assert_close(ours, ref)
    # F.relu calls are guided as well (Captum's version would return the plain gradient here)
    torch.testing.assert_close(attribute("guided_backprop", functional, x, target, reduce="none"), ref)
    assert not torch.allclose(ref, attribute("gradient", functional, x, target, reduce="none"))


def test_target_none_is_the_predicted_class_and_int_target_broadcasts():
    torch.manual_seed(0)
    model = ReLUCNN().eval()
    x = _images(b=3)
    pred = model(x).argmax(dim=1)
    torch.testing.assert_close(attribute("gradient", model, x), attribute("gradient", model, x, pred))
    torch.testing.assert_close(attribute("lrp", model, x, 2), attribute("lrp", model, x, [2, 2, 2]))


@pytest.mark.parametrize("method", METHODS)
def test_shapes_and_determinism(method):
    torch.manual_seed(0)
    model = ReLUCNN().eval()
    x = _images(b=2, h=12, w=10)
    a = attribute(method, model, x)
    expected = (2, 12, 10)
    assert a.shape == expected and torch.isfinite(a).all()
    torch.testing.assert_close(a, attribute(method, model, x), rtol=0, atol=0)
    if method != "cam":
        layer_map = attribute(method, model, x, layer="relu2")
        assert layer_map.shape == (2, 12, 10)  # same resolution here (padding 1, stride 1)
    up = to_input_size(a[:, ::2, ::2], (12, 10))
    assert up.shape == expected


def test_layer_maps_at_lower_resolution_and_to_input_size():
    torch.manual_seed(0)
    model = cifar_resnet(20).eval()
    x = _images(b=2, h=32, w=32)
    for method in ("gradient", "gradient_x_input", "guided_backprop", "gradcam", "lrp"):
        m = attribute(method, model, x, layer="layer2")
        assert m.shape == (2, 16, 16), method
    cam = attribute("cam", model, x)
    assert cam.shape == (2, 8, 8)
    assert default_layer(model, x) == "layer3"
    up = to_input_size(cam, (32, 32), mode="nearest")
    assert up.shape == (2, 32, 32)
    torch.testing.assert_close(up[:, ::4, ::4], cam)
    assert to_input_size(cam[0], (16, 16)).shape == (16, 16)


# ----------------------------------------------------------------------------- Section 3.4 rescaling


def _rescaled(model, factor=4.0):
    """Sec. 3.4 / SPEC 2: conv2 weights and bias / factor, conv3 weights * factor (bias kept)."""
    other = ReLUCNN().eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        other.conv2.weight /= factor
        other.conv2.bias /= factor
        other.conv3.weight *= factor
    return other


def test_rescaling_changes_the_layer_gradient_by_the_factor():
    torch.manual_seed(0)
    model = ReLUCNN().eval()
    scaled = _rescaled(model)
    x = _images(b=2)
    torch.testing.assert_close(scaled(x), model(x), rtol=1e-5, atol=1e-5)  # same function
    t = model(x).argmax(dim=1)
    for layer in ("conv2", "relu2"):  # layer L's output: activations / 4, gradients * 4
        g0 = attribute("gradient", model, x, t, layer=layer)
        g1 = attribute("gradient", scaled, x, t, layer=layer)
        torch.testing.assert_close(g1, 4 * g0, rtol=1e-5, atol=1e-7)
        assert g0.abs().max() > 0
    # elsewhere the gradient is unchanged: at the input (same function) and above layer L+1
    torch.testing.assert_close(attribute("gradient", scaled, x, t), attribute("gradient", model, x, t),
                               rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(attribute("gradient", scaled, x, t, layer="relu3"),
                               attribute("gradient", model, x, t, layer="relu3"), rtol=1e-4, atol=1e-7)


def test_rescaling_leaves_activation_weighted_maps_unchanged():
    # NOTE: SPEC section 2, consequence 2 expects Grad-CAM, gradient x input and LRP magnitudes to
    # change under this rescaling. They do not: at layer L the activations shrink by 4 exactly as
    # the gradients grow by 4, and Grad-CAM (mean gradient x activation), gradient x activation,
    # and LRP (relevance ratios) are degree-1 in both; input-space maps see an unchanged function.
    # Only the raw gradient at the rescaled layer changes (previous test). This test pins that.
    torch.manual_seed(0)
    model = ReLUCNN().eval()
    scaled = _rescaled(model)
    x = _images(b=2)
    t = model(x).argmax(dim=1)
    for method in ("gradcam", "gradient_x_input", "lrp"):
        a0 = attribute(method, model, x, t, layer="relu2")
        a1 = attribute(method, scaled, x, t, layer="relu2")
        torch.testing.assert_close(a1, a0, rtol=1e-3, atol=1e-6)
        assert a0.abs().max() > 0
    for method in ("gradient_x_input", "guided_backprop", "lrp"):
        torch.testing.assert_close(attribute(method, scaled, x, t), attribute(method, model, x, t),
                                   rtol=1e-3, atol=1e-6)


# ----------------------------------------------------------------------------- LRP conservation


@pytest.mark.parametrize("composite", ["epsilon", "epsilon_gamma_box", "epsilon_plus_flat"])
def test_lrp_conserves_relevance_on_a_residual_net(composite):
    torch.manual_seed(0)
    model = ResNetTiny(bias=False).eval()
    x = _images(b=4)
    out = model(x).detach()
    t = out.argmax(dim=1)
    score = out.gather(1, t[:, None])[:, 0]
    rel = attribute("lrp", model, x, t, composite=composite, reduce="none")
    assert rel.shape == x.shape
    # zero biases: only the 1e-6 stabilizers absorb relevance
    torch.testing.assert_close(rel.sum(dim=(1, 2, 3)), score, rtol=1e-4, atol=1e-6)
    # conservation holds at every layer, too (relevance of the feature after block 1)
    mid = attribute("lrp", model, x, t, layer="b1out", composite=composite)
    assert mid.shape == (4, 8, 8)
    torch.testing.assert_close(mid.sum(dim=(1, 2)), score, rtol=1e-4, atol=1e-6)


def test_captum_lrp_does_not_conserve_on_the_residual_net():
    # Captum's LRP only hooks modules; at `a + b` the gradient copies the relevance into both
    # branches, so the input relevance overshoots the score. This is why baselines.py uses zennit
    # with residual sums split by the Norm rule. (Captum has no rule for our Normalize module, so
    # the model here is the same net without it.)
    from captum.attr import LRP

    torch.manual_seed(0)
    model = ResNetTiny(bias=False, with_normalize=False).eval()
    x = _images(b=4)
    out = model(x).detach()
    t = out.argmax(dim=1)
    score = out.gather(1, t[:, None])[:, 0]
    theirs = LRP(model).attribute(x.clone().requires_grad_(True), target=t).detach().sum(dim=(1, 2, 3))
    ours = attribute("lrp", model, x, t, composite="epsilon", reduce="none", normalize=None).sum(dim=(1, 2, 3))
    torch.testing.assert_close(ours, score, rtol=1e-4, atol=1e-6)
    assert ((theirs - score).abs() / score.abs()).min() > 0.1, (theirs, score)


def test_lrp_on_cifar_resnet_conserves_and_torchvision_matches_zennit_canonizer():
    torchvision = pytest.importorskip("torchvision")
    from zennit.composites import EpsilonGammaBox
    from zennit.torchvision import ResNetCanonizer

    torch.manual_seed(0)
    # CIFAR ResNet-20 (option-A pad shortcuts, F.relu): fresh BN stats give zero merged biases
    model = cifar_resnet(20).eval()
    nn.init.zeros_(model.linear.bias)
    x = _images(b=2, h=32, w=32)
    out = model(x).detach()
    t = out.argmax(dim=1)
    rel = attribute("lrp", model, x, t, reduce="none")
    torch.testing.assert_close(rel.sum(dim=(1, 2, 3)), out.gather(1, t[:, None])[:, 0], rtol=1e-3, atol=1e-5)

    # torchvision ResNet-18 with realistic BN statistics: our generic residual handling gives the
    # same relevance as zennit's own ResNetCanonizer (which rewrites BasicBlock.forward)
    net = torchvision.models.resnet18(num_classes=7)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    wrapped = nn.Sequential()
    wrapped.add_module("normalize", Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    wrapped.add_module("net", net)
    wrapped.eval()
    x = _images(b=2, h=32, w=32)
    ours = attribute("lrp", wrapped, x, 3, reduce="none")
    low, high = wrapped.normalize(torch.zeros_like(x)), wrapped.normalize(torch.ones_like(x))
    reference = attribute("lrp", wrapped, x, 3, reduce="none",
                          composite=EpsilonGammaBox(low=low, high=high, canonizers=[ResNetCanonizer()]))
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-7)
    assert reference.abs().max() > 0


# ----------------------------------------------------------------------------- model left as found


@pytest.mark.parametrize("method", METHODS)
def test_model_left_untouched(method):
    torch.manual_seed(0)
    model = cifar_resnet(8)  # train mode, BatchNorm: a changed mode or merged BN would show
    model.layer1.train()
    model.conv1.weight.requires_grad_(False)
    with torch.no_grad():  # non-trivial BN statistics, so a merge that is not undone is visible
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    model.layer2.eval()
    snap = _snapshot(model)
    x = _images(b=2, h=16, w=16)
    attribute(method, model, x)
    _assert_untouched(model, snap)
    attribute(method, model, x, layer="layer2" if method != "cam" else "layer3")
    _assert_untouched(model, snap)


def test_model_left_untouched_when_attribution_fails():
    model = ResNetTiny()
    snap = _snapshot(model)
    with pytest.raises(ValueError, match="composite"):
        attribute("lrp", model, _images(), composite="alpha_beta")
    _assert_untouched(model, snap)


class FailsOnSecondCall(ReLUCNN):
    """Runs once (the trace), then raises inside the attribution library's forward."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("boom")
        return super().forward(x)


@pytest.mark.parametrize("method", ["gradcam", "lrp", "guided_backprop"])
def test_hooks_removed_when_the_forward_raises(method):
    model = FailsOnSecondCall().eval()
    x = _images()
    with pytest.raises(RuntimeError, match="boom"):
        attribute(method, model, x, target=0, layer="relu2")
    for m in model.modules():
        for table in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            assert len(getattr(m, table)) == 0, (type(m).__name__, table)
    assert model.training is False and all(p.requires_grad for p in model.parameters())


# ----------------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors():
    torchvision = pytest.importorskip("torchvision")
    model = ReLUCNN().eval()
    x = _images()
    with pytest.raises(ValueError, match="unknown method"):
        attribute("integrated_gradients", model, x)
    with pytest.raises(KeyError, match="conv2"):
        attribute("gradient", model, x, layer="conv_2")
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        attribute("gradient", model, x[0])
    with pytest.raises(ValueError, match="non-finite"):
        attribute("gradient", model, x * float("nan"))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        attribute("gradient", model, x, target=5)
    with pytest.raises(ValueError, match="one map"):
        attribute("gradcam", model, x, reduce="sum")
    with pytest.raises(ValueError, match="CAM is only defined"):
        attribute("cam", model, x, layer="relu2")
    with pytest.raises(ValueError, match="spatial map"):
        attribute("gradient", model, x, layer="fc")
    assert attribute("gradient", model, x, layer="fc", reduce="none").shape == (3, 5)
    net = torchvision.models.resnet18(num_classes=3).eval()
    xs = _images(b=1, h=32, w=32)
    with pytest.raises(ValueError, match="runs 2 times"):
        attribute("gradient", net, xs, layer="layer1.0.relu")
    with pytest.raises(ValueError, match="modified in place"):
        attribute("gradcam", net, xs, layer="layer1.0.bn2")
    vgg_like = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.ReLU(),
                             nn.Linear(8, 3)).eval()
    with pytest.raises(ValueError, match="final linear layer"):
        attribute("cam", vgg_like, x)
    with pytest.raises(ValueError, match=r"\[B, h, w\]"):
        to_input_size(torch.zeros(2, 3, 4, 4), (8, 8))


# ----------------------------------------------------------------------------- LRP on a user's model


class NamedNormalize(nn.Module):
    """A user's net with its normalization as the child named ``normalize`` (as deepinfo's models)."""

    def __init__(self, net, mean, std):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.body = net

    def forward(self, x):
        return self.body(self.normalize(x))


MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize("composite", ["epsilon_gamma_box", "epsilon"])
def test_lrp_on_wrap_equals_lrp_with_the_normalization_named_normalize(composite):
    import deepinfo

    torch.manual_seed(0)
    net = ResNetTiny(bias=False, with_normalize=False).eval()
    x = _images(b=2)
    reference = attribute("lrp", NamedNormalize(net, MEAN, STD), x, 1, composite=composite, reduce="none")
    wrapped = attribute("lrp", deepinfo.wrap(net, MEAN, STD), x, 1, composite=composite, reduce="none")
    torch.testing.assert_close(wrapped, reference, rtol=0, atol=0)
    # the README's nn.Sequential(Normalize(...), net): the normalization is named "0", found by its type
    sequential = attribute("lrp", nn.Sequential(Normalize(MEAN, STD), net), x, 1, composite=composite, reduce="none")
    torch.testing.assert_close(sequential, reference, rtol=0, atol=0)
    # and told by name
    told = attribute("lrp", nn.Sequential(Normalize(MEAN, STD), net), x, 1, composite=composite, reduce="none",
                     normalize="0")
    torch.testing.assert_close(told, reference, rtol=0, atol=0)


def test_lrp_says_so_when_it_cannot_know_the_normalization():
    class Inline(nn.Module):  # normalizes inside forward: no module to find
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net((x - 0.5) / 0.25)

    net = ResNetTiny(bias=False, with_normalize=False).eval()
    x = _images(b=2)
    with pytest.raises(ValueError, match="normalize=None.*deepinfo.wrap"):
        attribute("lrp", Inline(net), x, 1)
    with pytest.raises(KeyError, match="unknown layer 'norm'"):
        attribute("lrp", Inline(net), x, 1, normalize="norm")
    two = nn.Sequential(Normalize(MEAN, STD), Normalize(MEAN, STD), net)
    with pytest.raises(ValueError, match="several Normalize modules"):
        attribute("lrp", two, x, 1)
    # the other methods differentiate through the model and need no such knowledge
    assert attribute("gradient", Inline(net), x, 1).shape == (2, 8, 8)
    # normalize=None: the model takes [0, 1] pixels into its first layer (ZBox bounds 0 and 1)
    assert torch.isfinite(attribute("lrp", net, x, 1, normalize=None)).all()


def test_lrp_on_the_old_readme_model_with_torchvisions_normalize():
    # nn.Sequential(torchvision.transforms.Normalize(...), net): the normalization is named "0" and is
    # torchvision's class; LRP finds it by its type and matches the named-normalize model
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = ResNetTiny(bias=False, with_normalize=False).eval()
    x = _images(b=2)
    reference = attribute("lrp", NamedNormalize(net, MEAN, STD), x, 1, reduce="none")
    readme = nn.Sequential(tv.transforms.Normalize(MEAN, STD), net).eval()
    torch.testing.assert_close(attribute("lrp", readme, x, 1, reduce="none"), reference, rtol=1e-5, atol=1e-7)

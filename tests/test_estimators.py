"""The estimators against closed forms, invariances and their contract (SPEC sections 2-3)."""

import copy
import math
import warnings

import pytest
import torch
from torch import nn

import deepinfo
from deepinfo._grid import Grid
from deepinfo.result import InfoMaps

from helpers import SmallConvNet, exact_cell_energy, known_maps, linear_model

C_ENT = 0.5 * math.log(2 * math.pi * math.e)
BETA = 1.5e-4
FAST = dict(progress=False, steps=30, eval_draws=16, max_eval_draws=128)


def closed_form_cid(A, C, H, W, grid, beta=BETA):
    g = Grid.make(grid, (H, W))
    Wg = exact_cell_energy(A, C, H, W, g.index(), g.n)
    return 0.5 * torch.log(beta * Wg.mean() / Wg) + C_ENT


# --- closed form -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "C,H,W,m,grid",
    [(1, 8, 8, 20, None), (3, 6, 10, 40, None), (2, 12, 12, 30, 4), (3, 9, 15, 50, (3, 5))],
)
def test_linear_method_equals_closed_form_when_feature_is_small(C, H, W, m, grid):
    # m <= n_probes: the probes are the standard basis, so W_g is exact up to float rounding.
    model, A = linear_model(C, H, W, m)
    x = torch.rand(2, C, H, W)
    maps = deepinfo.cid(model, x, "1", grid=grid, method="linear", n_probes=64, **FAST)
    expected = closed_form_cid(A, C, H, W, grid)
    assert maps.pixelwise.shape == (1, 2, *Grid.make(grid, (H, W)).cells)
    assert torch.allclose(maps.pixelwise[0].reshape(2, -1), expected.expand(2, -1), atol=1e-4)
    # the closed form holds the constraint exactly for a linear layer; r is measured by sampling
    assert ((maps.constraint - 1).abs() <= 4 * maps.constraint_se + 1e-6).all()


def test_linear_method_within_probe_noise_for_large_features():
    # m = 400 > 64 probes: unbiased random probes. Each pixel cell holds C = 3 input units; the
    # relative sd of a cell's W estimate is about sqrt(2 / (3 * 64)) = 0.10, i.e. 0.05 nats on
    # H_g (slightly less with orthogonal probes). Mean error must sit well inside that, the
    # worst cell inside 5 sd.
    C, H, W, m = 3, 8, 8, 400
    model, A = linear_model(C, H, W, m)
    maps = deepinfo.cid(model, torch.rand(1, C, H, W), "1", method="linear", n_probes=64, calibrate=False, **FAST)
    err = maps.pixelwise[0, 0].flatten() - closed_form_cid(A, C, H, W, None)
    assert err.abs().mean() < 0.05
    assert err.abs().max() < 0.25
    assert abs(float(err.mean())) < 0.02  # unbiased: errors average out over 64 cells


def test_optimize_from_scratch_converges_to_closed_form():
    C, H, W, m = 2, 6, 6, 30
    model, A = linear_model(C, H, W, m)
    x = torch.rand(2, C, H, W)
    maps = deepinfo.cid(
        model, x, "1", method="optimize", init="constant", steps=400, draws=16, lr=0.05,
        progress=False, max_eval_draws=256,
    )
    expected = closed_form_cid(A, C, H, W, None)
    got = maps.pixelwise[0].reshape(2, -1)
    # from a flat start the map must find the closed form's shape: 0.5 nats of spread in
    # `expected`, recovered to a few hundredths on average
    assert expected.std() > 0.3
    assert (got - expected).abs().mean() < 0.05
    for b in range(2):
        assert torch.corrcoef(torch.stack([got[b], expected]))[0, 1] > 0.99
    assert ((maps.constraint - 1).abs() < 0.05).all()


def test_closed_form_water_filling_respects_cap_and_budget():
    W = torch.tensor([[1.0, 2.0, 4.0, 1e-9]])
    beta, cap = 0.01, 1.0
    s = deepinfo.closed_form_log_sigma(W, beta, cap)
    sigma2 = (2 * s).exp()
    assert sigma2[0, 3] == pytest.approx(cap**2)
    free = sigma2[0, :3] * W[0, :3]
    assert torch.allclose(free, free.mean().expand(3))  # equal sigma^2 W on free cells
    assert float((sigma2 * W).sum()) == pytest.approx(beta * float(W.sum()), rel=1e-5)


# --- the constraint and real networks ---------------------------------------------------------

def test_optimize_holds_constraint_for_every_layer_and_image():
    net = SmallConvNet()
    x = torch.rand(3, 3, 12, 12)
    layers = ["relu1", "relu2", "fc"]
    maps = deepinfo.cid(net, x, layers, method="optimize", progress=False)
    assert maps.constraint.shape == (3, 3)
    assert ((maps.constraint - 1).abs() < 0.05).all(), maps.constraint
    assert torch.isfinite(maps.pixelwise).all()
    assert maps.layers == layers
    assert maps.mean().shape == (3, 3)


def test_linear_and_optimize_agree_on_a_relu_network():
    net = SmallConvNet()
    x = torch.rand(2, 3, 12, 12)
    lin = deepinfo.cid(net, x, ["relu1", "fc"], method="linear", progress=False)
    opt = deepinfo.cid(net, x, ["relu1", "fc"], method="optimize", progress=False)
    assert (lin.mean() - opt.mean()).abs().max() < 0.1
    for li in range(2):
        for b in range(2):
            r = torch.corrcoef(torch.stack([lin.pixelwise[li, b].flatten(), opt.pixelwise[li, b].flatten()]))[0, 1]
            assert r > 0.8


# --- invariances ------------------------------------------------------------------------------

def rescaled(net: SmallConvNet, k=4.0) -> SmallConvNet:
    """Section 3.4: w_L /= k, b_L /= k, w_{L+1} *= k (ReLU between): same function."""
    other = copy.deepcopy(net)
    with torch.no_grad():
        other.conv1.weight /= k
        other.conv1.bias /= k
        other.conv2.weight *= k
    return other


def layer_output_gradient(net, x, layer):
    """Gradient of the top logit w.r.t. a layer's output (the baselines' layer-wise gradient map)."""
    store = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        store["o"] = output

    h = dict(net.named_modules())[layer].register_forward_hook(keep)
    out = net(x)
    out.max(1).values.sum().backward()
    h.remove()
    return store["o"].grad


@pytest.mark.parametrize("method", ["linear", "optimize"])
def test_section_3_4_rescaling_leaves_cid_unchanged_but_gradients_change(method):
    net = SmallConvNet().eval()
    net.bn.running_mean.uniform_(-0.1, 0.1)
    net.bn.running_var.uniform_(0.5, 2)
    other = rescaled(net)
    x = torch.rand(2, 3, 12, 12)
    assert torch.allclose(net(x), other(x), atol=1e-5)
    layers = ["relu1", "relu2", "fc"]
    a = deepinfo.cid(net, x, layers, method=method, progress=False, steps=20)
    b = deepinfo.cid(other, x, layers, method=method, progress=False, steps=20)
    assert torch.allclose(a.pixelwise, b.pixelwise, atol=2e-3)
    assert torch.allclose(a.delta_f2[0], 16 * b.delta_f2[0], rtol=1e-4)  # the feature itself shrank
    ga = layer_output_gradient(net, x, "relu1")
    gb = layer_output_gradient(other, x, "relu1")
    assert torch.allclose(gb, 4 * ga, rtol=1e-4, atol=1e-6)


def test_positive_output_scaling_leaves_cid_unchanged():
    class Scaled(nn.Module):
        def __init__(self, inner, c):
            super().__init__()
            self.inner, self.c = inner, c

        def forward(self, x):
            return self.inner(x) * self.c

    net = SmallConvNet()
    x = torch.rand(2, 3, 12, 12)
    for c in (1e-3, 7.0):
        a = deepinfo.cid(Scaled(net, 1.0), x, "", method="optimize", progress=False, steps=20)
        b = deepinfo.cid(Scaled(net, c), x, "", method="optimize", progress=False, steps=20)
        assert torch.allclose(a.pixelwise, b.pixelwise, atol=2e-3)


def test_cid_grows_by_half_ln10_per_decade_of_beta():
    net = SmallConvNet()
    x = torch.rand(2, 3, 12, 12)
    betas = [1.5e-5, 1.5e-4, 1.5e-3]
    lin = [deepinfo.cid(net, x, "relu2", beta=b, method="linear", calibrate=False, progress=False).mean() for b in betas]
    for lo, hi in zip(lin, lin[1:]):  # exact for the pure closed form: sigma scales as sqrt(beta)
        assert torch.allclose(hi - lo, torch.full_like(lo, 0.5 * math.log(10)), atol=1e-4)
    opt = [deepinfo.cid(net, x, "relu2", beta=b, method="optimize", progress=False).mean() for b in betas]
    for lo, hi in zip(opt, opt[1:]):  # the real network: monotone, close to the linear rate
        assert (hi > lo).all()
        assert ((hi - lo) - 0.5 * math.log(10)).abs().max() < 0.15


# --- ignored pixels, seeding, side effects ----------------------------------------------------

class IgnoresCorner(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x):
        keep = torch.ones_like(x)
        keep[..., :3, :3] = 0
        return self.conv(x * keep)


@pytest.mark.parametrize("method", ["linear", "optimize"])
def test_ignored_pixels_hit_the_cap(method):
    torch.manual_seed(0)
    net = IgnoresCorner()
    maps = deepinfo.cid(net, torch.rand(2, 1, 8, 8), "conv", method=method, sigma_max=5.0, progress=False)
    assert torch.isfinite(maps.pixelwise).all()
    assert (maps.n_capped == 9).all()
    assert torch.allclose(maps.pixelwise[0, :, :3, :3], torch.full((2, 3, 3), math.log(5.0) + C_ENT))
    assert (maps.pixelwise[0, :, 4:, 4:] < math.log(5.0) + C_ENT - 1).all()


def test_same_seed_same_numbers_and_batch_independence():
    net = SmallConvNet()
    x = torch.rand(3, 3, 12, 12)
    a = deepinfo.cid(net, x, ["relu1", "fc"], seed=3, progress=False, steps=20)
    b = deepinfo.cid(net, x, ["relu1", "fc"], seed=3, progress=False, steps=20)
    c = deepinfo.cid(net, x, ["relu1", "fc"], seed=4, progress=False, steps=20)
    assert torch.equal(a.pixelwise, b.pixelwise) and torch.equal(a.constraint, b.constraint)
    assert not torch.equal(a.pixelwise, c.pixelwise)
    # an image's map does not depend on the other images of the batch (noise drawn per image)
    one = deepinfo.cid(net, x[:1], ["relu1", "fc"], seed=3, progress=False, steps=20)
    assert torch.allclose(one.pixelwise[:, 0], a.pixelwise[:, 0], atol=1e-4)
    # nor on how the images are chunked into forward passes (one image per chunk here)
    small = deepinfo.cid(net, x, ["relu1", "fc"], seed=3, progress=False, steps=20, batch_size=8)
    assert torch.allclose(small.pixelwise, a.pixelwise, atol=1e-4)
    assert torch.allclose(small.constraint, a.constraint, atol=1e-4)
    lin = [deepinfo.cid(net, x, ["relu1", "fc"], seed=3, method="linear", progress=False, batch_size=bs)
           for bs in (8, 256)]
    assert torch.allclose(lin[0].pixelwise, lin[1].pixelwise, atol=1e-4)
    assert torch.allclose(lin[0].constraint, lin[1].constraint, atol=1e-4)


def test_the_model_is_left_exactly_as_found():
    net = SmallConvNet()
    net.train()
    net.conv2.weight.requires_grad_(False)
    user_hook = net.relu1.register_forward_hook(lambda m, i, o: None)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    grads = {n: p.requires_grad for n, p in net.named_parameters()}
    modes = {n: m.training for n, m in net.named_modules()}
    hooks = {n: (dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks)) for n, m in net.named_modules()}
    x = torch.rand(2, 3, 12, 12)
    rng_state = torch.get_rng_state()
    deepinfo.cid(net, x, ["relu1", "relu2"], progress=False, steps=5)
    deepinfo.cid(net, x, ["relu1", "relu2"], method="linear", progress=False)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())  # BN stats included
    assert grads == {n: p.requires_grad for n, p in net.named_parameters()}
    assert modes == {n: m.training for n, m in net.named_modules()}
    assert hooks == {n: (dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks)) for n, m in net.named_modules()}
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(rng_state, torch.get_rng_state())  # the global RNG is not consumed
    user_hook.remove()


# --- RU -----------------------------------------------------------------------------------------

class HalfPass(nn.Module):
    """Passes the left half of the image through, zeroes the right half."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Identity()

    def forward(self, x):
        keep = torch.zeros_like(x)
        keep[..., : x.shape[-1] // 2] = 1
        return self.layer(x * keep)


def test_ru_low_where_the_decoder_can_rebuild_the_input_and_high_where_it_cannot():
    x = 0.3 + 0.4 * torch.rand(2, 1, 8, 8)
    net = HalfPass()
    maps = deepinfo.ru(net, {"layer": nn.Identity()}, x, "layer", sigma_max=1.0, progress=False)
    left, right = maps.pixelwise[0, :, :, :4], maps.pixelwise[0, :, :, 4:]
    # left: the identity decoder rebuilds x', so RU = log sigma + C (tiny sigma)
    cid = deepinfo.cid(net, x, "layer", sigma_max=1.0, progress=False)
    # (each cell's RU is a mean of ~200 chi-square terms: sampling sd about 0.05 nats)
    assert (left - cid.pixelwise[0, :, :, :4]).abs().mean() < 0.05
    assert (left - cid.pixelwise[0, :, :, :4]).abs().max() < 0.25
    # right: nothing reaches the decoder; RU = 0.5 log(x^2) + C, the entropy of not knowing x
    assert torch.allclose(right, 0.5 * torch.log(x[:, 0, :, 4:] ** 2) + C_ENT, atol=1e-4)
    assert (right.mean() - left.mean()) > 3


def test_ru_unchanged_by_section_3_4_rescaling_with_the_equivalent_decoder():
    torch.manual_seed(1)
    net = SmallConvNet().eval()
    other = rescaled(net)
    dec = nn.Sequential(nn.ConvTranspose2d(8, 3, 2, stride=1), nn.Upsample(size=(12, 12)), nn.Sigmoid())

    class Times(nn.Module):
        def __init__(self, inner, k):
            super().__init__()
            self.inner, self.k = inner, k

        def forward(self, f):
            return self.inner(f * self.k)

    x = torch.rand(2, 3, 12, 12)
    a = deepinfo.ru(net, {"relu1": dec}, x, "relu1", progress=False, steps=20)
    b = deepinfo.ru(other, {"relu1": Times(dec, 4.0)}, x, "relu1", progress=False, steps=20)
    assert torch.allclose(a.pixelwise, b.pixelwise, atol=2e-3)


# --- concentration --------------------------------------------------------------------------------

def test_concentration_on_a_known_map():
    v = torch.zeros(1, 1, 4, 4)
    v[..., :2, :2] = -1.0  # foreground discards less
    v[..., 3, 3] = 3.0
    maps = known_maps(v)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[:, :2, :2] = True
    expected = (3.0 / 12) - (-1.0)
    assert deepinfo.concentration(maps, mask).item() == pytest.approx(expected)
    boxes = torch.tensor([[0, 0, 2, 2]])  # x0, y0, x1, y1 (exclusive)
    assert deepinfo.concentration(maps, boxes).item() == pytest.approx(expected)


def test_concentration_maps_masks_onto_the_grid_by_majority():
    v = torch.arange(4.0).reshape(1, 1, 2, 2)
    maps = known_maps(v)
    maps.image_size = (4, 4)  # 2x2 cells of 2x2 pixels
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :2, :2] = True  # all of cell 0
    mask[0, 0, 2] = True  # a quarter of cell 1: stays background
    assert deepinfo.concentration(maps, mask).item() == pytest.approx((1 + 2 + 3) / 3 - 0)


# --- bad input ---------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    net = SmallConvNet()
    x = torch.rand(1, 3, 12, 12)
    with pytest.raises(ValueError, match="non-finite"):
        deepinfo.cid(net, torch.full_like(x, float("nan")), "relu1", progress=False)
    with pytest.raises(ValueError, match="4 dimensions.*unsqueeze"):
        deepinfo.cid(net, x[0], "relu1", progress=False)
    with pytest.raises(ValueError, match="beta must be a positive"):
        deepinfo.cid(net, x, "relu1", beta=0, progress=False)
    with pytest.raises(ValueError, match="beta must be a positive"):
        deepinfo.cid(net, x, "relu1", beta=-1e-4, progress=False)
    with pytest.raises(KeyError, match="relu1"):
        deepinfo.cid(net, x, "relu_1", progress=False)
    with pytest.raises(ValueError, match="method"):
        deepinfo.cid(net, x, "relu1", method="exact", progress=False)
    with pytest.raises(ValueError, match="floating point"):
        deepinfo.cid(net, (x * 255).to(torch.uint8), "relu1", progress=False)
    with pytest.raises(ValueError, match="grid"):
        deepinfo.cid(net, x, "relu1", grid=20, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        deepinfo.cid(net, x, "relu1", batch_size=0, progress=False)
    with pytest.raises(KeyError, match="no decoder"):
        deepinfo.ru(net, {}, x, "relu1", progress=False)
    with pytest.warns(UserWarning, match="pixel-space"):
        deepinfo.cid(net, x * 10, "relu1", method="linear", progress=False)
    maps = known_maps(torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        deepinfo.concentration(maps, torch.zeros(2, 5, 5, dtype=torch.bool))
    full = torch.ones(2, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="empty background"):
        deepinfo.concentration(maps, full)
    with pytest.raises(ValueError, match="empty foreground"):
        deepinfo.concentration(maps, ~full)


def test_out_of_gpu_memory_says_which_setting_to_lower(monkeypatch):
    import deepinfo._engine as engine

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(engine, "column_energies", oom)
    net = SmallConvNet()
    before = {n: p.requires_grad for n, p in net.named_parameters()}
    with pytest.raises(torch.cuda.OutOfMemoryError, match="batch_size=32.*batch_size=8"):
        deepinfo.cid(net, torch.rand(1, 3, 12, 12), "relu1", batch_size=32, progress=False)
    assert before == {n: p.requires_grad for n, p in net.named_parameters()}  # guard restored


def test_result_table_and_round_trip(tmp_path):
    net = SmallConvNet()
    maps = deepinfo.cid(net, torch.rand(2, 3, 12, 12), ["relu1", "fc"], method="linear", progress=False)
    df = maps.to_frame()
    assert len(df) == 4 and set(df.layer) == {"relu1", "fc"}
    assert df.value.tolist() == pytest.approx(maps.mean().flatten().tolist())
    maps.save(tmp_path / "m.pt")
    back = InfoMaps.load(tmp_path / "m.pt")
    assert torch.equal(back.pixelwise, maps.pixelwise) and back.layers == maps.layers
    assert back.upsampled().shape == (2, 2, 12, 12)


@pytest.mark.parametrize("slope", [1.0, 2.0, 3.5, 6.0])
def test_rescaling_to_the_constraint_converges_on_steep_layers(slope):
    # r grows as sigma^slope: slope 2 is a linear layer; trained nets' logits measured 3-4, where
    # steps that assume slope 2 overshoot and oscillate instead of converging
    from deepinfo._solver import rescale_to_constraint

    start = torch.tensor([[-3.0, -2.0], [-4.0, -4.5], [-2.5, -2.5]])  # log sigma [B=3, G=2]
    scale = torch.tensor([28.0, 0.05, 1.01])  # r at the start; the third is already on it
    calls = []

    def measure(log_sigma, step, idx):
        calls.append(step)
        assert 2 not in idx.tolist()  # only the images still off are measured again
        c = (log_sigma - start[idx]).mean(-1)
        r = scale[idx] * torch.exp(slope * c)
        return r, torch.full_like(r, 0.001), None

    first = (scale.clone(), torch.full_like(scale, 0.001), None)
    s, r, se, _ = rescale_to_constraint(measure, start, first, tol=0.05, log_sigma_max=10.0)
    assert torch.all((r - 1).abs() <= 0.025), r
    assert torch.allclose(s[2], start[2])  # left alone, its first measurement kept
    assert r[2] == scale[2]
    assert len(calls) <= (1 if slope == 2.0 else 8)
    true_r = scale * torch.exp(slope * (s - start).mean(-1))
    assert torch.allclose(r, true_r)  # what is reported was measured at the returned sigma


def test_rescaling_to_the_constraint_leaves_capped_cells_alone():
    from deepinfo._solver import rescale_to_constraint

    cap = 1.0
    start = torch.tensor([[cap, -3.0, -3.0]])

    def measure(log_sigma, step, idx):
        r = torch.exp(2 * (log_sigma[:, 1:] + 3.0).mean(-1)) * 4.0
        return r, torch.full_like(r, 0.001), None

    s, r, _, _ = rescale_to_constraint(measure, start, measure(start, -1, torch.tensor([0])), tol=0.05,
                                       log_sigma_max=cap)
    assert s[0, 0] == cap and (r - 1).abs().max() <= 0.025
    assert torch.allclose(s[0, 1:], torch.full((2,), -3.0 - 0.5 * math.log(4.0)), atol=1e-5)


class DormantCorner(nn.Module):
    """A linear map of the image plus a ReLU unit that is off (zero gradient) at every image in
    [0, 1] but fires under noise of a few pixel ranges: its corner looks ignored to the
    linearised layer, which caps its sigma, yet at the cap it dominates ||f' - f||^2."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 16)
        with torch.no_grad():
            self.lin.weight[:, 0] = 0  # pixel (0, 0) reaches the output only through the ReLU

    def forward(self, x):
        flat = x.flatten(1)
        dormant = 100 * torch.relu(x[:, 0, 0, 0] - 2.0)
        return torch.cat([self.lin(flat), dormant[:, None]], 1)


@pytest.mark.parametrize("method", ["linear", "optimize"])
def test_capped_cells_that_the_real_layer_does_not_ignore_are_rescaled_too(method):
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("h", DormantCorner())
    x = torch.rand(2, 1, 8, 8)
    with warnings.catch_warnings(record=True) as record:  # no "constraint is off" warning
        warnings.simplefilter("always")
        maps = deepinfo.cid(net, x, "h", method=method, sigma_max=10.0, progress=False)
    assert not [w for w in record if "constraint" in str(w.message)]
    assert ((maps.constraint - 1).abs() <= 0.05).all(), maps.constraint
    # the dormant pixel ends below the cap, the others near the linear layer's closed form
    assert (maps.sigma[0, :, 0, 0] < 10.0).all()
    assert torch.isfinite(maps.pixelwise).all() and (maps.pixelwise > -10).all()


def test_rescaling_to_the_constraint_bisects_a_kinked_steep_ratio():
    from deepinfo._solver import rescale_to_constraint

    start = torch.zeros(1, 4)

    def measure(log_sigma, step, idx):  # r jumps by a factor e^30 per unit of log sigma above 0.1
        c = log_sigma.mean(-1)
        r = torch.where(c > 0.1, 0.5 * torch.exp(30 * (c - 0.1)), 0.5 * torch.exp(2 * (c - 0.1)))
        return r, torch.full_like(r, 0.001), None

    first = measure(start, -1, torch.tensor([0]))
    s, r, _, _ = rescale_to_constraint(measure, start, first, tol=0.05, log_sigma_max=10.0, iterations=16)
    assert (r - 1).abs().max() <= 0.025, r


class _FakeSampler:
    """``dist = norm * ratio * (1 + spread * eps)`` per image, counting the images run."""

    def __init__(self, ratio, spread, gens, counter, x=None):
        self.ratio, self.spread, self.gens, self.counter = ratio, spread, gens, counter
        self.x = torch.zeros(len(gens), 1, 2, 2) if x is None else x

    def features(self, log_sigma, draws):
        eps = torch.stack([torch.randn(draws, generator=g) for g in self.gens], 1)
        self.counter.append(len(self.gens) * draws)
        dist = self.ratio * (1 + self.spread * eps)
        return dist[..., None], dist

    def subset(self, idx):
        keep = idx.tolist()
        return _FakeSampler(self.ratio[idx], self.spread[idx], [self.gens[i] for i in keep], self.counter, self.x[idx])


def _fake(ratio, spread, seed=0):
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(ratio))]
    return _FakeSampler(torch.tensor(ratio), torch.tensor(spread), gens, [])


def test_measuring_the_ratio_stops_each_image_when_its_verdict_is_settled():
    from deepinfo._solver import MIN_SE_DRAWS, measure_ratio, off_constraint

    # far off: one round; on the constraint: settled once its se rests on MIN_SE_DRAWS draws;
    # noisy and near the band's edge: runs until its precision target
    smp = _fake([2.5, 1.0, 1.04], [0.05, 0.1, 0.3])
    norm = torch.ones(3)
    r, se, _, n = measure_ratio(smp, torch.zeros(3, 1), norm, 8, 256, rel_se=0.02, off_tol=0.05)
    assert n.tolist()[:2] == [8, MIN_SE_DRAWS], n
    assert n[2] > 64
    assert off_constraint(r, se, 0.05).tolist()[:2] == [True, False]
    # the images that stopped are not run further: the forward passes cover exactly the draws used
    assert sum(smp.counter) == int(n.sum())
    # and each image's numbers are those it gets measured alone (its own generator)
    for b in range(3):
        alone = _fake([[2.5, 1.0, 1.04][b]], [[0.05, 0.1, 0.3][b]], seed=b)
        r1, se1, _, n1 = measure_ratio(alone, torch.zeros(1, 1), norm[:1], 8, 256, rel_se=0.02, off_tol=0.05)
        assert n1[0] == n[b] and torch.allclose(r1[0], r[b]) and torch.allclose(se1[0], se[b])
    # without a rescaling to follow, every image is measured to its precision target
    _, se2, _, n2 = measure_ratio(_fake([2.5, 1.0, 1.04], [0.05, 0.1, 0.3]), torch.zeros(3, 1), norm, 8, 256,
                                  rel_se=0.02)
    assert (n2 >= MIN_SE_DRAWS).all() and ((se2 / torch.tensor([2.5, 1.0, 1.04]) <= 0.02) | (n2 == 256)).all()


class FlattensWithView(nn.Module):
    """A conv net whose head uses ``.view``, which channels-last features cannot take."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).view(x.shape[0], -1))


def test_a_model_that_cannot_take_channels_last_images_runs_as_it_is():
    from deepinfo._features import FeatureTap

    torch.manual_seed(0)
    net = FlattensWithView().eval()
    x = torch.rand(2, 3, 6, 6)
    tap = FeatureTap(net, ["conv", "fc"])
    assert tap.channels_last  # a CPU conv net: tried first
    out = tap(x)
    assert not tap.channels_last  # the .view failed: from now on the usual layout
    with torch.no_grad():
        assert torch.allclose(out["fc"], net(x), atol=1e-6)
        assert torch.allclose(out["conv"], net.conv(x), atol=1e-6)
    maps = deepinfo.cid(net, x, ["conv", "fc"], method="linear", progress=False)
    assert torch.isfinite(maps.pixelwise).all() and ((maps.constraint - 1).abs() <= 0.05).all()
    # a model that takes them gives the same features either way
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3)).eval()
    tap = FeatureTap(conv, ["2"])
    with torch.no_grad():
        assert torch.allclose(tap(x)["2"], conv(x), atol=1e-6) and tap.channels_last


def test_fit_batch_takes_the_fraction_of_free_memory_within_bounds():
    from deepinfo._engine import fit_batch

    assert fit_batch(80e9, 100e6) == 400          # half of 80 GB at 100 MB per image
    assert fit_batch(80e9, 1e6) == 1024           # capped
    assert fit_batch(1e6, 100e6) == 1             # at least one
    assert fit_batch(80e9, 100e6, fraction=0.25) == 200

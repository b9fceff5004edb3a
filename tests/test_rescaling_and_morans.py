"""The rescaling of Sec. 3.4 (``techniques.rescaling.rescale_pair``) and the map statistic of notebook 01
(``estimators.morans_i``)."""

import math

import pytest
import torch
from torch import nn

from deepinfo.estimators import morans_i
from deepinfo.techniques.rescaling import rescale_pair


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4),
    ).eval()


def test_rescale_pair_keeps_the_output_and_scales_the_first_layer():
    net = _net()
    x = torch.rand(2, 3, 8, 8)
    k = 3.0  # not a power of two: the output agrees up to rounding only
    out = rescale_pair(net, "0", "3", k)
    assert out is not net and torch.equal(net[0].weight, _net()[0].weight)  # the original is untouched
    assert torch.allclose(out[0].weight * k, net[0].weight) and torch.allclose(out[0].bias * k, net[0].bias)
    assert torch.allclose(out[3].weight, net[3].weight * k) and torch.equal(out[3].bias, net[3].bias)
    with torch.no_grad():
        assert torch.allclose(out(x), net(x), atol=1e-6)
        assert torch.allclose(out[:3](x) * k, net[:3](x), atol=1e-6)  # feature after the pool is /k


def test_rescale_pair_with_a_power_of_two_is_bitwise_exact():
    net = _net()
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(rescale_pair(net, "0", "3", 4.0)(x), net(x))


def test_rescale_pair_refuses_what_would_change_the_output():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Conv2d(4, 4, 3))
    with pytest.raises(ValueError, match="Tanh"):
        rescale_pair(net, "0", "2", 2.0)
    with pytest.raises(ValueError, match="Conv2d or Linear"):
        rescale_pair(_net(), "1", "3", 2.0)
    with pytest.raises(ValueError, match="after"):
        rescale_pair(_net(), "3", "0", 2.0)
    with pytest.raises(ValueError, match="positive"):
        rescale_pair(_net(), "0", "3", -1.0)
    with pytest.raises(KeyError, match="no module"):
        rescale_pair(_net(), "0", "9", 2.0)


def test_morans_i_orders_smooth_noise_and_checkerboard():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(200, 8, 8, generator=g)
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    smooth = torch.sin(xx / 4) + torch.cos(yy / 5)
    checker = ((xx + yy) % 2) * 2 - 1
    i_noise = morans_i(noise)
    assert i_noise.shape == (200,)
    assert abs(float(i_noise.mean())) < 0.05  # E[I] = -1/(G-1) ~ -0.016 for white noise
    assert float(morans_i(smooth)) > 0.8
    assert math.isclose(float(morans_i(checker)), -1.0, abs_tol=1e-6)
    # invariant to shifting and (positively) scaling the map: it only sees the pattern
    assert torch.allclose(morans_i(3 * smooth + 7), morans_i(smooth), atol=1e-5)


def test_morans_i_of_a_constant_map_is_nan_and_bad_shapes_raise():
    assert math.isnan(float(morans_i(torch.full((4, 4), 2.0))))
    with pytest.raises(ValueError, match="at least two cells"):
        morans_i(torch.zeros(1, 1))


def test_rescale_pair_through_batch_norm_rescales_its_affine_part():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU())
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        for bn in (net[1], net[5]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
    net.eval()
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="pass the batch norm"):
        rescale_pair(net, "0", "4", 4.0)
    out = rescale_pair(net, "1", "4", 4.0).eval()
    assert torch.equal(out[0].weight, net[0].weight)  # the conv itself is untouched
    with torch.no_grad():
        assert torch.equal(out(x), net(x))
        assert torch.equal(out[:4](x) * 4, net[:4](x))

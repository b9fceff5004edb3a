"""Tests of deepinfo.techniques.robustness: minimal L2 perturbations to the pairwise decision boundary."""

import math

import pytest
import torch
from torch import nn

from deepinfo.models.normalize import Normalize
from deepinfo.techniques.robustness import boundary_scale, minimal_perturbation, robustness, top_wrong_classes


def linear_model(seed=0, classes=5, shape=(3, 4, 4)):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), classes)).double()


def relu_net(seed=0, classes=6):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, classes)).double()


def images(n=4, seed=1):
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_linear_model_exact_distance():
    model = linear_model()
    x = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    W, b = model[1].weight.detach(), model[1].bias.detach()
    pred, wrong = top_wrong_classes(model, x, 4)
    for r in range(4):
        target = wrong[:, r]
        delta, dist, reached = minimal_perturbation(model, x, pred, target)
        z = model(x).detach()
        rows = torch.arange(6)
        margin = z[rows, pred] - z[rows, target]
        expected = margin / (W[pred] - W[target]).norm(dim=1)
        assert bool(reached.all())
        torch.testing.assert_close(dist, expected, rtol=1e-9, atol=1e-12)
        # the perturbation lands on the boundary (without the overshoot) and points along w_j - w_i
        z_new = model(x + delta).detach()
        torch.testing.assert_close(z_new[rows, target] - z_new[rows, pred], torch.zeros(6, dtype=x.dtype), atol=1e-9, rtol=0)
        cos = torch.nn.functional.cosine_similarity(delta.flatten(1), W[target] - W[pred], dim=1)
        torch.testing.assert_close(cos, torch.ones(6, dtype=x.dtype))
    res = robustness(model, x, 4)
    assert res.distance.shape == (6, 4) and bool(res.reached.all())
    assert bool((res.distance[:, :-1] >= 0).all())


def test_pixel_space_with_normalization_inside():
    # distance is measured on pixel-space images: a Normalize (x - m) / s inside the model divides
    # the weight by s, so the boundary distance is margin / ||(w_i - w_j) / s||
    torch.manual_seed(0)
    lin = nn.Linear(3 * 4 * 4, 4).double()
    model = nn.Sequential(Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3)), nn.Flatten(), lin).double()
    x = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    pred, wrong = top_wrong_classes(model, x, 1)
    _, dist, _ = minimal_perturbation(model, x, pred, wrong[:, 0])
    s = torch.tensor([0.2, 0.25, 0.3], dtype=torch.float64).repeat_interleave(16)
    W = lin.weight.detach() / s
    z = model(x).detach()
    rows = torch.arange(3)
    expected = (z[rows, pred] - z[rows, wrong[:, 0]]) / (W[pred] - W[wrong[:, 0]]).norm(dim=1)
    torch.testing.assert_close(dist, expected, rtol=1e-6, atol=0)  # Normalize keeps float32 constants
    assert not torch.allclose(dist, expected * 0.2, rtol=0.1)  # not the distance in normalized units


def test_no_clipping_documented_out_of_range_counted():
    # an image at 1.0 whose boundary lies in the +x direction: the perturbation leaves [0, 1]
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 2, bias=False)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
        model[1].weight[0, 0] = 4.0
    x = torch.ones(1, 3, 1, 1, dtype=torch.float64)
    res = robustness(model, x, 1)
    # margin 4 - 3 = 1, w_1 - w_0 = (-3, 1, 1): distance 1 / sqrt(11), not clipped
    assert res.distance[0, 0].item() == pytest.approx(1 / math.sqrt(11))
    assert int(res.out_of_range[0, 0]) == 2  # the two channels pushed above 1


def test_agrees_with_bisection_on_relu_net():
    model = relu_net()
    x = images(4)
    pred, wrong = top_wrong_classes(model, x, 3)
    for r in range(3):
        delta, dist, reached = minimal_perturbation(model, x, pred, wrong[:, r], max_steps=50)
        assert bool(reached.all())
        t = boundary_scale(model, x, delta, pred, wrong[:, r])
        bisected = t * delta.flatten(1).norm(dim=1)
        torch.testing.assert_close(dist, bisected, rtol=0.03, atol=0)
        # and the bisected point is on the boundary
        z = model(x + t.view(-1, 1, 1, 1) * delta).detach()
        rows = torch.arange(4)
        gap = (z[rows, wrong[:, r]] - z[rows, pred]).abs()
        assert float(gap.max()) < 1e-8


def test_batched_equals_one_by_one():
    model = relu_net(seed=2)
    x = images(5, seed=4)
    full = robustness(model, x, 3, batch_size=64)
    for b in range(5):
        single = robustness(model, x[b:b + 1], 3, batch_size=1)
        torch.testing.assert_close(single.distance[0], full.distance[b], rtol=1e-10, atol=1e-12)
        assert torch.equal(single.targets[0], full.targets[b])
    odd = robustness(model, x, 3, batch_size=4)  # batches cutting across images
    torch.testing.assert_close(odd.distance, full.distance, rtol=1e-10, atol=1e-12)
    assert full.reached_fraction == 1.0 and full.mean == pytest.approx(float(full.distance.mean()))


def test_unreached_is_nan_and_already_crossed_is_zero():
    model = relu_net()
    x = images(2)
    pred, wrong = top_wrong_classes(model, x, 1)
    _, dist, reached = minimal_perturbation(model, x, wrong[:, 0], pred)  # source ranked below target: at 0
    assert torch.equal(dist, torch.zeros(2, dtype=x.dtype)) and bool(reached.all())
    # a bisection without a crossing within t_max gives NaN
    t = boundary_scale(model, x, torch.zeros_like(x), pred, wrong[:, 0])
    assert bool(torch.isnan(t).all())


def test_clear_errors():
    model = relu_net()
    x = images(2)
    with pytest.raises(ValueError, match="k must be an int in 1..5"):
        top_wrong_classes(model, x, 6)
    with pytest.raises(ValueError, match="equals the source"):
        minimal_perturbation(model, x, [0, 1], [0, 2])
    with pytest.raises(ValueError, match="one class per image"):
        minimal_perturbation(model, x, [0], [1])
    with pytest.raises(ValueError, match=r"float images \[B, C, H, W\]"):
        robustness(model, x[0], 2)
    with pytest.raises(ValueError, match="max_steps"):
        minimal_perturbation(model, x, [0, 0], [1, 1], max_steps=0)
    # top_k above the number of classes is capped (the paper's 20 on a net with fewer classes)
    assert robustness(model, x, 20).distance.shape == (2, 5)

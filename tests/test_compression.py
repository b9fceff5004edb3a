"""Tests of deepinfo.techniques.compression: Han et al. threshold rule, target fractions, masks held."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from deepinfo.techniques.compression import (compress, find_thresholds, kept_fraction, make_permanent, next_stage,
                                             prunable_layers, prune_magnitude, prune_to, threshold_masks)
from deepinfo.toolkit.training import Recipe


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 16), nn.ReLU(),
                         nn.Linear(16, 3))


def data(n: int = 48, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g)
    y = (x[:, 0].mean((1, 2)) * 3).long().clamp(0, 2)
    return TensorDataset(x, y)


def test_threshold_rule_is_s_times_layer_std():
    net = small_net()
    masks = threshold_masks(net, 0.7, 1.3)
    for name, m in prunable_layers(net):
        s = 0.7 if isinstance(m, nn.Conv2d) else 1.3
        expected = (m.weight.detach().abs() >= s * m.weight.detach().std(unbiased=False)).float()
        assert torch.equal(masks[name], expected), name
        assert masks[name].shape == m.weight.shape
    # s = 0 keeps everything, an s above every ratio keeps nothing
    assert all(bool(mk.all()) for mk in threshold_masks(net, 0.0, 0.0).values())
    assert not any(bool(mk.any()) for mk in threshold_masks(net, 1e6, 1e6).values())


@pytest.mark.parametrize("keep", [0.38, 0.128, 0.08])
def test_achieved_fraction_close_to_target(keep):
    net = small_net()
    total = sum(m.weight.numel() for _, m in prunable_layers(net))
    res = prune_to(net, keep)
    assert abs(res.kept - keep) <= 2 / total + 1e-9
    assert abs(res.kept_conv - keep) < 0.01 and abs(res.kept_fc - keep) < 0.01  # default: each group keeps `keep`
    assert res.kept == pytest.approx(kept_fraction(net))
    assert res.s_conv > 0 and res.s_fc > 0
    # the effective weight is zero exactly where the mask is
    for _, m in prunable_layers(net):
        assert torch.equal(m.weight == 0, m.weight_mask == 0)
    assert net(torch.rand(2, 3, 8, 8)).shape == (2, 3)


def test_conv_keep_sets_the_split_and_total_still_met():
    net = small_net()
    res = prune_to(net, 0.2, conv_keep=0.3)
    assert res.kept_conv == pytest.approx(0.3, abs=0.01)
    assert res.kept == pytest.approx(0.2, abs=0.01)
    assert res.kept_fc < 0.2
    with pytest.raises(ValueError, match="can only be in"):
        find_thresholds(small_net(), 0.9, conv_keep=0.05)


def test_masks_held_through_retraining_and_stages_nest():
    net = small_net()
    before = {n: m.weight.detach().clone() for n, m in prunable_layers(net)}
    recipe = Recipe(epochs=2, batch_size=16, lr=0.01, optimizer="adam", weight_decay=1e-3)
    stages = compress(net, data(), [0.5, 0.25], recipe, seed=0, test_set=data(16, 1), progress=False)
    assert [s.target for s in stages] == [0.5, 0.25]
    # the input network is untouched
    assert all(torch.equal(before[n], m.weight) for n, m in prunable_layers(net))
    prev_zero = None
    for st in stages:
        assert abs(st.pruning.kept - st.target) < 0.02
        assert kept_fraction(st.model) == pytest.approx(st.pruning.kept, abs=1e-9)  # zeros stayed zeros
        assert 0 <= st.accuracy <= 1
        zero = {n: m.weight == 0 for n, m in prunable_layers(st.model)}
        assert not any(hasattr(m, "weight_mask") for _, m in prunable_layers(st.model))  # made permanent
        if prev_zero is not None:  # what an earlier stage removed stays removed
            assert all(bool(zero[n][prev_zero[n]].all()) for n in zero)
        prev_zero = zero
    # and the kept weights did learn
    w0 = dict(prunable_layers(stages[0].model))
    assert any(not torch.equal(w0[n].weight[w0[n].weight != 0], before[n][w0[n].weight != 0]) for n in before)


def test_retraining_with_torch_prune_keeps_exact_zeros_under_weight_decay():
    from deepinfo.toolkit.training import train

    net = small_net()
    prune_magnitude(net, 1.0, 1.0)
    masks = {n: m.weight_mask.clone() for n, m in prunable_layers(net)}
    train(net, data(), Recipe(epochs=1, batch_size=16, lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=5e-3),
          progress=False)
    for n, m in prunable_layers(net):
        assert torch.equal(m.weight_mask, masks[n])
        assert bool((m.weight[masks[n] == 0] == 0).all())
    make_permanent(net)
    assert kept_fraction(net) == pytest.approx(float(sum(mk.sum() for mk in masks.values()))
                                               / sum(mk.numel() for mk in masks.values()))


def test_clear_errors():
    with pytest.raises(ValueError, match="keep must be a fraction"):
        find_thresholds(small_net(), 0.0)
    with pytest.raises(ValueError, match="keep must be a fraction"):
        find_thresholds(small_net(), 1.5)
    with pytest.raises(ValueError, match="no nn.Conv2d / nn.Linear"):
        threshold_masks(nn.Sequential(nn.ReLU()), 1.0, 1.0)
    with pytest.raises(ValueError, match="s_fc must be"):
        threshold_masks(small_net(), 1.0, -1.0)
    with pytest.raises(ValueError, match="strictly decreasing"):
        compress(small_net(), data(), [0.1, 0.5], Recipe(epochs=1, batch_size=8, lr=0.01))
    with pytest.raises(ValueError, match="kind must be"):
        kept_fraction(small_net(), "bn")
    assert math.isnan(kept_fraction(nn.Sequential(nn.Linear(2, 2)), "conv"))


def test_next_stage_prunes_a_copy_further_and_leaves_the_model_alone():
    torch.manual_seed(0)
    net = small_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    first, r1 = next_stage(net, 0.5)
    assert r1.kept == pytest.approx(0.5, abs=0.01)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # untouched
    zeros1 = {n: m.weight == 0 for n, m in prunable_layers(make_permanent(first))}  # (retrained here, in use)
    second, r2 = next_stage(first, 0.2)
    assert r2.kept == pytest.approx(0.2, abs=0.01)
    zeros2 = {n: m.weight == 0 for n, m in prunable_layers(make_permanent(second))}
    assert all(bool(zeros2[n][zeros1[n]].all()) for n in zeros1)  # the second stage nests the first

"""PGD L-infinity attack and adversarial training (deepinfo.techniques.adversarial)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from deepinfo.techniques.adversarial import adversarial_loss, pgd_accuracy, pgd_linf, pgd_settings
from deepinfo.toolkit.training import Recipe, train

EPS, STEP, STEPS = 0.03, 0.01, 10


def tiny_net(batch_norm: bool = True) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(8))
    layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 3)]
    return nn.Sequential(*layers)


def toy_data(n: int = 96, seed: int = 0):
    """Three classes told apart by which colour channel is brightest."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 0.3 * torch.rand(n, 3, 8, 8, generator=g)
    x[torch.arange(n), y] += 0.5
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def trained_net():
    x, y = toy_data()
    model = tiny_net()
    train(model, TensorDataset(x, y), Recipe(epochs=8, batch_size=16, lr=0.01, optimizer="adam"),
          seed=0, device="cpu", progress=False)
    return model.eval(), x, y


def test_perturbation_stays_in_ball_and_in_unit_range(trained_net):
    model, x, y = trained_net
    x = x.clone()
    x[:4] = 0.0  # pixels at the bounds: the projection must clip to [0, 1], not leave the range
    x[4:8] = 1.0
    for random_start in (True, False):
        adv = pgd_linf(model, x, y, epsilon=EPS, step_size=STEP, steps=STEPS, random_start=random_start,
                       generator=torch.Generator().manual_seed(1))
        assert adv.shape == x.shape and not adv.requires_grad
        assert float((adv - x).abs().max()) <= EPS + 1e-6
        assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
        assert float((adv - x).abs().max()) > EPS / 2  # it did move


def test_attack_raises_the_loss_of_a_trained_net(trained_net):
    model, x, y = trained_net
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y)
    adv = pgd_linf(model, x, y, epsilon=EPS, step_size=STEP, steps=STEPS,
                   generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        attacked = F.cross_entropy(model(adv), y)
    assert attacked > 1.5 * clean, (float(clean), float(attacked))
    # and it beats random noise of the same radius
    noise = (x + EPS * (2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(3)) - 1)).clamp(0, 1)
    with torch.no_grad():
        assert attacked > F.cross_entropy(model(noise), y)


def test_linear_model_reaches_the_known_optimum():
    # for logits w.x (+ the negative for the other class) the worst case in the L-inf ball is
    # x - eps * sign(w) for label 0 (pushes logit 0 down, logit 1 up); inside (0, 1) no clipping
    torch.manual_seed(0)
    w = torch.randn(3 * 4 * 4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([w, -w]))
    x = 0.25 + 0.5 * torch.rand(5, 3, 4, 4)
    y = torch.zeros(5, dtype=torch.long)
    adv = pgd_linf(model, x, y, epsilon=0.05, step_size=0.02, steps=5, random_start=True,
                   generator=torch.Generator().manual_seed(0))
    expected = x - 0.05 * torch.sign(w).reshape(1, 3, 4, 4)
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)


def test_deterministic_with_seed(trained_net):
    model, x, y = trained_net
    kw = dict(epsilon=EPS, step_size=STEP, steps=3)
    a = pgd_linf(model, x, y, **kw, generator=torch.Generator().manual_seed(5))
    b = pgd_linf(model, x, y, **kw, generator=torch.Generator().manual_seed(5))
    c = pgd_linf(model, x, y, **kw, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(9)
    d = pgd_linf(model, x, y, **kw)
    torch.manual_seed(9)
    e = pgd_linf(model, x, y, **kw)
    assert torch.equal(d, e)


@pytest.mark.parametrize("mode", ["eval", "train", "current"])
@pytest.mark.parametrize("start_training", [True, False])
def test_model_left_untouched(trained_net, mode, start_training):
    model, x, y = trained_net
    model.train(start_training)
    model[0].weight.requires_grad_(False)  # a frozen parameter must stay frozen, the others trainable
    for p in model.parameters():
        p.grad = None
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        pgd_linf(model, x, y, epsilon=EPS, step_size=STEP, steps=3, mode=mode)
        assert model.training is start_training
        assert all(m.training is start_training for m in model.modules())
        assert model[0].weight.requires_grad is False
        assert all(p.requires_grad for n, p in model.named_parameters() if n != "0.weight")
        assert all(p.grad is None for p in model.parameters())
        after = model.state_dict()
        for k, v in before.items():  # weights AND BatchNorm running statistics / counter
            assert torch.equal(v, after[k]), k
    finally:
        model[0].weight.requires_grad_(True)
        model.eval()


def test_train_mode_attack_uses_batch_statistics():
    # in train mode the BN layer normalises with the batch statistics: a model whose running
    # statistics are far off gives another attack in eval mode than in train mode
    model = tiny_net()
    with torch.no_grad():
        model[1].running_mean.fill_(5.0)
    x, y = toy_data(24)
    kw = dict(epsilon=EPS, step_size=STEP, steps=2, random_start=False)
    a = pgd_linf(model, x, y, **kw, mode="eval")
    b = pgd_linf(model, x, y, **kw, mode="train")
    assert not torch.equal(a, b)
    assert float(model[1].running_mean[0]) == 5.0


def test_adversarial_loss_trains_in_the_loop_and_updates_bn_once_per_step():
    x, y = toy_data(32)
    model = tiny_net()
    model.train()
    loss_fn = adversarial_loss(EPS, STEP, 3)
    momentum = model[1].momentum
    before = model[1].running_mean.clone()
    loss, logits = loss_fn(model, (x, y))
    assert loss.dim() == 0 and logits.shape == (32, 3) and loss.requires_grad
    assert int(model[1].num_batches_tracked) == 1  # one forward pass counted, not 1 + 3
    # the running mean moved once, towards the mean of the adversarial batch's features
    assert not torch.equal(before, model[1].running_mean)
    assert model.training
    # inside train(): deterministic, and the robust net resists the attack better than a clean one
    recipe = Recipe(epochs=6, batch_size=16, lr=0.01, optimizer="adam")
    data = TensorDataset(*toy_data())
    robust = tiny_net()
    h1 = train(robust, data, recipe, seed=0, device="cpu", progress=False, loss_fn=adversarial_loss(0.1, 0.03, 5))
    again = tiny_net()
    h2 = train(again, data, recipe, seed=0, device="cpu", progress=False, loss_fn=adversarial_loss(0.1, 0.03, 5))
    assert h1.train_loss == h2.train_loss
    for k, v in robust.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    assert momentum == model[1].momentum


def test_pgd_accuracy(trained_net):
    model, x, y = trained_net
    data = TensorDataset(x, y)
    clean = pgd_accuracy(model, data, epsilon=0.0, step_size=STEP, steps=0, random_start=False)
    with torch.no_grad():
        expected = float((model(x).argmax(1) == y).float().mean())
    assert clean == pytest.approx(expected)
    attacked = pgd_accuracy(model, data, epsilon=0.3, step_size=0.1, steps=5, batch_size=40, seed=0)
    assert attacked < clean
    assert attacked == pgd_accuracy(model, data, epsilon=0.3, step_size=0.1, steps=5, batch_size=40, seed=0)


def test_bad_arguments_and_settings(trained_net):
    model, x, y = trained_net
    with pytest.raises(ValueError, match="epsilon"):
        pgd_linf(model, x, y, epsilon=-0.1, step_size=STEP, steps=1)
    with pytest.raises(ValueError, match="mode"):
        pgd_linf(model, x, y, epsilon=EPS, step_size=STEP, steps=1, mode="training")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pgd_linf(model, x * 2, y, epsilon=EPS, step_size=STEP, steps=1)
    with pytest.raises(ValueError, match="labels"):
        pgd_linf(model, x, y[:3], epsilon=EPS, step_size=STEP, steps=1)
    with pytest.raises(ValueError, match="step_size"):
        adversarial_loss(EPS, 0.0, 10)
    assert pgd_settings("paper") == {"epsilon": 0.01, "step_size": 0.001, "steps": 10, "random_start": True}

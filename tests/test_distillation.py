"""Hinton distillation loss (deepinfo.techniques.distillation) and its use in the training loop."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from deepinfo.techniques.distillation import distillation_loss, hinton_loss
from deepinfo.toolkit.training import Recipe, train


def _logits(B=6, K=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, K, generator=g) * 2
    t = torch.randn(B, K, generator=g) * 3
    y = torch.randint(0, K, (B,), generator=g)
    return s, t, y


def test_alpha_zero_is_cross_entropy():
    s, t, y = _logits()
    assert torch.allclose(hinton_loss(s, t, y, 4.0, 0.0), F.cross_entropy(s, y))


def test_value_matches_definition():
    s, t, y = _logits(seed=1)
    T, a = 3.0, 0.7
    p_t = torch.softmax(t / T, 1)
    kl = (p_t * (p_t.log() - torch.log_softmax(s / T, 1))).sum(1).mean()
    expected = a * T * T * kl + (1 - a) * F.cross_entropy(s, y)
    assert torch.allclose(hinton_loss(s, t, y, T, a), expected, atol=1e-6)


def test_identical_logits_give_zero_soft_term():
    s, _, y = _logits(seed=2)
    assert float(hinton_loss(s, s.clone(), y, 2.0, 1.0)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("T", [1.0, 4.0, 10.0])
def test_gradient_closed_form(T):
    # d/ds [alpha T^2 KL] = alpha * T * (softmax(s/T) - softmax(t/T)) / B; CE adds (1-alpha)(p - onehot)/B
    s, t, y = _logits(B=8, K=7, seed=3)
    a = 0.6
    s = s.double().requires_grad_(True)
    t = t.double()
    hinton_loss(s, t, y, T, a).backward()
    B = s.shape[0]
    soft = a * T * (torch.softmax(s / T, 1) - torch.softmax(t / T, 1)) / B
    hard = (1 - a) * (torch.softmax(s, 1) - F.one_hot(y, s.shape[1]).double()) / B
    assert torch.allclose(s.grad, (soft + hard).detach(), atol=1e-10)


def test_t_squared_keeps_soft_gradient_scale():
    # For large T the soft gradient tends to alpha * (s - t - mean difference) / (K B): no 1/T^2 decay.
    s, t, y = _logits(B=4, K=6, seed=4)
    grads = []
    for T in (20.0, 40.0):
        x = s.double().clone().requires_grad_(True)
        hinton_loss(x, t.double(), y, T, 1.0).backward()
        grads.append(x.grad)
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    assert rel(grads[0], grads[1]) < 0.05
    limit = ((s - t) - (s - t).mean(1, keepdim=True)).double() / (s.shape[1] * s.shape[0])
    assert rel(grads[1], limit) < 0.05


def test_teacher_gets_no_gradient_from_logits():
    s, t, y = _logits(seed=5)
    t = t.clone().requires_grad_(True)
    s = s.clone().requires_grad_(True)
    hinton_loss(s, t, y, 4.0, 0.9).backward()
    assert t.grad is None and s.grad is not None


def test_bad_settings_are_clear_errors():
    s, t, y = _logits()
    with pytest.raises(ValueError, match="temperature"):
        hinton_loss(s, t, y, 0.0, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        hinton_loss(s, t, y, 4.0, 1.5)
    with pytest.raises(ValueError, match="same shape"):
        hinton_loss(s, t[:, :3], y, 4.0, 0.5)
    with pytest.raises(ValueError, match="labels"):
        hinton_loss(s, t, y[:2], 4.0, 0.5)
    with pytest.raises(ValueError, match="nn.Module"):
        distillation_loss(lambda x: x, 4.0, 0.5)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(nn.Linear(2, 2), -1.0, 0.5)
    net = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="student is the teacher"):
        distillation_loss(net, 4.0, 0.5)(net, (torch.zeros(1, 2), torch.zeros(1, dtype=torch.long)))


class _Net(nn.Module):
    """Conv + batch norm + dropout: a teacher whose output depends on its mode."""

    def __init__(self, classes=3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.5))
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.body(x))


def _data(n=32, classes=3):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return TensorDataset(x, y)


def test_teacher_untouched_frozen_and_in_eval_during_training():
    torch.manual_seed(0)
    teacher = _Net()
    teacher.train()  # as if handed over in train mode: the loss switches it to eval
    before = copy.deepcopy(teacher.state_dict())
    flags = [p.requires_grad for p in teacher.parameters()]
    modes = []
    teacher.register_forward_pre_hook(lambda m, inp: modes.append((m.training, torch.is_grad_enabled())))
    student = _Net()
    recipe = Recipe(epochs=2, batch_size=8, lr=0.01, optimizer="adam", augment="flip")
    hist = train(student, _data(), recipe, device="cpu", loss_fn=distillation_loss(teacher, 4.0, 0.9),
                 progress=False)
    assert hist.epochs == 2 and all(torch.isfinite(torch.tensor(hist.train_loss)))
    assert modes and all(m == (False, False) for m in modes)  # eval mode, no autograd
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics
    assert [p.requires_grad for p in teacher.parameters()] == flags
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_sees_the_augmented_batch_the_student_sees():
    seen = {}

    class Record(nn.Module):
        def __init__(self, name, fc):
            super().__init__()
            self.name, self.fc = name, fc

        def forward(self, x):
            seen.setdefault(self.name, []).append(x.clone())
            return self.fc(x.flatten(1))

    torch.manual_seed(0)
    teacher = Record("teacher", nn.Linear(64, 3))
    student = Record("student", nn.Linear(64, 3))
    recipe = Recipe(epochs=1, batch_size=8, lr=0.01, optimizer="adam", augment="crop_flip", crop_padding=2)
    train(student, _data(), recipe, device="cpu", loss_fn=distillation_loss(teacher, 2.0, 0.5), progress=False)
    assert len(seen["teacher"]) == len(seen["student"]) == 4
    assert all(torch.equal(a, b) for a, b in zip(seen["teacher"], seen["student"]))


def test_distillation_moves_student_towards_teacher():
    # alpha = 1: the student learns only from the teacher; its predictions end up matching it.
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with torch.no_grad():
        teacher[1].weight.mul_(20)
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    data = _data(64)
    x = data.tensors[0]

    def agreement():
        with torch.no_grad():
            return float((student(x).argmax(1) == teacher(x).argmax(1)).float().mean())

    start = agreement()
    recipe = Recipe(epochs=30, batch_size=16, lr=0.05, optimizer="adam")
    train(student, data, recipe, device="cpu", loss_fn=distillation_loss(teacher, 2.0, 1.0), progress=False)
    assert start < 0.5 and agreement() > 0.8


def test_distilled_model_through_the_cache(tmp_path, monkeypatch):
    import dataclasses
    import json

    from deepinfo.book.experiments import cub_model, distilled_model
    from deepinfo.toolkit.profile import load_profile

    monkeypatch.setenv("DEEPINFO_ARTIFACTS", str(tmp_path))
    P = load_profile("smoke")
    P = dataclasses.replace(
        P, data=dataclasses.replace(P.data, cub=dataclasses.replace(P.data.cub, n_train=16, n_test=8)),
        training=dataclasses.replace(P.training, cub=Recipe(epochs=1, batch_size=8, lr=1e-3, optimizer="adam")))
    student = distilled_model(P, "resnet18", progress=False)
    teacher = cub_model(P, "resnet18", progress=False)  # cached by the call above
    plain = cub_model(P, "alexnet", progress=False)
    assert student.name == "alexnet-distilled-resnet18" and student.key != plain.key
    config = json.loads((tmp_path / "smoke" / "checkpoints" / f"{student.key}.json").read_text())
    assert config["config"]["distillation"] == {"teacher": teacher.key, "temperature": P.distillation.temperature,
                                                "alpha": P.distillation.alpha}
    assert config["recipe"] == json.loads((tmp_path / "smoke" / "checkpoints" / f"{plain.key}.json").read_text())["recipe"]
    again = distilled_model(P, "resnet18", progress=False)
    assert again.key == student.key
    assert all(torch.equal(a, b) for a, b in zip(student.model.state_dict().values(), again.model.state_dict().values()))
    with pytest.raises(ValueError, match="student architecture"):
        distilled_model(P, "alexnet")

"""The training loop (deepinfo.toolkit.training) and the checkpoint cache (deepinfo.toolkit.cache).

Everything runs on tiny models and data defined here (8x8 images, two classes told apart by
which half is brighter), so these tests do not depend on deepinfo.models / deepinfo.datasets.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from deepinfo.toolkit import cache
from deepinfo.models._checkpoint import file_digest
from deepinfo.toolkit.training import (
    History,
    Recipe,
    augment,
    evaluate,
    learning_rate,
    train,
)

CPU = torch.device("cpu")


class HalvesData(Dataset):
    """``(image [1, 8, 8] in [0, 1], label, mask [8, 8])``: label 1 <=> the right half is brighter."""

    def __init__(self, n: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 2, (n,), generator=g)
        x = 0.5 + 0.1 * torch.randn(n, 1, 8, 8, generator=g)
        shift = torch.where(self.labels == 1, 0.2, -0.2)[:, None, None]
        x[:, :, :, 4:] += shift[:, None]
        x[:, :, :, :4] -= shift[:, None]
        self.images = x.clamp(0, 1)
        self.masks = torch.zeros(n, 8, 8, dtype=torch.bool)
        self.masks[:, 2:6, 2:6] = True

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i]), self.masks[i]


def tiny_net() -> nn.Module:
    # BatchNorm (running stats) and Dropout (global RNG) make resumption non-trivial.
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.2),
        nn.AdaptiveAvgPool2d((1, 2)), nn.Flatten(), nn.Linear(8, 2),
    )


def seeded_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return tiny_net()


RECIPE = Recipe(epochs=4, batch_size=16, lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=1e-4,
                schedule="cosine", augment="crop_flip", crop_padding=1)


def weights_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def test_training_learns_a_separable_problem():
    train_set, test_set = HalvesData(160, seed=1), HalvesData(80, seed=2)
    model = seeded_net()
    before = evaluate(model, test_set, batch_size=32)
    recipe = Recipe(epochs=5, batch_size=16, lr=0.05, schedule="cosine", augment="none")
    history = train(model, train_set, recipe, seed=0, device=CPU, val_set=test_set, progress=False)
    after = evaluate(model, test_set, batch_size=32)
    assert before < 0.8  # chance level at the start: the test can fail
    assert after >= 0.95, history
    assert history.val_acc[-1] == pytest.approx(after)
    assert history.epochs == 5 and len(history.epoch_time) == 5 and all(t > 0 for t in history.epoch_time)
    assert history.train_loss[-1] < history.train_loss[0]
    assert 0.0 <= history.train_acc[-1] <= 1.0
    assert not model.training  # returned ready for analysis


def test_same_seed_gives_identical_weights_and_another_seed_does_not():
    data = HalvesData(64)
    runs = []
    for seed in (3, 3, 4):
        model = seeded_net(0)
        train(model, data, Recipe(epochs=2, batch_size=16, lr=0.05, augment="crop_flip", crop_padding=1),
              seed=seed, device=CPU, progress=False)
        runs.append(model)
    assert weights_equal(runs[0], runs[1])
    assert not weights_equal(runs[0], runs[2])


def test_worker_processes_do_not_change_the_result():
    # the data order and the augmentation come from this process's generators; workers only read
    data = HalvesData(40)
    recipe = Recipe(epochs=2, batch_size=16, lr=0.05, augment="crop_flip", crop_padding=1)
    runs = []
    for workers in (0, 2):
        model = seeded_net(0)
        h = train(model, data, recipe, seed=3, device=CPU, progress=False, num_workers=workers)
        runs.append((model, h))
    assert weights_equal(runs[0][0], runs[1][0])
    assert runs[0][1].train_loss == runs[1][1].train_loss


def test_interrupted_then_resumed_run_equals_uninterrupted_run(tmp_path):
    data = HalvesData(72)  # 72 = 4 batches of 16 + 8: a ragged last batch
    keep = (0, 1, 3, 4)
    straight = seeded_net(0)
    h_straight = train(straight, data, RECIPE, seed=5, device=CPU, state_path=tmp_path / "a.state",
                       keep_epochs=keep, progress=False)

    def stop_at_2(epoch, model, history):
        if epoch == 2:
            raise KeyboardInterrupt

    state = tmp_path / "b.state"
    with pytest.raises(KeyboardInterrupt):
        train(seeded_net(0), data, RECIPE, seed=5, device=CPU, state_path=state, keep_epochs=keep,
              on_epoch_end=stop_at_2, progress=False)
    saved = torch.load(state, weights_only=True)
    assert saved["epoch"] == 2

    # A fresh process would build a differently-initialised model: everything comes from the state.
    seen = []
    resumed = seeded_net(99)
    h_resumed = train(resumed, data, RECIPE, seed=5, device=CPU, state_path=state, keep_epochs=keep,
                      on_epoch_end=lambda e, m, h: seen.append(e), progress=False)
    assert seen == [3, 4]
    assert weights_equal(straight, resumed)
    assert h_resumed.train_loss == h_straight.train_loss
    assert h_resumed.lr == h_straight.lr
    assert sorted(h_resumed.snapshots) == list(keep)
    for e in keep:
        assert all(torch.equal(h_straight.snapshots[e][k], h_resumed.snapshots[e][k]) for k in h_straight.snapshots[e])
    assert not all(torch.equal(h_straight.snapshots[0][k], h_straight.snapshots[4][k]) for k in h_straight.snapshots[0])

    # A finished state file: nothing left to train, same result again.
    again = seeded_net(7)
    h_again = train(again, data, RECIPE, seed=5, device=CPU, state_path=state, keep_epochs=keep,
                    on_epoch_end=lambda e, m, h: seen.append(e), progress=False)
    assert seen == [3, 4] and weights_equal(again, straight) and h_again.epochs == 4


def test_state_from_another_run_is_refused(tmp_path):
    data = HalvesData(32)
    state = tmp_path / "s.state"
    recipe = Recipe(epochs=1, batch_size=16, lr=0.05)
    train(seeded_net(), data, recipe, seed=0, device=CPU, state_path=state, progress=False)
    with pytest.raises(ValueError, match="another run"):
        train(seeded_net(), data, Recipe(epochs=1, batch_size=16, lr=0.01), seed=0, device=CPU,
              state_path=state, progress=False)
    with pytest.raises(ValueError, match="another run"):
        train(seeded_net(), data, recipe, seed=1, device=CPU, state_path=state, progress=False)


def test_schedules():
    step = Recipe(epochs=6, batch_size=8, lr=0.1, schedule="step", milestones=(2, 4), gamma=0.1)
    assert [learning_rate(step, e) for e in (0, 1.9, 2, 3.5, 4, 5.99)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    cos = Recipe(epochs=4, batch_size=8, lr=0.2, schedule="cosine")
    assert learning_rate(cos, 0) == pytest.approx(0.2)
    assert learning_rate(cos, 2) == pytest.approx(0.1)
    assert learning_rate(cos, 4) == pytest.approx(0.0, abs=1e-12)
    lrs = [learning_rate(cos, e / 10) for e in range(41)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    const = Recipe(epochs=3, batch_size=8, lr=0.3, schedule="constant")
    assert {learning_rate(const, e) for e in (0, 1.5, 2.9)} == {0.3}
    warm = Recipe(epochs=4, batch_size=8, lr=0.1, schedule="constant", warmup_epochs=1)
    assert learning_rate(warm, 0) < 0.001 and learning_rate(warm, 0.5) == pytest.approx(0.05, rel=0.01)
    assert learning_rate(warm, 1) == pytest.approx(0.1)

    # The loop follows the schedule: first lr of each epoch (64 items / 16 = 4 steps per epoch).
    h = train(seeded_net(), HalvesData(64), step, seed=0, device=CPU, progress=False)
    assert h.lr == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    h = train(seeded_net(), HalvesData(64), Recipe(epochs=2, batch_size=16, lr=0.2, schedule="cosine"),
              seed=0, device=CPU, progress=False)
    assert h.lr == pytest.approx([0.2, 0.1])


def test_recipe_validation():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        Recipe(epochs=1, batch_size=8, lr=0.1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="milestones must lie"):
        Recipe(epochs=5, batch_size=8, lr=0.1, schedule="step", milestones=(2, 5))
    with pytest.raises(ValueError, match="only used by schedule 'step'"):
        Recipe(epochs=5, batch_size=8, lr=0.1, schedule="cosine", milestones=(2,))
    with pytest.raises(ValueError, match="epochs"):
        Recipe(epochs=0, batch_size=8, lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        Recipe(epochs=1, batch_size=8, lr=float("nan"))
    r = Recipe(epochs=5, batch_size=8, lr=0.1, schedule="step", milestones=[2, 3])
    assert r.milestones == (2, 3) and Recipe.from_dict(r.to_dict()) == r
    with pytest.raises(ValueError, match="unknown keys"):
        Recipe.from_dict({**r.to_dict(), "epoch": 3})


def test_augment_crop_flip_is_seeded_and_keeps_dense_labels_aligned():
    x = torch.rand(6, 3, 8, 8)
    dense = (x[:, 0] > 0.5).long()  # [B, H, W], aligned with the images
    labels = torch.arange(6)
    recipe = Recipe(epochs=1, batch_size=6, lr=0.1, augment="crop_flip", crop_padding=2)
    a = augment([x, labels, dense], recipe, torch.Generator().manual_seed(0))
    b = augment([x, labels, dense], recipe, torch.Generator().manual_seed(0))
    c = augment([x, labels, dense], recipe, torch.Generator().manual_seed(1))
    assert a[0].shape == x.shape and torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    assert torch.equal(a[1], labels)
    assert torch.equal(a[2], (a[0][:, 0] > 0.5).long())  # same crop and flip (zero padding in both)
    # every output pixel is an input pixel or zero padding
    assert set(a[0].unique().tolist()) <= set(x.unique().tolist()) | {0.0}
    flip_only = Recipe(epochs=1, batch_size=6, lr=0.1, augment="flip")
    f = augment([x, labels], flip_only, torch.Generator().manual_seed(0))[0]
    assert all(torch.equal(f[i], x[i]) or torch.equal(f[i], x[i].flip(-1)) for i in range(6))
    none = Recipe(epochs=1, batch_size=6, lr=0.1)
    assert augment([x, labels], none, torch.Generator())[0] is x


def test_custom_loss_fn_and_errors():
    data = HalvesData(32)
    calls = []

    def loss_only(model, batch):
        images, labels, masks = batch  # the data set's extra entries reach the loss
        calls.append(masks.shape)
        return nn.functional.cross_entropy(model(images), labels)

    h = train(seeded_net(), data, Recipe(epochs=1, batch_size=16, lr=0.05), seed=0, device=CPU,
              loss_fn=loss_only, progress=False)
    assert calls == [(16, 8, 8), (16, 8, 8)]
    assert math.isnan(h.train_acc[0]) and math.isnan(h.val_acc[0]) and math.isfinite(h.train_loss[0])

    with pytest.raises(FloatingPointError, match="epoch 1, step 1"):
        train(seeded_net(), data, Recipe(epochs=1, batch_size=16, lr=0.05), device=CPU,
              loss_fn=lambda m, b: m(b[0]).sum() * float("nan"), progress=False)
    with pytest.raises(ValueError, match="keep_epochs"):
        train(seeded_net(), data, Recipe(epochs=1, batch_size=16, lr=0.05), device=CPU,
              keep_epochs=(2,), progress=False)
    with pytest.raises(ValueError, match="empty"):
        evaluate(seeded_net(), HalvesData(0))


def test_evaluate_counts_correct_predictions():
    data = HalvesData(50)

    class Oracle(nn.Module):  # predicts the brighter half: always right on this data
        def forward(self, x):
            return torch.stack([x[..., :4].mean((1, 2, 3)), x[..., 4:].mean((1, 2, 3))], 1)

    assert evaluate(Oracle(), data, batch_size=7) == 1.0

    class Wrong(Oracle):
        def forward(self, x):
            return -super().forward(x)

    assert evaluate(Wrong(), data, batch_size=64) == 0.0


# --------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPINFO_ARTIFACTS", str(tmp_path))
    return tmp_path


CONFIG = {"model": {"name": "tiny", "width": 4}, "data": {"name": "halves", "n": 48}}
SMALL = Recipe(epochs=2, batch_size=16, lr=0.05, augment="crop_flip", crop_padding=1)


def test_cache_hit_trains_nothing_and_builds_no_data(artifacts):
    built = []

    def build_data():
        built.append(1)
        return HalvesData(48)

    model, history = cache.get_trained("tiny", CONFIG, tiny_net, build_data, SMALL, profile="smoke",
                                       seed=0, device=CPU, val_data=lambda: HalvesData(16, seed=9), progress=False)
    assert built == [1] and history.epochs == 2 and not math.isnan(history.val_acc[-1])
    path = cache.checkpoint_path("tiny", CONFIG, SMALL, profile="smoke", seed=0)
    assert path.parent == artifacts / "smoke" / "checkpoints"
    assert path.exists() and path.with_suffix(".json").exists()
    assert not path.with_name(path.name + ".partial").exists()
    assert not path.with_name(path.name + ".partial.sha256").exists()  # the state's checksum goes with it
    described = json.loads(path.with_suffix(".json").read_text())
    assert described["config"] == CONFIG and described["seed"] == 0 and described["recipe"]["epochs"] == 2

    def no_data():
        raise AssertionError("build_data must not be called on a cache hit")

    def no_val():
        raise AssertionError("val_data must not be built on a cache hit")

    again, h2 = cache.get_trained("tiny", CONFIG, tiny_net, no_data, SMALL, profile="smoke", seed=0,
                                  device=CPU, val_data=no_val, progress=False)
    assert weights_equal(model, again) and not again.training
    assert h2.train_loss == history.train_loss and h2.val_acc == history.val_acc


def test_config_key_is_canonical_and_sensitive(artifacts):
    a = {"model": {"depth": 20, "width": 1.0}, "data": ("cifar10", {"n": 5})}
    b = {"data": ["cifar10", {"n": 5}], "model": {"width": 1.0, "depth": 20}}  # other order, list vs tuple
    assert cache.config_key(a) == cache.config_key(b)
    assert len(cache.config_key(a)) == 16
    assert cache.config_key(a) != cache.config_key({**a, "model": {"depth": 32, "width": 1.0}})
    assert cache.config_key({"recipe": SMALL}) == cache.config_key({"recipe": SMALL.to_dict()})
    with pytest.raises(ValueError, match="cannot be part of a configuration"):
        cache.config_key({"fn": lambda: 0})

    base = dict(profile="smoke", seed=0)
    p = cache.checkpoint_path("tiny", CONFIG, SMALL, **base)
    assert p == cache.checkpoint_path("tiny", dict(reversed(CONFIG.items())), SMALL, **base)
    others = {
        cache.checkpoint_path("tiny", {**CONFIG, "pgd": {"eps": 0.01}}, SMALL, **base),
        cache.checkpoint_path("tiny", CONFIG, Recipe(epochs=3, batch_size=16, lr=0.05), **base),
        cache.checkpoint_path("tiny", CONFIG, SMALL, profile="cpu", seed=0),
        cache.checkpoint_path("tiny", CONFIG, SMALL, profile="smoke", seed=1),
        cache.checkpoint_path("tiny", CONFIG, SMALL, keep_epochs=(0, 1), **base),
        cache.checkpoint_path("tiny2", CONFIG, SMALL, **base),
    }
    assert p not in others and len(others) == 6
    assert not any(artifacts.iterdir())  # computing a path creates nothing
    with pytest.raises(ValueError, match="file-name part"):
        cache.checkpoint_path("../evil", CONFIG, SMALL, **base)


def test_cache_resumes_a_crashed_training(artifacts):
    path = cache.checkpoint_path("tiny", CONFIG, SMALL, profile="smoke", seed=0)
    partial = path.with_name(path.name + ".partial")

    # what get_trained would have run, stopped after epoch 1 (a crash)
    def crash(epoch, model, history):
        raise KeyboardInterrupt

    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_net(), HalvesData(48), SMALL, seed=0, device=CPU, state_path=partial, on_epoch_end=crash,
              progress=False)
    assert partial.exists()
    resumed, h = cache.get_trained("tiny", CONFIG, tiny_net, lambda: HalvesData(48), SMALL, profile="smoke",
                                   seed=0, device=CPU, progress=False)
    assert h.epochs == 2 and not partial.exists() and path.exists()

    torch.manual_seed(0)
    straight = tiny_net()
    train(straight, HalvesData(48), SMALL, seed=0, device=CPU, progress=False)
    assert weights_equal(straight, resumed)


def test_cache_keeps_snapshots(artifacts):
    _, h = cache.get_trained("tiny", CONFIG, tiny_net, lambda: HalvesData(48), SMALL, profile="smoke", seed=0,
                             device=CPU, keep_epochs=(0, 2), progress=False)
    _, h2 = cache.get_trained("tiny", CONFIG, tiny_net, lambda: None, SMALL, profile="smoke", seed=0,
                              device=CPU, keep_epochs=(0, 2), progress=False)
    assert sorted(h.snapshots) == sorted(h2.snapshots) == [0, 2]
    assert all(torch.equal(h.snapshots[2][k], h2.snapshots[2][k]) for k in h.snapshots[2])
    assert isinstance(h2, History)


def test_a_truncated_checkpoint_is_named_and_trained_again(artifacts):
    model, _ = cache.get_trained("tiny", CONFIG, tiny_net, lambda: HalvesData(48), SMALL, profile="smoke",
                                 seed=0, device=CPU, progress=False)
    path = cache.checkpoint_path("tiny", CONFIG, SMALL, profile="smoke", seed=0)
    recorded = path.with_name(path.name + ".sha256")
    assert recorded.read_text().strip() == file_digest(path)
    path.write_bytes(path.read_bytes()[:100])  # a copy cut short
    with pytest.warns(UserWarning, match=rf"{path.name}: its sha256 .* is not the .* recorded"):
        again, h = cache.get_trained("tiny", CONFIG, tiny_net, lambda: HalvesData(48), SMALL, profile="smoke",
                                     seed=0, device=CPU, progress=False)
    assert h.epochs == 2 and weights_equal(model, again) and recorded.read_text().strip() == file_digest(path)
    # a file from before the checksums: no record, unreadable -> named too
    recorded.unlink()
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match=rf"{path.name}: cannot be read back"):
        cache.get_trained("tiny", CONFIG, tiny_net, lambda: HalvesData(48), SMALL, profile="smoke",
                          seed=0, device=CPU, progress=False)
    assert recorded.is_file()


def test_a_corrupt_training_state_starts_the_training_over(artifacts):
    partial = artifacts / "state.partial"

    def crash(epoch, model, history):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_net(), HalvesData(48), SMALL, seed=0, device=CPU, state_path=partial, on_epoch_end=crash,
              progress=False)
    partial.write_bytes(partial.read_bytes()[:50])
    torch.manual_seed(0)
    net = tiny_net()
    with pytest.warns(UserWarning, match="state.partial: its sha256"):
        h = train(net, HalvesData(48), SMALL, seed=0, device=CPU, state_path=partial, progress=False)
    assert h.epochs == 2


_SIDE_BY_SIDE = """
import sys, torch
from torch import nn
from torch.utils.data import TensorDataset
from deepinfo.toolkit import cache
from deepinfo.toolkit.training import Recipe

log = sys.argv[1]

def build_data():
    with open(log, "a") as f:
        f.write("trained\\n")
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(64, 3, 4, 4, generator=g), torch.randint(0, 2, (64,), generator=g))

net = lambda: nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
cache.get_trained("tiny", {"model": "linear"}, net, build_data, Recipe(epochs=3, batch_size=8, lr=0.01),
                  profile="smoke", seed=0, device="cpu", progress=False)
"""


def test_notebooks_side_by_side_train_a_shared_network_once(tmp_path):
    import os
    import subprocess
    import sys

    script, log = tmp_path / "train.py", tmp_path / "log.txt"
    script.write_text(_SIDE_BY_SIDE)
    env = {**os.environ, "DEEPINFO_ARTIFACTS": str(tmp_path / "artifacts"), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(log)], env=env) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert log.read_text().count("trained") == 1  # the second waited for the first, then loaded

"""experiments.adversarial_pair (Fig. 10) and experiments.dynamics_run (Fig. 9) on tiny profiles."""

import dataclasses

import pytest
import torch

from deepinfo.toolkit import cache
from deepinfo.book import experiments as E
from deepinfo.toolkit.profile import load_profile
from deepinfo.toolkit.training import Recipe


@pytest.fixture(autouse=True)
def _artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPINFO_ARTIFACTS", str(tmp_path / "artifacts"))


def tiny_profile(**dynamics):
    p = load_profile("smoke")
    data = dataclasses.replace(
        p.data,
        cifar=dataclasses.replace(p.data.cifar, n_train=24, n_test=8),
        cub=dataclasses.replace(p.data.cub, n_train=24, n_test=8),
    )
    one = Recipe(epochs=2, batch_size=8, lr=0.002, optimizer="adam")
    training = dataclasses.replace(p.training, cifar_resnet=one, cub=one)
    dyn = dataclasses.replace(p.dynamics, depth=8, snapshot_epochs=(0, 1, 2), **dynamics)
    return dataclasses.replace(p, data=data, training=training, dynamics=dyn, layers={**p.layers, "resnet8": "blocks"})


def _refuse_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("trained again instead of loading from the cache")

    monkeypatch.setattr(cache, "train", refuse)


def test_dynamics_run_keeps_snapshots_and_is_cached(monkeypatch):
    p = tiny_profile(n_train=16)
    trained, snaps = E.dynamics_run(p, progress=False)
    assert sorted(snaps) == [0, 1, 2]
    assert all(not m.training for m in snaps.values())
    w = {e: snaps[e].conv1.weight for e in snaps}
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    assert torch.equal(w[2], trained.model.conv1.weight)  # the last snapshot is the final net
    assert "dynamics" in trained.key
    # n_train is part of the key: the run used 16 images (2 batches of 8 per epoch)
    _refuse_training(monkeypatch)
    again, snaps2 = E.dynamics_run(p, progress=False)
    assert again.key == trained.key and torch.equal(snaps2[1].conv1.weight, w[1])
    with pytest.raises(AssertionError, match="cache"):
        E.dynamics_run(tiny_profile(n_train=8), progress=False)


def test_adversarial_pair_twin_is_the_shared_net_or_uses_the_adversarial_recipe(monkeypatch):
    p = tiny_profile()
    adv, normal = E.adversarial_pair(p, progress=False)
    assert adv.key != normal.key and adv.key.startswith("alexnet-pgd")
    assert normal.key == E.cub_model(p, "alexnet", progress=False).key  # no recipe: training.cub's net
    diff = [k for k, v in adv.model.state_dict().items()
            if v.dtype.is_floating_point and not torch.equal(v, normal.model.state_dict()[k])]
    assert diff  # same seed, same data, other loss: other weights

    own = Recipe(epochs=1, batch_size=8, lr=0.002, optimizer="adam")
    q = dataclasses.replace(p, adversarial=dataclasses.replace(p.adversarial, recipe=own))
    adv2, normal2 = E.adversarial_pair(q, progress=False)
    assert normal2.key != normal.key and adv2.key != adv.key
    assert normal2.key == E.cub_model(q, "alexnet", recipe=own, progress=False).key
    assert len(normal2.history.train_loss) == 1 and len(adv2.history.train_loss) == 1
    _refuse_training(monkeypatch)
    assert E.adversarial_pair(q, progress=False)[0].key == adv2.key


def test_profiles_size_the_new_keys():
    cpu = load_profile("cpu")
    assert cpu.dynamics.n_train <= cpu.data.cifar.n_train and cpu.dynamics.method in ("optimize", "linear")
    assert cpu.dynamics.snapshot_epochs[-1] <= cpu.training.cifar_resnet.epochs
    assert cpu.adversarial.recipe is not None
    paper = load_profile("paper")
    assert paper.adversarial.recipe is None and paper.dynamics.method is None  # the paper's own settings


def test_profile_rejects_bad_new_keys(tmp_path):
    text = (load_profile.__globals__["resources"].files("deepinfo.toolkit") / "profiles" / "cpu.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("n_train = 2000 ", "n_train = 9000 "))
    with pytest.raises(ValueError, match="dynamics.n_train"):
        load_profile(bad)
    bad.write_text(text.replace('method = "linear"', 'method = "closed"'))
    with pytest.raises(ValueError, match="dynamics.method"):
        load_profile(bad)
    head, dyn = text.rsplit("[dynamics]", 1)
    bad.write_text(head + "[dynamics]" + dyn.replace('layers = "stages"', "layers = []"))
    with pytest.raises(ValueError, match=r"\[dynamics\]: layers is empty"):
        load_profile(bad)
    bad.write_text(text.replace("[adversarial.recipe]\n", "[adversarial.recipe]\nepoch = 3\n"))
    with pytest.raises(ValueError, match="epoch"):
        load_profile(bad)

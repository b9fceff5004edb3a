"""experiments.compressed_models: the cached chain of Han et al. compression stages."""

import dataclasses

import pytest
import torch

from deepinfo import cache
from deepinfo import experiments as E
from deepinfo.compression import kept_fraction, prunable_layers
from deepinfo.profile import load_profile


@pytest.fixture(autouse=True)
def _artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPINFO_ARTIFACTS", str(tmp_path / "artifacts"))


def tiny_profile():
    p = load_profile("smoke")
    cub = dataclasses.replace(p.data.cub, image_size=32, n_train=24, n_test=8)
    one_epoch = dataclasses.replace(p.training.cub, epochs=1, batch_size=12)
    return dataclasses.replace(
        p, data=dataclasses.replace(p.data, cub=cub),
        networks=dataclasses.replace(p.networks, cub=dataclasses.replace(p.networks.cub, width=0.0625)),
        training=dataclasses.replace(p.training, cub=one_epoch),
        compression=dataclasses.replace(p.compression, keep=(0.5, 0.2),
                                        retrain=dataclasses.replace(p.compression.retrain, epochs=1, batch_size=12)))


def test_compressed_models_chain_targets_nesting_and_cache(monkeypatch):
    P = tiny_profile()
    nets = E.compressed_models(P, progress=False)
    assert [k for k, _, _ in nets] == [1.0, 0.5, 0.2]
    assert nets[0][1].key == E.cub_model(P, "vgg16", progress=False).key  # the shared original
    zeros_before = None
    for keep, trained, achieved in nets[1:]:
        assert achieved == pytest.approx(keep, abs=0.01)
        assert kept_fraction(trained.model) == pytest.approx(achieved, abs=1e-6)  # zeros held through retraining
        assert trained.info["pruning"].kept == pytest.approx(achieved, abs=1e-6)
        assert not any(hasattr(m, "weight_mask") for _, m in prunable_layers(trained.model))
        zeros = {n: m.weight == 0 for n, m in prunable_layers(trained.model)}
        if zeros_before is not None:  # stage 2 started from stage 1
            assert all(bool(zeros[n][zeros_before[n]].all()) for n in zeros)
        zeros_before = zeros
    assert len({t.key for _, t, _ in nets}) == 3

    # a second call loads every stage from the cache: nothing is trained, same weights
    monkeypatch.setattr(cache, "train", lambda *a, **k: pytest.fail("trained again"))
    again = E.compressed_models(P, progress=False)
    for (_, a, fa), (_, b, fb) in zip(nets, again):
        assert a.key == b.key and fa == fb
        for (n, pa), (_, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
            assert torch.equal(pa, pb), n


def test_profile_checks_compression_layers():
    from deepinfo.profile import _check

    p = load_profile("smoke")
    with pytest.raises(ValueError, match="compression.layers"):
        _check(dataclasses.replace(p, compression=dataclasses.replace(p.compression, layers="everything")))
    with pytest.raises(ValueError, match="compression.ru_layers"):
        _check(dataclasses.replace(p, compression=dataclasses.replace(p.compression, layers=("features.6",),
                                                                      ru_layers=("features.13",))))
    _check(dataclasses.replace(p, compression=dataclasses.replace(p.compression, layers="stages", ru_layers="same")))

"""experiments.compressed_models: the cached chain of Han et al. compression stages."""

import dataclasses

import pytest
import torch

from deepinfo.toolkit import cache
from deepinfo.book import experiments as E
from deepinfo.techniques.compression import kept_fraction, prunable_layers
from deepinfo.toolkit.profile import load_profile


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
    p = load_profile("smoke")
    with pytest.raises(ValueError, match="layers must be 'blocks', 'stages'"):
        dataclasses.replace(p.compression, layers="everything")
    with pytest.raises(ValueError, match="ru_layers must be 'same'"):
        dataclasses.replace(p.compression, layers=("features.6",), ru_layers=("features.13",))
    dataclasses.replace(p.compression, layers="stages", ru_layers="same")


def tiny_second_line():
    p = load_profile("smoke")
    cifar = dataclasses.replace(p.data.cifar, n_train=24, n_test=8)
    one_epoch = dataclasses.replace(p.training.cifar_resnet, epochs=1, batch_size=12)
    sl = dataclasses.replace(p.second_line, base_depth=8, teacher_depth=14, student_depth=8, keep=(0.5, 0.2),
                             retrain=dataclasses.replace(p.second_line.retrain, epochs=1, batch_size=12),
                             student_recipe=dataclasses.replace(p.second_line.student_recipe, epochs=1, batch_size=12))
    return dataclasses.replace(p, data=dataclasses.replace(p.data, cifar=cifar),
                               training=dataclasses.replace(p.training, cifar_resnet=one_epoch), second_line=sl,
                               dynamics=dataclasses.replace(p.dynamics, snapshot_epochs=(0, 1)))


def test_cifar_compressed_models_prune_the_profiles_cifar_resnet():
    P = tiny_second_line()
    nets = E.cifar_compressed_models(P, progress=False)
    assert [k for k, _, _ in nets] == [1.0, 0.5, 0.2]
    assert nets[0][1].key == E.cifar_resnet_model(P, 8, progress=False).key  # the shared original
    for keep, trained, achieved in nets[1:]:
        assert achieved == pytest.approx(keep, abs=0.01)
        assert kept_fraction(trained.model) == pytest.approx(achieved, abs=1e-6)
    assert nets[1][1].name == "resnet8-pruned1" and len({t.key for _, t, _ in nets}) == 3


def test_cifar_distillation_students_differ_only_by_the_loss(monkeypatch):
    P = tiny_second_line()
    teacher, alone, distilled = E.cifar_distillation_models(P, progress=False)
    assert teacher.key == E.cifar_resnet_model(P, 14, progress=False).key
    assert alone.key != distilled.key
    # same seed, builder and images: the loss is what makes the two students differ
    assert not torch.equal(alone.model.conv1.weight, distilled.model.conv1.weight)
    # a new teacher means a new student: the cache key names the teacher's weights
    other = dataclasses.replace(P, second_line=dataclasses.replace(P.second_line, teacher_depth=20))
    _, alone2, distilled2 = E.cifar_distillation_models(other, progress=False)
    assert alone2.key == alone.key and distilled2.key != distilled.key


def test_profile_checks_second_line_depths():
    p = load_profile("smoke")
    with pytest.raises(ValueError, match="6n\\+2"):
        dataclasses.replace(p.second_line, teacher_depth=21)
    with pytest.raises(ValueError, match="same depth"):
        dataclasses.replace(p.second_line, teacher_depth=20)

"""The notebooks' shared helpers: profile-driven data, cached networks and decoders."""

import pytest
import torch
from torch import nn

from deepinfo.book import experiments as E
from deepinfo.toolkit.profile import load_profile


@pytest.fixture(autouse=True)
def _artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPINFO_ARTIFACTS", str(tmp_path / "artifacts"))


def test_the_profile_estimator_is_the_settings_cid_takes():
    import deepinfo

    p = load_profile("smoke")
    s = deepinfo.Settings.of(p.estimator, beta=1e-3)
    assert type(s) is deepinfo.Settings and s.beta == 1e-3
    assert (s.grid, s.steps, s.method) == (p.estimator.grid, p.estimator.steps, p.estimator.method)


def test_smoke_data_are_synthetic_sized_by_the_profile_with_masks():
    p = load_profile("smoke")
    train, test = E.cub_data(p, "train"), E.cub_data(p, "test")
    assert len(train) == p.data.cub.n_train and len(test) == p.data.cub.n_test
    x, labels, masks = E.images(test, 3, seed=1)
    assert x.shape == (3, 3, p.data.cub.image_size, p.data.cub.image_size)
    assert masks.dtype == torch.bool and masks.shape == (3, p.data.cub.image_size, p.data.cub.image_size)
    again = E.images(test, 3, seed=1)
    assert torch.equal(x, again[0]) and torch.equal(labels, again[1])


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_trained_decoder_is_cached(monkeypatch):
    p = load_profile("smoke")
    trained = E.Trained("tiny", Tiny().eval(), "tiny-test")
    data = E.cifar_data(p, "test")
    first = E.trained_decoder(p, trained, "conv", data, progress=False)
    calls = []
    import deepinfo.decoder as D

    monkeypatch.setattr(D, "train_decoder", lambda *a, **k: calls.append(1))
    second = E.trained_decoder(p, trained, "conv", data, progress=False)
    assert calls == []  # loaded, not trained
    x = torch.rand(2, 3, 32, 32)
    f = trained.model.conv(x)
    assert torch.allclose(first(f), second(f), atol=1e-6)


def test_trained_decoder_cache_tells_training_data_apart(monkeypatch):
    p = load_profile("smoke")
    trained = E.Trained("tiny", Tiny().eval(), "tiny-test")
    E.trained_decoder(p, trained, "conv", E.cifar_data(p, "test"), progress=False)
    calls = []
    import deepinfo.decoder as D

    real = D.train_decoder
    monkeypatch.setattr(D, "train_decoder", lambda *a, **k: calls.append(1) or real(*a, **k))
    E.trained_decoder(p, trained, "conv", E.cifar_data(p, "test"), progress=False)
    assert calls == []  # same data: loaded
    E.trained_decoder(p, trained, "conv", E.cifar_data(p, "train"), progress=False)
    assert calls == [1]  # other data: a decoder of its own

"""The RU decoder: architecture shapes, training behaviour, and that the model is left alone."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepinfo
from deepinfo.decoder import (
    FLAT_START_MAX_SIDE,
    DecoderFit,
    ResNetDecoder,
    decoders_for,
    train_decoder,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The test machine's 2 cores are shared: one intra-op thread avoids oversubscription stalls.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------------------------

# (feature_shape, image_shape, n_blocks, expected upsampling blocks, expected final resize)
SHAPES = [
    ((10,), (3, 32, 32), 6, 2, False),  # flat: 8x8 start, 2 doublings
    ((64, 8, 8), (3, 32, 32), 6, 2, False),
    ((16, 32, 32), (3, 32, 32), 6, 0, False),  # same resolution: no upsampling
    ((256, 6, 6), (3, 64, 64), 6, 4, True),  # 6 -> 96, not a power-of-two ratio: resize to 64
    ((1, 1, 1), (1, 8, 8), 6, 0, False),  # 1x1 map = flat feature, 8x8 start
    ((7, 1, 1), (3, 32, 32), 6, 2, False),
    ((1,), (1, 1, 1), 6, 0, False),
    ((8, 4, 8), (3, 32, 32), 6, 3, False),  # non-square ratio: H doubled 3x, W 2x
    ((16, 64, 64), (3, 32, 32), 6, 0, True),  # feature larger than the image: resize down
    ((64, 2, 2), (3, 256, 256), 6, 6, True),  # 7 doublings needed, only 6 blocks
    ((64, 2, 2), (3, 256, 256), 8, 7, False),
    ((4096,), (3, 224, 224), 6, 5, False),  # 224 = 7 * 2**5
]


@pytest.mark.parametrize("feature_shape,image_shape,n_blocks,k,resizes", SHAPES)
def test_decoder_shapes_range_and_upsampling(feature_shape, image_shape, n_blocks, k, resizes):
    dec = ResNetDecoder(feature_shape, image_shape, n_blocks=n_blocks, width=8).eval()
    assert dec.n_upsampling_blocks == k
    assert dec.resizes == resizes
    assert len(dec.blocks) == n_blocks
    f = torch.randn(2, *feature_shape) * 3
    with torch.no_grad():
        y = dec(f)
        y_flat = dec(f.reshape(2, -1))  # the flattened feature is accepted too
    assert y.shape == (2, *image_shape)
    assert torch.isfinite(y).all() and y.min() > 0 and y.max() < 1
    torch.testing.assert_close(y, y_flat)

    # The first k blocks upsample with a stride-2 transposed conv on BOTH tracks; the rest don't.
    for i, block in enumerate(dec.blocks):
        res_t = [m for m in block.residual if isinstance(m, nn.ConvTranspose2d)]
        short_t = [m for m in block.shortcut.modules() if isinstance(m, nn.ConvTranspose2d)]
        if i < k:
            assert len(res_t) == 1 and len(short_t) == 1
            assert 2 in res_t[0].stride and res_t[0].stride == short_t[0].stride
        else:
            assert not res_t and not short_t and isinstance(block.shortcut, nn.Identity)


def test_upsampling_blocks_match_needed_doublings():
    """For square power-of-two ratios k = log2(H / h), until n_blocks caps it."""
    for h in (1, 2, 4, 8, 16, 32):
        for n_blocks in (6, 8):
            dec = ResNetDecoder((4, h, h) if h > 1 else (4,), (1, 32, 32), n_blocks, width=4)
            need = int(math.log2(32 // h)) if h > 1 else int(math.log2(32 // FLAT_START_MAX_SIDE))
            assert dec.n_upsampling_blocks == min(need, n_blocks)
            assert dec.block_output_size == (32, 32)


def test_decoder_flat_stem_and_six_vs_eight_blocks():
    d6 = ResNetDecoder((10,), (3, 32, 32))
    d8 = ResNetDecoder((10,), (3, 32, 32), n_blocks=8)
    assert d6.flat and isinstance(d6.stem[0], nn.Linear) and d6.stem[0].out_features == 64 * 8 * 8
    assert len(d6.blocks) == 6 and len(d8.blocks) == 8
    assert d6.n_upsampling_blocks == d8.n_upsampling_blocks == 2
    conv = ResNetDecoder((64, 8, 8), (3, 32, 32))
    assert not conv.flat and isinstance(conv.stem[0], nn.Conv2d) and conv.stem[0].kernel_size == (1, 1)


def test_decoder_bad_input_messages():
    dec = ResNetDecoder((16, 4, 4), (3, 16, 16), width=4)
    with pytest.raises(ValueError, match=r"accepts \[B, \*\(16, 4, 4\)\]"):
        dec(torch.randn(2, 16, 5, 5))
    with pytest.raises(ValueError, match="image_shape"):
        ResNetDecoder((10,), (32, 32))
    with pytest.raises(ValueError, match="feature_shape"):
        ResNetDecoder((0, 4, 4), (3, 32, 32))
    with pytest.raises(ValueError, match="n_blocks"):
        ResNetDecoder((10,), (3, 32, 32), n_blocks=0)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _images(n: int, seed: int) -> torch.Tensor:
    """Smooth random 8x8 RGB images in [0, 1] (upsampled 4x4 noise plus a little pixel noise)."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(8, 8), mode="bilinear")
    return (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)


def _tiny_model() -> nn.Module:
    """"0": a 3x3 conv to 8 channels (keeps the input); "3": one number per image (destroys it)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 1)
    )


@pytest.fixture(scope="module")
def data():
    x = _images(256, 0)
    loader = [(x[i : i + 32], torch.zeros(32, dtype=torch.long)) for i in range(0, 256, 32)]
    return loader, _images(64, 1)


FAST = dict(epochs=10, lr=3e-3, n_blocks=2, width=16, progress=False)


def test_identity_like_layer_reconstructs_destroying_layer_does_not(data):
    loader, x_test = data
    model = _tiny_model()
    var = float(x_test.var())
    test_mse = {}
    for layer in ("0", "3"):
        dec, log = train_decoder(model, layer, loader, **FAST)
        assert not dec.training and not any(p.requires_grad for p in dec.parameters())
        with torch.no_grad():
            f = deepinfo.features(model, x_test, layer)[layer]
            test_mse[layer] = float(F.mse_loss(dec(f), x_test))
        assert len(dec.fit.epoch_mse) == 10 and log.fit is dec.fit
    # The conv feature keeps the image: held-out error far below the pixel variance ...
    assert test_mse["0"] < 0.25 * var, test_mse
    # ... one number per image cannot: the decoder can only predict about the mean image.
    assert test_mse["3"] > 0.8 * var, test_mse
    assert test_mse["0"] < 0.25 * test_mse["3"]


def test_log_structure_and_loader_formats(data):
    loader, _ = data
    model = _tiny_model()
    bare = [x for x, _ in loader]
    triples = [(x, y, x[:, 0] > 0.5) for x, y in loader]
    kw = dict(FAST, epochs=2, log_every=3)
    dec_a, log_a = train_decoder(model, "0", bare, **kw)
    dec_b, log_b = train_decoder(model, "0", triples, **kw)
    dec_c, log_c = train_decoder(model, "0", loader, **kw)
    # The labels / masks are ignored: all three formats train the very same decoder.
    for dec in (dec_b, dec_c):
        for p, q in zip(dec_a.state_dict().values(), dec.state_dict().values()):
            assert torch.equal(p, q)
    assert [e["step"] for e in log_a] == [1, 3, 6, 9, 12, 15]
    assert [e["epoch"] for e in log_a] == [1, 1, 1, 2, 2, 2]
    assert all(set(e) == {"epoch", "step", "mse"} and e["mse"] > 0 for e in log_a)
    fit = log_a.fit
    assert isinstance(fit, DecoderFit) and fit.layer == "0"
    assert fit.feature_shape == (8, 8, 8) and fit.image_shape == (3, 8, 8)
    assert fit.n_images_per_epoch == 256 and fit.final_mse == fit.epoch_mse[-1] == log_a.epoch_mse[-1]
    assert fit.epoch_mse[1] < fit.epoch_mse[0]


def test_seed_reproducible_and_global_rng_untouched(data):
    loader, _ = data
    model = _tiny_model()
    kw = dict(FAST, epochs=1)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    d1, log1 = train_decoder(model, "0", loader, seed=7, **kw)
    assert torch.equal(torch.get_rng_state(), state)
    d2, log2 = train_decoder(model, "0", loader, seed=7, **kw)
    d3, _ = train_decoder(model, "0", loader, seed=8, **kw)
    s1, s2, s3 = d1.state_dict(), d2.state_dict(), d3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert list(log1) == list(log2)
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)


class _Tripwire(nn.Module):
    """Fails if the forward runs past the hooked layer."""

    def forward(self, x):
        raise AssertionError("the forward pass was not stopped after the hooked layer")


def test_model_left_untouched_and_forward_stopped_early(data):
    loader, _ = data
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), _Tripwire(), nn.Linear(8, 2)
    )
    model.train()
    model[0].eval()  # a mixed state must be restored module by module
    model[0].bias.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]

    train_decoder(model, "2", loader, **dict(FAST, epochs=1))

    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    # BatchNorm (left in train mode by the caller) ran in eval mode: running statistics unchanged.
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_unknown_layer_keyerror_with_suggestions(data):
    loader, _ = data
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    model.add_module("classifier", nn.Linear(4, 2))
    with pytest.raises(KeyError, match=r"features\.0"):
        train_decoder(model, "feature.0", loader, **FAST)

    class CountingLoader:
        n_iter = 0

        def __iter__(self):
            CountingLoader.n_iter += 1
            return iter(loader)

    # decoders_for checks every name before training any decoder.
    with pytest.raises(KeyError, match="classifier"):
        decoders_for(model, ["features.0", "clasifier"], CountingLoader(), **FAST)
    assert CountingLoader.n_iter == 0


def test_bad_images_rejected(data):
    model = _tiny_model()
    x = _images(8, 3)
    with pytest.raises(ValueError, match=r"pixel space \[0, 1\]"):
        train_decoder(model, "0", [(x - 0.5) / 0.25], **FAST)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        train_decoder(model, "0", [x[0]], **FAST)
    with pytest.raises(ValueError, match="no batches"):
        train_decoder(model, "0", [], **FAST)


def test_decoders_for_returns_one_decoder_per_layer(data):
    loader, _ = data
    model = _tiny_model()
    decs = decoders_for(model, ["3", "0"], loader[:2], **dict(FAST, epochs=1))
    assert list(decs) == ["3", "0"]
    assert decs["0"].feature_shape == (8, 8, 8) and decs["3"].feature_shape == (1,)
    assert decs["3"].flat and decs["0"].fit.layer == "0"
    single = decoders_for(model, "0", loader[:2], **dict(FAST, epochs=1))
    assert list(single) == ["0"]


def test_trained_decoder_passes_gradients_to_its_input(data):
    """deepinfo.ru differentiates through the frozen decoder w.r.t. the (noisy) feature."""
    loader, x_test = data
    model = _tiny_model()
    dec, _ = train_decoder(model, "0", loader[:1], **dict(FAST, epochs=1))
    f = deepinfo.features(model, x_test[:4], "0")["0"].requires_grad_(True)
    ((dec(f.flatten(1)) - x_test[:4]) ** 2).mean().backward()
    assert f.grad is not None and f.grad.abs().sum() > 0
    assert all(p.grad is None for p in dec.parameters())


def test_reconstruction_mse_and_pixel_variance_have_their_hand_derived_values():
    from deepinfo.decoder import pixel_variance, reconstruction_mse

    x = torch.rand(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    model = nn.Sequential(nn.Identity(), nn.Identity())
    assert reconstruction_mse(model, "0", nn.Identity(), x) == pytest.approx(0.0)  # a perfect decoder
    # a decoder that outputs each channel's mean colour scores exactly the pixel variance
    means = x.mean(dim=(0, 2, 3), keepdim=True)
    mean_decoder = lambda f: means.expand_as(f)  # noqa: E731
    assert reconstruction_mse(model, "0", mean_decoder, x) == pytest.approx(pixel_variance(x), rel=1e-6)
    assert pixel_variance(x) == pytest.approx(float(((x - means) ** 2).mean()), rel=1e-6)

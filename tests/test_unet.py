"""U-Net (App. G.1): shapes, layer names, seeded init, normalization; membrane data, loss, scores."""

import numpy as np
import pytest
import torch
from torch import nn

from deepinfo.book import experiments as E
from deepinfo._features import FeatureTap
from deepinfo.models import (
    Normalize,
    UNet,
    layer_names,
    resolve_layers,
    stage_names,
    unet,
    unet_block_names,
)
from deepinfo.models.unet import ISBI_MEAN, ISBI_STD
from deepinfo.toolkit.profile import load_profile
from deepinfo.techniques.segmentation import (
    SegmentationSet,
    isbi_segmentation,
    segmentation_loss,
    segmentation_scores,
    synthetic_segmentation,
)
from deepinfo.toolkit.training import Recipe, augment, evaluate, train


@pytest.fixture(autouse=True)
def _artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPINFO_ARTIFACTS", str(tmp_path / "artifacts"))
    torch.set_num_threads(1)


# --- the network ---------------------------------------------------------------------------

@pytest.mark.parametrize("levels,size", [(1, 8), (2, 32), (2, 37), (3, 40), (3, 19), (4, 64)])
def test_output_has_the_input_size_and_two_classes(levels, size):
    model = unet(4, levels, seed=0).eval()
    x = torch.rand(2, 1, size, size + 3)
    assert model(x).shape == (2, 2, size, size + 3)


def test_too_small_or_wrong_inputs_are_refused_with_a_clear_message():
    model = unet(4, 3, seed=0)
    with pytest.raises(ValueError, match=">= 8"):
        model(torch.rand(1, 1, 7, 32))
    with pytest.raises(ValueError, match="in_channels"):
        UNet(in_channels=0)
    with pytest.raises(ValueError, match="levels"):
        unet(4, 0)


def test_block_and_stage_names_resolve_in_forward_order_with_the_expected_sizes():
    model = unet(4, 3, seed=0).eval()
    blocks = ["enc.0", "enc.1", "enc.2", "bottleneck", "dec.0", "dec.1", "dec.2"]
    assert unet_block_names(model) == blocks
    assert resolve_layers(model, "blocks") == blocks == layer_names(model)
    assert resolve_layers(model, "stages") == ["enc.0", "bottleneck", "dec.2"] == stage_names(model)
    feats = FeatureTap(model, blocks)(torch.rand(1, 1, 32, 32))
    sides = {name: tuple(f.shape[1:]) for name, f in feats.items()}
    assert sides == {"enc.0": (4, 32, 32), "enc.1": (8, 16, 16), "enc.2": (16, 8, 8),
                     "bottleneck": (32, 4, 4), "dec.0": (16, 8, 8), "dec.1": (8, 16, 16),
                     "dec.2": (4, 32, 32)}
    # the profile keywords resolve through experiments.layers_for
    assert E.layers_for("smoke", "unet", unet(8, 2)) == ["enc.0", "bottleneck", "dec.1"]
    for name in ("smoke", "cpu", "paper"):
        spec = load_profile(name).layers_for("unet")
        assert E.layers_for(name, "unet", model) == resolve_layers(model, spec)


def test_initialisation_depends_on_the_seed_only_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b, c = unet(4, 2, seed=0), unet(4, 2, seed=0), unet(4, 2, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_the_model_normalizes_pixel_space_input_itself():
    model = unet(4, 2, seed=0).eval()
    assert isinstance(model.normalize, Normalize)
    assert torch.allclose(model.normalize.mean.flatten(), torch.tensor([ISBI_MEAN]))
    assert torch.allclose(model.normalize.std.flatten(), torch.tensor([ISBI_STD]))
    assert not any(k.startswith("normalize") for k in model.state_dict())  # no state keys
    x = torch.rand(2, 1, 16, 16)
    plain = unet(4, 2, seed=0).eval()
    plain.normalize = nn.Identity()
    with torch.no_grad():
        assert torch.allclose(model(x), plain((x - ISBI_MEAN) / ISBI_STD), atol=1e-5)
        assert not torch.allclose(model(x), plain(x), atol=1e-3)


# --- data ----------------------------------------------------------------------------------

def _fake_isbi(folder, n=30, side=64):
    tifffile = pytest.importorskip("tifffile")
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 256, size=(n, side, side), dtype=np.uint8)
    vol[:, 0, 0] = np.arange(n)  # a slice's id, readable after loading
    labels = np.full((n, side, side), 255, dtype=np.uint8)
    labels[:, :, : side // 4] = 0  # membrane: the left quarter
    (folder / "isbi2012").mkdir(parents=True)
    tifffile.imwrite(folder / "isbi2012" / "train-volume.tif", vol)
    tifffile.imwrite(folder / "isbi2012" / "train-labels.tif", labels)
    return vol


def test_isbi_split_is_a_first_block_and_a_last_block_resized(tmp_path):
    vol = _fake_isbi(tmp_path)
    train_set = isbi_segmentation("train", image_size=64, n_train=24, n_test=6, root=tmp_path)
    test_set = isbi_segmentation("test", image_size=64, n_train=24, n_test=6, root=tmp_path)
    assert train_set.indices == list(range(24)) and test_set.indices == list(range(24, 30))
    image, mask = test_set[0]
    assert image.shape == (1, 64, 64) and mask.shape == (64, 64) and mask.dtype == torch.bool
    assert torch.allclose(image[0], torch.from_numpy(vol[24]).float() / 255)
    assert bool(mask[:, :16].all()) and not bool(mask[:, 16:].any())
    small = isbi_segmentation("test", image_size=16, n_train=24, n_test=6, root=tmp_path)
    assert small.images.shape == (6, 1, 16, 16) and 0 <= float(small.images.min()) <= float(small.images.max()) <= 1
    assert bool(small.masks[:, :, :4].all()) and not bool(small.masks[:, :, 4:].any())  # fraction kept
    with pytest.raises(ValueError, match="n_train \\+ n_test <= 30"):
        isbi_segmentation("train", image_size=16, n_train=25, n_test=6, root=tmp_path)
    with pytest.raises(ValueError, match="split"):
        isbi_segmentation("val", image_size=16, root=tmp_path)
    with pytest.raises(FileNotFoundError):
        isbi_segmentation("train", image_size=16, root=tmp_path / "nowhere")


def test_real_isbi_slices_at_the_cpu_size(shared_data):
    test_set = isbi_segmentation("test", image_size=128, n_train=24, n_test=6, root=shared_data)
    assert len(test_set) == 6 and test_set.images.shape == (6, 1, 128, 128)
    assert 0.1 < test_set.masks.float().mean() < 0.35  # membranes are about a fifth of the pixels


def test_synthetic_segmentation_is_grey_with_the_object_mask_and_deterministic():
    ds = synthetic_segmentation(4, image_size=32, split="test", seed=3)
    again = synthetic_segmentation(4, image_size=32, split="test", seed=3)
    image, mask = ds[1]
    assert image.shape == (1, 32, 32) and mask.dtype == torch.bool and 0 < mask.float().mean() < 1
    assert torch.equal(ds.images, again.images) and torch.equal(ds.masks, again.masks)
    assert ds.task == "segmentation" and ds.classes == ["cell", "membrane"]


def test_segmentation_data_follows_the_profile():
    p = load_profile("smoke")
    d = p.data.segmentation
    train_set, test_set = E.segmentation_data(p, "train"), E.segmentation_data(p, "test")
    assert len(train_set) == d.n_train and len(test_set) == d.n_test
    assert train_set[0][0].shape == (1, d.image_size, d.image_size)
    assert not torch.equal(train_set.images[: d.n_test], test_set.images)
    with pytest.raises(ValueError, match="split"):
        E.segmentation_data(p, "val")


# --- training pieces -------------------------------------------------------------------------

def test_flip_augmentation_moves_images_and_masks_together():
    images = torch.rand(16, 1, 8, 8)
    masks = images[:, 0] > 0.5
    out_images, out_masks = augment([images, masks], Recipe(epochs=1, batch_size=4, lr=0.1, augment="flip"),
                                    torch.Generator().manual_seed(0))
    assert torch.equal(out_masks, out_images[:, 0] > 0.5)
    flipped = [not torch.equal(out_images[i], images[i]) for i in range(16)]
    assert 0 < sum(flipped) < 16  # some flipped, some not


def test_loss_is_pixelwise_cross_entropy_and_scores_count_pixels():
    class Fixed(nn.Module):
        def __init__(self, pred):
            super().__init__()
            self.pred = pred
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            logits = torch.stack([1 - self.pred.float(), self.pred.float()], 1) * 10 + self.w
            return logits[: x.shape[0]]

    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[:, :, :2] = True  # 16 membrane pixels of 32
    pred = masks.clone()
    pred[:, :, 2] = True  # 8 false positives
    ds = SegmentationSet(torch.rand(2, 1, 4, 4), masks, [0, 1], "toy")
    model = Fixed(pred)
    s = segmentation_scores(model, ds)
    assert s["pixel_accuracy"] == pytest.approx(24 / 32)
    assert s["iou_membrane"] == pytest.approx(16 / 24) and s["iou_cell"] == pytest.approx(8 / 16)
    assert s["dice_membrane"] == pytest.approx(32 / 40)
    assert s["membrane_fraction"] == 0.5 and s["predicted_membrane_fraction"] == 0.75
    assert evaluate(model, ds) == pytest.approx(24 / 32)  # the training loop's pixel accuracy agrees
    loss, logits = segmentation_loss()(model, (ds.images, masks))
    assert loss.dim() == 0 and logits.shape == (2, 2, 4, 4)
    expected = torch.nn.functional.cross_entropy(logits, masks.long())
    assert loss.item() == pytest.approx(expected.item())
    weighted, _ = segmentation_loss([1.0, 3.0])(model, (ds.images, masks))
    assert weighted.item() != pytest.approx(loss.item())
    with pytest.raises(ValueError, match="class_weights"):
        segmentation_loss([1.0])


def test_a_small_unet_learns_the_synthetic_masks():
    train_set = synthetic_segmentation(16, image_size=16, seed=0)
    model = unet(4, 2, seed=0)
    recipe = Recipe(epochs=4, batch_size=4, lr=0.01, optimizer="adam", schedule="constant", augment="flip")
    history = train(model, train_set, recipe, loss_fn=segmentation_loss(), progress=False, device="cpu")
    assert history.train_loss[-1] < 0.8 * history.train_loss[0]
    assert segmentation_scores(model, train_set)["pixel_accuracy"] > 0.7


def test_unet_model_is_trained_once_then_loaded_from_the_cache(monkeypatch):
    p = load_profile("smoke")
    first = E.unet_model(p, progress=False)
    assert isinstance(first.model, UNet) and first.model.levels == p.networks.unet.levels
    assert set(first.info["scores"]) >= {"pixel_accuracy", "iou_membrane"}
    import deepinfo.toolkit.cache as C

    monkeypatch.setattr(C, "train", lambda *a, **k: pytest.fail("trained again"))
    second = E.unet_model(p, progress=False)
    assert second.key == first.key
    sa, sb = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)

"""What the notebooks share: the profile's data, trained networks (cached), layers, decoders.

Every function takes the profile (a :class:`~deepinfo.toolkit.profile.Profile` or its name) and reads
all sizes from it, so a notebook says *what* it needs and the profile says *how much*. Trained
networks and decoders go through the checkpoint cache: a second notebook asking for the same
network loads it instantly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from deepinfo.toolkit import cache
from deepinfo.toolkit.cache import config_key
from deepinfo.datasets import CUB200, InMemory, Synthetic, cifar10, subset
from deepinfo.estimators import has_object_and_background
from deepinfo.models import LAYER_KEYWORDS, build, cifar_resnet, cifar_resnet_autoencoder, resolve_layers, stage_names
from deepinfo.paths import artifacts_dir
from deepinfo.toolkit.profile import Profile, load_profile
from deepinfo.toolkit.training import History, Recipe, atomic_torch_save, evaluate, load_or_discard


@dataclass
class Trained:
    """A network ready for analysis (eval mode), with where it came from."""

    name: str
    model: nn.Module
    key: str  # identifies the weights (cache file stem, or the published file)
    history: History | None = None
    info: dict = field(default_factory=dict)

    def accuracy(self, dataset: Dataset, batch_size: int = 128) -> float:
        """Test accuracy on ``dataset`` (computed once, then remembered)."""
        cached = self.info.get("accuracy")
        if cached is None:
            cached = self.info["accuracy"] = float(evaluate(self.model, dataset, batch_size=batch_size))
        return cached


def _profile(profile) -> Profile:
    return load_profile(profile)


# --- data ------------------------------------------------------------------------------------

def cifar_data(profile, split: str) -> Dataset:
    """The small-image classification set (synthetic, or CIFAR-10 from the data directory)."""
    p = _profile(profile)
    d = p.data.cifar
    n = d.n_train if split == "train" else d.n_test
    if d.dataset == "synthetic":
        return Synthetic(n, image_size=d.image_size, num_classes=d.num_classes, split=split, seed=p.seed)
    ds = cifar10(split, root=p.data_root(), download=p.data.download, copy=p.data.cifar10_copy)
    return _in_memory(subset(ds, n, seed=p.seed) if n is not None and n < len(ds) else ds, d.image_size)


def cub_data(profile, split: str, crop: str | None = None) -> Dataset:
    """The bird classification set with object masks (synthetic, or CUB-200 crops)."""
    p = _profile(profile)
    d = p.data.cub
    n = d.n_train if split == "train" else d.n_test
    if d.dataset == "synthetic":
        return Synthetic(n, image_size=d.image_size, num_classes=d.num_classes, split=split, seed=p.seed + 1)
    ds = CUB200(root=p.data_root(), split=split, crop=crop or d.crop, image_size=d.image_size,
                classes=range(1, d.num_classes + 1), download=p.data.download)
    return _in_memory(subset(ds, n, seed=p.seed) if n is not None and n < len(ds) else ds, d.image_size)


# Decoded items of a set up to this size stay in memory (JPEG decoding costs a small net's step
# every epoch); the paper profile's 224x224 CUB (3.6 GB as floats) is read from disk each time.
IN_MEMORY_BYTES = 1 << 30


def _in_memory(ds: Dataset, image_size: int | None) -> Dataset:
    if image_size is None or len(ds) * 3 * image_size * image_size * 4 > IN_MEMORY_BYTES:
        return ds
    return InMemory(ds)


def images(dataset: Dataset, n: int, seed: int = 0):
    """``n`` items picked deterministically: ``(x [n,C,H,W], labels [n], masks [n,H,W] or None)``."""
    n = min(n, len(dataset))
    picked = subset(dataset, n, seed=seed)
    items = [picked[i] for i in range(n)]
    x = torch.stack([it[0] for it in items])
    labels = torch.tensor([int(it[1]) for it in items])
    masks = torch.stack([it[2] for it in items]) if len(items[0]) > 2 else None
    return x, labels, masks


def measured_images(profile, dataset: Dataset, n: int):
    """``n`` test images ``(x, labels, masks)`` drawn with the profile's seed; where the data set
    has object masks, only images with a foreground and a background cell on the estimator's
    grid (so concentration is defined), else ``masks`` is None."""
    p = _profile(profile)
    if len(dataset[0]) < 3:
        x, labels, _ = images(dataset, n, seed=p.seed)
        return x, labels, None
    x, labels, masks, _ = images_where(
        dataset, n, lambda image, label, mask: has_object_and_background(mask, p.estimator.grid), seed=p.seed)
    return x, labels, masks


def concentration_images(profile, n: int):
    """``n`` bird test images cropped by the profile's ``data.cub.concentration_crop`` box (so a
    background remains around the object), drawn in one seeded order, keeping only those with a
    foreground and a background cell on the estimator's grid (so concentration is defined).

    Returns:
        ``(x [n, C, H, W], masks [n, H, W], ids [n])``, ``ids`` the images' test-set indices.
    """
    p = _profile(profile)
    test_set = cub_data(p, "test", crop=p.data.cub.concentration_crop)
    x, _, masks, ids = images_where(
        test_set, n, lambda image, label, mask: has_object_and_background(mask, p.estimator.grid), seed=p.seed)
    return x, masks, ids


def cifar_weights_words(p: Profile) -> str:
    """Where the CIFAR ResNets of the loaded profile ``p`` come from, in words (for a claim's setup
    and data)."""
    return ("published weights" if p.networks.cifar.weights == "published"
            else f"trained here, {p.training.cifar_resnet.epochs} epochs")


# --- networks --------------------------------------------------------------------------------

def train_cached(profile, name: str, config: dict, build_model: Callable[[], nn.Module],
                 build_data: Callable[[], Dataset], recipe: Recipe, *, loss_fn=None,
                 keep_epochs=(), val_data=None, progress: bool = True) -> Trained:
    """:func:`deepinfo.toolkit.cache.get_trained` with the profile's seed; returns a :class:`Trained`."""
    p = _profile(profile)
    model, history = cache.get_trained(name, config, build_model, build_data, recipe, profile=p.artifacts,
                                       seed=p.seed, loss_fn=loss_fn, keep_epochs=keep_epochs,
                                       val_data=val_data, progress=progress, device=p.torch_device(),
                                       num_workers=p.data.num_workers)
    path = cache.checkpoint_path(name, config, recipe, profile=p.artifacts, seed=p.seed, keep_epochs=keep_epochs)
    return Trained(name, model.eval(), path.stem, history)


AUTOENCODER_LOSS = "MSE reconstruction: mean over pixels and channels of (ae(x) - x)^2"


def _reconstruction_loss(model: nn.Module, batch) -> torch.Tensor:
    images = batch[0]
    return torch.nn.functional.mse_loss(model(images), images)


def cifar_autoencoder_model(profile, depth: int, progress: bool = True) -> Trained:
    """The ResNet-``depth`` auto-encoder of Fig. 5(a,b): the classifier's trunk (randomly
    initialised) and the profile's decoder, trained to reconstruct the CIFAR training images."""
    p = _profile(profile)
    d = p.decoder
    config = {"model": "cifar_resnet_autoencoder", "depth": depth, "image_size": p.data.cifar.image_size,
              "encoder_init": "random", "decoder_blocks": d.n_blocks, "decoder_width": d.width,
              "loss": AUTOENCODER_LOSS, "data": p.data.cifar}
    return train_cached(
        p, f"resnet{depth}-ae", config,
        lambda: cifar_resnet_autoencoder(depth, image_size=p.data.cifar.image_size, n_blocks=d.n_blocks,
                                         width=d.width),
        lambda: cifar_data(p, "train"), p.training.cifar_autoencoder, loss_fn=_reconstruction_loss,
        progress=progress)


def _cifar_variant(p: Profile, depth: int, name: str, config: dict, recipe: Recipe, *,
                   build_model: Callable[[], nn.Module] | None = None, loss_fn=None,
                   progress: bool = True) -> Trained:
    """A CIFAR ResNet of ``depth`` trained here on ``data.cifar``'s training images (cached)."""
    base = {"model": "cifar_resnet", "depth": depth, "num_classes": p.data.cifar.num_classes,
            "data": p.data.cifar, **config}
    return train_cached(p, name, base,
                        build_model or (lambda: cifar_resnet(depth, num_classes=p.data.cifar.num_classes)),
                        lambda: cifar_data(p, "train"), recipe, loss_fn=loss_fn, progress=progress)


def cifar_resnet_model(profile, depth: int, progress: bool = True) -> Trained:
    """A CIFAR ResNet: the published weights (cpu, paper) or trained here (smoke)."""
    p = _profile(profile)
    if p.networks.cifar.weights == "published":
        model = cifar_resnet(depth, weights="published", num_classes=p.data.cifar.num_classes)
        return Trained(f"resnet{depth}", model.eval(), f"resnet{depth}-published")
    return _cifar_variant(p, depth, f"resnet{depth}", {}, p.training.cifar_resnet, progress=progress)


def cub_model(profile, arch: str, *, name: str | None = None, config: dict | None = None,
              build_model: Callable[[], nn.Module] | None = None, loss_fn=None,
              recipe: Recipe | None = None, train_data: Callable[[], Dataset] | None = None,
              keep_epochs=(), progress: bool = True) -> Trained:
    """A CUB classifier of ``arch`` trained with the profile's recipe (cached).

    ``config``, ``build_model``, ``loss_fn`` and ``recipe`` let a technique (distillation,
    adversarial training, damage) train a variant; describe the variant in ``config``.
    """
    p = _profile(profile)
    n = p.networks.cub
    base = {"model": arch, "num_classes": p.data.cub.num_classes, "width": n.width, "dropout": n.dropout,
            "batch_norm": n.batch_norm, "weights": n.weights, "input_size": p.data.cub.image_size,
            "data": p.data.cub}
    base.update(config or {})

    def default_build():
        return build(arch, num_classes=p.data.cub.num_classes, width=n.width, weights=n.weights,
                     input_size=p.data.cub.image_size, dropout=n.dropout, batch_norm=n.batch_norm,
                     progress=progress)

    return train_cached(p, name or arch, base, build_model or default_build,
                        train_data or (lambda: cub_data(p, "train")), recipe or p.training.cub,
                        loss_fn=loss_fn, keep_epochs=keep_epochs, progress=progress)


def layers_for(profile, arch: str, model: nn.Module, prefix: str = "") -> list[str]:
    """The module names the profile measures for ``arch`` (keywords resolved on ``model``).

    ``prefix``: where ``model`` holds the architecture under a name (a ResNet auto-encoder's
    ``"encoder."``), module names of the profile get it; keywords are resolved on ``model`` itself.
    """
    spec = _profile(profile).layers_for(arch)
    if prefix and not (isinstance(spec, str) and spec in LAYER_KEYWORDS):
        spec = [prefix + n for n in ([spec] if isinstance(spec, str) else spec)]
    return resolve_layers(model, spec)


def decoder_layers(profile, model: nn.Module, measured: Sequence[str]) -> list[str]:
    """The layers that get an RU decoder: every measured one (``decoder.layers = "same"``) or the
    stage outputs (``"stages"``)."""
    return list(measured) if _profile(profile).decoder.layers == "same" else stage_names(model)


# --- decoders --------------------------------------------------------------------------------

def _data_fingerprint(ds: Dataset) -> str:
    """Its size and the pixels of its first and last items: two notebooks training a decoder for
    the same network and layer on different data (another crop, another set) get two decoders."""
    import hashlib

    h = hashlib.sha256(str(len(ds)).encode())
    for i in {0, len(ds) - 1}:
        h.update(torch.as_tensor(ds[i][0]).float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def trained_decoder(profile, trained: Trained, layer: str, train_set: Dataset, *,
                    n_blocks: int | None = None, progress: bool = True) -> nn.Module:
    """The RU decoder of ``layer`` for a trained network, cached under ``artifacts/<profile>/decoders``."""
    from deepinfo.decoder import ResNetDecoder, train_decoder

    p = _profile(profile)
    d = p.decoder
    n_blocks = n_blocks or d.n_blocks
    settings = {"model": trained.key, "layer": layer, "n_blocks": n_blocks, "width": d.width,
                "epochs": d.epochs, "batch_size": d.batch_size, "lr": d.lr, "n_train": d.n_train,
                "seed": p.seed, "data": _data_fingerprint(train_set)}
    path = artifacts_dir(p.artifacts, "decoders") / f"{trained.name}-{config_key(settings)}.pt"
    with cache.locked(path):  # notebooks side by side: one trains, the others wait and load
        saved = load_or_discard(path, "training this decoder again")
        if saved is not None:
            dec = ResNetDecoder(tuple(saved["feature_shape"]), tuple(saved["image_shape"]), n_blocks, d.width)
            dec.load_state_dict(saved["state_dict"])
            return dec.eval().requires_grad_(False)
        data = subset(train_set, d.n_train, seed=p.seed) if d.n_train and d.n_train < len(train_set) else train_set
        loader = torch.utils.data.DataLoader(data, batch_size=d.batch_size, shuffle=True,
                                             generator=torch.Generator().manual_seed(p.seed))
        dec, _log = train_decoder(trained.model, layer, loader, epochs=d.epochs, lr=d.lr, n_blocks=n_blocks,
                                  width=d.width, progress=progress, seed=p.seed)
        atomic_torch_save({"state_dict": dec.state_dict(), "feature_shape": list(dec.feature_shape),
                           "image_shape": list(dec.image_shape), "settings": settings,
                           "epoch_mse": list(dec.fit.epoch_mse)}, path)
        return dec


# --- whole (uncropped) bird images and filtered picks (weakly supervised localization) ---------

def cub_uncropped_data(profile, split: str) -> Dataset:
    """Whole bird images, the box as mask: what Table 2's localization networks train and test on.

    ``cub200``: ``CUB200(crop=None)`` (the whole image resized to ``image_size x image_size``,
    aspect ratio not kept, so the box mask stays aligned), same classes and subset sizes as
    :func:`cub_data`. ``synthetic``: the very data set :func:`cub_data` returns, whose images are
    already whole scenes with exact object masks.
    """
    p = _profile(profile)
    d = p.data.cub
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if d.dataset == "synthetic":
        return cub_data(p, split)
    n = d.n_train if split == "train" else d.n_test
    ds = CUB200(root=p.data_root(), split=split, crop=None, image_size=d.image_size,
                classes=range(1, d.num_classes + 1), download=p.data.download)
    return _in_memory(subset(ds, n, seed=p.seed) if n is not None and n < len(ds) else ds, d.image_size)


def cub_uncropped_model(profile, arch: str, progress: bool = True) -> Trained:
    """A CUB classifier of ``arch`` trained on :func:`cub_uncropped_data` (cached).

    With synthetic data the uncropped set is the cropped one, so this is :func:`cub_model`'s
    network itself (same checkpoint, no second training).
    """
    p = _profile(profile)
    if p.data.cub.dataset == "synthetic":
        return cub_model(p, arch, progress=progress)
    return cub_model(p, arch, name=f"{arch}-uncropped", config={"crop": None},
                     train_data=lambda: cub_uncropped_data(p, "train"), progress=progress)


def images_where(dataset: Dataset, n: int, keep: Callable[..., bool], seed: int = 0):
    """Like :func:`images`, but only items for which ``keep(image, label, mask)`` is True.

    Items are examined in one seeded random order (the order :func:`images` draws from) until
    ``n`` are kept; they are returned in index order. Returns ``(x [k,C,H,W], labels [k],
    masks [k,H,W] or None, indices [k])`` with ``k = n``; raises ``ValueError`` when fewer than
    ``n`` items of the whole data set pass (saying how many did).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(int(seed))).tolist()
    kept = []
    for i in order:
        item = dataset[i]
        if keep(*item) if len(item) > 2 else keep(item[0], item[1], None):
            kept.append((i, item))
            if len(kept) == n:
                break
    if len(kept) < n:
        raise ValueError(f"only {len(kept)} of the {len(dataset)} items pass the filter; {n} were asked for")
    kept.sort(key=lambda t: t[0])
    items = [it for _, it in kept]
    x = torch.stack([it[0] for it in items])
    labels = torch.tensor([int(it[1]) for it in items])
    masks = torch.stack([it[2] for it in items]) if len(items[0]) > 2 else None
    return x, labels, masks, torch.tensor([i for i, _ in kept])


# --- distillation and architecture damage (notebooks 10_distillation, 11_damage) ---------------

def distilled_model(profile, teacher_arch: str, progress: bool = True) -> Trained:
    """The profile's distillation student (AlexNet) distilled from ``cub_model(profile, teacher_arch)``.

    Same data and recipe (``training.cub``) as ``cub_model(profile, student)``, the network trained
    alone; only the loss differs: :func:`deepinfo.techniques.distillation.distillation_loss` with the
    profile's ``distillation.temperature`` and ``alpha``, the teacher (the very cached network the
    other notebooks use, trained first if needed) run on each augmented batch. The checkpoint's
    configuration names the teacher's checkpoint, so a retrained teacher retrains the student.
    """
    from deepinfo.techniques.distillation import distillation_loss

    p = _profile(profile)
    d = p.distillation
    if teacher_arch == d.student:
        raise ValueError(f"the teacher {teacher_arch!r} is the student architecture itself")
    teacher = cub_model(p, teacher_arch, progress=progress)
    config = {"distillation": {"teacher": teacher.key, "temperature": d.temperature, "alpha": d.alpha}}
    return cub_model(p, d.student, name=f"{d.student}-distilled-{teacher_arch}", config=config,
                     loss_fn=distillation_loss(teacher.model, d.temperature, d.alpha), progress=progress)


def damage_data(profile, split: str) -> Dataset:
    """The bird vs non-bird set of ``split`` (:class:`deepinfo.techniques.damage.BirdVsNonBird`, label 1 = bird).

    Birds: :func:`cub_data` of that split (classification crops). Non-birds: the profile's
    ``damage.negatives`` (:func:`deepinfo.techniques.damage.negative_images`) at the birds' image size. As many
    of each: ``min(damage.n_negatives, number of birds)``, or all birds when ``n_negatives`` is
    left out. Seeded by the profile.
    """
    from deepinfo.techniques.damage import BirdVsNonBird, negative_images

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    p = _profile(profile)
    dm = p.damage
    birds = cub_data(p, split)
    n = len(birds) if dm.n_negatives is None else min(dm.n_negatives, len(birds))
    negatives = negative_images(dm.negatives, split, n, p.data.cub.image_size, root=p.data_root(),
                                seed=p.seed, download=p.data.download, cifar10_copy=p.data.cifar10_copy)
    if dm.negatives != "synthetic":  # decoded once (JPEG + resize), not every epoch
        negatives = _in_memory(negatives, p.data.cub.image_size)
    return BirdVsNonBird(birds, negatives, n, seed=p.seed)


def damage_model(profile, arch: str, conv_index: int | None = None, progress: bool = True) -> Trained:
    """A VGG trained on :func:`damage_data` (binary), original (``conv_index=None``) or damaged.

    ``conv_index`` (e.g. ``-1``, ``-2``): that conv layer replaced by ``damage.n_filters`` filters
    of ``damage.kernel_size`` (:func:`deepinfo.techniques.damage.damage_vgg`). The net is the profile's CUB
    VGG (width, dropout, batch norm) with two outputs, trained with ``damage.recipe``; with
    ``networks.cub.weights = "imagenet"`` it starts from the ImageNet weights (new 2-way last
    layer; the damaged layer and the one reading it start from scratch).
    """
    from deepinfo.techniques.damage import damage_vgg

    p = _profile(profile)
    dm, n = p.damage, p.networks.cub
    if arch not in ("vgg16", "vgg19"):
        raise ValueError(f"architecture damage is defined for vgg16 / vgg19, got {arch!r}")
    if conv_index is not None and (isinstance(conv_index, bool) or not isinstance(conv_index, int)):
        raise ValueError(f"conv_index must be None (the original net) or an int such as -1, got {conv_index!r}")

    def build_model() -> nn.Module:
        pretrained = n.weights == "imagenet"
        model = build(arch, num_classes=1000 if pretrained else 2, width=n.width, weights=n.weights,
                      input_size=p.data.cub.image_size, dropout=n.dropout, batch_norm=n.batch_norm,
                      progress=progress)
        if pretrained:  # a 2-way head on the ImageNet features
            last = model.classifier[-1]
            model.classifier[-1] = nn.Linear(last.in_features, 2)
            nn.init.normal_(model.classifier[-1].weight, 0, 0.01)
            nn.init.constant_(model.classifier[-1].bias, 0)
        if conv_index is not None:
            damage_vgg(model, conv_index, dm.n_filters, dm.kernel_size)
        return model

    damage = None if conv_index is None else {"conv_index": conv_index, "n_filters": dm.n_filters,
                                              "kernel_size": dm.kernel_size}
    config = {"num_classes": 2, "task": "bird_vs_nonbird", "negatives": dm.negatives,
              "n_negatives": dm.n_negatives, "damage": damage}
    name = f"{arch}-birds" if conv_index is None else f"{arch}-birds-conv{conv_index}-damaged"
    return cub_model(p, arch, name=name, config=config, build_model=build_model, recipe=dm.recipe,
                     train_data=lambda: damage_data(p, "train"), progress=progress)


# --- U-Net on ISBI 2012 membrane segmentation (notebook 15_unet, paper App. G.1) ---------------

def segmentation_data(profile, split: str):
    """The membrane segmentation set of the profile's ``data.segmentation``.

    ``isbi2012``: the first ``n_train`` labelled slices (train) or the last ``n_test`` (test),
    resized to ``image_size`` (:func:`deepinfo.techniques.segmentation.isbi_segmentation`). ``synthetic``:
    the synthetic shapes as grey images with the object mask as target
    (:func:`deepinfo.techniques.segmentation.synthetic_segmentation`). Items ``(image [1, S, S], mask [S, S] bool)``.
    """
    from deepinfo.techniques.segmentation import isbi_segmentation, synthetic_segmentation

    p = _profile(profile)
    d = p.data.segmentation
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if d.dataset == "synthetic":
        n = d.n_train if split == "train" else d.n_test
        return synthetic_segmentation(n, image_size=d.image_size, split=split, seed=p.seed + 2)
    return isbi_segmentation(split, image_size=d.image_size, n_train=d.n_train, n_test=d.n_test,
                             root=p.data_root())


def unet_model(profile, progress: bool = True) -> Trained:
    """The U-Net of ``networks.unet`` trained on :func:`segmentation_data` with ``training.unet``
    and pixel-wise cross-entropy (cached). Its ``info["scores"]`` holds the held-out scores of
    :func:`deepinfo.techniques.segmentation.segmentation_scores` (pixel accuracy, membrane IoU, ...)."""
    from deepinfo.models import unet
    from deepinfo.techniques.segmentation import segmentation_loss, segmentation_scores

    p = _profile(profile)
    n = p.networks.unet
    config = {"model": "unet", "base_channels": n.base_channels, "levels": n.levels, "in_channels": 1,
              "num_classes": 2, "loss": "cross_entropy", "data": p.data.segmentation}
    trained = train_cached(p, "unet", config, lambda: unet(n.base_channels, n.levels),
                           lambda: segmentation_data(p, "train"), p.training.unet,
                           loss_fn=segmentation_loss(), progress=progress)
    trained.info["scores"] = segmentation_scores(trained.model, segmentation_data(p, "test"))
    return trained


# --- compression (notebooks 08_compression, 09_robustness) -------------------------------------

def compressed_models(profile, progress: bool = True) -> list[tuple[float, Trained, float]]:
    """The original ``compression.arch`` CUB net and its Han et al. compressed versions (cached).

    Returns ``[(target, trained, achieved)]``: first ``(1.0, original, 1.0)`` (the very net of
    :func:`cub_model`), then one entry per ``compression.keep`` target, in that order (see
    :func:`_pruned_stages`; ``compression.retrain`` retrains each stage on the bird images).
    """
    p = _profile(profile)
    c = p.compression
    base = cub_model(p, c.arch, progress=progress)

    def train_stage(name, config, build):
        return cub_model(p, c.arch, name=name, config=config, build_model=build, recipe=c.retrain,
                         progress=progress)

    return _pruned_stages(base, c.arch, c.keep, train_stage)


def _pruned_stages(base: Trained, arch: str, keep: tuple[float, ...],
                   train_stage: Callable[[str, dict, Callable[[], nn.Module]], Trained]):
    """Han et al.'s iterative pruning of ``base`` through the checkpoint cache.

    Stage ``i`` starts from stage ``i-1`` (``base`` for the first), prunes it with
    :func:`deepinfo.techniques.compression.next_stage` (``|w| < s * std(layer)``; ``s_conv`` and ``s_fc`` chosen
    so that conv and FC weights each keep the target fraction) and retrains it with the masks held
    through ``train_stage(name, config, build)`` (the config names the targets so far and the key
    of the net it started from). Returns ``[(target, trained, achieved)]`` starting with
    ``(1.0, base, 1.0)``; ``achieved`` is the kept fraction of the conv + FC weight entries;
    ``trained.model`` has the pruning made permanent (zeros in the weights) and
    ``trained.info["pruning"]`` holds the :class:`~deepinfo.techniques.compression.PruneResult`.
    """
    from deepinfo.techniques.compression import kept_fraction, make_permanent, next_stage

    out = [(1.0, base, 1.0)]
    previous = base
    for i, target in enumerate(keep):
        info: dict = {}

        def pruned(prev=previous, target=target, info=info):
            net, info["pruning"] = next_stage(prev.model, target)
            return net

        config = {"compression": {"method": "Han et al. 2016 magnitude pruning: |w| < s * std(layer weights), "
                                            "s_conv / s_fc keep the same fraction of conv and FC weights",
                                  "keep": list(keep[:i + 1]), "from": previous.key}}
        stage = train_stage(f"{arch}-pruned{i + 1}", config, pruned)
        achieved = kept_fraction(stage.model)  # from the masks, before they are folded in
        make_permanent(stage.model)
        stage.info["pruning"] = info["pruning"]
        out.append((float(target), stage, achieved))
        previous = stage
    return out


# --- the second line of evidence: CIFAR ResNets and networks derived from them (08, 09, 10) -----

def cifar_compressed_models(profile, progress: bool = True) -> list[tuple[float, Trained, float]]:
    """The CIFAR ResNet of ``second_line.base_depth`` (:func:`cifar_resnet_model`: the published
    weights in the cpu and paper profiles) and its pruned stages, as :func:`compressed_models`
    returns them; each stage is retrained with ``second_line.retrain`` on ``data.cifar``'s
    training images."""
    p = _profile(profile)
    sl = p.second_line
    base = cifar_resnet_model(p, sl.base_depth, progress=progress)

    def train_stage(name, config, build):
        return _cifar_variant(p, sl.base_depth, name, config, sl.retrain, build_model=build, progress=progress)

    return _pruned_stages(base, f"resnet{sl.base_depth}", sl.keep, train_stage)


def cifar_distillation_models(profile, progress: bool = True) -> tuple[Trained, Trained, Trained]:
    """``(teacher, alone, distilled)`` for the second line of Fig. 7(b) on CIFAR.

    The teacher is :func:`cifar_resnet_model` of ``second_line.teacher_depth``; the two students
    (ResNets of ``second_line.student_depth``) start from the same seed and train with the same
    recipe (``second_line.student_recipe``) on the same images; only the loss differs: labels
    alone, or :func:`deepinfo.techniques.distillation.distillation_loss` with the profile's
    ``distillation.temperature`` and ``alpha``. The distilled student's cache key names the
    teacher's weights.
    """
    from deepinfo.techniques.distillation import distillation_loss

    p = _profile(profile)
    sl = p.second_line
    d = p.distillation
    teacher = cifar_resnet_model(p, sl.teacher_depth, progress=progress)
    alone = _cifar_variant(p, sl.student_depth, f"resnet{sl.student_depth}-student", {"student": "alone"},
                           sl.student_recipe, progress=progress)
    config = {"student": {"teacher": teacher.key, "temperature": d.temperature, "alpha": d.alpha}}
    distilled = _cifar_variant(p, sl.student_depth, f"resnet{sl.student_depth}-distilled-resnet{sl.teacher_depth}",
                               config, sl.student_recipe,
                               loss_fn=distillation_loss(teacher.model, d.temperature, d.alpha), progress=progress)
    return teacher, alone, distilled


# --- adversarial training (Fig. 10) and learning dynamics (Fig. 9) ---------------------------

def adversarial_pair(profile, progress: bool = True) -> tuple[Trained, Trained]:
    """``(pgd_trained, normal_twin)``: the profile's ``adversarial.arch`` on CUB, trained on PGD
    examples (:func:`deepinfo.techniques.adversarial.adversarial_loss`, settings from ``[adversarial]``) and
    normally, both with ``adversarial.recipe`` (or ``training.cub`` when the profile has none, so
    the twin is then the shared ``cub_model(P, arch)``) on the same data, with the same seed.
    """
    from deepinfo.techniques.adversarial import adversarial_loss, pgd_settings

    p = _profile(profile)
    a = p.adversarial
    recipe = a.recipe or p.training.cub
    normal = cub_model(p, a.arch, recipe=recipe, progress=progress)
    settings = pgd_settings(p)
    config = {"adversarial": {"method": "PGD L-inf (Madry et al.): training-mode attack, BatchNorm "
                                        "buffers restored after it, trained on adversarial examples only",
                              **settings}}
    adv = cub_model(p, a.arch, name=f"{a.arch}-pgd", config=config, loss_fn=adversarial_loss(**settings),
                    recipe=recipe, progress=progress)
    return adv, normal


def dynamics_run(profile, progress: bool = True) -> tuple[Trained, dict[int, nn.Module]]:
    """The learning-dynamics run: a CIFAR ResNet of ``dynamics.depth`` trained with
    ``training.cifar_resnet`` on ``dynamics.n_train`` images of the profile's CIFAR training set
    (all of them when left out), keeping the weights at ``dynamics.snapshot_epochs`` (cached).

    Returns ``(trained, snapshots)`` with ``snapshots[epoch]`` a model in eval mode holding the
    weights after ``epoch`` epochs (0 = initial weights).
    """
    p = _profile(profile)
    d = p.dynamics
    k = p.data.cifar.num_classes

    def data():
        ds = cifar_data(p, "train")
        return subset(ds, d.n_train, seed=p.seed) if d.n_train is not None and d.n_train < len(ds) else ds

    config = {"model": "cifar_resnet", "depth": d.depth, "num_classes": k, "data": p.data.cifar,
              "n_train": d.n_train, "purpose": "learning dynamics (Fig. 9)"}
    trained = train_cached(p, f"resnet{d.depth}-dynamics", config, lambda: cifar_resnet(d.depth, num_classes=k),
                           data, p.training.cifar_resnet, keep_epochs=d.snapshot_epochs, progress=progress)
    snapshots = {}
    for epoch in d.snapshot_epochs:
        model = cifar_resnet(d.depth, num_classes=k)
        model.load_state_dict(trained.history.snapshots[epoch])
        snapshots[epoch] = model.eval()
    return trained, snapshots

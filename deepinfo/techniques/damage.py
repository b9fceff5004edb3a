"""Architecture damage (paper App. F.1, Fig. 8, App. M): one VGG conv layer cut down to a few wide filters.

The paper replaces one conv layer of VGG-16 / VGG-19 (the last or the second-last) by a layer of
four ``7 x 7`` filters with padding 3, trains the original and the revised net from scratch on a
binary task -- birds (CUB-200 crops) against random non-bird images -- and compares their
layer-wise CID and concentration.

Public names:

- :func:`conv_positions` -- where the conv layers of a VGG sit in ``model.features``.
- :func:`damage_vgg` -- replace one conv layer in place and adapt the layer that reads it.
- :func:`damaged_layer` -- the module name whose output is the damaged layer's feature.
- :func:`negative_images` -- the non-bird images (CIFAR-10 without its bird class, ImageNet
  without its bird classes, or synthetic clutter without an object), resized to the birds' size.
- :class:`BirdVsNonBird` -- the balanced, seeded binary data set (label 1 = bird).
"""

from __future__ import annotations

import os
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from deepinfo.datasets import MaskedItem, Synthetic, cifar10, imagenet_val, subset
from deepinfo.models.vision import vgg_init

__all__ = ["BirdVsNonBird", "IMAGENET_BIRD_CLASSES", "NEGATIVES", "conv_positions", "damage_vgg",
           "damaged_layer", "negative_images"]

#: Where the non-bird images come from.
NEGATIVES = ("synthetic", "cifar10", "imagenet")

#: ImageNet-1k class indices that are birds (7 cock .. 24 great grey owl, 80 black grouse .. 100
#: black swan, 127 white stork .. 146 albatross); they are left out of the negatives.
IMAGENET_BIRD_CLASSES = frozenset([*range(7, 25), *range(80, 101), *range(127, 147)])


# --------------------------------------------------------------------------------------------
# The damaged network
# --------------------------------------------------------------------------------------------


def conv_positions(model: nn.Module) -> list[int]:
    """Indices in ``model.features`` of its ``Conv2d`` layers, in forward order."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        raise ValueError(f"a VGG-style model with a Sequential 'features' is needed, got {type(model).__name__}")
    return [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)]


def _conv_position(model: nn.Module, conv_index: int) -> int:
    positions = conv_positions(model)
    if isinstance(conv_index, bool) or not isinstance(conv_index, int) \
            or not -len(positions) <= conv_index < len(positions):
        raise ValueError(f"conv_index must be an int in -{len(positions)}..{len(positions) - 1} "
                         f"(the model has {len(positions)} conv layers; -1 is the last), got {conv_index!r}")
    return positions[conv_index]


def damage_vgg(model: nn.Module, conv_index: int = -1, n_filters: int = 4, kernel_size: int = 7) -> nn.Module:
    """Replace one conv layer of a VGG by ``n_filters`` filters of ``kernel_size``, in place.

    The conv at position ``conv_index`` among the conv layers of ``model.features`` (``-1`` the
    last, ``-2`` the second-last, ``0`` the first) becomes ``Conv2d(c_in, n_filters,
    kernel_size, padding=kernel_size // 2)`` (same input channels, stride 1, so the map keeps its
    size: the paper's four ``7 x 7 x 512`` filters with padding 3). What reads its output is
    rebuilt for ``n_filters`` channels: the ``BatchNorm2d`` right after it (batch-norm VGGs), and
    the next conv layer, or -- when the damaged conv is the last one -- the classifier's first
    ``Linear``, whose input is the pooled map flattened (``n_filters * ph * pw`` values for the
    ``ph x pw`` of ``model.avgpool``; the adaptive pooling itself does not depend on channels).
    The new modules are initialised as torchvision initialises VGG (the net is meant to be
    trained from scratch like the original); every other module and every module name is kept,
    so layer names (``features.<k>``) mean the same in the original and the damaged net.

    Args:
        model: a :class:`deepinfo.models.VGG` (or any torchvision-style VGG: ``features``,
            ``avgpool``, ``classifier`` starting with a ``Linear``).
        conv_index: which conv layer, counted over the conv layers only.
        n_filters: output channels of the new layer (paper: 4).
        kernel_size: odd kernel side (paper: 7); padding is ``kernel_size // 2``.

    Returns:
        ``model`` itself (modified).

    Raises:
        ValueError: not a VGG-style model, a ``conv_index`` out of range, ``n_filters < 1`` or an
            even / non-positive ``kernel_size``.
    """
    if isinstance(n_filters, bool) or not isinstance(n_filters, int) or n_filters < 1:
        raise ValueError(f"n_filters must be an int >= 1, got {n_filters!r}")
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd int >= 1 (padding kernel_size // 2 keeps the map size), "
                         f"got {kernel_size!r}")
    pos = _conv_position(model, conv_index)
    features: nn.Sequential = model.features  # type: ignore[assignment]
    old = features[pos]
    old_channels = old.out_channels
    new = nn.Conv2d(old.in_channels, n_filters, kernel_size, padding=kernel_size // 2, bias=old.bias is not None)
    new.to(old.weight.device, old.weight.dtype)
    vgg_init(new)
    features[pos] = new

    def rebuilt(module: nn.Module) -> nn.Module:
        module.to(old.weight.device, old.weight.dtype)
        vgg_init(module)
        return module

    later = [(i, m) for i, m in enumerate(features) if i > pos]
    for i, m in later:
        if isinstance(m, nn.BatchNorm2d) and m.num_features == old_channels:
            features[i] = rebuilt(nn.BatchNorm2d(n_filters, eps=m.eps, momentum=m.momentum, affine=m.affine,
                                                 track_running_stats=m.track_running_stats))
            continue
        if isinstance(m, nn.Conv2d):
            features[i] = rebuilt(nn.Conv2d(n_filters, m.out_channels, m.kernel_size, stride=m.stride,
                                            padding=m.padding, dilation=m.dilation, groups=1,
                                            bias=m.bias is not None))
            return model
        if not isinstance(m, (nn.ReLU, nn.MaxPool2d, nn.Dropout, nn.Identity)):
            raise ValueError(f"features.{i} ({type(m).__name__}) after the damaged conv is not a layer "
                             "damage_vgg knows how to adapt")
    # The last conv was damaged: the classifier's first Linear reads n_filters * ph * pw values.
    classifier = getattr(model, "classifier", None)
    first = next((j for j, m in enumerate(classifier) if isinstance(m, nn.Linear)), None) \
        if isinstance(classifier, nn.Sequential) else None
    if first is None:
        raise ValueError("damaging the last conv needs a Sequential 'classifier' with a Linear layer")
    fc = classifier[first]
    if fc.in_features % old_channels:
        raise ValueError(f"classifier.{first} reads {fc.in_features} values, not a multiple of the "
                         f"{old_channels} channels of the last conv")
    cells = fc.in_features // old_channels  # ph * pw of the adaptive pooling
    classifier[first] = rebuilt(nn.Linear(n_filters * cells, fc.out_features, bias=fc.bias is not None))
    return model


def damaged_layer(model: nn.Module, conv_index: int) -> str:
    """The layer name (``features.<k>``, the ReLU after the conv) whose output is that conv layer's feature.

    The same in the original and the damaged net (:func:`damage_vgg` keeps module names), and one
    of the names :func:`deepinfo.models.conv_layer_names` lists.
    """
    pos = _conv_position(model, conv_index)
    for i, m in enumerate(model.features):
        if i > pos and isinstance(m, nn.ReLU):
            return f"features.{i}"
    raise ValueError(f"no ReLU follows the conv at features.{pos}")


# --------------------------------------------------------------------------------------------
# Bird vs non-bird data
# --------------------------------------------------------------------------------------------


class _Resized(Dataset):
    """Images of ``base`` (``(image, label, ...)``) resized to ``size x size``, label dropped."""

    def __init__(self, base: Dataset, size: int):
        self.base, self.size = base, size

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = self.base[i][0]
        if tuple(image.shape[-2:]) != (self.size, self.size):
            image = F.interpolate(image[None], size=(self.size, self.size), mode="bilinear",
                                  align_corners=False, antialias=True)[0].clamp(0, 1)
        return image


class _Clutter(Dataset):
    """Synthetic's cluttered backgrounds with no object drawn."""

    def __init__(self, n: int, size: int, split: str, seed: int):
        self.ds = Synthetic(n, image_size=size, num_classes=2, split=split, seed=seed)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.ds.render(i, draw_object=False)[0]


def negative_images(kind: Literal["synthetic", "cifar10", "imagenet"], split: str, n: int, image_size: int, *,
                    root: str | os.PathLike | None = None, seed: int = 0, download: bool = False,
                    cifar10_copy: str = "any") -> Dataset:
    """``n`` non-bird images ``[3, image_size, image_size]`` in [0, 1] (items are bare tensors).

    Args:
        kind: ``"cifar10"``: CIFAR-10 images of the nine classes that are not ``bird``, from the
            same split, a seeded random subset, resized (bilinear, antialiased) from 32 px;
            ``"imagenet"``: ImageNet validation images (the only split this package reads)
            outside :data:`IMAGENET_BIRD_CLASSES`, the train and test negatives drawn from the two
            halves of one seeded permutation, so they never overlap; ``"synthetic"``: the
            cluttered backgrounds of :class:`deepinfo.datasets.Synthetic` (strokes, blobs,
            texture) with no object drawn.
        split: ``"train"`` or ``"test"``.
        n: how many images.
        image_size: side of the returned images (the birds' size).
        root, download: the data directory and whether CIFAR-10 may be downloaded.
        cifar10_copy: which CIFAR-10 is accepted (:func:`deepinfo.datasets.cifar10`'s ``copy``).
        seed: picks the subset.

    Raises:
        ValueError: unknown kind or split, or fewer than ``n`` images available.
    """
    if kind not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {kind!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if kind == "synthetic":
        # A seed stream of its own, so the clutter never repeats a bird image's background.
        return _Clutter(n, image_size, split, seed + 1000)
    if kind == "cifar10":
        base = cifar10(split, root=root, download=download, copy=cifar10_copy)
        keep = [i for i, t in enumerate(base.targets) if base.classes[t] != "bird"]
    else:
        base = imagenet_val(root, image_size=image_size)
        order = torch.randperm(len(base), generator=torch.Generator().manual_seed(seed)).tolist()
        half = order[: len(order) // 2] if split == "train" else order[len(order) // 2:]
        bird = IMAGENET_BIRD_CLASSES if base.num_classes == 1000 else frozenset()
        keep = sorted(i for i in half if base.targets[i] not in bird)
    if n > len(keep):
        raise ValueError(f"{n} {kind} negatives asked for, only {len(keep)} non-bird {split} images exist")
    chosen = subset(torch.utils.data.Subset(base, keep), n, seed=seed).indices
    return _Resized(torch.utils.data.Subset(base, [keep[i] for i in chosen]), image_size)


class BirdVsNonBird(Dataset):
    """Birds (label 1) and non-bird images (label 0), as many of each, in one seeded order.

    Items are ``MaskedItem(image [3, S, S], label, mask [S, S])``: a bird keeps its own mask (its
    box), a non-bird image gets an all-False mask (it has no object), so the items collate
    together. Item ``i`` is a bird for ``i`` in :attr:`bird_items`; the interleaving is a seeded
    permutation, so a prefix of the set is roughly balanced too.

    Args:
        birds: a masked data set of bird images ``[3, S, S]`` (e.g. ``cub_data(profile, split)``).
        negatives: a data set of ``len(birds)`` or more non-bird images ``[3, S, S]`` (bare tensors or
            ``(image, ...)`` items), e.g. :func:`negative_images`.
        n_per_class: how many of each (``None``: ``len(birds)``); the birds are a seeded subset
            when fewer than all are used, the negatives their first ``n_per_class``.
        seed: the subset and the order.
    """

    has_masks = True
    task = "classification"
    classes = ["non-bird", "bird"]
    num_classes = 2

    def __init__(self, birds: Dataset, negatives: Dataset, n_per_class: int | None = None, seed: int = 0):
        n = len(birds) if n_per_class is None else n_per_class
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(birds):
            raise ValueError(f"n_per_class must be an int in 1..{len(birds)} (the number of birds), got {n_per_class!r}")
        if len(negatives) < n:
            raise ValueError(f"{len(negatives)} negative images for {n} birds: the set must be balanced")
        self.birds = birds if n == len(birds) else subset(birds, n, seed=seed)
        self.negatives = negatives
        self.n_per_class = n
        order = torch.randperm(2 * n, generator=torch.Generator().manual_seed(seed)).tolist()
        # position -> (is bird, index in its source); first n of `order` are birds
        self._items = [(True, j) if j < n else (False, j - n) for j in order]
        self.targets = [int(b) for b, _ in self._items]
        self.bird_items = [i for i, (b, _) in enumerate(self._items) if b]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> MaskedItem:
        is_bird, j = self._items[int(i)]
        if is_bird:
            image, _, mask = self.birds[j]
            return MaskedItem(image, 1, mask)
        item = self.negatives[j]
        image = item if torch.is_tensor(item) else item[0]
        return MaskedItem(image, 0, torch.zeros(image.shape[-2:], dtype=torch.bool))

"""Small pieces shared by the data set loaders: the item tuple and a labelled-image wrapper."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch.utils.data import Dataset


class MaskedItem(NamedTuple):
    """One item of a data set with foreground masks.

    A plain tuple underneath, so ``image, label, mask = ds[i]`` works and ``default_collate``
    batches it into ``MaskedItem(images [B,C,H,W], labels [B], masks [B,H,W])``.

    Attributes:
        image: float tensor ``[C, H, W]`` in ``[0, 1]`` (pixel space).
        label: class index, ``0 <= label < num_classes``.
        mask: bool tensor ``[H, W]``, True on the object (foreground).
    """

    image: torch.Tensor
    label: int
    mask: torch.Tensor


class LabelledImages(Dataset):
    """A classification data set without masks: items ``(image [C,H,W] in [0,1], label:int)``.

    Wraps a torchvision data set (``ImageFolder``, ``CIFAR10``, ``ImageNet``) whose transform
    already turns images into tensors, and adds this package's attributes.

    Attributes:
        base: the wrapped data set.
        classes: list of class names, index = label.
        num_classes: ``len(classes)``.
        targets: list of labels, one per item (no image is read to get them).
        has_masks: False.
        name: short name of the data set (``"cifar10"``, ``"imagenet"``).
        source: where the images come from (a folder).
    """

    has_masks = False
    task = "classification"

    def __init__(self, base: Dataset, classes: Sequence[str], name: str, source: str):
        self.base = base
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.targets = [int(t) for t in getattr(base, "targets")]
        self.name = name
        self.source = source

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[index]
        return image, int(label)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, n={len(self)}, "
                f"num_classes={self.num_classes}, source={self.source!r})")

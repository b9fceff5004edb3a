"""CIFAR-10: from an ImageFolder copy if there is one, else torchvision's official files."""

from __future__ import annotations

import os

from deepinfo.paths import data_dir
from deepinfo.datasets._common import LabelledImages

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
SPLITS = ("train", "test")


def cifar10(split: str = "train", root: str | os.PathLike | None = None,
            download: bool = False, copy: str = "any") -> LabelledImages:
    """CIFAR-10 as ``(image [3, 32, 32] float in [0, 1], label:int)`` items, no masks.

    Looks in ``<data_dir(root)>/cifar10/``:

    1. ``<split>/<class>/*.jpg|png`` (torchvision ``ImageFolder`` layout, class folders sorted
       alphabetically = the official label order; e.g. the offline JPEG copy), else
    2. torchvision's official pickled batches (``cifar-10-batches-py/``), downloaded there when
       ``download=True``.

    Args:
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
        root: data directory (see ``deepinfo.paths.data_dir``); None for the default.
        download: fetch the official archive if neither copy is present.
        copy: ``"any"`` (the order above), ``"official"`` (only 2., never a JPEG copy: a run
            that must use the official images cannot get the re-encoded ones by accident) or
            ``"jpeg"`` (only 1.).

    Raises:
        ValueError: unknown split.
        FileNotFoundError: no copy found and ``download`` is False.
    """
    from torchvision import datasets, transforms

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if copy not in ("any", "official", "jpeg"):
        raise ValueError(f"copy must be 'any', 'official' or 'jpeg', got {copy!r}")
    base_dir = data_dir(root) / "cifar10"
    folder = base_dir / split
    to_tensor = transforms.ToTensor()
    if copy == "jpeg" and not folder.is_dir():
        raise FileNotFoundError(f"no CIFAR-10 image-folder copy at {folder} (the profile accepts only the JPEG copy)")
    if folder.is_dir() and copy != "official":
        base = datasets.ImageFolder(str(folder), transform=to_tensor)
        if sorted(base.classes) != sorted(CIFAR10_CLASSES):
            raise ValueError(f"{folder} does not look like CIFAR-10: class folders {base.classes}, "
                             f"expected {list(CIFAR10_CLASSES)}")
        return LabelledImages(base, base.classes, name="cifar10", source=str(folder))
    try:
        base = datasets.CIFAR10(str(base_dir), train=(split == "train"), download=download,
                                transform=to_tensor)
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted."
        raise FileNotFoundError(
            f"CIFAR-10 not found: expected an ImageFolder copy at {folder} "
            f"(<class>/<image> folders) or torchvision's files at "
            f"{base_dir / 'cifar-10-batches-py'}. Put the data there (or set $DEEPINFO_DATA / "
            f"root), or pass download=True to fetch the official archive ({err})") from err
    return LabelledImages(base, base.classes, name="cifar10", source=str(base_dir))

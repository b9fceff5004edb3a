"""ImageNet (ILSVRC 2012) validation images from a folder the user provides."""

from __future__ import annotations

import os
from pathlib import Path

from deepinfo.paths import data_dir
from deepinfo.datasets._common import LabelledImages

DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
VAL_ARCHIVE = "ILSVRC2012_img_val.tar"


def imagenet_val(root: str | os.PathLike | None = None,
                 image_size: int | None = 224) -> LabelledImages:
    """ImageNet validation set as ``(image [3, S, S] float in [0, 1], label:int)``, no masks.

    ImageNet cannot be downloaded automatically (it needs an account at image-net.org); give
    the folder that holds it:

    - torchvision's layout (``torchvision.datasets.ImageNet``, used when the devkit is there):
      ``ILSVRC2012_devkit_t12.tar.gz`` (or the ``meta.bin`` torchvision made from it) and either
      ``val/<wnid>/*.JPEG`` or ``ILSVRC2012_img_val.tar``; class names from the devkit;
    - else an ``ImageFolder``: ``<root>/val/<wnid>/*.JPEG``, classes = the sorted folder names
      (the official label order when the folders are the 1,000 wnids).

    Args:
        root: the ImageNet folder. None means ``<data_dir()>/imagenet``; a data directory that
            contains an ``imagenet/`` folder is also accepted.
        image_size: resize the short side to ``image_size * 256 / 224`` and centre-crop
            ``image_size x image_size`` (the usual evaluation transform); None keeps the
            original images (they differ in size).

    Raises:
        FileNotFoundError: neither layout found (the message says what to put where).
    """
    from torchvision import datasets, transforms

    folder = _resolve(root)
    steps = []
    if image_size is not None:
        steps += [transforms.Resize(round(image_size * 256 / 224)),
                  transforms.CenterCrop(image_size)]
    transform = transforms.Compose(steps + [transforms.ToTensor()])
    has_devkit = (folder / DEVKIT).is_file() or (folder / "meta.bin").is_file()
    if has_devkit and ((folder / "val").is_dir() or (folder / VAL_ARCHIVE).is_file()):
        try:
            base = datasets.ImageNet(str(folder), split="val", transform=transform)
        except RuntimeError as err:  # e.g. a devkit or val archive with the wrong md5
            raise FileNotFoundError(f"ImageNet at {folder} could not be read by "
                                    f"torchvision.datasets.ImageNet: {err}") from err
        names = [c[0] if isinstance(c, tuple) else c for c in base.classes]
        return LabelledImages(base, names, name="imagenet", source=str(folder))
    if (folder / "val").is_dir():
        base = datasets.ImageFolder(str(folder / "val"), transform=transform)
        return LabelledImages(base, base.classes, name="imagenet", source=str(folder / "val"))
    raise FileNotFoundError(
        f"ImageNet validation images not found at {folder}. ImageNet cannot be downloaded "
        f"automatically (it needs an account at https://image-net.org): put {DEVKIT} and "
        f"{VAL_ARCHIVE} (or an extracted val/<wnid>/*.JPEG tree) in that folder, or pass its "
        f"path as root")


def _resolve(root: str | os.PathLike | None) -> Path:
    if root is None:
        return data_dir() / "imagenet"
    folder = data_dir(root)  # relative paths are taken from the repository root
    looks_like_imagenet = ((folder / "val").is_dir() or (folder / DEVKIT).is_file()
                           or (folder / "meta.bin").is_file())
    if not looks_like_imagenet and (folder / "imagenet").is_dir():
        return folder / "imagenet"
    return folder

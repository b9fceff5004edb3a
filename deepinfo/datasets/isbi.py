"""ISBI 2012 EM segmentation challenge: the challenge's multi-page TIFF volumes."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from deepinfo.paths import data_dir

SPLITS = ("train", "test")
ISBI_URL = "https://imagej.net/events/isbi-2012-segmentation-challenge"
_FILES = {"train": ("train-volume.tif", "train-labels.tif"), "test": ("test-volume.tif", None)}


class ISBI2012(Dataset):
    """ISBI 2012 slices as ``(image [1, H, W] float in [0, 1], membrane mask bool [H, W])``.

    Reads ``<data_dir(root)>/isbi2012/``: ``train-volume.tif`` and ``train-labels.tif`` (30
    slices of 512x512; labels: membrane 0, cell 255) for ``split="train"``, ``test-volume.tif``
    (30 slices, no labels) for ``split="test"``. The test split has no labels: its masks are all
    False and ``has_labels`` is False.

    Args:
        root: data directory (see ``deepinfo.paths.data_dir``); None for the default.
        split: ``"train"`` or ``"test"``.

    Attributes:
        images: uint8 array ``[N, H, W]``; labels: bool array ``[N, H, W]`` (True = membrane).
        has_labels: True for train. has_masks: False (the mask is a segmentation target, not
        a foreground/object mask). classes: ``["cell", "membrane"]`` (mask False / True).
    """

    has_masks = False
    task = "segmentation"
    name = "isbi2012"
    classes = ["cell", "membrane"]
    num_classes = 2

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train"):
        import tifffile

        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split = split
        self.folder = data_dir(root) / "isbi2012"
        volume_name, labels_name = _FILES[split]
        needed = [n for n in (volume_name, labels_name) if n is not None]
        missing = [n for n in needed if not (self.folder / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"ISBI 2012 {split} data not found: missing {', '.join(missing)} in {self.folder}. "
                f"It cannot be downloaded automatically: get the challenge files "
                f"(train-volume.tif, train-labels.tif, test-volume.tif; see {ISBI_URL}) and "
                f"put them there, or set $DEEPINFO_DATA / root to the folder above isbi2012/")
        self.images = _as_volume(tifffile.imread(self.folder / volume_name), volume_name)
        if labels_name is not None:
            labels = _as_volume(tifffile.imread(self.folder / labels_name), labels_name)
            if labels.shape != self.images.shape:
                raise ValueError(f"{labels_name} has shape {labels.shape} but {volume_name} has "
                                 f"{self.images.shape}")
            # Membrane is 0, cell 255; threshold in the middle in case a copy was re-encoded.
            self.labels = labels < 128
            self.has_labels = True
        else:
            self.labels = np.zeros(self.images.shape, dtype=bool)
            self.has_labels = False

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        return (f"ISBI2012(split={self.split!r}, n={len(self)}, size={self.images.shape[1:]}, "
                f"has_labels={self.has_labels}, folder='{self.folder}')")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(self.images[index].astype(np.float32) / 255.0)[None]
        return image, torch.from_numpy(self.labels[index].copy())


def _as_volume(array: np.ndarray, name: str) -> np.ndarray:
    """A ``[N, H, W]`` uint8 volume (a single slice becomes N = 1)."""
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"{name}: expected a stack of grey slices [N, H, W], got shape "
                         f"{array.shape}")
    if array.dtype != np.uint8:
        if array.max() > 255 or array.min() < 0:
            raise ValueError(f"{name}: expected 8-bit values, got dtype {array.dtype} with range "
                             f"{array.min()}..{array.max()}")
        array = array.astype(np.uint8)
    return array

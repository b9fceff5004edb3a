"""Data sets in pixel space, with one item convention for all of them.

Item convention (other modules rely on it):

- Every image is a float tensor ``[C, H, W]`` with values in ``[0, 1]``; models own their
  normalization.
- Data sets with foreground masks (``Synthetic``, ``CUB200``; ``has_masks = True``) return
  ``MaskedItem(image, label, mask)``: a named tuple, so ``image, label, mask = ds[i]`` works,
  with ``label`` an ``int`` and ``mask`` a bool tensor ``[H, W]`` that is True on the object.
  ``torch.utils.data.default_collate`` batches it into
  ``MaskedItem(images [B,C,H,W], labels [B], masks [B,H,W])``.
- Data sets without masks (CIFAR-10, ImageNet; ``has_masks = False``) return
  ``(image, label:int)``.
- Every classification data set has ``classes`` (list of names, index = label),
  ``num_classes`` and ``targets`` (one label per item, read without loading images).
- ``ISBI2012`` is a segmentation set (``task = "segmentation"``): ``(image [1,H,W], membrane
  mask bool [H,W])``; its test split has no labels (``has_labels = False``, all-False masks).
- Missing data raises ``FileNotFoundError`` saying where to put the files or how to download.
- Files are looked up under ``deepinfo.paths.data_dir(root)`` (``$DEEPINFO_DATA`` or
  ``<repo>/data``). ``Synthetic`` needs no files and is the default data set.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import torch
from torch.utils.data import Dataset, Subset

from deepinfo.datasets._common import LabelledImages, MaskedItem
from deepinfo.datasets.cifar import cifar10
from deepinfo.datasets.cub import CUB200, download_cub
from deepinfo.datasets.imagenet import imagenet_val
from deepinfo.datasets.isbi import ISBI2012
from deepinfo.datasets.memory import InMemory
from deepinfo.datasets.synthetic import SHAPES, Synthetic

__all__ = ["CUB200", "DatasetSubset", "ISBI2012", "InMemory", "LabelledImages", "MaskedItem", "SHAPES",
           "Synthetic", "cifar10", "download_cub", "get_dataset", "imagenet_val", "names",
           "subset"]


def _synthetic(split: str, root: Any, **kwargs: Any) -> Synthetic:
    return Synthetic(split=split, **kwargs)  # generated: no root


def _cifar10(split: str, root: Any, **kwargs: Any) -> Dataset:
    return cifar10(split=split, root=root, **kwargs)


def _cub200(split: str, root: Any, **kwargs: Any) -> CUB200:
    return CUB200(root=root, split=split, **kwargs)


def _isbi2012(split: str, root: Any, **kwargs: Any) -> ISBI2012:
    return ISBI2012(root=root, split=split, **kwargs)


def _imagenet(split: str, root: Any, **kwargs: Any) -> Dataset:
    if split != "val":
        raise ValueError(f"only the ImageNet validation split is supported (split='val'), "
                         f"got {split!r}")
    return imagenet_val(root, **kwargs)


# name -> (factory, default split)
_REGISTRY: dict[str, tuple[Callable[..., Dataset], str]] = {
    "synthetic": (_synthetic, "train"),
    "cifar10": (_cifar10, "train"),
    "cub200": (_cub200, "train"),
    "isbi2012": (_isbi2012, "train"),
    "imagenet": (_imagenet, "val"),
}


def names() -> list[str]:
    """The data set names ``get_dataset`` accepts."""
    return list(_REGISTRY)


def get_dataset(name: str, split: str | None = None, root: str | os.PathLike | None = None,
                **kwargs: Any) -> Dataset:
    """A data set by name.

    Args:
        name: one of ``"synthetic"``, ``"cifar10"``, ``"cub200"``, ``"isbi2012"``,
            ``"imagenet"``.
        split: ``"train"`` / ``"test"`` (``"val"`` for ImageNet and optionally Synthetic);
            None means the data set's default: ``"train"``, or ``"val"`` for ImageNet.
        root: data directory (``deepinfo.paths.data_dir``); for ImageNet the ImageNet folder
            (or a data directory holding ``imagenet/``). Ignored by ``"synthetic"``.
        **kwargs: passed to the loader, e.g. ``n``, ``image_size``, ``num_classes``, ``seed``
            for Synthetic (``n`` is required there); ``crop``, ``image_size``, ``classes``,
            ``download`` for CUB200; ``download`` for CIFAR-10.

    Raises:
        KeyError: unknown name (the message lists the valid names).
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in _REGISTRY:
        raise KeyError(f"unknown data set {name!r}; valid names: {', '.join(_REGISTRY)}")
    factory, default_split = _REGISTRY[key]
    return factory(default_split if split is None else split, root, **kwargs)


class DatasetSubset(Subset):
    """A ``torch.utils.data.Subset`` that also answers the data set's attributes.

    ``classes``, ``num_classes``, ``has_masks`` and the like are read from the full data set;
    ``targets`` holds the labels of the chosen items only (when the full set has targets).
    """

    def __init__(self, dataset: Dataset, indices: list[int]):
        super().__init__(dataset, indices)
        full = getattr(dataset, "targets", None)
        if full is not None:
            self.targets = [full[i] for i in indices]

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes the Subset lacks; guard the internals so that pickling
        # (DataLoader workers) and half-built objects do not recurse.
        if name.startswith("_") or name in ("dataset", "indices"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def subset(ds: Dataset, n: int, seed: int = 0) -> DatasetSubset:
    """A deterministic random subset of ``n`` items of ``ds``, kept in index order.

    The same ``(len(ds), n, seed)`` always picks the same items, and the items picked for a
    smaller ``n`` are a subset of those for a larger ``n`` with the same seed.

    Raises:
        ValueError: ``n`` is not between 0 and ``len(ds)``.
    """
    total = len(ds)
    if not isinstance(n, int) or not 0 <= n <= total:
        raise ValueError(f"n must be an integer between 0 and len(ds) = {total}, got {n!r}")
    generator = torch.Generator().manual_seed(int(seed))
    chosen = torch.randperm(total, generator=generator)[:n]
    return DatasetSubset(ds, sorted(chosen.tolist()))

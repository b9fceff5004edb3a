"""Membrane segmentation for the U-Net of paper App. G.1: data, loss and scores.

Items are ``(image [1, S, S] float in [0, 1], mask [S, S] bool)`` with ``True`` = membrane (the
class the U-Net's channel 1 predicts), so ``deepinfo.toolkit.training.train`` (which flips a batch's
dense masks together with its images) and ``deepinfo.toolkit.training.evaluate`` (pixel accuracy for
``[B, 2, H, W]`` logits against ``[B, H, W]`` labels) work on them unchanged.

- :func:`isbi_segmentation` -- the 30 labelled ISBI 2012 slices, split into a training block and
  a held-out block of consecutive slices, resized to ``S x S``.
- :func:`synthetic_segmentation` -- the synthetic shapes set as a grey-level segmentation task
  (the object mask is the target); the smoke profile's stand-in, needing no files.
- :func:`segmentation_loss` -- pixel-wise cross-entropy (a ``loss_fn`` for ``training.train``).
- :func:`segmentation_scores` -- pixel accuracy, membrane / cell IoU and Dice on a data set.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = ["SegmentationSet", "isbi_segmentation", "segmentation_loss", "segmentation_scores",
           "synthetic_segmentation"]

CLASSES = ["cell", "membrane"]


class SegmentationSet(Dataset):
    """Images and masks held as tensors: items ``(image [C, S, S], mask [S, S] bool)``.

    Attributes: ``images`` ``[N, C, S, S]`` in [0, 1], ``masks`` ``[N, S, S]`` bool,
    ``indices`` (the source slice / item of each entry), ``task = "segmentation"``,
    ``classes = ["cell", "membrane"]`` (mask False / True), ``num_classes = 2``,
    ``has_masks = False`` (the mask is the target, not an object mask), ``name``.
    """

    task = "segmentation"
    classes = CLASSES
    num_classes = 2
    has_masks = False

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, indices: Sequence[int], name: str):
        if images.dim() != 4 or masks.dim() != 3 or images.shape[0] != masks.shape[0] \
                or images.shape[-2:] != masks.shape[-2:]:
            raise ValueError(f"need images [N, C, H, W] and masks [N, H, W] of the same N, H, W; got "
                             f"{tuple(images.shape)} and {tuple(masks.shape)}")
        if masks.dtype != torch.bool:
            raise ValueError(f"masks must be bool (True = membrane), got {masks.dtype}")
        self.images, self.masks = images.float().contiguous(), masks.contiguous()
        self.indices = [int(i) for i in indices]
        self.name = name

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.masks[index]

    def __repr__(self) -> str:
        return (f"SegmentationSet({self.name!r}, n={len(self)}, size={tuple(self.images.shape[-2:])}, "
                f"membrane {self.masks.float().mean().item():.1%})")


def _resize(images: torch.Tensor, masks: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[N, C, H, W]`` with antialiased bilinear resampling; masks ``[N, H, W]`` as the
    fraction of membrane under each output pixel (same resampling) thresholded at 1/2, which
    keeps the membrane fraction (thin membranes at 512 px become about 1 px wide at 128 px)."""
    if tuple(images.shape[-2:]) == (size, size):
        return images, masks
    kw = dict(size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    small = F.interpolate(images, **kw).clamp(0, 1)
    frac = F.interpolate(masks[:, None].float(), **kw)[:, 0]
    return small, frac >= 0.5


def isbi_segmentation(split: str, *, image_size: int, n_train: int | None = None, n_test: int | None = None,
                      root: str | os.PathLike | None = None) -> SegmentationSet:
    """The labelled ISBI 2012 slices as a train / held-out split, resized to ``image_size``.

    The challenge's 30 labelled slices are consecutive sections of one volume, so neighbouring
    slices look alike: the training set is the *first* ``n_train`` slices and the test set the
    *last* ``n_test`` (a block the network never saw, not slices interleaved with training ones).
    The challenge's own test volume has no labels and is not used.

    Args:
        split: ``"train"`` or ``"test"``.
        image_size: side in pixels of the (square) resized slices (512 = no resizing).
        n_train, n_test: slices in each block; ``None``: ``n_train`` = all slices not in the
            test block, ``n_test`` = all slices not in the training block (at least one each).
        root: data directory (``deepinfo.paths.data_dir``).

    Raises:
        ValueError: bad split or sizes, or ``n_train + n_test`` over the 30 labelled slices.
        FileNotFoundError: the ISBI files are missing (the message says where to put them).
    """
    from deepinfo.datasets import ISBI2012

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8 (pixels), got {image_size!r}")
    ds = ISBI2012(root=root, split="train")
    total = len(ds)
    n_tr = n_train if n_train is not None else total - (n_test if n_test is not None else 1)
    n_te = n_test if n_test is not None else total - n_tr
    if n_tr < 1 or n_te < 1 or n_tr + n_te > total:
        raise ValueError(f"ISBI 2012 has {total} labelled slices: need n_train >= 1, n_test >= 1 and "
                         f"n_train + n_test <= {total}; got n_train={n_train}, n_test={n_test}")
    idx = list(range(n_tr)) if split == "train" else list(range(total - n_te, total))
    images = torch.from_numpy(ds.images[idx]).float().div(255.0)[:, None]
    masks = torch.from_numpy(ds.labels[idx])
    images, masks = _resize(images, masks, image_size)
    return SegmentationSet(images, masks, idx, f"isbi2012-{split}")


def synthetic_segmentation(n: int, *, image_size: int, split: str = "train", seed: int = 0) -> SegmentationSet:
    """``n`` synthetic scenes (``deepinfo.datasets.Synthetic``) as grey images with their exact
    object masks as the target: a segmentation task with the ISBI item form, needing no files.

    The grey image is the mean of the three colour channels; the object ("membrane" in the
    class names) is the painted shape. Item ``i`` depends on ``(seed, split, i, image_size)`` only.
    """
    from deepinfo.datasets import Synthetic

    src = Synthetic(n, image_size=image_size, num_classes=4, split=split, seed=seed)
    items = [src[i] for i in range(n)]
    images = torch.stack([it[0].mean(0, keepdim=True) for it in items])
    masks = torch.stack([it[2] for it in items])
    return SegmentationSet(images, masks, list(range(n)), f"synthetic-{split}")


def segmentation_loss(class_weights: Sequence[float] | None = None):
    """A ``loss_fn(model, batch) -> (loss, logits)`` for ``deepinfo.toolkit.training.train``: pixel-wise
    cross-entropy of ``model(images)`` ``[B, 2, H, W]`` against the masks ``[B, H, W]`` (bool or
    0/1), averaged over pixels; ``class_weights`` (cell, membrane) reweights the classes."""
    weight = None if class_weights is None else torch.tensor([float(w) for w in class_weights])
    if weight is not None and (weight.numel() != 2 or not bool((weight > 0).all())):
        raise ValueError(f"class_weights must be two positive numbers (cell, membrane), got {class_weights!r}")

    def loss_fn(model: nn.Module, batch: Sequence[Any]):
        images, masks = batch[0], batch[1]
        logits = model(images)
        if logits.dim() != 4 or logits.shape[1] != 2 or logits.shape[-2:] != masks.shape[-2:]:
            raise ValueError(f"segmentation_loss needs logits [B, 2, H, W] matching masks [B, H, W]; got "
                             f"{tuple(logits.shape)} and {tuple(masks.shape)}")
        w = None if weight is None else weight.to(logits.device, logits.dtype)
        return F.cross_entropy(logits, masks.long(), weight=w), logits

    return loss_fn


@torch.no_grad()
def segmentation_scores(model: nn.Module, dataset: Dataset, batch_size: int = 8) -> dict[str, float]:
    """Scores of ``model(x).argmax(1)`` against the masks over all pixels of ``dataset``.

    Returns ``{"pixel_accuracy", "iou_membrane", "iou_cell", "dice_membrane",
    "membrane_fraction", "predicted_membrane_fraction"}`` (all in [0, 1]; an IoU whose class is
    absent from both prediction and truth is 1). The model runs in eval mode and is put back.
    """
    if len(dataset) == 0:
        raise ValueError("segmentation_scores: the data set is empty")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    counts = torch.zeros(2, 2, dtype=torch.long)  # [truth, prediction]
    try:
        for images, masks in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            pred = model(images.to(device)).argmax(1).cpu()
            truth = masks.long()
            counts += torch.bincount((2 * truth + pred).flatten(), minlength=4).reshape(2, 2)
    finally:
        model.train(was_training)
    total = counts.sum().item()

    def iou(k: int) -> float:
        inter = counts[k, k].item()
        union = counts[k, :].sum().item() + counts[:, k].sum().item() - inter
        return 1.0 if union == 0 else inter / union

    tp, fp, fn = counts[1, 1].item(), counts[0, 1].item(), counts[1, 0].item()
    return {
        "pixel_accuracy": counts.diagonal().sum().item() / total,
        "iou_membrane": iou(1),
        "iou_cell": iou(0),
        "dice_membrane": 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn),
        "membrane_fraction": counts[1, :].sum().item() / total,
        "predicted_membrane_fraction": counts[:, 1].sum().item() / total,
    }

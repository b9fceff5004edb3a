"""Evaluation protocols of the paper's Section 4: descriptive accuracy and box localization.

Both take an importance map per image, ``[B, h, w]`` at any resolution (a CID grid, a Grad-CAM
map at a layer, an input-space saliency map), where HIGHER means MORE important. The pixel-wise
CID is the opposite (a pixel whose information the network discards has a high CID), so pass
``-cid_map`` (``-maps.pixelwise[l]``). Maps of another size than the images are resized with
`deepinfo.attribution.baselines.to_input_size` (``upsample="bilinear"`` by default, ``"nearest"`` keeps grid
cells whole).

Ties in importance (constant regions, nearest-upsampled grids) are broken by one fixed
pseudo-random order of the pixels (``torch.Generator`` seeded with ``seed``, shared by all images),
so results are deterministic and carry no bias towards any image corner, as a row-major order
would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepinfo._features import ModelGuard, model_device
from deepinfo._images import check_images
from deepinfo.attribution.baselines import to_input_size

FILLS = ("mean", "zero", "blur")


def descriptive_accuracy(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    importance: Tensor,
    fractions: Sequence[float] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9),
    fill: str | float | Tensor = "mean",
    batch_size: int = 64,
    *,
    order: str = "least",
    upsample: str = "bilinear",
    blur_sigma: float | None = None,
    seed: int = 0,
):
    """Accuracy of ``model`` as the least important pixels are removed (the paper's Fig. 6).

    Descriptive accuracy (Warnecke et al., 2020) as Ma et al. use it: for each fraction ``f``,
    the ``round(f * H * W)`` pixels of each image with the LOWEST importance are replaced by
    ``fill`` (all channels of a pixel together) and the classification accuracy is measured. An
    importance map that describes what the network uses keeps the accuracy up longest (the
    curve falls slowly). ``order="most"`` removes the most important pixels first instead
    (Warnecke et al.'s original direction; there a FAST fall is better).

    Args:
        model: classifier on pixel-space images, returning logits ``[B, K]``; run in eval mode
            without gradients and left as found.
        images: ``[N, C, H, W]`` in [0, 1].
        labels: ``[N]`` class indices.
        importance: ``[N, h, w]``, higher = more important (for CID pass ``-cid``); resized to
            ``H x W`` with ``upsample`` if needed.
        fractions: fractions of pixels removed, each in [0, 1]; reported in the given order.
        fill: ``"mean"`` (default: each image's own per-channel mean, so removed pixels carry
            no local structure and no out-of-range values), ``"zero"`` (black), ``"blur"`` (the
            image blurred with a Gaussian of ``blur_sigma`` pixels, default ``max(H, W) / 20``:
            keeps the colours, removes detail), a number, or a tensor of one value per channel.
        batch_size: images per forward pass.
        order: ``"least"`` (the paper) or ``"most"``.
        upsample: ``"bilinear"`` or ``"nearest"``, for importance maps of another size.
        blur_sigma: standard deviation (pixels) of the ``"blur"`` fill.
        seed: seed of the tie-breaking pixel order.

    Returns:
        A pandas DataFrame, one row per fraction, columns ``fraction``, ``n_removed`` (pixels
        per image), ``accuracy``, ``stderr`` (binomial, ``sqrt(a(1-a)/N)``) and ``n_images``;
        ``frame.attrs["auc"]`` holds `accuracy_auc` of the curve.
    """
    import pandas as pd

    check_images(images, "images", pixel_range="ignore")
    n, c, h, w = images.shape
    labels = torch.as_tensor(labels)
    if labels.shape != (n,) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be {n} class indices (ints), got shape {tuple(labels.shape)} "
                         f"and dtype {labels.dtype}")
    imp = _importance_at(importance, n, (h, w), upsample)
    fractions = [float(f) for f in fractions]
    if not fractions or any(not (0.0 <= f <= 1.0) for f in fractions):
        raise ValueError(f"fractions must be a non-empty list of values in [0, 1], got {fractions}")
    if order not in ("least", "most"):
        raise ValueError(f"order must be 'least' (the paper: least important removed first) or 'most', got {order!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    fill_values = _fill_fn(fill, c, h, w, blur_sigma)

    # Rank 0 = removed first; ties broken by one fixed random pixel order.
    rank = _rank(imp.flatten(1), descending=(order == "most"), seed=seed).view(n, h, w)
    counts = [int(math.floor(f * h * w + 0.5)) for f in fractions]
    correct = torch.zeros(len(fractions), dtype=torch.long)
    device = model_device(model, images.device)
    with ModelGuard(model), torch.no_grad():
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            xb = images[sl].to(device)
            yb = labels[sl].to(device)
            rb = rank[sl].to(device)
            fb = fill_values(xb)
            for i, k in enumerate(counts):
                removed = (rb < k)[:, None]
                logits = model(torch.where(removed, fb, xb))
                correct[i] += int((logits.argmax(dim=1) == yb).sum())
    acc = (correct.double() / n).tolist()
    frame = pd.DataFrame({
        "fraction": fractions,
        "n_removed": counts,
        "accuracy": acc,
        "stderr": [math.sqrt(a * (1 - a) / n) for a in acc],
        "n_images": n,
    })
    frame.attrs["auc"] = accuracy_auc(frame)
    return frame


def accuracy_auc(frame) -> float:
    """Area under the accuracy-vs-fraction curve, divided by the fraction range (trapezoids).

    So it is the mean accuracy over the removed fractions, in [0, 1]; one fraction gives its
    accuracy. ``frame``: the output of `descriptive_accuracy` (or any table with columns
    ``fraction`` and ``accuracy``).
    """
    pts = sorted(zip(frame["fraction"], frame["accuracy"]))
    if len(pts) == 1:
        return float(pts[0][1])
    area = sum((f1 - f0) * (a0 + a1) / 2 for (f0, a0), (f1, a1) in zip(pts, pts[1:]))
    span = pts[-1][0] - pts[0][0]
    return float(area / span) if span > 0 else float(pts[0][1])


def localization_recall(
    importance: Tensor,
    target: Tensor,
    size: Sequence[int] | None = None,
    *,
    upsample: str = "bilinear",
    seed: int = 0,
) -> Tensor:
    """Pixel recall of the object box (Schulz et al., 2020, as used in the paper's Table 2).

    For an image whose box (or mask) holds ``n`` pixels, take its ``n`` most important pixels
    and report the fraction of them that lie inside: 1 when the importance ranks the whole box
    first, the box's area fraction on average for a random map. Filtering images by box size,
    and averaging, are left to the caller.

    Args:
        importance: ``[B, h, w]``, higher = more important (for CID pass ``-cid``); resized to
            the image size with ``upsample`` when it differs.
        target: a bool mask ``[B, H, W]`` (True = object) or boxes ``[B, 4]`` as
            ``(x0, y0, x1, y1)`` pixel coordinates with exclusive ends (rows ``y0:y1``, columns
            ``x0:x1``).
        size: ``(H, W)`` of the images, needed with boxes when ``importance`` is not already at
            image size (default: the mask's size, or the importance's own size for boxes).
        upsample: ``"bilinear"`` or ``"nearest"``.
        seed: seed of the tie-breaking pixel order.

    Returns:
        ``[B]`` float recall per image, in [0, 1].
    """
    if not torch.is_tensor(importance) or importance.dim() != 3:
        shape = tuple(importance.shape) if torch.is_tensor(importance) else type(importance).__name__
        raise ValueError(f"importance must be maps [B, h, w], got {shape}")
    b = importance.shape[0]
    mask = _target_mask(target, b, size, importance)
    hw = tuple(mask.shape[-2:])
    imp = _importance_at(importance, b, hw, upsample)
    inside = mask.flatten(1).to(imp.device)
    n_box = inside.sum(dim=1)
    if bool((n_box == 0).any()):
        raise ValueError(f"empty box or mask for images {torch.nonzero(n_box == 0).flatten().tolist()}")
    rank = _rank(imp.flatten(1), descending=True, seed=seed)
    top = rank < n_box[:, None]
    return (top & inside).sum(dim=1).double().div(n_box.double()).float()


# ----------------------------------------------------------------------------- helpers


def _importance_at(importance: Tensor, n: int, size: tuple[int, int], upsample: str) -> Tensor:
    """Importance ``[n, H, W]`` float at the image size; NaN is an error (inf is a valid extreme)."""
    if not torch.is_tensor(importance) or importance.dim() != 3 or importance.shape[0] != n:
        shape = tuple(importance.shape) if torch.is_tensor(importance) else type(importance).__name__
        raise ValueError(f"importance must be maps [{n}, h, w] (one per image), got {shape}")
    if bool(torch.isnan(importance).any()):
        raise ValueError("importance has NaN values")
    imp = importance.detach().float()
    if tuple(imp.shape[-2:]) != tuple(size):
        if bool(torch.isinf(imp).any()):
            raise ValueError("importance has inf values and must be resized; pass it at image size")
        imp = to_input_size(imp, size, mode=upsample)
    return imp


def _rank(values: Tensor, descending: bool, seed: int) -> Tensor:
    """Rank of each entry of ``values`` ``[B, P]`` (0 = first in the order), ties by a seeded order."""
    p = values.shape[1]
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(p, generator=gen).to(values.device)
    # Stable sort of the permuted values: equal values keep the random order of `perm`.
    _, idx = torch.sort(values[:, perm], dim=1, descending=descending, stable=True)
    order = perm[idx]
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(p, device=values.device).expand_as(order).contiguous())
    return rank


def _target_mask(target: Tensor, b: int, size, importance: Tensor) -> Tensor:
    target = torch.as_tensor(target)
    if target.dtype == torch.bool:
        if target.dim() != 3:
            raise ValueError(f"a mask must be bool [{b}, H, W], got shape {tuple(target.shape)}")
        if target.shape[0] != b:
            raise ValueError(f"the mask has {target.shape[0]} images but importance has {b}")
        if size is not None and tuple(size) != tuple(target.shape[-2:]):
            raise ValueError(f"size {tuple(size)} does not match the mask's size {tuple(target.shape[-2:])}")
        return target
    if target.dim() == 2 and target.shape[1] == 4 and target.shape[0] != b:
        raise ValueError(f"there are {target.shape[0]} boxes but importance has {b} images")
    if target.dim() != 2 or target.shape != (b, 4):
        raise ValueError(f"target must be a bool mask [{b}, H, W] or boxes [{b}, 4] (x0, y0, x1, y1), "
                         f"got dtype {target.dtype} and shape {tuple(target.shape)}")
    hgt, wid = (int(s) for s in (size if size is not None else importance.shape[-2:]))
    boxes = target.round().long() if target.is_floating_point() else target.long()
    x0, y0, x1, y1 = boxes.unbind(dim=1)
    bad = (x0 < 0) | (y0 < 0) | (x1 > wid) | (y1 > hgt) | (x1 <= x0) | (y1 <= y0)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().tolist()
        raise ValueError(f"boxes {rows} are empty or leave the {hgt}x{wid} image: need 0 <= x0 < x1 <= {wid} "
                         f"and 0 <= y0 < y1 <= {hgt} (exclusive ends); got {boxes[bad].tolist()}")
    ys = torch.arange(hgt)[None, :, None]
    xs = torch.arange(wid)[None, None, :]
    return ((ys >= y0[:, None, None]) & (ys < y1[:, None, None])
            & (xs >= x0[:, None, None]) & (xs < x1[:, None, None]))


def _fill_fn(fill, c: int, h: int, w: int, blur_sigma: float | None):
    """A function images ``[b, C, H, W]`` -> fill values broadcastable to them."""
    if isinstance(fill, str):
        if fill == "mean":
            return lambda x: x.mean(dim=(2, 3), keepdim=True)
        if fill == "zero":
            return lambda x: torch.zeros_like(x[:, :, :1, :1])
        if fill == "blur":
            sigma = float(blur_sigma) if blur_sigma is not None else max(h, w) / 20.0
            if not sigma > 0:
                raise ValueError(f"blur_sigma must be positive, got {blur_sigma!r}")
            return lambda x: gaussian_blur(x, sigma)
        raise ValueError(f"fill must be one of {list(FILLS)}, a number or a tensor [C], got {fill!r}")
    value = torch.as_tensor(fill, dtype=torch.float32)
    if value.dim() == 0:
        return lambda x: value.to(x).view(1, 1, 1, 1)
    if value.shape != (c,):
        raise ValueError(f"a tensor fill needs one value per channel ({c}), got shape {tuple(value.shape)}")
    return lambda x: value.to(x).view(1, c, 1, 1)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Images ``[B, C, H, W]`` blurred by a separable Gaussian of ``sigma`` pixels (edges replicated)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    out = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

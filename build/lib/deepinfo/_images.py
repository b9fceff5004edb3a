"""The one check of an image batch, used by every entry point that takes images.

deepinfo works in pixel space (SPEC section 1): images are float tensors ``[B, C, H, W]`` with
values in [0, 1], and the model holds its own normalization. Estimators, baselines, the
robustness search, the evaluations and the decoders all check their input here, so a user gets
the same message whichever function they called first.
"""

from __future__ import annotations

import warnings

import torch

RANGE_SLACK = 1e-3  # pixels this far outside [0, 1] are rounding, not another scale


def check_images(x, what: str = "images", *, pixel_range: str = "warn", stacklevel: int = 3) -> torch.Tensor:
    """Check that ``x`` is a batch of pixel-space images and return it unchanged.

    Args:
        x: the batch, ``[B, C, H, W]`` float, finite, B >= 1.
        what: the argument's name in messages (``"x"``, ``"images"``, ...).
        pixel_range: values outside [0, 1] (by more than ``RANGE_SLACK``): ``"warn"`` (the
            estimators: a user may know better), ``"error"`` (a decoder ending in a sigmoid could
            never reach them) or ``"ignore"``.
        stacklevel: passed to ``warnings.warn`` so the warning points at the caller's caller.

    Raises:
        ValueError: naming what is wrong (type, dimensions, dtype, empty batch, non-finite
            pixels with their image indices, or the pixel range when ``pixel_range="error"``).
    """
    if pixel_range not in ("warn", "error", "ignore"):
        raise ValueError(f"pixel_range must be 'warn', 'error' or 'ignore', got {pixel_range!r}")
    if not torch.is_tensor(x):
        raise ValueError(f"{what} must be a torch.Tensor of float images [B, C, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        hint = " (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else ""
        raise ValueError(f"{what} must have 4 dimensions: float images [B, C, H, W], got shape {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise ValueError(f"{what} must be floating point: float images [B, C, H, W] in [0, 1] (pixel space), "
                         f"got {x.dtype}; use x.float() / 255")
    if x.shape[0] == 0:
        raise ValueError(f"{what} holds no images (B = 0)")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = (~finite).flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(f"{what} contain non-finite pixels (NaN or inf) in images {bad}")
    if pixel_range != "ignore":
        lo, hi = float(x.min()), float(x.max())
        if lo < -RANGE_SLACK or hi > 1 + RANGE_SLACK:
            message = (f"{what}: pixels lie in [{lo:.3g}, {hi:.3g}], outside pixel space [0, 1]: deepinfo expects "
                       "pixel-space images with the normalization inside the model (SPEC section 1; deepinfo.wrap "
                       "adds it)")
            if pixel_range == "error":
                raise ValueError(message)
            warnings.warn(message, stacklevel=stacklevel)
    return x

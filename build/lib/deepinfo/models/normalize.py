"""Per-channel input normalization held inside a model.

Every model in :mod:`deepinfo.models` takes pixel-space images (``[B, C, H, W]``, values in
``[0, 1]``) and normalizes them itself with a :class:`Normalize` submodule named ``normalize``,
applied first in ``forward``. The estimators therefore perturb pixels, and sigma means the same
thing for every network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

# The statistics torchvision's ImageNet models and the published CIFAR-10 ResNets
# (akamaster/pytorch_resnet_cifar10, whose trainer uses these values) were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """``x -> (x - mean) / std`` per channel, for images ``[B, C, H, W]``.

    ``mean`` and ``std`` are non-persistent buffers: they follow ``.to()`` / ``.double()`` but
    add no state-dict keys, so published checkpoints (which never had them) still load with
    ``strict=True``.

    Args:
        mean: one value per channel, in pixel units (the [0, 1] scale).
        std: one positive value per channel, same length as ``mean``.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        # Checked as Python floats, so that models can also be built on the meta device.
        mean_f = [float(v) for v in torch.as_tensor(mean, device="cpu").flatten().tolist()]
        std_f = [float(v) for v in torch.as_tensor(std, device="cpu").flatten().tolist()]
        if not mean_f or len(mean_f) != len(std_f):
            raise ValueError(
                f"mean and std need one value per channel and the same length, "
                f"got {len(mean_f)} and {len(std_f)} values"
            )
        if not all(math.isfinite(v) for v in mean_f) or not all(math.isfinite(v) and v > 0 for v in std_f):
            raise ValueError(f"mean must be finite and std positive and finite, got mean={mean!r}, std={std!r}")
        self.register_buffer("mean", torch.tensor(mean_f).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std_f).view(1, -1, 1, 1), persistent=False)

    @property
    def num_channels(self) -> int:
        return self.mean.shape[1]

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[B, C, H, W]`` pixel-space images -> normalized images, same shape."""
        if x.dim() != 4 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"expected images [B, {self.num_channels}, H, W], got a tensor of shape {tuple(x.shape)}"
            )
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        if self.mean.is_meta:
            return f"channels={self.num_channels}"
        mean = ", ".join(f"{v:.4g}" for v in self.mean.flatten().tolist())
        std = ", ".join(f"{v:.4g}" for v in self.std.flatten().tolist())
        return f"mean=({mean}), std=({std})"


def imagenet_normalize() -> Normalize:
    """A :class:`Normalize` with the ImageNet mean and std (RGB)."""
    return Normalize(IMAGENET_MEAN, IMAGENET_STD)


class Normalized(nn.Module):
    """A model that takes pixel-space images: ``model(normalize(x))``.

    The normalization is the child named ``normalize`` (where the baselines look for it, SPEC
    section 1) and the wrapped model the child named ``model``, so a layer ``layer3`` of the
    wrapped model is ``model.layer3`` here.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.normalize = Normalize(mean, std)
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[B, C, H, W]`` pixel-space images in [0, 1] -> the wrapped model's output."""
        return self.model(self.normalize(x))


def wrap(model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> Normalized:
    """``model`` behind its input normalization, so that it takes pixel-space images.

    deepinfo perturbs pixels (SPEC section 1): a model trained on normalized inputs must hold its
    normalization. ``wrap(model, mean, std)(x) == model((x - mean) / std)``; the parameters are
    shared with ``model``, not copied.

    Args:
        model: a network that expects normalized images ``[B, C, H, W]``.
        mean, std: one value per channel, pixel units (e.g. ImageNet's
            ``(0.485, 0.456, 0.406)``, ``(0.229, 0.224, 0.225)``).

    Returns:
        A :class:`Normalized` module; layer names gain the prefix ``model.``.
    """
    return Normalized(model, mean, std)

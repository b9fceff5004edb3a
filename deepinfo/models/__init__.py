"""Models for the experiments; every one takes pixel-space images ``[B, C, H, W]`` in [0, 1].

- :func:`cifar_resnet` -- He et al. CIFAR ResNets (option-A shortcuts), published CIFAR-10 weights.
- :func:`cifar_resnet_autoencoder` -- those ResNets' trunks plus the RU decoder (paper Sec. 4).
- :func:`build` -- torchvision AlexNet, VGG-16/19, ResNet-18/34/50 with a width multiplier, any
  number of classes and input size, optional ImageNet weights (needs torchvision).
- :func:`block_names`, :func:`conv_layer_names`, :func:`stage_names`, :func:`layer_names`,
  :func:`resolve_layers` -- the layers to measure, as module names in forward order.
- :class:`Normalize` -- the normalization each model holds as its ``normalize`` submodule;
  :func:`wrap` puts it in front of any model (:class:`Normalized`).
- :func:`unet` / :class:`UNet` -- Ronneberger et al.'s U-Net (padded convs, 2 output classes) for
  the ISBI 2012 membrane segmentation (paper App. G.1).

torchvision is an optional dependency: the names from :mod:`deepinfo.models.vision` are imported
on first use, so the CIFAR models work with torch alone.
"""

from __future__ import annotations

import importlib
from typing import Any

from deepinfo.models.autoencoder import CifarResNetAutoencoder, cifar_resnet_autoencoder
from deepinfo.models.cifar_resnet import (
    PUBLISHED_ACCURACY,
    PUBLISHED_FILES,
    CifarResNet,
    CifarResNetTrunk,
    cifar_resnet,
    published_checkpoint,
)
from deepinfo.models.layer_names import (
    LAYER_KEYWORDS,
    block_names,
    block_position,
    conv_layer_names,
    evenly_spaced,
    last_linear,
    layer_names,
    resolve_layers,
    stage_names,
)
from deepinfo.models.normalize import IMAGENET_MEAN, IMAGENET_STD, Normalize, Normalized, imagenet_normalize, wrap
from deepinfo.models.unet import UNet, unet, unet_block_names, unet_stage_names

_VISION = ("build", "ARCHITECTURES", "MIN_INPUT_SIZE", "IMAGENET_WEIGHTS", "AlexNet", "VGG", "ResNet")

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LAYER_KEYWORDS",
    "PUBLISHED_ACCURACY",
    "PUBLISHED_FILES",
    "CifarResNet",
    "CifarResNetAutoencoder",
    "CifarResNetTrunk",
    "Normalize",
    "Normalized",
    "block_names",
    "block_position",
    "evenly_spaced",
    "last_linear",
    "cifar_resnet",
    "cifar_resnet_autoencoder",
    "conv_layer_names",
    "imagenet_normalize",
    "layer_names",
    "published_checkpoint",
    "resolve_layers",
    "stage_names",
    "UNet",
    "unet",
    "unet_block_names",
    "unet_stage_names",
    "wrap",
    *_VISION,
]


def __getattr__(name: str) -> Any:
    if name in _VISION:
        return getattr(importlib.import_module("deepinfo.models.vision"), name)
    raise AttributeError(f"module 'deepinfo.models' has no attribute {name!r}")

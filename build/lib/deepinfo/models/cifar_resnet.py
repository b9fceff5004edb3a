"""He et al. (2016) CIFAR ResNets with option-A shortcuts, as in akamaster/pytorch_resnet_cifar10.

The module names (``conv1, bn1, layer1..3`` of ``BasicBlock(conv1, bn1, conv2, bn2, shortcut)``,
``linear``) and the computation match that repository, so its published checkpoints
(``resnet{20,32,44,56,110,1202}-<hash>.th``) load with ``strict=True`` once the ``module.`` prefix
is stripped, and give the same outputs. The models take pixel-space images in [0, 1] and
normalize them with the ImageNet mean/std (submodule ``normalize``), as the checkpoints were
trained.

Layers worth hooking: ``relu`` (stem output), ``layer{1,2,3}.{i}`` (block outputs, after the
block's final ReLU), ``avgpool`` (the 64-d pooled feature) and ``linear`` (logits).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepinfo.models._checkpoint import check_hash_prefix, read_state_dict, unwrap_state_dict
from deepinfo.models.normalize import imagenet_normalize
from deepinfo.paths import data_dir

PUBLISHED_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
# depth -> file name; the hex part is the sha256 prefix torch.hub checks (check_hash=True).
PUBLISHED_FILES = {
    20: "resnet20-12fca82f.th",
    32: "resnet32-d509ac18.th",
    44: "resnet44-014dd654.th",
    56: "resnet56-4bfd9763.th",
    110: "resnet110-1d1ed7c2.th",
    1202: "resnet1202-f3b1deed.th",
}
# depth -> top-1 accuracy on the official CIFAR-10 test set, as the upstream repository reports it
# (its README's error rates: 8.27, 7.37, 6.90, 6.61, 6.32, 6.84 %); the offline JPEG copy costs a
# few points of it (re-encoding changes the pixels the nets were trained on).
PUBLISHED_ACCURACY = {20: 0.9173, 32: 0.9263, 44: 0.9310, 56: 0.9339, 110: 0.9368, 1202: 0.9316}
STAGE_WIDTHS = (16, 32, 64)


def blocks_per_stage(depth: int) -> int:
    """``n`` for a depth ``6n + 2`` ResNet (3 stages of n two-conv blocks, plus stem and FC)."""
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"a CIFAR ResNet's depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), got {depth!r}"
        )
    return (depth - 2) // 6


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by 2 and zero-pad ``planes // 4`` channels on each side.

    Parameter-free; identical to upstream's ``LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2],
    (0, 0, 0, 0, planes // 4, planes // 4)))`` but picklable.
    """

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0.0)

    def extra_repr(self) -> str:
        return f"pad_channels={self.pad}"


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; output ``[B, planes, H/s, W/s]``."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = PadShortcut(planes)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _kaiming_init(module: nn.Module) -> None:
    # upstream's _weights_init: kaiming_normal_ (fan_in, gain sqrt 2) on conv and linear weights.
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight)


class CifarResNetTrunk(nn.Module):
    """The convolutional part of a CIFAR ResNet: ``normalize, conv1, bn1, relu, layer1..3``.

    Input ``[B, 3, H, W]`` in [0, 1]; output the last block's map ``[B, 64, ceil(H/4), ceil(W/4)]``
    (``[B, 64, 8, 8]`` for CIFAR's 32x32), before global pooling.
    """

    def __init__(self, depth: int) -> None:
        super().__init__()
        n = blocks_per_stage(depth)
        self.depth = depth
        self.normalize = imagenet_normalize()
        self.conv1 = nn.Conv2d(3, STAGE_WIDTHS[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        self.relu = nn.ReLU()
        in_planes = STAGE_WIDTHS[0]
        for stage, planes in enumerate(STAGE_WIDTHS, start=1):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride=2 if stage > 1 and i == 0 else 1))
                in_planes = planes
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
        self.out_channels = STAGE_WIDTHS[-1]
        self.apply(_kaiming_init)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(self.normalize(x))))
        return self.layer3(self.layer2(self.layer1(out)))


class CifarResNet(CifarResNetTrunk):
    """CIFAR ResNet classifier: the trunk, global average pooling (``avgpool``), then ``linear``.

    Input ``[B, 3, H, W]`` in [0, 1]; output logits ``[B, num_classes]``.
    """

    def __init__(self, depth: int, num_classes: int = 10) -> None:
        super().__init__(depth)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(self.out_channels, num_classes)
        _kaiming_init(self.linear)

    def forward(self, x: Tensor) -> Tensor:
        out = self.avgpool(super().forward(x))
        return self.linear(torch.flatten(out, 1))


def _check_published(depth: int) -> None:
    if depth not in PUBLISHED_FILES:
        raise ValueError(
            f"no published CIFAR-10 weights for ResNet-{depth}; available depths: {sorted(PUBLISHED_FILES)}"
        )


def published_checkpoint(depth: int, progress: bool = True) -> dict[str, Tensor]:
    """The published CIFAR-10 state dict of a ResNet-``depth`` (``module.`` prefix stripped).

    Reads ``<data_dir()>/checkpoints/<published file>`` when present (its sha256 prefix is
    checked against its name), otherwise downloads the file from the upstream repository through
    ``torch.hub.load_state_dict_from_url(..., check_hash=True)`` (cached in torch.hub's folder).
    """
    _check_published(depth)
    name = PUBLISHED_FILES[depth]
    local = data_dir() / "checkpoints" / name
    if local.is_file():
        check_hash_prefix(local)
        return read_state_dict(local)
    raw = torch.hub.load_state_dict_from_url(
        PUBLISHED_URL + name, map_location="cpu", progress=progress, check_hash=True, weights_only=True
    )
    return unwrap_state_dict(raw)


def resolve_weights(depth: int, weights: str | os.PathLike, progress: bool = True) -> dict[str, Tensor]:
    """The state dict ``weights`` names: ``"published"`` or a checkpoint path."""
    if isinstance(weights, str) and weights == "published":
        return published_checkpoint(depth, progress=progress)
    if isinstance(weights, (str, os.PathLike)):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ValueError(f"weights must be None, 'published' or a checkpoint path; {str(weights)!r} is none")
        return read_state_dict(path)
    raise ValueError(f"weights must be None, 'published' or a checkpoint path, got {type(weights).__name__}")


def cifar_resnet(
    depth: int,
    weights: str | os.PathLike | None = None,
    num_classes: int = 10,
    progress: bool = True,
) -> CifarResNet:
    """A CIFAR ResNet-``depth`` (depth = 6n+2) taking pixel-space images ``[B, 3, H, W]`` in [0, 1].

    Args:
        depth: 20, 32, 44, 56, 110, ... (6n+2).
        weights: ``None`` (Kaiming-normal init, as upstream), ``"published"`` (the CIFAR-10
            checkpoints of akamaster/pytorch_resnet_cifar10, depths 20/32/44/56/110/1202: the
            local copy under ``data_dir()/checkpoints`` if present, else downloaded and
            hash-checked), or the path of a checkpoint (a state dict, or a dict with a
            ``state_dict`` entry; a ``module.`` prefix is stripped). Loading is strict.
        num_classes: output classes; the published weights need 10.
        progress: show a download progress bar.

    Returns:
        A :class:`CifarResNet` (in train mode, like any fresh module: call ``.eval()`` to analyse).
    """
    blocks_per_stage(depth)
    if isinstance(weights, str) and weights == "published":
        _check_published(depth)
        if num_classes != 10:
            raise ValueError(f"the published weights are CIFAR-10 classifiers (10 classes), got num_classes={num_classes}")
    model = CifarResNet(depth, num_classes=num_classes)
    if weights is not None:
        model.load_state_dict(resolve_weights(depth, weights, progress=progress), strict=True)
    return model

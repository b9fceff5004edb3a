"""torchvision's AlexNet, VGG-16/19 and ResNet-18/34/50, with a width multiplier and inner normalization.

:func:`build` returns subclasses of the torchvision classes that keep torchvision's module names
(``features.10``, ``classifier.4``, ``layer4.1``, ``avgpool``, ``fc``, ...) and add one module,
``normalize`` (ImageNet mean/std, no state-dict keys), applied first in ``forward``. Inputs are
pixel-space images ``[B, 3, H, W]`` in [0, 1]. With ``width=1`` the state dicts equal
torchvision's, so its ImageNet weights load strictly.

``batch_norm=True`` gives AlexNet/VGG a ``BatchNorm2d`` after every conv (conv, BN, ReLU), as
torchvision's ``vgg16_bn`` / ``vgg19_bn``: with ``width=1`` the state dicts equal those models' and
their ImageNet weights load. torchvision has no AlexNet with batch norm; ours follows the same
pattern (``features.0`` conv, ``features.1`` BN, ``features.2`` ReLU, ...) and has no ImageNet
weights. Batch norm lets these plain nets train from scratch (narrow, small images, few epochs),
where the torchvision-initialised nets without it stay at chance.

Two changes from torchvision, neither touching the state-dict keys or the outputs:

- ReLUs are not in-place, so forward hooks on a conv see its own output rather than the ReLU's
  (and attribution libraries that hook ReLUs work).
- AlexNet/VGG pool adaptively to ``min(torchvision's size, the feature map at input_size)``:
  at 224 px that is torchvision's 6x6 / 7x7; at small inputs (e.g. 32 px CIFAR for VGG, whose
  map is then 1x1) the first FC layer reads the map instead of 49 copies of it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.vgg import cfgs as VGG_CFGS
from torchvision.models.vgg import make_layers

from deepinfo.models._checkpoint import read_state_dict, unwrap_state_dict
from deepinfo.models.normalize import imagenet_normalize

ARCHITECTURES = ("alexnet", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50")

# The weights that `weights="imagenet"` loads: the V1 (original) ImageNet weights of each arch,
# i.e. what `pretrained=True` gave when the paper was written.
IMAGENET_WEIGHTS: dict[str, Callable[[], tvm.WeightsEnum]] = {
    "alexnet": lambda: tvm.AlexNet_Weights.IMAGENET1K_V1,
    "vgg16": lambda: tvm.VGG16_Weights.IMAGENET1K_V1,
    "vgg19": lambda: tvm.VGG19_Weights.IMAGENET1K_V1,
    "resnet18": lambda: tvm.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": lambda: tvm.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": lambda: tvm.ResNet50_Weights.IMAGENET1K_V1,
}
# ... and with ``batch_norm=True`` (torchvision's vgg16_bn / vgg19_bn; it has no AlexNet with BN).
IMAGENET_BN_WEIGHTS: dict[str, Callable[[], tvm.WeightsEnum]] = {
    "vgg16": lambda: tvm.VGG16_BN_Weights.IMAGENET1K_V1,
    "vgg19": lambda: tvm.VGG19_BN_Weights.IMAGENET1K_V1,
}

# Smallest square input each arch runs on (torchvision's own `min_size` meta of these weights):
# AlexNet's three stride-2 3x3 max-pools need a 63 px input, VGG's five 2x2 pools 32 px, and the
# ResNets' padded stride-2 convs/pools never shrink a map below 1x1.
MIN_INPUT_SIZE = {"alexnet": 63, "vgg16": 32, "vgg19": 32, "resnet18": 1, "resnet34": 1, "resnet50": 1}

_RESNET_LAYOUT = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}
_VGG_CFG = {"vgg16": "D", "vgg19": "E"}
# The pooled size torchvision's classifiers (and so the ImageNet weights) expect.
_TORCHVISION_POOL = {"alexnet": 6, "vgg16": 7, "vgg19": 7}


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1."""
    return max(1, int(round(channels * width)))


def _no_inplace(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False


def _pair(v: int | tuple[int, ...]) -> tuple[int, ...]:
    return v if isinstance(v, tuple) else (v, v)


def _feature_map_size(features: nn.Sequential, size: tuple[int, int]) -> tuple[int, int]:
    """Spatial size after ``features`` (only Conv2d / MaxPool2d change it) for an input ``size``."""
    h, w = size
    for m in features:
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            k, s, p, d = (_pair(v) for v in (m.kernel_size, m.stride, m.padding, m.dilation))
            rnd = math.ceil if getattr(m, "ceil_mode", False) else math.floor
            h = rnd((h + 2 * p[0] - d[0] * (k[0] - 1) - 1) / s[0]) + 1
            w = rnd((w + 2 * p[1] - d[1] * (k[1] - 1) - 1) / s[1]) + 1
    return h, w


def _pool_size(features: nn.Sequential, input_size: tuple[int, int], default: int) -> tuple[int, int]:
    fh, fw = _feature_map_size(features, input_size)
    return min(default, fh), min(default, fw)


class AlexNet(tvm.AlexNet):
    """torchvision's AlexNet with ``normalize`` in front, channels and FC sizes times ``width``.

    ``batch_norm=True`` puts a ``BatchNorm2d`` between every conv and its ReLU (the
    ``vgg*_bn`` pattern; the indices in ``features`` shift accordingly).
    """

    def __init__(self, num_classes: int = 1000, width: float = 1.0, input_size: tuple[int, int] = (224, 224),
                 dropout: float = 0.5, batch_norm: bool = False) -> None:
        nn.Module.__init__(self)  # torchvision's __init__ hard-codes the widths; build the same modules scaled
        c1, c2, c3, c4, c5 = (scaled(c, width) for c in (64, 192, 384, 256, 256))
        hidden = scaled(4096, width)
        self.normalize = imagenet_normalize()

        def conv(c_in: int, c_out: int, **kw) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, **kw)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            return layers + [nn.ReLU()]

        self.features = nn.Sequential(
            *conv(3, c1, kernel_size=11, stride=4, padding=2),
            nn.MaxPool2d(kernel_size=3, stride=2),
            *conv(c1, c2, kernel_size=5, padding=2),
            nn.MaxPool2d(kernel_size=3, stride=2),
            *conv(c2, c3, kernel_size=3, padding=1),
            *conv(c3, c4, kernel_size=3, padding=1),
            *conv(c4, c5, kernel_size=3, padding=1),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        ph, pw = _pool_size(self.features, input_size, _TORCHVISION_POOL["alexnet"])
        self.avgpool = nn.AdaptiveAvgPool2d((ph, pw))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(c5 * ph * pw, hidden),
            nn.ReLU(),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[B, 3, H, W]`` in [0, 1] -> logits ``[B, num_classes]``."""
        return super().forward(self.normalize(x))


def vgg_init(m: nn.Module) -> None:
    """torchvision's VGG initialisation of one module (conv, batch norm or linear; others untouched)."""
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.constant_(m.weight, 1)
        nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0, 0.01)
        nn.init.constant_(m.bias, 0)


class VGG(tvm.VGG):
    """torchvision's VGG with ``normalize`` in front, widths times ``width``.

    ``batch_norm=False`` is ``vgg16`` / ``vgg19``, ``True`` is ``vgg16_bn`` / ``vgg19_bn``.
    """

    def __init__(self, cfg: str, num_classes: int = 1000, width: float = 1.0,
                 input_size: tuple[int, int] = (224, 224), dropout: float = 0.5,
                 batch_norm: bool = False) -> None:
        nn.Module.__init__(self)  # torchvision's __init__ hard-codes the classifier widths
        layout = [v if v == "M" else scaled(int(v), width) for v in VGG_CFGS[cfg]]
        last = [v for v in layout if v != "M"][-1]
        hidden = scaled(4096, width)
        self.normalize = imagenet_normalize()
        self.features = make_layers(layout, batch_norm=batch_norm)
        ph, pw = _pool_size(self.features, input_size, _TORCHVISION_POOL["vgg16"])
        self.avgpool = nn.AdaptiveAvgPool2d((ph, pw))
        self.classifier = nn.Sequential(
            nn.Linear(int(last) * ph * pw, hidden),
            nn.ReLU(),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, num_classes),
        )
        _no_inplace(self.features)
        for m in self.modules():
            vgg_init(m)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[B, 3, H, W]`` in [0, 1] -> logits ``[B, num_classes]``."""
        return super().forward(self.normalize(x))


class ResNet(tvm.ResNet):
    """torchvision's ResNet with ``normalize`` in front, stage widths times ``width``."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, int, int, int],
                 num_classes: int = 1000, width: float = 1.0) -> None:
        nn.Module.__init__(self)  # torchvision's __init__ hard-codes 64..512; reuse its _make_layer
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = scaled(64, width)
        self.dilation = 1
        self.groups = 1
        self.base_width = 64  # Bottleneck's inner width = planes * base_width / 64 = planes
        self.normalize = imagenet_normalize()
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, scaled(64, width), layers[0])
        self.layer2 = self._make_layer(block, scaled(128, width), layers[1], stride=2)
        self.layer3 = self._make_layer(block, scaled(256, width), layers[2], stride=2)
        self.layer4 = self._make_layer(block, scaled(512, width), layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(scaled(512, width) * block.expansion, num_classes)
        _no_inplace(self)
        for m in self.modules():  # torchvision's ResNet init (zero_init_residual=False)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[B, 3, H, W]`` in [0, 1] -> logits ``[B, num_classes]``."""
        return super().forward(self.normalize(x))


def canonical_name(name: str) -> str:
    """``"VGG-16"`` -> ``"vgg16"``; raises ``ValueError`` for an architecture :func:`build` lacks."""
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; accepted: {', '.join(ARCHITECTURES)}")
    return key


def _input_hw(input_size: int | tuple[int, int]) -> tuple[int, int]:
    hw = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(hw) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in hw):
        raise ValueError(f"input_size must be an int or a pair of ints (H, W), got {input_size!r}")
    return hw  # type: ignore[return-value]


def _construct(key: str, num_classes: int, width: float, hw: tuple[int, int], dropout: float,
               batch_norm: bool = False) -> nn.Module:
    if key == "alexnet":
        return AlexNet(num_classes, width, hw, dropout, batch_norm)
    if key in _VGG_CFG:
        return VGG(_VGG_CFG[key], num_classes, width, hw, dropout, batch_norm)
    block, layers = _RESNET_LAYOUT[key]
    return ResNet(block, layers, num_classes, width)


def _smallest_input_for_imagenet_pool(key: str) -> int:
    model = _construct(key, 1, 1 / 64, (224, 224), 0.0)  # a tiny copy: only the geometry matters
    default = _TORCHVISION_POOL[key]
    size = MIN_INPUT_SIZE[key]
    while min(_feature_map_size(model.features, (size, size))) < default:
        size += 1
    return size


def _replace_head(model: nn.Module, num_classes: int) -> None:
    # torchvision's own init for a Linear, drawn from the global generator (seed it for repeatability)
    if isinstance(model, tvm.ResNet):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:
        last = model.classifier[-1]
        model.classifier[-1] = nn.Linear(last.in_features, num_classes)


def build(
    name: str,
    num_classes: int = 1000,
    width: float = 1.0,
    weights: str | os.PathLike | None = None,
    input_size: int | tuple[int, int] = 224,
    dropout: float = 0.5,
    progress: bool = True,
    batch_norm: bool = False,
) -> nn.Module:
    """An ImageNet-style classifier taking pixel-space images ``[B, 3, H, W]`` in [0, 1].

    Args:
        name: ``"alexnet"``, ``"vgg16"``, ``"vgg19"``, ``"resnet18"``, ``"resnet34"`` or
            ``"resnet50"`` (case, ``-`` and ``_`` ignored).
        num_classes: size of the last layer.
        width: multiplier on every conv's channels and the FC hidden sizes (AlexNet/VGG 4096);
            ``width=1`` is torchvision's architecture.
        weights: ``None`` (torchvision's random init), ``"imagenet"`` (torchvision's V1 ImageNet
            weights, downloaded through ``torch.hub`` with hash check; needs ``width=1`` and an
            input_size whose feature map covers torchvision's pooled size; with ``num_classes``
            other than 1000 the last Linear is replaced by a new, randomly initialised one, for
            fine-tuning as the paper does on CUB), or
            a checkpoint path (state dict; ``module.`` prefix stripped). Loading is strict.
        input_size: the images' size, an int or ``(H, W)`` in pixels. Checked against the arch's
            smallest input (:data:`MIN_INPUT_SIZE`); for AlexNet/VGG it also sets the pooled size
            the classifier reads (see the module docstring). Other sizes still run.
        dropout: dropout probability in AlexNet/VGG's classifier.
        progress: show a download progress bar.
        batch_norm: AlexNet/VGG only: a ``BatchNorm2d`` after every conv, before its ReLU
            (torchvision's ``vgg16_bn`` / ``vgg19_bn`` layout and, with ``weights="imagenet"``,
            their ImageNet weights; AlexNet with batch norm has no ImageNet weights). ResNets
            always have batch norm: the flag is accepted and ignored for them.

    Returns:
        An :class:`AlexNet`, :class:`VGG` or :class:`ResNet` (subclasses of torchvision's).
    """
    key = canonical_name(name)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(width, (int, float)) or not math.isfinite(width) or width <= 0:
        raise ValueError(f"width must be a positive finite number, got {width!r}")
    hw = _input_hw(input_size)
    if min(hw) < MIN_INPUT_SIZE[key]:
        raise ValueError(
            f"{key} needs inputs of at least {MIN_INPUT_SIZE[key]}x{MIN_INPUT_SIZE[key]} px "
            f"(its downsampling would shrink smaller maps to nothing); got input_size={input_size!r}"
        )
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be None, 'imagenet' or a checkpoint path, got {type(weights).__name__}")
    if not isinstance(batch_norm, bool):
        raise ValueError(f"batch_norm must be a bool, got {batch_norm!r}")
    # ResNets always have batch norm: the flag changes nothing there.
    bn = batch_norm and key in _TORCHVISION_POOL

    if isinstance(weights, str) and weights == "imagenet":
        if width != 1:
            raise ValueError(f"ImageNet weights need width=1, got width={width}")
        if num_classes != 1000:
            # the paper fine-tunes ImageNet nets on CUB: every layer pretrained but a new last one
            model = build(key, 1000, 1.0, "imagenet", input_size, dropout, progress, batch_norm)
            _replace_head(model, num_classes)
            return model
        if bn and key not in IMAGENET_BN_WEIGHTS:
            raise ValueError(
                f"torchvision has no ImageNet weights for {key} with batch_norm=True (it has them for "
                f"{', '.join(IMAGENET_BN_WEIGHTS)}); use batch_norm=False or weights=None"
            )
    model = _construct(key, num_classes, float(width), hw, dropout, bn)
    if weights is None:
        return model

    if isinstance(weights, str) and weights == "imagenet":
        default = _TORCHVISION_POOL.get(key)
        pooled = tuple(model.avgpool.output_size)  # type: ignore[union-attr, arg-type]
        if default is not None and pooled != (default, default):
            raise ValueError(
                f"ImageNet weights expect a {default}x{default} pooled map; {key} at "
                f"input_size={input_size!r} pools to {pooled[0]}x{pooled[1]}. "
                f"Use input_size >= {_smallest_input_for_imagenet_pool(key)}"
            )
        url = (IMAGENET_BN_WEIGHTS if bn else IMAGENET_WEIGHTS)[key]().url
        state = torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=progress, check_hash=True, weights_only=True
        )
        model.load_state_dict(unwrap_state_dict(state), strict=True)
        return model

    path = Path(weights).expanduser()
    if not path.is_file():
        raise ValueError(f"weights must be None, 'imagenet' or a checkpoint path; {str(weights)!r} is none")
    model.load_state_dict(read_state_dict(path), strict=True)
    return model

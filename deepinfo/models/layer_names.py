"""The natural "layers" of each architecture, as module names in forward order.

A layer is a module name from ``model.named_modules()`` whose output is the layer's feature
(SPEC section 1). These helpers pick the ones the paper plots: ReLU outputs for AlexNet/VGG
(conv layers, then the FC layers), residual-block outputs for ResNets. They look at the model's
structure, so plain torchvision models work as well as :mod:`deepinfo.models`' own.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from deepinfo._features import resolve_layers as core_resolve_layers


def _stages(model: nn.Module) -> list[str]:
    stages, k = [], 1
    while isinstance(getattr(model, f"layer{k}", None), nn.Sequential):
        stages.append(f"layer{k}")
        k += 1
    return stages


def block_names(model: nn.Module) -> list[str]:
    """Residual-block names ``["layer1.0", "layer1.1", ..., "layer4.1"]`` of a ResNet, in forward order.

    Works for torchvision ResNets, CIFAR ResNets (``layer1..3``) and CIFAR ResNet auto-encoders
    (names prefixed ``"encoder."``). A block's output is after its final ReLU.
    """
    for prefix, root in (("", model), ("encoder.", getattr(model, "encoder", None))):
        if isinstance(root, nn.Module) and _stages(root):
            return [
                f"{prefix}{stage}.{i}"
                for stage in _stages(root)
                for i, _ in enumerate(getattr(root, stage))
            ]
    raise ValueError(
        f"block_names needs a ResNet (a module, or its .encoder, with Sequential stages layer1, "
        f"layer2, ...); got {type(model).__name__}. For AlexNet/VGG use conv_layer_names."
    )


def conv_layer_names(model: nn.Module, include_classifier: bool = True) -> list[str]:
    """ReLU-output names of an AlexNet/VGG in forward order, e.g. ``["features.1", ..., "classifier.5"]``.

    The ReLUs of ``features`` are the conv layers' outputs; with ``include_classifier`` the ReLUs
    of ``classifier`` (the hidden FC layers) follow.
    """
    features = getattr(model, "features", None)
    classifier = getattr(model, "classifier", None)
    if not isinstance(features, nn.Sequential) or not isinstance(classifier, nn.Sequential):
        raise ValueError(
            f"conv_layer_names needs an AlexNet/VGG-style model with Sequential 'features' and "
            f"'classifier'; got {type(model).__name__}. For ResNets use block_names."
        )
    parts = [("features", features)] + ([("classifier", classifier)] if include_classifier else [])
    return [
        f"{part}.{name}"
        for part, seq in parts
        for name, module in seq.named_children()
        if isinstance(module, nn.ReLU)
    ]


def layer_names(model: nn.Module) -> list[str]:
    """:func:`block_names` for ResNets, :func:`conv_layer_names` for AlexNet/VGG, every encoder
    block, the bottleneck and every decoder block for a U-Net
    (:func:`deepinfo.models.unet.unet_block_names`)."""
    from deepinfo.models.unet import _is_unet, unet_block_names

    if _is_unet(model):
        return unet_block_names(model)
    try:
        return block_names(model)
    except ValueError:
        pass
    try:
        return conv_layer_names(model)
    except ValueError:
        raise ValueError(
            f"layer_names knows ResNets (layer1, layer2, ... stages), AlexNet/VGG "
            f"(features + classifier) and U-Nets (enc, bottleneck, dec); got {type(model).__name__}"
        ) from None


def stage_names(model: nn.Module) -> list[str]:
    """The end of each stage: ``["layer1", ..., "layerK"]`` for ResNets (``encoder.``-prefixed for
    auto-encoders), the ``MaxPool2d`` of each pooling block (``features.4``, ...) for AlexNet/VGG,
    the three ends of the U (``enc.0``, ``bottleneck``, last ``dec`` block) for a U-Net."""
    from deepinfo.models.unet import _is_unet, unet_stage_names

    if _is_unet(model):
        return unet_stage_names(model)
    for prefix, root in (("", model), ("encoder.", getattr(model, "encoder", None))):
        if isinstance(root, nn.Module) and _stages(root):
            return [f"{prefix}{stage}" for stage in _stages(root)]
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):
        pools = [f"features.{n}" for n, m in features.named_children() if isinstance(m, nn.MaxPool2d)]
        if pools:
            return pools
    raise ValueError(
        f"stage_names knows ResNets (layer1, layer2, ... stages), AlexNet/VGG (max-pools in "
        f"'features') and U-Nets (enc, bottleneck, dec); got {type(model).__name__}"
    )


LAYER_KEYWORDS = ("blocks", "stages")


def resolve_layers(model: nn.Module, spec: str | Sequence[str]) -> list[str]:
    """Module names from a layer spec: ``"blocks"`` (:func:`layer_names`), ``"stages"``
    (:func:`stage_names`), one module name, or a list of them.

    Names are checked by the one layer check of the package (:func:`deepinfo._features.resolve_layers`):
    ``KeyError`` (with the nearest valid names) for a name not in ``model.named_modules()``,
    ``ValueError`` for an empty list or a name given twice.
    """
    if isinstance(spec, str) and spec in LAYER_KEYWORDS:
        return layer_names(model) if spec == "blocks" else stage_names(model)
    return core_resolve_layers(model, spec)


def block_position(model: nn.Module, layer: str) -> float:
    """The fraction of a ResNet's residual blocks that ``layer``'s output has passed, in (0, 1]:
    a block counts itself, a stage ends at its last block (so the curves of different depths share an axis)."""
    blocks = block_names(model)
    if layer in blocks:
        return (blocks.index(layer) + 1) / len(blocks)
    inside = [i for i, b in enumerate(blocks) if b.startswith(layer + ".")]
    if not inside:
        raise ValueError(f"{layer!r} is neither a residual block nor a stage of this ResNet: {blocks}")
    return (inside[-1] + 1) / len(blocks)


def last_linear(model: nn.Module) -> str:
    """The name of the model's last ``nn.Linear`` module (the logits of a classifier)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer")
    return names[-1]


def evenly_spaced(names: Sequence[str], n: int) -> list[str]:
    """At most ``n`` of ``names``, evenly spaced from the first to the last (all when there are few)."""
    import numpy as np

    if len(names) <= n:
        return list(names)
    return [names[i] for i in np.unique(np.round(np.linspace(0, len(names) - 1, n)).astype(int))]

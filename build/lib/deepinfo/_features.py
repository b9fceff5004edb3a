"""Reading a model's intermediate features without changing the model.

`features` is the public call: the outputs of named modules for a batch. Underneath,
`ModelGuard` puts a model in the state the estimators need (eval mode, no parameter gradients)
and restores exactly what it found, and `FeatureTap` returns the outputs of named modules and
stops the forward pass as soon as the deepest requested one has run, so an early layer costs only
the layers before it. `resolve_layers` is the one check of layer names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import torch
from torch import nn


def resolve_layers(model: nn.Module, layers: str | Sequence[str]) -> list[str]:
    """Check layer names against ``model.named_modules()``; one name or a list, order kept.

    Raises ``KeyError`` for an unknown name (listing the nearest valid ones) and ``ValueError``
    for an empty list, a duplicate or a non-string entry.
    """
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ValueError("layers is empty: give a module name from model.named_modules() or a list of them")
    modules = dict(model.named_modules())
    seen = set()
    for name in layers:
        if not isinstance(name, str):
            raise ValueError(f"layer names must be strings (module names), got {name!r}")
        if name not in modules:
            near = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.4)
            hint = f"nearest valid names: {near}" if near else "see [n for n, _ in model.named_modules()]"
            raise KeyError(f"unknown layer {name!r}; {hint}")
        if name in seen:
            raise ValueError(f"layer {name!r} is given twice")
        seen.add(name)
    return layers


def model_device(model: nn.Module, fallback: torch.device | None = None) -> torch.device:
    """The device of the model's first parameter or buffer (``fallback`` for a stateless model)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return fallback if fallback is not None else torch.device("cpu")


class ModelGuard:
    """Context manager: eval mode and frozen parameters inside, the model's own state after.

    Restores every module's ``training`` flag and every parameter's ``requires_grad``; the
    estimators never write to parameters or buffers (BatchNorm in eval mode does not update its
    running statistics), so the model leaves exactly as it came.
    """

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self) -> nn.Module:
        self._training = [(m, m.training) for m in self.model.modules()]
        self._grad = [(p, p.requires_grad) for p in self.model.parameters()]
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        return self.model

    def __exit__(self, *exc) -> None:
        for m, flag in self._training:
            m.training = flag
        for p, flag in self._grad:
            p.requires_grad_(flag)


def features(model: nn.Module, x: torch.Tensor, layers: str | Sequence[str]) -> dict[str, torch.Tensor]:
    """The outputs of named modules of ``model`` on the batch ``x``, without changing the model.

    The forward runs in eval mode without gradients and stops once the deepest requested module
    has run; the model's training flags and ``requires_grad`` are restored afterwards. The values
    are those of a plain ``model(x)`` (same memory layout, no channels-last shortcut).

    Args:
        model: any ``nn.Module``.
        x: its input batch, e.g. images ``[B, C, H, W]``.
        layers: one module name from ``model.named_modules()`` or a list of them.

    Returns:
        ``{name: output}`` in the order given, each ``[B, ...]`` as the module produced it (the
        first element of a tuple output; a module run several times is read at its first call).

    Raises:
        KeyError: a name that is not a module of ``model`` (with the nearest valid names).

    Example::

        f = deepinfo.features(model, x, ["layer1", "layer3"])
        f["layer3"].shape   # torch.Size([B, 64, 8, 8]) on a CIFAR ResNet
    """
    names = resolve_layers(model, layers)
    with ModelGuard(model), torch.no_grad():
        out = FeatureTap(model, names, channels_last=False)(x)
    return {name: out[name] for name in names}


class _Reached(Exception):
    """Raised from a hook once every requested feature is captured (ends the forward early)."""


class FeatureTap:
    """Outputs of named modules for a batch, computing no further than needed.

    ``tap(x)`` returns ``{name: output}`` with each output as the module produced it
    (``[B, ...]``). A module that runs several times in one forward is read at its first call.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str], channels_last: bool | None = None):
        self.model = model
        self.layers = list(layers)
        self.modules = dict(model.named_modules())
        # On a CPU, convolutions run faster on channels-last images (no reorder into the blocked
        # layout per call); a model that cannot take them (a .view() of its
        # input, say) is caught at the first call and run as it was. None: on a CPU conv net.
        if channels_last is None:
            channels_last = model_device(model).type == "cpu" and any(
                isinstance(m, nn.Conv2d) for m in self.modules.values())
        self.channels_last = channels_last

    def __call__(self, x: torch.Tensor, layers: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        wanted = list(self.layers if layers is None else layers)
        out: dict[str, torch.Tensor] = {}

        def make_hook(name: str):
            def hook(_module, _inputs, output):
                if name in out:
                    return
                if isinstance(output, (tuple, list)):
                    output = output[0]
                if not torch.is_tensor(output):
                    raise TypeError(f"layer {name!r} returned {type(output).__name__}, not a tensor")
                out[name] = output
                if len(out) == len(wanted):
                    raise _Reached

            return hook

        handles = [self.modules[name].register_forward_hook(make_hook(name)) for name in wanted]
        try:
            ran = False
            if self.channels_last and x.dim() == 4:
                try:
                    self.model(x.contiguous(memory_format=torch.channels_last))
                    ran = True
                except RuntimeError:
                    # the model wants its usual layout (a .view() of its input, say): from now on
                    # it gets it, and this batch runs again
                    self.channels_last = False
                    out.clear()
            if not ran:
                self.model(x)
        except _Reached:
            pass
        finally:
            for h in handles:
                h.remove()
        missing = [n for n in wanted if n not in out]
        if missing:
            raise RuntimeError(f"layers {missing} did not run during the forward pass")
        return out

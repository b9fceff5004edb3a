"""Folding eval-mode BatchNorm into the convolution before it, on a private copy of the model.

In eval mode ``bn(conv(x))`` is one affine map of ``conv(x)``, so a convolution with rescaled
weights and a bias computes it in one pass. The estimators run the network hundreds of times per
map, so the separate BatchNorm pass (and its backward in the probe pass) is a cost worth saving
(benchmarks/README.md). The features agree with the model's up to float rounding (~1e-6
relative).

The data flow is read off one real forward pass (module hooks and a ``TorchFunctionMode`` that
sees every tensor operation, functional ones included): a pair is folded only where the
BatchNorm's input is the convolution's output and no operation outside the BatchNorm reads that
output. The copy shares every parameter and buffer with the model except the folded pairs, so it
costs almost no memory, and the model itself is never changed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.overrides import TorchFunctionMode

_PAIRS = ((nn.Conv1d, nn.BatchNorm1d), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d))


def _hooked(module: nn.Module) -> bool:
    tables = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return any(getattr(module, t, None) for t in tables)


class _Reads(TorchFunctionMode):
    """Records which module was running when a watched tensor was read by an operation.

    A tensor is watched from the moment it is registered in ``reads`` (by id; the caller holds a
    reference, so the id is not reused while recording).
    """

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.reads: dict[int, set[str | None]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        where = self.stack[-1] if self.stack else None
        for a in list(args) + list(kwargs.values()):
            for t in a if isinstance(a, (list, tuple)) else (a,):
                if isinstance(t, torch.Tensor) and id(t) in self.reads:
                    self.reads[id(t)].add(where)
        return func(*args, **kwargs)


def foldable_pairs(model: nn.Module, x: torch.Tensor, keep: Iterable[str] = ()) -> list[tuple[str, str]]:
    """``(conv name, batchnorm name)`` pairs whose BatchNorm can be folded into the convolution.

    Read off one forward pass of ``x`` (``[B, ...]``; one image is enough). A pair qualifies
    when each module runs once, the BatchNorm's input is the convolution's output and no
    operation outside the BatchNorm reads it, the BatchNorm uses running statistics, neither
    module carries hooks, and the convolution is not a layer in ``keep`` (its own output would
    change; a kept BatchNorm is fine: its output is the folded convolution's).
    """
    if model.training:
        return []
    names = {id(m): n for n, m in model.named_modules()}
    calls: dict[str, int] = {}
    outputs: dict[str, torch.Tensor] = {}  # conv outputs, held so that their ids stay unique
    fed: dict[str, str] = {}  # batchnorm -> the conv whose output it received
    mode = _Reads()

    def pre(module, inputs):
        name = names[id(module)]
        calls[name] = calls.get(name, 0) + 1
        mode.stack.append(name)
        if isinstance(module, tuple(b for _, b in _PAIRS)) and inputs:
            for conv, out in outputs.items():
                if inputs[0] is out:
                    fed[name] = conv

    def post(module, inputs, output):
        name = mode.stack.pop()
        if isinstance(module, tuple(c for c, _ in _PAIRS)) and isinstance(output, torch.Tensor):
            outputs[name] = output
            mode.reads[id(output)] = set()

    handles = []
    try:
        for m in model.modules():
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
        with torch.no_grad(), mode:
            model(x)
    except Exception:  # noqa: BLE001 -- a model this cannot follow is simply run as it is
        return []
    finally:
        for h in handles:
            h.remove()
    modules = dict(model.named_modules())
    keep = set(keep)
    pairs = []
    for bn_name, conv_name in fed.items():
        conv, bn = modules[conv_name], modules[bn_name]
        if not any(type(conv) is c and type(bn) is b for c, b in _PAIRS):
            continue
        if calls.get(conv_name) != 1 or calls.get(bn_name) != 1 or conv_name in keep:
            continue
        if mode.reads[id(outputs[conv_name])] != {bn_name}:
            continue  # something besides the BatchNorm reads the convolution's output
        if _hooked(conv) or _hooked(bn):
            continue
        if bn.training or conv.training or not bn.track_running_stats or bn.running_mean is None:
            continue  # batch statistics (a BatchNorm in training mode, or one that keeps none)
        pairs.append((conv_name, bn_name))
    return pairs


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def fold_batchnorm(model: nn.Module, x: torch.Tensor, keep: Iterable[str] = ()) -> nn.Module:
    """The model with each foldable eval-mode BatchNorm merged into its convolution.

    Returns ``model`` itself when nothing folds; otherwise a copy whose module names are the
    model's (a folded BatchNorm becomes an ``nn.Identity``, so hooks on its name still read the
    same feature) and which shares all other parameters and buffers with it. ``x`` is an input
    batch to trace (``[B, ...]``). Call it with the model in eval mode and its parameters frozen
    (the estimators' guarded state).
    """
    pairs = foldable_pairs(model, x, keep)
    if not pairs:
        return model
    # new module objects, the same tensors: only the folded pairs get weights of their own
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    try:
        folded = copy.deepcopy(model, memo)
    except Exception:  # noqa: BLE001 -- an attribute that cannot be copied: run the model as it is
        return model
    modules = dict(model.named_modules())
    for conv_name, bn_name in pairs:
        with torch.no_grad():
            fused = fuse_conv_bn_eval(modules[conv_name], modules[bn_name])
        for p in fused.parameters():
            p.requires_grad_(False)
        _set(folded, conv_name, fused)
        _set(folded, bn_name, nn.Identity())
    return folded

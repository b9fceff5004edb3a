"""The rescaling of Sec. 3.4: divide one layer's parameters by k and multiply the next one's by k.

The network computes the same function, so a fair measure of information discarding must not
change; the magnitude of a layer's parameters (and of its gradient) does. Notebook 04 uses it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["rescale_pair", "Prescaled", "mean_abs_ratio"]


#: Modules that commute with a positive rescaling of their input (``m(x / k) = m(x) / k``, k > 0).
_POSITIVELY_HOMOGENEOUS = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                           nn.AdaptiveMaxPool2d, nn.Dropout, nn.Identity, nn.Flatten)


def rescale_pair(model: nn.Module, first: str, second: str, factor: float) -> nn.Module:
    """A copy of ``model`` with ``w_first /= k``, ``b_first /= k``, ``w_second *= k`` (paper Sec. 3.4).

    ``first`` ends layer L and ``second`` is layer L+1, two modules of one ``nn.Sequential``:
    ``first`` is a conv / linear module, or the ``BatchNorm`` that follows layer L's conv (in eval
    mode it is the affine end of the layer: dividing its weight and bias by ``k`` divides the
    layer's output by ``k``, exactly as dividing the weight and bias of the merged conv + BN
    would); ``second`` is a conv / linear module. Every module between them must be positively
    homogeneous (ReLU, max / average pooling, dropout, identity, flatten), so that layer L's output
    and everything up to ``second``'s input are divided by ``k`` while ``second``'s output, and so
    the network's output, are unchanged. The bias of ``second`` is left untouched (scaling it too,
    as the paper's text writes, would change the output). ``model`` itself is not modified; use
    the copy in eval mode.
    """
    if not isinstance(factor, (int, float)) or not factor > 0 or factor != factor or factor == float("inf"):
        raise ValueError(f"factor must be a finite positive number, got {factor!r}")
    modules = dict(model.named_modules())
    for name, kinds in ((first, (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)), (second, (nn.Conv2d, nn.Linear))):
        if name not in modules:
            raise KeyError(f"no module {name!r} in {type(model).__name__}")
        if not isinstance(modules[name], kinds):
            raise ValueError(f"{name!r} is a {type(modules[name]).__name__}; rescale_pair needs "
                             f"{' or '.join(k.__name__ for k in kinds)} there")
    if isinstance(modules[first], (nn.BatchNorm1d, nn.BatchNorm2d)) and modules[first].weight is None:
        raise ValueError(f"{first!r} is a batch norm without affine parameters: there is nothing to rescale")
    parent_a, _, idx_a = first.rpartition(".")
    parent_b, _, idx_b = second.rpartition(".")
    parent = modules.get(parent_a, model if not parent_a else None)
    if parent_a != parent_b or not isinstance(parent, nn.Sequential):
        raise ValueError(f"{first!r} and {second!r} must be children of one nn.Sequential")
    names = [n for n, _ in parent.named_children()]
    ia, ib = names.index(idx_a), names.index(idx_b)
    if ib <= ia:
        raise ValueError(f"{second!r} must come after {first!r}")
    between = [parent[i] for i in range(ia + 1, ib)]
    bad = [type(m).__name__ for m in between if not isinstance(m, _POSITIVELY_HOMOGENEOUS)]
    if bad:
        hint = (" (for a conv followed by batch norm, pass the batch norm as `first`)"
                if any("BatchNorm" in b for b in bad) else "")
        raise ValueError(
            f"between {first!r} and {second!r} sit {bad}, which are not positively homogeneous; "
            f"only {[c.__name__ for c in _POSITIVELY_HOMOGENEOUS]} keep the output unchanged{hint}"
        )
    out = copy.deepcopy(model)
    mods = dict(out.named_modules())
    with torch.no_grad():
        mods[first].weight.div_(factor)
        if mods[first].bias is not None:
            mods[first].bias.div_(factor)
        mods[second].weight.mul_(factor)
    return out


class Prescaled(nn.Module):
    """``g'(f) = g(k f)``: the decoder ``g`` of a layer, for the rescaled layer's output ``f / k``."""

    def __init__(self, decoder: nn.Module, factor: float):
        super().__init__()
        self.decoder, self.factor = decoder, factor

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.decoder(f * self.factor)


def mean_abs_ratio(before: torch.Tensor, after: torch.Tensor):
    """Per image ``[B]``, ``mean |after| / mean |before|`` of two maps ``[B, ...]`` (float64 numpy;
    NaN where the map is zero before)."""
    import numpy as np

    m0 = before.flatten(1).abs().mean(1).double().numpy()
    m1 = after.flatten(1).abs().mean(1).double().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m0 > 0, m1 / m0, np.nan)

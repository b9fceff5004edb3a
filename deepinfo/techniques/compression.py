"""Network compression by magnitude pruning (Han et al., 2016), with retraining under fixed masks.

The rule (Han et al., "Learning both weights and connections", Sec. 3; "Deep compression"):
in every prunable layer ``l`` (``nn.Conv2d`` and ``nn.Linear``), a weight is removed when

    |w| < s * std(W_l)

where ``std(W_l)`` is the standard deviation of all entries of that layer's current weight
tensor (entries zeroed by an earlier stage included, as in Distiller's sensitivity pruner) and
``s`` is one quality parameter shared by all conv layers (``s_conv``) and another shared by all
fully-connected layers (``s_fc``). Pruning is applied with ``torch.nn.utils.prune`` (the weight
becomes ``weight_orig * weight_mask``), so retraining with :func:`deepinfo.toolkit.training.train` keeps
the removed weights exactly at zero while the others learn.

What is counted: the *kept fraction* is the number of non-zero mask entries over the number of
weight entries of all ``nn.Conv2d`` and ``nn.Linear`` modules of the network (the first conv and
the logits layer included). Biases, batch-norm parameters and the normalization are neither
pruned nor counted; in VGG-16 they are < 0.1 % of the parameters, so the fraction is within
rounding of the paper's "fraction of the parameters".

Han et al. prune iteratively: each stage starts from the previous pruned and retrained network
and prunes it further (:func:`compress` does that for a list of targets; the cached version the
notebooks use is :func:`deepinfo.book.experiments.compressed_models`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune
from torch.utils.data import Dataset

from deepinfo.toolkit.training import History, Recipe, evaluate, train

__all__ = [
    "PRUNABLE",
    "PruneResult",
    "Stage",
    "compress",
    "find_thresholds",
    "kept_fraction",
    "make_permanent",
    "next_stage",
    "prunable_layers",
    "prune_magnitude",
    "prune_to",
    "threshold_masks",
]

#: Module types whose ``weight`` is pruned (and counted).
PRUNABLE = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class PruneResult:
    """What one pruning step did.

    ``kept`` / ``kept_conv`` / ``kept_fc``: fraction of the (conv + FC / conv / FC) weight entries
    whose mask is 1; ``per_layer``: module name -> kept fraction of that layer.
    """

    s_conv: float
    s_fc: float
    kept: float
    kept_conv: float
    kept_fc: float
    per_layer: dict[str, float] = field(default_factory=dict)


@dataclass
class Stage:
    """One stage of :func:`compress`: the target, the pruning, the retrained net and its accuracy."""

    target: float
    pruning: PruneResult
    model: nn.Module  # pruned and retrained, pruning made permanent (zeros in ``weight``)
    history: History
    accuracy: float | None  # on ``test_set`` when given, else None


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[(name, module)]`` of every ``nn.Conv2d`` / ``nn.Linear`` of ``model``, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE)]


def _kind(module: nn.Module) -> str:
    return "conv" if isinstance(module, nn.Conv2d) else "fc"


def _weight(module: nn.Module) -> torch.Tensor:
    # the effective weight: with a pruning re-parametrisation, weight_orig * weight_mask
    return module.weight.detach()


def _check_s(s: float, what: str) -> float:
    if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s) or s < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {s!r}")
    return float(s)


def threshold_masks(model: nn.Module, s_conv: float, s_fc: float) -> dict[str, torch.Tensor]:
    """The Han et al. masks: ``mask = |w| >= s * std(w)`` per prunable layer (1 = kept).

    ``s_conv`` applies to every ``nn.Conv2d``, ``s_fc`` to every ``nn.Linear``; ``std`` is that
    layer's weight standard deviation (population, over all entries). Returns module name ->
    float mask of the weight's shape. The model is not changed.
    """
    s = {"conv": _check_s(s_conv, "s_conv"), "fc": _check_s(s_fc, "s_fc")}
    layers = prunable_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d / nn.Linear layer to prune")
    masks = {}
    for name, m in layers:
        w = _weight(m)
        std = float(w.float().std(unbiased=False))
        masks[name] = (w.abs() >= s[_kind(m)] * std).to(w.dtype)
    return masks


def _ratios(model: nn.Module, kind: str) -> list[torch.Tensor]:
    # |w| / std(w) per layer of one kind: a weight is kept by s exactly when its ratio >= s
    out = []
    for _, m in prunable_layers(model):
        if _kind(m) == kind:
            w = _weight(m).float()
            std = float(w.std(unbiased=False))
            out.append((w.abs() / std).flatten() if std > 0 else torch.zeros(w.numel()))
    return out


def _s_for_count(ratios: list[torch.Tensor], n_keep: int) -> float:
    """The s that keeps ``n_keep`` entries (ties aside): the n_keep-th largest ratio."""
    total = sum(r.numel() for r in ratios)
    if n_keep >= total:
        return 0.0
    if n_keep <= 0:
        return math.inf
    allr = torch.cat([r.cpu() for r in ratios])
    kth = float(torch.kthvalue(allr, total - n_keep + 1).values)  # the n_keep-th largest
    nxt = float(torch.kthvalue(allr, total - n_keep).values)  # the (n_keep+1)-th largest
    # midway between them, so that rounding of |w| / std cannot flip either one
    return (kth + nxt) / 2 if kth > nxt else kth


def find_thresholds(model: nn.Module, keep: float, *, conv_keep: float | None = None) -> tuple[float, float]:
    """``(s_conv, s_fc)`` so that :func:`threshold_masks` keeps the fraction ``keep`` of the weights.

    Two parameters and one target leave a choice: by default the conv weights and the FC
    weights each keep the fraction ``keep`` (so the whole net does too). With ``conv_keep`` the
    conv weights keep ``conv_keep`` and ``s_fc`` is chosen so that the total is ``keep`` (Han et
    al. pruned VGG-16's FC layers much harder than its conv layers). Counted: weight entries of
    ``nn.Conv2d`` and ``nn.Linear`` modules (see the module docstring). Ties of ``|w| / std`` at
    the threshold can keep a few more entries than asked.

    Raises:
        ValueError: ``keep`` / ``conv_keep`` outside (0, 1], a net without conv or FC layers when
            one of them must be pruned, or a ``conv_keep`` that makes ``keep`` unreachable.
    """
    for value, what in ((keep, "keep"), (conv_keep, "conv_keep")):
        if value is None and what == "conv_keep":
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 1:
            raise ValueError(f"{what} must be a fraction in (0, 1], got {value!r}")
    conv, fc = _ratios(model, "conv"), _ratios(model, "fc")
    n_conv, n_fc = sum(r.numel() for r in conv), sum(r.numel() for r in fc)
    if n_conv + n_fc == 0:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d / nn.Linear layer to prune")
    if conv_keep is None:
        want_conv, want_fc = round(keep * n_conv), round(keep * n_fc)
    else:
        if n_conv == 0:
            raise ValueError("conv_keep was given but the model has no nn.Conv2d layer")
        want_conv = round(conv_keep * n_conv)
        want_fc = round(keep * (n_conv + n_fc)) - want_conv
        if not 0 <= want_fc <= n_fc:
            lo = (conv_keep * n_conv) / (n_conv + n_fc)
            hi = (conv_keep * n_conv + n_fc) / (n_conv + n_fc)
            raise ValueError(f"with conv_keep={conv_keep} the total kept fraction can only be in "
                             f"[{lo:.4f}, {hi:.4f}], not keep={keep}")
    s_conv = _s_for_count(conv, want_conv) if n_conv else 0.0
    s_fc = _s_for_count(fc, want_fc) if n_fc else 0.0
    return s_conv, s_fc


def _counts(model: nn.Module) -> dict[str, tuple[int, int, str]]:
    # name -> (kept entries, all entries, kind), kept = non-zero mask (or non-zero weight if unpruned)
    out = {}
    for name, m in prunable_layers(model):
        mask = getattr(m, "weight_mask", None)
        kept = int((mask != 0).sum()) if mask is not None else int((_weight(m) != 0).sum())
        out[name] = (kept, m.weight.numel(), _kind(m))
    return out


def kept_fraction(model: nn.Module, kind: str | None = None) -> float:
    """Fraction of the conv + FC weight entries that are kept (mask 1, or non-zero when unpruned).

    ``kind``: ``"conv"`` or ``"fc"`` for one group only, ``None`` for both. NaN when the group is empty.
    """
    if kind not in (None, "conv", "fc"):
        raise ValueError(f"kind must be None, 'conv' or 'fc', got {kind!r}")
    counts = [c for c in _counts(model).values() if kind is None or c[2] == kind]
    total = sum(c[1] for c in counts)
    return sum(c[0] for c in counts) / total if total else math.nan


def prune_magnitude(model: nn.Module, s_conv: float, s_fc: float) -> PruneResult:
    """Prune ``model`` in place with :func:`threshold_masks` via ``torch.nn.utils.prune``.

    Each conv / FC module gets the re-parametrisation ``weight = weight_orig * weight_mask``
    (an existing mask is combined with the new one: pruned weights stay pruned). Returns the
    achieved fractions.
    """
    masks = threshold_masks(model, s_conv, s_fc)
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        torch_prune.custom_from_mask(modules[name], "weight", mask)
    return _result(model, s_conv, s_fc)


def _result(model: nn.Module, s_conv: float, s_fc: float) -> PruneResult:
    counts = _counts(model)
    return PruneResult(float(s_conv), float(s_fc), kept_fraction(model), kept_fraction(model, "conv"),
                       kept_fraction(model, "fc"), {n: k / t for n, (k, t, _) in counts.items()})


def prune_to(model: nn.Module, keep: float, *, conv_keep: float | None = None) -> PruneResult:
    """:func:`find_thresholds` then :func:`prune_magnitude`: prune ``model`` in place to ``keep``."""
    s_conv, s_fc = find_thresholds(model, keep, conv_keep=conv_keep)
    return prune_magnitude(model, s_conv, s_fc)


def make_permanent(model: nn.Module) -> nn.Module:
    """Remove the pruning re-parametrisation (``prune.remove``): ``weight`` keeps its zeros; in place."""
    for _, m in prunable_layers(model):
        if torch_prune.is_pruned(m) and hasattr(m, "weight_mask"):
            torch_prune.remove(m, "weight")
    return model


def next_stage(model: nn.Module, keep: float, *, conv_keep: float | None = None) -> tuple[nn.Module, PruneResult]:
    """One step of Han et al.'s iterative pruning, before its retraining: a copy of ``model`` with
    its earlier pruning made permanent, pruned further to ``keep`` of the conv + FC weights (the
    masks stay attached, so retraining keeps the removed weights at 0). ``model`` is unchanged.
    :func:`compress` and the book's cached chain (``deepinfo.book.experiments``) both step with it."""
    net = make_permanent(copy.deepcopy(model))
    return net, prune_to(net, keep, conv_keep=conv_keep)


def compress(model: nn.Module, train_set: Dataset, targets: Sequence[float], recipe: Recipe, *,
             conv_keep: Sequence[float] | None = None, seed: int = 0, test_set: Dataset | None = None,
             device: str | torch.device | None = None, progress: bool = True) -> list[Stage]:
    """Han et al.'s iterative pruning: for each target, prune further, then retrain with masks held.

    Stage ``i`` starts from stage ``i-1``'s pruned and retrained network (stage 0 from a copy of
    ``model``, which is left unchanged), finds ``(s_conv, s_fc)`` reaching ``targets[i]`` (a
    fraction of the conv + FC weights of the whole net), prunes, retrains with ``recipe`` on
    ``train_set`` (the masks are fixed: removed weights stay exactly 0), then makes the pruning
    permanent. ``targets`` must decrease within (0, 1); ``conv_keep`` (optional, one per target)
    is passed to :func:`find_thresholds`. Returns one :class:`Stage` per target; accuracy on
    ``test_set`` when given.
    """
    targets = list(targets)
    if not targets or any(not isinstance(t, (int, float)) or not 0 < t < 1 for t in targets) \
            or targets != sorted(set(targets), reverse=True):
        raise ValueError(f"targets must be strictly decreasing fractions in (0, 1), got {targets}")
    if conv_keep is not None and len(conv_keep) != len(targets):
        raise ValueError(f"conv_keep needs one value per target ({len(targets)}), got {len(conv_keep)}")
    stages = []
    current = model
    for i, target in enumerate(targets):
        net, pruning = next_stage(current, target, conv_keep=None if conv_keep is None else conv_keep[i])
        history = train(net, train_set, recipe, seed=seed, device=device, progress=progress)
        make_permanent(net.eval())
        acc = float(evaluate(net, test_set)) if test_set is not None else None
        stages.append(Stage(target, pruning, net, history, acc))
        current = net
    return stages

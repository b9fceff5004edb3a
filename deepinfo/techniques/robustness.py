"""Adversarial robustness as the distance to the decision boundary (paper Table 3, App. F.2).

For an image ``x`` with predicted class ``i`` and a wrong class ``j``, the distance is the L2 norm
(in pixel units: images in [0, 1], the model owns its normalization) of the smallest
perturbation ``delta`` that brings ``x + delta`` onto the pairwise decision boundary
``z_j(x + delta) = z_i(x + delta)`` (``z`` = logits). The paper attacks each image towards its
``k`` most probable wrong classes (k = 20) and averages the L2 norms over targets and images.

The search (:func:`minimal_perturbation`) is targeted DeepFool (Moosavi-Dezfooli et al., 2016):
linearize the gap ``g(x) = z_j(x) - z_i(x)`` (negative at the start), step to where the linear
model reaches ``g = 0`` (``r = -g * grad / ||grad||^2``), accumulate the steps, and repeat from
``x + (1 + overshoot) * r_total`` until that point has crossed (``g >= 0``) or ``max_steps``
are done. The overshoot only pushes the iterate across the boundary so the loop can stop; the
distance reported is ``||r_total||`` without it (exact for a linear model in one step).
:func:`boundary_scale` bisects the scale ``t`` of the found direction for ``g(x + t r) = 0``:
the two agree up to the curvature of the net between the last linearization and the boundary.

Pixel space and clipping: perturbations are NOT clipped to [0, 1]. The distance is a property
of the function around ``x`` (as in the paper and DeepFool), not of valid images; a box
constraint would make it a different, harder problem. ``x + delta`` can therefore leave [0, 1]
by a little; :class:`Robustness` records how many entries do (``out_of_range``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from deepinfo._images import check_images

__all__ = ["Robustness", "boundary_scale", "minimal_perturbation", "robustness", "top_wrong_classes"]


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    z = model(x)
    if z.dim() != 2:
        raise ValueError(f"the model must return logits [B, K], got shape {tuple(z.shape)}")
    return z


def _gap_and_grad(model, x, source, target):
    x = x.detach().requires_grad_(True)
    z = _logits(model, x)
    rows = torch.arange(x.shape[0], device=x.device)
    gap = z[rows, target] - z[rows, source]  # [B]
    # images are independent in eval mode, so the gradient of the sum is the per-image gradient
    (grad,) = torch.autograd.grad(gap.sum(), x)
    return gap.detach(), grad.detach()


def _check_classes(source, target, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    source = torch.as_tensor(source, device=device).long().reshape(-1)
    target = torch.as_tensor(target, device=device).long().reshape(-1)
    if source.numel() != n or target.numel() != n:
        raise ValueError(f"source and target need one class per image ({n}), got {source.numel()} and {target.numel()}")
    if bool((source == target).any()):
        raise ValueError("target class equals the source class for some image: there is no boundary to reach")
    return source, target


def minimal_perturbation(model: nn.Module, x: torch.Tensor, source, target, *, max_steps: int = 50,
                         overshoot: float = 0.02) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Targeted DeepFool towards the boundary ``z_target = z_source``, batched over images.

    Args:
        model: classifier taking pixel-space images, returning logits ``[B, K]``; used in eval
            mode and put back in its mode.
        x: ``[B, C, H, W]`` images (pixel space, normally in [0, 1]).
        source, target: ``[B]`` class indices per image (usually the predicted class and a wrong one).
        max_steps: linearization steps at most.
        overshoot: the iterate is tested at ``x + (1 + overshoot) r`` (only to cross the boundary).
    Returns:
        ``(delta [B, C, H, W], distance [B], reached [B] bool)``: the perturbation ``r_total``
        (no overshoot), its L2 norm in pixel units, and whether the boundary was crossed within
        ``max_steps``. ``distance`` is 0 where ``z_target >= z_source`` already holds at ``x``,
        and NaN where the boundary was not reached (or the gradient vanished).
    """
    check_images(x, "x", pixel_range="ignore")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
    if not overshoot >= 0 or not math.isfinite(overshoot):
        raise ValueError(f"overshoot must be a finite number >= 0, got {overshoot!r}")
    B = x.shape[0]
    source, target = _check_classes(source, target, B, x.device)
    was_training = model.training
    model.eval()
    try:
        r = torch.zeros_like(x)
        gap, grad = _gap_and_grad(model, x, source, target)
        reached = gap >= 0
        stuck = torch.zeros_like(reached)
        for _ in range(max_steps):
            active = ~(reached | stuck)
            if not bool(active.any()):
                break
            norm2 = grad.flatten(1).pow(2).sum(1)
            stuck |= active & (norm2 <= 0)
            active &= ~stuck
            step = (-gap / norm2.clamp_min(1e-30)).clamp_min(0) * active  # only unreached images move
            r = r + step.view(-1, 1, 1, 1) * grad
            gap_new, grad_new = _gap_and_grad(model, x + (1 + overshoot) * r, source, target)
            keep = active.view(-1, 1, 1, 1)
            reached = reached | (active & (gap_new >= 0))
            # the next linearization is at the overshot point, as DeepFool does
            gap = torch.where(active, gap_new, gap)
            grad = torch.where(keep, grad_new, grad)
    finally:
        model.train(was_training)
    distance = r.flatten(1).norm(dim=1)
    distance = torch.where(reached, distance, torch.full_like(distance, math.nan))
    return r.detach(), distance.detach(), reached


@torch.no_grad()
def boundary_scale(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, source, target, *,
                   t_max: float = 2.0, iters: int = 60) -> torch.Tensor:
    """Bisection of ``t`` in ``[0, t_max]`` with ``z_target(x + t delta) = z_source(x + t delta)``.

    Assumes the gap ``z_target - z_source`` is negative at ``t = 0`` and non-negative at
    ``t_max``; returns ``t [B]`` (so the boundary distance along ``delta`` is
    ``t * ||delta||``), 0 where the gap is already >= 0 at ``x``, NaN where it is still negative
    at ``t_max`` (no crossing to bracket).
    """
    check_images(x, "x", pixel_range="ignore")
    if delta.shape != x.shape:
        raise ValueError(f"delta must have the shape of x {tuple(x.shape)}, got {tuple(delta.shape)}")
    if not t_max > 0:
        raise ValueError(f"t_max must be > 0, got {t_max!r}")
    B = x.shape[0]
    source, target = _check_classes(source, target, B, x.device)
    rows = torch.arange(B, device=x.device)
    was_training = model.training
    model.eval()
    try:
        def gap(t):
            z = _logits(model, x + t.view(-1, 1, 1, 1) * delta)
            return z[rows, target] - z[rows, source]

        lo = torch.zeros(B, dtype=x.dtype, device=x.device)
        hi = torch.full_like(lo, float(t_max))
        at_zero = gap(lo) >= 0
        no_cross = gap(hi) < 0
        for _ in range(iters):
            mid = (lo + hi) / 2
            crossed = gap(mid) >= 0
            hi = torch.where(crossed, mid, hi)
            lo = torch.where(crossed, lo, mid)
    finally:
        model.train(was_training)
    t = (lo + hi) / 2
    t = torch.where(at_zero, torch.zeros_like(t), t)
    return torch.where(no_cross & ~at_zero, torch.full_like(t, math.nan), t)


@torch.no_grad()
def top_wrong_classes(model: nn.Module, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(predicted [B], wrong [B, k])``: the arg-max class and the ``k`` most probable other classes."""
    check_images(x, "x", pixel_range="ignore")
    was_training = model.training
    model.eval()
    try:
        z = _logits(model, x)
    finally:
        model.train(was_training)
    K = z.shape[1]
    if not isinstance(k, int) or not 1 <= k < K:
        raise ValueError(f"k must be an int in 1..{K - 1} (the net has {K} classes), got {k!r}")
    order = z.argsort(dim=1, descending=True)
    return order[:, 0], order[:, 1:k + 1]


@dataclass
class Robustness:
    """Result of :func:`robustness` for ``B`` images and ``k`` targets each.

    ``distance [B, k]``: L2 norm (pixel units) of the minimal perturbation towards each target,
    NaN where the search did not reach the boundary; ``predicted [B]``, ``targets [B, k]``
    (most probable wrong class first); ``reached [B, k]``; ``out_of_range [B, k]``: the number of
    entries of ``x + delta`` outside [0, 1] (perturbations are not clipped).
    """

    distance: torch.Tensor
    predicted: torch.Tensor
    targets: torch.Tensor
    reached: torch.Tensor
    out_of_range: torch.Tensor

    @property
    def mean(self) -> float:
        """Mean distance over images and targets that reached the boundary (Table 3's number)."""
        d = self.distance[self.reached]
        return float(d.mean()) if d.numel() else math.nan

    @property
    def reached_fraction(self) -> float:
        return float(self.reached.float().mean())


def robustness(model: nn.Module, x: torch.Tensor, top_k: int, *, max_steps: int = 50,
               overshoot: float = 0.02, batch_size: int = 64, progress: bool = False) -> Robustness:
    """Minimal L2 perturbations of every image towards its ``top_k`` most probable wrong classes.

    The source class is the model's prediction (not the label): the boundary measured is the one
    of the decision the model actually makes. All (image, target) pairs are searched in batches
    of ``batch_size`` with :func:`minimal_perturbation`; the result of a pair does not depend on
    the others in its batch. ``top_k`` is capped at the number of classes - 1.
    """
    from tqdm.auto import tqdm

    check_images(x, "x", pixel_range="ignore")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    with torch.no_grad():
        was_training = model.training
        n_classes = _logits(model.eval(), x[:1]).shape[1]
        model.train(was_training)
    predicted, targets = top_wrong_classes(model, x, min(top_k, n_classes - 1))
    B, k = targets.shape
    img = torch.arange(B, device=x.device).repeat_interleave(k)
    src, tgt = predicted[img], targets.reshape(-1)
    distance = torch.empty(B * k, dtype=x.dtype, device=x.device)
    reached = torch.empty(B * k, dtype=torch.bool, device=x.device)
    out = torch.empty(B * k, dtype=torch.long, device=x.device)
    for start in tqdm(range(0, B * k, batch_size), desc="minimal perturbations", disable=not progress,
                      leave=False):
        sl = slice(start, start + batch_size)
        xb = x[img[sl]]
        delta, d, ok = minimal_perturbation(model, xb, src[sl], tgt[sl], max_steps=max_steps, overshoot=overshoot)
        distance[sl], reached[sl] = d, ok
        moved = xb + delta
        out[sl] = ((moved < 0) | (moved > 1)).flatten(1).sum(1)
    return Robustness(distance.view(B, k), predicted, targets, reached.view(B, k), out.view(B, k))

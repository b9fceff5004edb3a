"""Learning sigma under the constraint ``E||f' - f||^2 = beta * delta_f^2`` (both methods' loops).

The math lives in ``estimators.py``; this module holds the sampling and the optimisation loop:
Adam on ``log sigma`` for the Lagrangian, the multiplier adapted per (layer, image) towards a
ratio of 1, and a final projection onto the constraint by a common scale of sigma (exact for a
locally linear layer, a small correction otherwise; each step judged on fresh noise). Noise is
drawn per image from its own generator, so an image's map does not depend on the other images
of the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from deepinfo._features import FeatureTap
from deepinfo._grid import Grid
from deepinfo._jacobian import rng


@dataclass
class Sampler:
    """Perturbed forward passes ``h(x + sigma * eps)`` for one layer and a batch of images."""

    tap: FeatureTap
    layer: str
    x: torch.Tensor  # [B, C, H, W]
    f: torch.Tensor  # [B, m] clean feature, flattened
    grid: Grid
    gens: list[torch.Generator]
    jacobian: torch.Tensor | None = None  # [B, m, C*H*W] when known exactly (small features)

    def noise(self, draws: int) -> torch.Tensor:
        C, H, W = self.x.shape[1:]
        eps = [torch.randn(draws, C, H, W, generator=g, device=self.x.device, dtype=self.x.dtype) for g in self.gens]
        return torch.stack(eps, 1)  # [D, B, C, H, W]

    def subset(self, idx: torch.Tensor) -> "Sampler":
        """The same sampler for the images ``idx`` only (their own generators: same noise)."""
        keep = idx.tolist()
        return Sampler(self.tap, self.layer, self.x[idx], self.f[idx], self.grid, [self.gens[i] for i in keep],
                       None if self.jacobian is None else self.jacobian[idx])

    def features(self, log_sigma: torch.Tensor, draws: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Perturbed features ``[D, B, *feature_shape]`` and unbiased estimates ``[D, B]`` of
        ``E||f' - f||^2``.

        When the Jacobian is known, the linear part's exact expectation replaces its sampled
        value (a control variate): ``||f'-f||^2 - ||J dx||^2 + sum_u sigma_u^2 ||J_u||^2``. Same
        mean, and for a small, nearly linear feature (logits) almost no variance.
        """
        sigma_pix = self.grid.to_pixels(log_sigma.exp())  # [B, 1, H, W]
        dx = sigma_pix.unsqueeze(0) * self.noise(draws)
        xp = self.x.unsqueeze(0) + dx
        D, B = xp.shape[:2]
        fp = self.tap(xp.reshape(D * B, *xp.shape[2:]), [self.layer])[self.layer]
        fp = fp.reshape(D, B, *fp.shape[1:])
        # the clean feature in the perturbed one's memory layout (channels-last on a CPU): a
        # flat difference would first copy every perturbed feature into the default layout
        f = self.f.reshape(B, *fp.shape[2:])
        if fp.dim() == 5 and fp[0].is_contiguous(memory_format=torch.channels_last):
            f = f.contiguous(memory_format=torch.channels_last)
        dist = (fp - f.unsqueeze(0)).pow(2).sum(tuple(range(2, fp.dim())))
        if self.jacobian is not None:
            J = self.jacobian
            linear = torch.einsum("bmn,dbn->dbm", J, dx.reshape(D, B, -1)).pow(2).sum(-1)
            var = sigma_pix.pow(2).expand_as(self.x).reshape(B, -1)
            dist = dist - linear + (var * J.pow(2).sum(1)).sum(-1)
        return fp, dist


MIN_SE_DRAWS = 32  # fewer draws estimate the spread too loosely to stop on a precision target


def measure_ratio(
    sampler: Sampler,
    log_sigma: torch.Tensor,
    norm: torch.Tensor,
    draws: int,
    max_draws: int,
    rel_se: float = 0.01,
    per_draw: Callable[[torch.Tensor], torch.Tensor] | None = None,
    min_draws: int = 0,
    fixed_n: torch.Tensor | None = None,
    off_tol: float | None = None,
):
    """Sample ``r = E||f'-f||^2 / norm`` per image, in rounds of ``draws``, until the relative
    standard error of ``r`` is below ``rel_se`` (at least ``min_draws`` and ``MIN_SE_DRAWS``, at
    most ``max_draws``).

    Each image stops at its own count and uses only its own first draws, so its result does not
    depend on the other images of the batch; ``fixed_n [B]`` imposes the counts instead.
    ``off_tol``: when a rescaling follows, an image also stops once the verdict of
    :func:`off_constraint` is settled: on the constraint (within ``off_tol / 2`` of 1 with its
    95 % interval, ``|r - 1| + 2 se``, inside ``off_tol``; after ``MIN_SE_DRAWS``, so that ``se``
    itself is estimated), or off (beyond ``off_tol`` by three standard errors, from the first round
    on; beyond ``off_tol / 2`` by three after ``MIN_SE_DRAWS``): such a ratio is rescaled and
    measured again anyway, so its precise value would be wasted work (never used for a reported
    value; stopping one that was in fact within the band costs one more rescaling step, never a
    wrong acceptance).
    ``per_draw(fp, x)`` optionally maps each round's perturbed features ``[D, b, ...]`` of the
    images ``x [b, C, H, W]`` to a quantity ``[D, b, ...]`` whose mean over each image's draws is
    returned too (used for RU).
    Returns ``(r [B], se [B], extra_mean or None, n_draws [B])``.
    """
    B = norm.shape[0]
    stop = fixed_n.clone() if fixed_n is not None else torch.zeros(B, dtype=torch.long, device=norm.device)
    vals, extras, n = [], [], 0
    everyone = torch.arange(B, device=norm.device)
    with torch.no_grad():
        while True:
            # only the images still drawing go through the network (the others' values past their
            # count are never used; each image has its own generator, so its draws are the same)
            act = everyone[(stop == 0) | (stop > n)]
            smp = sampler if len(act) == B else sampler.subset(act)
            fp, dist = smp.features(log_sigma[act], draws)
            val = norm.new_zeros(draws, B)
            val[:, act] = dist / norm[act]
            vals.append(val)
            if per_draw is not None:
                e = per_draw(fp, smp.x).sum(0)
                full = e.new_zeros(B, *e.shape[1:])
                full[act] = e
                extras.append(full)
            n += draws
            if fixed_n is None:
                allv = torch.cat(vals)
                r, se = allv.mean(0), allv.std(0) / math.sqrt(n)
                # a value is only reported once its standard error rests on enough draws itself
                precise = n >= max(min_draws, MIN_SE_DRAWS)
                done = (n >= max_draws) | (precise & (se <= rel_se * r.clamp_min(1e-30)))
                if off_tol is not None:
                    gap = (r - 1).abs()
                    off = (n >= min_draws) & (gap > off_tol + 3 * se)
                    off = off | (precise & (gap > off_tol / 2 + 3 * se))
                    on = precise & (gap <= off_tol / 2) & (gap + 2 * se <= off_tol)
                    done = done | off | on
                stop = torch.where((stop == 0) & done, torch.full_like(stop, n), stop)
            if bool((stop > 0).all()) and n >= int(stop.max()):
                break
    allv = torch.cat(vals)  # [n, B]
    used = (torch.arange(n, device=allv.device)[:, None] < stop[None, :]).to(allv.dtype)
    cnt = stop.to(allv.dtype)
    r = (allv * used).sum(0) / cnt
    se = torch.sqrt(((allv - r).pow(2) * used).sum(0) / (cnt - 1).clamp_min(1) / cnt)
    extra = None
    if extras:  # per-image prefix of the per-round sums (counts are whole rounds)
        cum = torch.stack(extras).cumsum(0)  # [rounds, B, ...]
        pick = (stop // draws - 1).clamp_min(0)
        extra = cum[pick, torch.arange(B, device=cum.device)] / cnt.reshape(B, *[1] * (cum.dim() - 2))
    return r, se, extra, stop


def lagrangian_descent(
    sampler: Sampler,
    log_sigma0: torch.Tensor,
    delta_f2: torch.Tensor,
    beta: float,
    entropy: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    steps: int,
    draws: int,
    lr: float,
    log_sigma_max: float,
    dual_rate: float = 0.1,
):
    """Minimise ``E||f'-f||^2 / delta_f^2 - lambda * entropy`` over ``log sigma`` (Eq. 3 / 7).

    ``entropy(log_sigma [B, G], fp [D, B, ...]) -> [B]`` is the mean pixel-wise entropy term.
    lambda starts at ``2 * beta`` (the exact optimum for a linear layer) and follows
    ``lambda <- lambda * r_avg^-dual_rate`` so that the achieved ratio ``r`` approaches 1.
    Returns ``(log_sigma [B, G], lambda [B], ratio trace [steps, B])``.
    """
    s = log_sigma0.detach().clone().requires_grad_(True)
    B = s.shape[0]
    lam = torch.full((B,), 2 * beta, device=s.device, dtype=s.dtype)
    opt = torch.optim.Adam([s], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    r_avg = None
    trace = []
    for _ in range(steps):
        with torch.enable_grad():
            fp, dist = sampler.features(s, draws)
            loss = (dist.mean(0) / delta_f2 - lam * entropy(s, fp)).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            s.clamp_(max=log_sigma_max)
            r = dist.detach().mean(0) / (beta * delta_f2)
            r_avg = r if r_avg is None else 0.9 * r_avg + 0.1 * r
            lam *= r_avg.clamp_min(1e-6).pow(-dual_rate)
            trace.append(r)
    return s.detach(), lam, torch.stack(trace) if trace else None


def rescale_to_constraint(
    measure: Callable[[torch.Tensor, int, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]],
    log_sigma: torch.Tensor,
    first: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    tol: float,
    log_sigma_max: float,
    iterations: int = 8,
    hold_capped: bool = True,
):
    """Bring each image's achieved ratio within ``tol`` of 1 by a common scale of its sigma.

    A secant search on ``log r`` against the common shift ``c`` of ``log sigma``: for a locally
    linear layer ``r`` grows as ``sigma^2`` (slope 2 in log-log), so the first step,
    ``c = -0.5 log r``, lands on the constraint; a real network can be much steeper (a trained
    net's logits: slope 3-4, where slope-2 steps overshoot and oscillate), so later steps use the
    slope fitted (least squares, log-log) to all points measured so far, and bisection once the
    root is bracketed and the secant step would leave the bracket. Every step is judged on a fresh measurement
    of the images still off (``measure(log_sigma[idx], step, idx) -> (r, se, extra)`` for those
    images ``idx``, new noise each step), which is also what is
    reported. An image is done when its ratio is within ``tol / 2`` of 1, or within ``tol`` and
    within two standard errors of 1 (closer than the measurement can tell). ``first`` is the
    measurement at ``log_sigma``; images already done keep it and their sigma. Cells at the cap
    keep it (the linearised layer ignores them) unless ``hold_capped`` is False. Returns
    ``(log_sigma [B, G], r [B], se [B], extra or None)``.
    """
    r, se, extra = first
    off = off_constraint(r, se, tol)
    # cells at the cap stay there: the layer ignores them, the budget belongs to the others
    # (unless hold_capped is False: then every cell takes the common scale)
    free = log_sigma < log_sigma_max - 1e-6 if hold_capped else torch.ones_like(log_sigma, dtype=torch.bool)
    c = torch.zeros_like(r)
    slope = torch.full_like(r, 2.0)
    log_r = torch.log(r.clamp_min(1e-12))
    cs, logs = [c], [log_r]  # every point measured, per image
    # the shifts known to give r < 1 (lo) and r > 1 (hi): once both exist, a secant step that
    # leaves the bracket is replaced by bisection (very steep, kinked layers otherwise oscillate)
    lo = torch.where(log_r < 0, c, torch.full_like(c, -math.inf))
    hi = torch.where(log_r > 0, c, torch.full_like(c, math.inf))
    s = log_sigma
    for step in range(iterations):
        if not bool(off.any()):
            break
        prop = c - log_r / slope
        bracketed = torch.isfinite(lo) & torch.isfinite(hi)
        prop = torch.where(bracketed & ~((prop > lo) & (prop < hi)), 0.5 * (lo + hi), prop)
        c_new = torch.where(off, prop, c)
        s = torch.where(free, log_sigma + c_new[:, None], log_sigma).clamp(max=log_sigma_max)
        idx = off.nonzero().flatten()
        r_i, se_i, extra_i = measure(s[idx], step, idx)
        # the new values where off, the kept ones elsewhere (where c_new = c too)
        r, se, extra = _put(r, idx, r_i), _put(se, idx, se_i), _put(extra, idx, extra_i)
        c, log_r = c_new, torch.log(r.clamp_min(1e-12))
        lo = torch.where(off & (log_r < 0), torch.maximum(lo, c), lo)
        hi = torch.where(off & (log_r > 0), torch.minimum(hi, c), hi)
        cs.append(c), logs.append(log_r)
        # the slope fitted to all points so far: short steps alone would give mostly noise
        C, Lr = torch.stack(cs), torch.stack(logs)
        Cc = C - C.mean(0)
        var = Cc.pow(2).sum(0)
        fitted = (Cc * (Lr - Lr.mean(0))).sum(0) / var.clamp_min(1e-12)
        slope = torch.where(off & (var > 0.01), fitted.clamp(0.5, 10.0), slope)
        off = off & off_constraint(r, se, tol)
    return torch.where(free, log_sigma + c[:, None], log_sigma).clamp(max=log_sigma_max), r, se, extra


def project_to_constraint(
    measure: Callable[[torch.Tensor, str, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]],
    log_sigma: torch.Tensor,
    first: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    tol: float,
    log_sigma_max: float,
    dormant: torch.Tensor,
):
    """:func:`rescale_to_constraint` holding capped cells, then a second pass for the images it
    leaves off the constraint that have ``dormant [B, G]`` cells (capped by the closed form).

    Cells at the cap are ignored by the linearised layer, but not always by the real one: noise
    of sigma_max (10 pixel ranges) can move it however small the other cells' sigma gets (seen on
    an early-training ResNet: r ~ 1e4 with every free cell at sigma ~ 1e-50). Such images start
    again from the shape with their dormant cells at the largest other sigma (as ignored as the
    most ignored cell the layer responds to), every cell taking the common scale.
    ``measure(log_sigma[idx], tag, idx) -> (r, se, extra)`` measures the images ``idx`` (all when
    None) on fresh noise named by ``tag``.
    """
    s, r, se, extra = rescale_to_constraint(
        lambda s, step, idx: measure(s, f"recheck{step}", idx), log_sigma, first, tol, log_sigma_max)
    stuck = off_constraint(r, se, tol) & dormant.any(-1) & ~dormant.all(-1)
    if not bool(stuck.any()):
        return s, r, se, extra
    j = stuck.nonzero().flatten()
    top = log_sigma[j].masked_fill(dormant[j], -math.inf).amax(-1, keepdim=True)
    start = torch.where(dormant[j], top, log_sigma[j])
    s_j, r_j, se_j, extra_j = rescale_to_constraint(
        lambda s, step, idx: measure(s, f"release{step}", j[idx]), start, measure(start, "release", j),
        tol, log_sigma_max, iterations=16, hold_capped=False)
    return _put(s, j, s_j), _put(r, j, r_j), _put(se, j, se_j), _put(extra, j, extra_j)


def _put(full: torch.Tensor | None, idx: torch.Tensor, part: torch.Tensor | None) -> torch.Tensor | None:
    """A copy of ``full`` with rows ``idx`` replaced by ``part`` (None stays None)."""
    if full is None:
        return None
    out = full.clone()
    out[idx] = part
    return out


def off_constraint(r: torch.Tensor, se: torch.Tensor, tol: float) -> torch.Tensor:
    """Ratios off the constraint: beyond ``tol / 2`` of 1, unless within ``tol`` and within two
    standard errors of 1 (closer than the measurement can tell)."""
    gap = (r - 1).abs()
    return (gap > tol / 2) & ((gap > tol) | (gap > 2 * se))


def image_generators(seed: int, offset: int, B: int, tag: str, device) -> list[torch.Generator]:
    return [rng(seed, offset + b, tag, device) for b in range(B)]

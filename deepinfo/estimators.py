r"""CID, RU and concentration (Ma et al., ICML 2022, Section 3; conventions of SPEC.md).

Notation: ``x`` is an image in pixel space ``[0, 1]``, ``f = h(x)`` the (flattened) output of a
layer, ``x' = x + sigma * eps`` with ``eps ~ N(0, I)`` and one ``sigma_g`` per grid cell ``g``.

* Pixel-wise CID (Eq. 2): ``H_g = log sigma_g + 0.5 log(2 pi e)`` nats; a layer's CID is the
  mean over cells ("normalized by the pixel number").
* Sigma is the maximum-entropy noise the layer tolerates (Eq. 3-4)::

      min_sigma  E||h(x') - f||^2 / delta_f^2  -  lambda * mean_g log sigma_g
      s.t.       E||h(x') - f||^2 = beta * delta_f^2

  with ``delta_f^2 = lim_{xi->0} E||h(x + xi eps) - f||^2 / xi^2 = ||J||_F^2`` and lambda
  adapted per layer and image until the achieved ratio ``r`` is 1 (``method="optimize"``).
* Closed form (``method="linear"``): for ``h(x') ~ f + J (x' - x)``, with the cell energies
  ``W_g = sum_{u in g} ||J[:, u]||^2``, Lagrange gives ``sigma_g^2 W_g`` equal for all cells::

      sigma_g^2 = beta * mean(W) / W_g,     H_g = 0.5 log(beta * mean(W) / W_g) + 0.5 log(2 pi e)

* Pixel-wise RU (Eq. 7): ``RU_g = 0.5 log mean_{eps, c, i in g} (g(h(x')) - x)^2 + 0.5 log(2 pi e)``
  for a decoder ``g`` trained to invert ``h``, sigma learned as above with RU in the entropy term.
* Concentration (Eq. 5): ``mean_{g in background} H_g - mean_{g in foreground} H_g``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ._features import FeatureTap, ModelGuard, model_device, resolve_layers
from ._grid import Grid
from ._jacobian import HALF_LOG_2PI_E, column_energies
from ._solver import Sampler, image_generators, lagrangian_descent, measure_ratio, project_scale
from .result import InfoMaps

DEFAULT_BETA = 1.5e-4
METHODS = ("optimize", "linear")


def closed_form_log_sigma(W: torch.Tensor, beta: float, sigma_max: float) -> torch.Tensor:
    """``log sigma_g`` maximising ``sum_g log sigma_g`` s.t. ``sum_g sigma_g^2 W_g = beta sum_g W_g``
    and ``sigma_g <= sigma_max``.

    Args:
        W: ``[..., G]`` cell energies of the Jacobian (>= 0).
    Returns:
        ``[..., G]``. Without the cap, ``sigma_g^2 = beta * mean(W) / W_g``; with it, capped cells
        sit at ``sigma_max`` and the others share the remaining budget equally (water-filling).
    """
    W = W.clamp_min(0)
    G = W.shape[-1]
    budget = beta * W.sum(-1, keepdim=True)
    cap2 = sigma_max**2
    tiny = torch.finfo(W.dtype).tiny
    capped = torch.zeros_like(W, dtype=torch.bool)
    for _ in range(G):
        free = ~capped
        rest = budget - (cap2 * W * capped).sum(-1, keepdim=True)
        c = rest.clamp_min(0) / free.sum(-1, keepdim=True).clamp_min(1)
        sigma2 = torch.where(free, c / W.clamp_min(tiny), torch.full_like(W, cap2))
        now = capped | (sigma2 > cap2)
        if bool((now == capped).all()):
            break
        capped = now
    return 0.5 * torch.log(sigma2.clamp(min=tiny, max=cap2))


def cid_cells(log_sigma: torch.Tensor) -> torch.Tensor:
    """Pixel-wise CID (Eq. 2): ``H_g = log sigma_g + 0.5 log(2 pi e)``, nats."""
    return log_sigma + HALF_LOG_2PI_E


def ru_cells(reconstruction_sq_err: torch.Tensor, grid: Grid, channels: int) -> torch.Tensor:
    """Pixel-wise RU (Eq. 7) from squared reconstruction errors summed over channels.

    Args:
        reconstruction_sq_err: ``[..., H, W]`` mean over noise draws of ``sum_c (g(f') - x)^2``.
    Returns:
        ``[..., G]``: ``0.5 log(mean over channels and pixels of the cell) + 0.5 log(2 pi e)``.
    """
    per_cell = grid.sum_cells(reconstruction_sq_err) / (channels * grid.pixel_counts(reconstruction_sq_err.device))
    return 0.5 * torch.log(per_cell.clamp_min(1e-30)) + HALF_LOG_2PI_E


def _check_images(x) -> torch.Tensor:
    if not torch.is_tensor(x):
        raise ValueError(f"images must be a torch.Tensor [B, C, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        hint = " (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else ""
        raise ValueError(f"images must have 4 dimensions [B, C, H, W], got shape {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1] (pixel space), got {x.dtype}; use x.float() / 255")
    if not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(f"images contain non-finite pixels (NaN or inf) in images {bad}")
    if float(x.min()) < -1e-3 or float(x.max()) > 1 + 1e-3:
        warnings.warn(
            f"pixels lie in [{float(x.min()):.3g}, {float(x.max()):.3g}], not [0, 1]: deepinfo expects "
            "pixel-space images with the normalization inside the model (SPEC section 1)",
            stacklevel=3,
        )
    return x


def _check_settings(beta, method, sigma_max, tol):
    if not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta must be a positive number (the paper uses 1.5e-4), got {beta!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not sigma_max > 0:
        raise ValueError(f"sigma_max must be positive, got {sigma_max!r}")
    if not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1), got {tol!r}")


def _flat(features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.reshape(v.shape[0], -1) for k, v in features.items()}


def _estimate(
    kind, model, x, layers, beta, grid, method, decoders, *, n_probes, steps, draws, lr, eval_draws,
    max_eval_draws, sigma_max, tol, batch_size, seed, init, progress, calibrate=True, rel_se=None,
) -> InfoMaps:
    _check_settings(beta, method, sigma_max, tol)
    if rel_se is None:  # the optimised maps get the tighter check; the fast method a cheaper one
        rel_se = 0.01 if method == "optimize" else 0.02
    if max_eval_draws is None:
        max_eval_draws = 512 if method == "optimize" else 128
    if init not in ("linear", "constant"):
        raise ValueError(f"init must be 'linear' or 'constant', got {init!r}")
    x = _check_images(x)
    layers = resolve_layers(model, layers)
    device = model_device(model, x.device)
    x = x.detach().to(device)
    B, C, H, W = x.shape
    g = Grid.make(grid, (H, W))
    log_cap = math.log(sigma_max)
    # RU of a cell averages squared errors over draws, channels and the cell's pixels; ~200 such
    # terms give it a sampling sd of about 0.5 * sqrt(2 / 200) = 0.05 nats (chi-square errors).
    # (the RU map needs this many draws even when the ratio is known sooner, or max_eval_draws)
    ru_draws = math.ceil(200 / (C * int(g.pixel_counts().min()))) if kind == "ru" else 0
    per_chunk = max(1, batch_size // max(draws, eval_draws))
    chunks = [(s, min(B, s + per_chunk)) for s in range(0, B, per_chunk)]
    parts: dict[str, list] = {k: [] for k in ("pix", "r", "se", "sig", "delta", "capped", "lam")}
    guards = [ModelGuard(model)] + [ModelGuard(d) for d in (decoders or {}).values()]
    bar = tqdm(total=len(chunks) * len(layers), desc=f"{kind} ({method})", disable=not progress, leave=False)
    try:
        for gd in guards:
            gd.__enter__()
        tap = FeatureTap(model, layers)
        for lo, hi in chunks:
            xc = x[lo:hi]
            energy, jacobians = column_energies(tap, xc, layers, n_probes, batch_size, seed, image_offset=lo)
            Wc = g.sum_cells(energy)  # [L, b, G]
            delta = Wc.sum(-1)  # [L, b]  delta_f^2 = ||J||_F^2
            flat = delta.flatten()
            if bool((flat <= 0).any()):
                li, bi = divmod(int((flat <= 0).nonzero()[0]), hi - lo)
                raise ValueError(
                    f"layer {layers[li]!r} does not depend on the input for image {lo + bi} "
                    "(delta_f^2 = 0): its information discarding is undefined"
                )
            s_lin = closed_form_log_sigma(Wc, beta, sigma_max)
            with torch.no_grad():
                f = _flat(tap(xc))
            res = {k: [] for k in parts}
            for li, name in enumerate(layers):
                draw_gens = image_generators(seed, lo, hi - lo, f"draw/{name}", device)
                sampler = Sampler(tap, name, xc, f[name], g, draw_gens, jacobians.get(name))
                norm = beta * delta[li]
                entropy, per_draw = _entropy_terms(kind, decoders, name, xc, g)
                lam = None
                if method == "optimize":
                    s0 = s_lin[li] if init == "linear" else torch.full_like(s_lin[li], 0.5 * math.log(beta))
                    s, lam, _ = lagrangian_descent(
                        sampler, s0, delta[li], beta, entropy, steps, draws, lr, log_cap
                    )
                else:
                    s = s_lin[li]

                def check(s, tag):  # the achieved ratio (and RU terms), measured on fresh noise
                    sampler.gens = image_generators(seed, lo, hi - lo, f"{tag}/{name}", device)
                    return measure_ratio(sampler, s, norm, eval_draws, max(max_eval_draws, ru_draws),
                                         rel_se=rel_se, per_draw=per_draw, min_draws=ru_draws)[:3]

                r, se, extra = check(s, "eval")
                off = (r - 1).abs() > tol / 2
                if (method == "optimize" or calibrate) and bool(off.any()):
                    # project onto the constraint by a common scale (the closed form's shape, or
                    # the optimum's), then measure again on new noise for the images that moved
                    sampler.gens = image_generators(seed, lo, hi - lo, f"project/{name}", device)
                    s = project_scale(sampler, s, norm, log_cap, eval_draws, max_eval_draws, rel_se=rel_se, only=off)
                    r2, se2, extra2 = check(s, "recheck")
                    r, se = torch.where(off, r2, r), torch.where(off, se2, se)
                    if extra is not None:
                        extra = torch.where(off.reshape(-1, *[1] * (extra.dim() - 1)), extra2, extra)
                pix = cid_cells(s) if kind == "cid" else ru_cells(extra, g, C)
                res["pix"].append(pix)
                res["r"].append(r)
                res["se"].append(se)
                res["sig"].append(s.exp())
                res["delta"].append(delta[li])
                res["capped"].append((s >= log_cap - 1e-6).sum(-1))
                res["lam"].append(lam if lam is not None else torch.full_like(r, float("nan")))
                bar.update(1)
            for k in parts:
                parts[k].append(torch.stack(res[k]))
    finally:
        for gd in reversed(guards):
            gd.__exit__(None, None, None)
        bar.close()
    cat = {k: torch.cat(v, 1) for k, v in parts.items()}
    Gh, Gw = g.cells
    L = len(layers)
    maps = InfoMaps(
        layers=layers,
        pixelwise=cat["pix"].reshape(L, B, Gh, Gw),
        constraint=cat["r"],
        constraint_se=cat["se"],
        sigma=cat["sig"].reshape(L, B, Gh, Gw),
        delta_f2=cat["delta"],
        n_capped=cat["capped"],
        kind=kind,
        method=method,
        beta=float(beta),
        sigma_max=float(sigma_max),
        grid=(Gh, Gw),
        image_size=(H, W),
        seed=seed,
        lambdas=cat["lam"] if method == "optimize" else None,
        info=dict(n_probes=n_probes, steps=steps, draws=draws, lr=lr, eval_draws=eval_draws,
                  max_eval_draws=max_eval_draws, rel_se=rel_se, tol=tol, init=init,
                  calibrate=calibrate if method == "linear" else None),
    )
    if method == "optimize" or calibrate:
        off = ((maps.constraint - 1).abs() > tol).nonzero().tolist()
        if off:
            warnings.warn(
                f"{kind}: the constraint ratio is off by more than {tol:.0%} for (layer, image) "
                f"{[(layers[a], b) for a, b in off][:10]}; see maps.constraint", stacklevel=3
            )
    return maps


def _entropy_terms(kind, decoders, name, x, grid):
    """The entropy term of the Lagrangian for ``kind`` and, for RU, the per-draw squared error."""
    if kind == "cid":
        return (lambda s, fp: s.mean(-1)), None
    decoder = decoders[name]
    C = x.shape[1]

    def sq_err(fp):  # [D, B, ...] -> [D, B, H, W]
        D, B = fp.shape[:2]
        rec = decoder(fp.reshape(D * B, *fp.shape[2:]))
        return (rec.reshape(D, B, *x.shape[1:]) - x.unsqueeze(0)).pow(2).sum(2)

    return (lambda s, fp: ru_cells(sq_err(fp).mean(0), grid, C).mean(-1)), sq_err


def cid(
    model: nn.Module,
    x: torch.Tensor,
    layers: str | Sequence[str],
    beta: float = DEFAULT_BETA,
    grid: int | tuple[int, int] | None = None,
    method: str = "optimize",
    *,
    n_probes: int = 32,
    steps: int = 20,
    draws: int = 8,
    lr: float = 0.02,
    eval_draws: int = 16,
    max_eval_draws: int | None = None,
    rel_se: float | None = None,
    sigma_max: float = 10.0,
    tol: float = 0.05,
    batch_size: int = 256,
    seed: int = 0,
    init: str = "linear",
    calibrate: bool = True,
    progress: bool = True,
) -> InfoMaps:
    """Pixel-wise computational information discarding (CID) of one or several layers.

    Args:
        model: any ``nn.Module`` taking pixel-space images (normalization inside). It is run in
            eval mode on its own device and left exactly as found.
        x: ``[B, C, H, W]`` float images in ``[0, 1]``.
        layers: a module name from ``model.named_modules()`` or a list of them.
        beta: the feature-distortion budget ``E||f'-f||^2 = beta * delta_f^2`` (pixel variance units).
        grid: ``None`` (one sigma per pixel), ``g`` (``g x g`` cells) or ``(Gh, Gw)``.
        method: ``"optimize"`` (the paper's Lagrangian, lambda adapted until ``r`` is within
            ``tol`` of 1) or ``"linear"`` (closed form of the linearised layer).
        n_probes: vector-Jacobian probes per image for ``W_g`` and ``delta_f^2`` (exact when the
            feature has at most this many dimensions).
        steps, draws, lr: optimisation steps, noise draws per step and Adam step size on
            ``log sigma`` (``optimize`` only). ``init="linear"`` starts from the closed form,
            ``"constant"`` from ``sigma = sqrt(beta)`` everywhere.
        eval_draws, max_eval_draws, rel_se: noise draws per round, and at most in all
            (default 512 for ``optimize``, 128 for ``linear``), to measure the achieved ratio;
            rounds continue until its relative standard error is below ``rel_se`` (default
            1 % for ``optimize``, 2 % for ``linear``).
        calibrate: ``linear`` only: keep the closed form's shape but set its common scale so
            that the real (non-linear) network meets the constraint (default). ``False`` gives
            the pure closed form, whose ratio then shows how non-linear the layer is.
        sigma_max: cap on sigma (pixel units); cells that hit it are counted in ``n_capped``.
        batch_size: the largest number of images in one forward pass.
        seed: noise and probes come from generators seeded by ``(seed, image index, layer)``.
        progress: show a progress bar.

    Returns:
        :class:`InfoMaps` with ``pixelwise [L, B, Gh, Gw]`` in nats and ``constraint [L, B]``.
    """
    return _estimate(
        "cid", model, x, layers, beta, grid, method, None, n_probes=n_probes, steps=steps, draws=draws,
        lr=lr, eval_draws=eval_draws, max_eval_draws=max_eval_draws, sigma_max=sigma_max, tol=tol,
        batch_size=batch_size, seed=seed, init=init, progress=progress, calibrate=calibrate, rel_se=rel_se,
    )


def ru(
    model: nn.Module,
    decoders: Mapping[str, nn.Module],
    x: torch.Tensor,
    layers: str | Sequence[str],
    beta: float = DEFAULT_BETA,
    grid: int | tuple[int, int] | None = None,
    *,
    n_probes: int = 32,
    steps: int = 20,
    draws: int = 8,
    lr: float = 0.02,
    eval_draws: int = 16,
    max_eval_draws: int | None = None,
    rel_se: float | None = None,
    sigma_max: float = 10.0,
    tol: float = 0.05,
    batch_size: int = 256,
    seed: int = 0,
    init: str = "linear",
    progress: bool = True,
) -> InfoMaps:
    """Pixel-wise reconstruction uncertainty (RU, Eq. 6-7) of one or several layers.

    ``decoders[layer]`` maps that layer's output ``[N, *feature_shape]`` back to images
    ``[N, C, H, W]`` (see :func:`deepinfo.decoder.train_decoder`). Sigma is learned with the same
    constraint as CID (starting from the CID closed form), with the mean pixel-wise RU as the
    entropy term. Other arguments and the result are as in :func:`cid`; ``pixelwise`` holds RU in nats.
    """
    layers_list = resolve_layers(model, layers)
    if not isinstance(decoders, Mapping):
        raise ValueError("decoders must be a mapping {layer name: decoder module}")
    missing = [n for n in layers_list if n not in decoders]
    if missing:
        raise KeyError(f"no decoder for layers {missing}; decoders are given for {list(decoders)}")
    return _estimate(
        "ru", model, x, layers_list, beta, grid, "optimize", decoders, n_probes=n_probes, steps=steps,
        draws=draws, lr=lr, eval_draws=eval_draws, max_eval_draws=max_eval_draws, sigma_max=sigma_max,
        tol=tol, batch_size=batch_size, seed=seed, init=init, progress=progress, rel_se=rel_se,
    )


def foreground_cells(mask_or_boxes, image_size: tuple[int, int], grid: tuple[int, int], batch: int) -> torch.Tensor:
    """Foreground cells ``[B, G]`` (bool): a cell is foreground when more than half its pixels are.

    ``mask_or_boxes``: bool ``[B, H, W]`` masks, or boxes ``[B, 4]`` as ``(x0, y0, x1, y1)`` pixel
    coordinates with exclusive ends.
    """
    H, W = image_size
    m = mask_or_boxes
    if not torch.is_tensor(m):
        m = torch.as_tensor(m)
    if m.dim() == 2 and m.shape[-1] == 4 and m.dtype != torch.bool:
        boxes = m.round().long()
        if boxes.shape[0] != batch:
            raise ValueError(f"{boxes.shape[0]} boxes for {batch} images")
        ys, xs = torch.arange(H)[:, None], torch.arange(W)[None, :]
        x0, y0, x1, y1 = (boxes[:, i, None, None] for i in range(4))
        m = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    elif m.dtype == torch.bool and m.dim() == 3:
        if tuple(m.shape) != (batch, H, W):
            raise ValueError(f"mask has shape {tuple(m.shape)}; expected [B, H, W] = {[batch, H, W]}")
    else:
        raise ValueError(
            f"expected a bool mask [B, H, W] or boxes [B, 4] (x0, y0, x1, y1); got {m.dtype} {tuple(m.shape)}"
        )
    g = Grid((H, W), grid)
    frac = g.sum_cells(m.float()) / g.pixel_counts()
    return frac > 0.5


def concentration(maps: InfoMaps, mask) -> torch.Tensor:
    """Concentration (Eq. 5): mean background entropy minus mean foreground entropy.

    Args:
        maps: CID (or RU) maps, ``pixelwise [L, B, Gh, Gw]``.
        mask: bool ``[B, H, W]`` foreground masks at the image size, or boxes ``[B, 4]``
            ``(x0, y0, x1, y1)``, pixel coordinates, exclusive ends.
    Returns:
        ``[L, B]`` in nats; positive when the background is discarded more than the object.
    """
    L, B = maps.pixelwise.shape[:2]
    fg = foreground_cells(mask, maps.image_size, maps.grid, B).to(maps.pixelwise.device)
    n_fg = fg.sum(-1)
    empty_fg = (n_fg == 0).nonzero().flatten().tolist()
    empty_bg = (n_fg == fg.shape[-1]).nonzero().flatten().tolist()
    if empty_fg:
        raise ValueError(f"empty foreground (no grid cell is mostly foreground) in images {empty_fg}")
    if empty_bg:
        raise ValueError(f"empty background (every grid cell is mostly foreground) in images {empty_bg}")
    v = maps.pixelwise.reshape(L, B, -1)
    fgf = fg.unsqueeze(0).to(v.dtype)
    fg_mean = (v * fgf).sum(-1) / fgf.sum(-1)
    bg_mean = (v * (1 - fgf)).sum(-1) / (1 - fgf).sum(-1)
    return bg_mean - fg_mean

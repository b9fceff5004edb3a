r"""CID, RU and concentration (Ma et al., ICML 2022, Section 3; conventions of SPEC.md).

Notation: ``x`` is an image in pixel space ``[0, 1]``, ``f = h(x)`` the (flattened) output of a
layer, ``x' = x + sigma * eps`` with ``eps ~ N(0, I)`` and one ``sigma_g`` per grid cell ``g``.

* Pixel-wise CID (Eq. 2): ``H_g = log sigma_g + 0.5 log(2 pi e)`` nats; a layer's CID is the
  mean over cells ("normalized by the pixel number").
* Sigma is the maximum-entropy noise the layer tolerates (Eq. 3-4)::

      min_sigma  E||h(x') - f||^2 / delta_f^2  -  lambda * mean_g log sigma_g
      s.t.       E||h(x') - f||^2 = beta * delta_f^2

  with ``delta_f^2 = lim_{xi->0} E||h(x + xi eps) - f||^2 / xi^2 = ||J||_F^2``.
* Pixel-wise RU (Eq. 7): ``RU_g = 0.5 log mean_{eps, c, i in g} (g(h(x')) - x)^2 + 0.5 log(2 pi e)``
  for a decoder ``g`` trained to invert ``h``, sigma learned as above with RU in the entropy term.
* Concentration (Eq. 5): ``mean_{g in background} H_g - mean_{g in foreground} H_g``.

Three algorithms find sigma for one layer and a chunk of images (:func:`solve_layer`):

1. **Closed form** (:func:`closed_form_log_sigma`; ``method="linear"``, and the start of the
   others). For ``h(x') ~ f + J (x' - x)``, with the cell energies ``W_g = sum_{u in g} ||J[:, u]||^2``,
   Lagrange gives ``sigma_g^2 W_g`` equal for all cells::

      sigma_g^2 = beta * mean(W) / W_g,     H_g = 0.5 log(beta * mean(W) / W_g) + 0.5 log(2 pi e)

2. **Lagrangian descent** (:func:`deepinfo._solver.lagrangian_descent`; ``method="optimize"``, the
   paper's Eq. 3-4, and Eq. 7 for RU): Adam on ``log sigma`` with sampled ``E||h(x') - f||^2``,
   lambda adapted per layer and image until the achieved ratio
   ``r = E||h(x') - f||^2 / (beta delta_f^2)`` approaches 1.
3. **Projection onto the constraint** (:func:`deepinfo._solver.project_to_constraint`; this
   project's addition, not the paper's). A descent of a few noisy steps ends near, not on, the
   constraint, and the closed form meets it only for a linear layer; maps of different layers
   and networks are comparable only at the same ``r``. So every map is moved onto it by a common
   scale of sigma (a secant search on ``log r``, bisection once bracketed, each step judged on
   fresh noise) until ``|r - 1| <= tol``. The shape of the map is the algorithm's; only its level
   moves. ``calibrate=False`` skips it for the closed form.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from deepinfo import _engine
from deepinfo._engine import LayerMaps, LayerProblem
from deepinfo._grid import Grid
from deepinfo._jacobian import HALF_LOG_2PI_E
from deepinfo._solver import lagrangian_descent, project_to_constraint
from deepinfo.result import InfoMaps
from deepinfo.settings import DEFAULT_BETA, METHODS, Settings

__all__ = ["DEFAULT_BETA", "METHODS", "Settings", "cid", "ru", "concentration", "closed_form_log_sigma",
           "cid_cells", "ru_cells", "solve_layer", "foreground_cells", "has_object_and_background", "morans_i"]


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


def solve_layer(p: LayerProblem, s: Settings) -> LayerMaps:
    """Sigma and the pixel-wise maps of one layer for a chunk of images: the three algorithms in turn.

    Args:
        p: the layer, its Jacobian cell energies ``W [b, G]`` and ``delta_f2 [b]``, a sampler of
            perturbed features and a measurement of the achieved ratio on fresh noise.
        s: the settings.
    Returns:
        :class:`~deepinfo._engine.LayerMaps`: ``pixelwise [b, G]`` in nats, the achieved ratio and
        its standard error ``[b]``, ``log_sigma [b, G]`` and the final multipliers (``optimize``).
    """
    log_cap = math.log(s.sigma_max)
    closed = closed_form_log_sigma(p.W, s.beta, s.sigma_max)  # 1. closed form
    log_sigma, lambdas = closed, None
    if s.method == "optimize":  # 2. Lagrangian descent (Eq. 3-4; Eq. 7 for RU)
        start = closed if s.init == "linear" else torch.full_like(closed, 0.5 * math.log(s.beta))
        log_sigma, lambdas, _ = lagrangian_descent(p.sampler, start, p.delta_f2, s.beta, _entropy_term(p),
                                                   s.steps, s.draws, s.lr, log_cap)
    # the achieved ratio on fresh noise; when a projection follows, it stops once the verdict is settled
    first = p.measure(log_sigma, "eval", off_tol=s.tol if s.rescales else None)
    if s.rescales:  # 3. projection onto the constraint (this project's addition)
        # cells at the cap (the descent starts there and its noise can leave one just below)
        dormant = (log_sigma >= log_cap - 1e-6) | (closed >= log_cap - 1e-6)
        log_sigma, r, se, err = project_to_constraint(
            lambda ls, tag, idx: p.measure(ls, tag, off_tol=s.tol, idx=idx), log_sigma, first, s.tol, log_cap, dormant)
    else:
        r, se, err = first
    pixelwise = cid_cells(log_sigma) if p.decoder is None else ru_cells(err, p.grid, p.channels)
    if s.method == "optimize" and lambdas is None:
        lambdas = torch.full_like(r, float("nan"))
    return LayerMaps(pixelwise, r, se, log_sigma, p.delta_f2, lambdas)


def _entropy_term(p: LayerProblem):
    """The entropy term of the Lagrangian, ``(log_sigma [b, G], fp [D, b, ...]) -> [b]``: the mean
    CID of the cells (Eq. 3), or for RU the mean RU of the cells from the decoder's errors (Eq. 7)."""
    if p.decoder is None:
        return lambda log_sigma, fp: log_sigma.mean(-1)
    x = p.sampler.x
    return lambda log_sigma, fp: ru_cells(p.reconstruction_error(fp, x).mean(0), p.grid, p.channels).mean(-1)


def cid(model: nn.Module, x: torch.Tensor, layers: str | Sequence[str], settings: Settings | None = None, *,
        progress: bool = True, **overrides) -> InfoMaps:
    """Pixel-wise computational information discarding (CID) of one or several layers.

    Args:
        model: any ``nn.Module`` taking pixel-space images (normalization inside). It is run in
            eval mode on its own device and left exactly as found. BatchNorm layers that only
            read a convolution's output are folded into it on a private copy that shares the
            other weights (the same features up to float rounding, fewer passes over memory).
        x: ``[B, C, H, W]`` float images in ``[0, 1]``.
        layers: a module name from ``model.named_modules()`` or a list of them.
        settings: a :class:`~deepinfo.settings.Settings` (default: the paper's, ``beta = 1.5e-4``,
            one sigma per pixel, ``method="optimize"``).
        progress: show a progress bar.
        **overrides: any field of :class:`~deepinfo.settings.Settings` by name (``beta``,
            ``grid``, ``method``, ``seed``, ``batch_size``, ...), replacing the one of ``settings``.

    Returns:
        :class:`InfoMaps` with ``pixelwise [L, B, Gh, Gw]`` in nats and ``constraint [L, B]``,
        the achieved ratio ``r`` (within ``tol`` of 1 unless a warning said otherwise).

    Example::

        >>> model = torchvision.models.resnet18(weights="DEFAULT")   # with normalization inside
        >>> maps = deepinfo.cid(model, x, ["layer1", "layer4"], grid=16, method="linear")
        >>> maps.pixelwise.shape        # [layers, images, 16, 16], nats
        >>> maps.mean()                 # [layers, images]: the layer's CID
    """
    s = Settings.of(settings, **overrides)
    return _engine.run("cid", model, x, layers, s, solve_layer, progress=progress)


def ru(model: nn.Module, decoders: Mapping[str, nn.Module], x: torch.Tensor, layers: str | Sequence[str],
       settings: Settings | None = None, *, progress: bool = True, **overrides) -> InfoMaps:
    """Pixel-wise reconstruction uncertainty (RU, Eq. 6-7) of one or several layers.

    ``decoders[layer]`` maps that layer's output ``[N, *feature_shape]`` back to images
    ``[N, C, H, W]`` (see :func:`deepinfo.decoder.train_decoder`). Sigma is learned with the same
    constraint as CID (starting from the CID closed form), with the mean pixel-wise RU as the
    entropy term: RU always optimises (``method`` is set to ``"optimize"``). Other arguments and
    the result are as in :func:`cid`; ``pixelwise`` holds RU in nats.
    """
    from deepinfo._features import resolve_layers

    if "method" in overrides:
        raise TypeError("ru always optimises sigma (the Lagrangian of Eq. 7): it takes no method")
    s = Settings.of(settings, **overrides, method="optimize")
    layers_list = resolve_layers(model, layers)
    if not isinstance(decoders, Mapping):
        raise ValueError("decoders must be a mapping {layer name: decoder module}")
    missing = [n for n in layers_list if n not in decoders]
    if missing:
        raise KeyError(f"no decoder for layers {missing}; decoders are given for {list(decoders)}")
    return _engine.run("ru", model, x, layers_list, s, solve_layer, decoders=decoders, progress=progress)


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
        ys, xs = torch.arange(H, device=boxes.device)[:, None], torch.arange(W, device=boxes.device)[None, :]
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
    frac = g.sum_cells(m.float()) / g.pixel_counts(m.device)
    return frac > 0.5


def has_object_and_background(mask: torch.Tensor, grid: int | tuple[int, int] | None) -> bool:
    """Whether the object mask ``[H, W]`` (bool) leaves at least one foreground cell and one
    background cell on the estimator's grid (``None``: one cell per pixel), i.e. whether
    concentration (background minus foreground CID) is defined for this image."""
    size = tuple(mask.shape[-2:])
    cells = size if grid is None else ((grid, grid) if isinstance(grid, int) else tuple(grid))
    fg = foreground_cells(mask.reshape(1, *size), size, cells, 1)
    return bool(fg.any()) and not bool(fg.all())


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


def morans_i(maps: torch.Tensor) -> torch.Tensor:
    """Lag-1 spatial autocorrelation (Moran's I, rook neighbours) of each map ``[..., Gh, Gw]``.

    ``I = (G / n_pairs) * sum_{neighbours i~j} z_i z_j / sum_i z_i^2`` with ``z`` the map minus its
    mean and each horizontal or vertical neighbour pair counted once. Near 1 for a map made of
    large smooth regions, near 0 for pixel-scale noise, negative for a checkerboard. A constant
    map has no defined autocorrelation: NaN. Returns ``[...]``.
    """
    if maps.dim() < 2 or (maps.shape[-1] < 2 and maps.shape[-2] < 2):
        raise ValueError(f"maps must be [..., Gh, Gw] with at least two cells, got {tuple(maps.shape)}")
    z = maps - maps.mean(dim=(-2, -1), keepdim=True)
    cross = (z[..., 1:, :] * z[..., :-1, :]).sum(dim=(-2, -1)) + (z[..., :, 1:] * z[..., :, :-1]).sum(dim=(-2, -1))
    Gh, Gw = maps.shape[-2:]
    pairs = (Gh - 1) * Gw + Gh * (Gw - 1)
    var = z.pow(2).sum(dim=(-2, -1))
    out = (Gh * Gw / pairs) * cross / var
    constant = var <= 1e-12 * maps.pow(2).sum(dim=(-2, -1)).clamp_min(1e-30)
    return torch.where(constant, torch.full_like(out, float("nan")), out)

"""The estimators' machinery: input checks, batching over images, and the per-layer loop.

``deepinfo.estimators`` holds the math and the public functions; this module runs them: it
checks the inputs, puts the model in a guarded state, computes the Jacobian energies of every
layer in one pass, then for each layer finds sigma (closed form, or the Lagrangian descent),
holds the constraint, and measures what was achieved on fresh noise.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import torch
from tqdm.auto import tqdm

from deepinfo._features import FeatureTap, ModelGuard, model_device, resolve_layers
from deepinfo._fold import fold_batchnorm
from deepinfo._grid import Grid
from deepinfo._images import check_images
from deepinfo._jacobian import column_energies
from deepinfo._solver import Sampler, image_generators, lagrangian_descent, measure_ratio, project_to_constraint
from deepinfo.estimators import METHODS, cid_cells, closed_form_log_sigma, ru_cells
from deepinfo.result import InfoMaps


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


def estimate(
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
    x = check_images(x, "images", stacklevel=4)
    layers = resolve_layers(model, layers)
    device = model_device(model, x.device)
    x = x.detach().to(device)
    if batch_size is None:
        batch_size = 256 if device.type == "cuda" else 32
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
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
        # the same features from fewer passes over memory (see _fold); the model is not changed
        tap = FeatureTap(fold_batchnorm(model, x[:1], layers), layers)
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

                rescale = method == "optimize" or calibrate

                def check(s, tag, off_tol=None, idx=None):  # the achieved ratio (and RU terms), on fresh noise
                    # idx: only these images of the chunk (their own generators, so same noise)
                    sampler.gens = image_generators(seed, lo, hi - lo, f"{tag}/{name}", device)
                    smp, nrm = (sampler, norm) if idx is None else (sampler.subset(idx), norm[idx])
                    return measure_ratio(smp, s, nrm, eval_draws, max(max_eval_draws, ru_draws),
                                         rel_se=rel_se, per_draw=per_draw, min_draws=ru_draws,
                                         off_tol=off_tol)[:3]

                # when a rescaling follows, a measurement stops once its verdict is settled: a
                # ratio clearly off is stepped again anyway (see measure_ratio)
                first = check(s, "eval", off_tol=tol if rescale else None)
                if rescale:
                    # project the images off the constraint by a common scale of sigma (the
                    # closed form's shape, or the optimum's), each step measured on new noise
                    # and only for the images still off
                    # cells the closed form capped (the optimize method starts there and its
                    # noisy descent can leave such a cell just below the cap)
                    dormant = (s >= log_cap - 1e-6) | (s_lin[li] >= log_cap - 1e-6)
                    s, r, se, extra = project_to_constraint(
                        lambda s, tag, idx: check(s, tag, off_tol=tol, idx=idx), s, first, tol, log_cap, dormant)
                else:
                    r, se, extra = first
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
    except torch.cuda.OutOfMemoryError as e:
        raise torch.cuda.OutOfMemoryError(
            f"{kind}: out of GPU memory with batch_size={batch_size} (perturbed images per forward "
            f"pass; peak memory scales with it): pass a smaller one, e.g. batch_size={max(1, batch_size // 4)}"
        ) from e
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

    def sq_err(fp, x):  # [D, B, ...] features of the images x [B, C, H, W] -> [D, B, H, W]
        D, B = fp.shape[:2]
        rec = decoder(fp.reshape(D * B, *fp.shape[2:]))
        return (rec.reshape(D, B, *x.shape[1:]) - x.unsqueeze(0)).pow(2).sum(2)

    return (lambda s, fp: ru_cells(sq_err(fp, x).mean(0), grid, C).mean(-1)), sq_err



"""A faithful re-creation of the original code's sigma loop, as the benchmark's reference.

The authors' ``step_capability_x.py`` learns sigma for ONE image and ONE layer at a time:
``delta_f^2`` (their ``sigma_f``) is the feature MSE under the initial noise (a finite
difference at an arbitrary noise level), then each of 100 steps draws 8 noise images, runs
them and the clean image through the network, and takes a gradient step on
``MSE(f', f) / sigma_f - lambda * penalty`` with a FIXED lambda. Nothing holds the
constraint, which is what deepinfo's estimators fix. Kept out of the package on purpose.
"""

from __future__ import annotations

import math

import torch

from deepinfo._features import FeatureTap
from deepinfo._fold import fold_batchnorm
from deepinfo._grid import Grid


def paper_loop_cid(model, x, layer, *, beta=1.5e-4, steps=100, draws=8, lr=0.01, lam=None,
                   init_sigma=None, grid=None, seed=0, fast_forward=False):
    """CID map ``[Gh, Gw]`` (nats) and final ``log sigma`` for one image ``x [1, C, H, W]``."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    # the original runs the network as it is, in PyTorch's default (contiguous) layout;
    # channels-last images and BatchNorm folded into convolutions are deepinfo's own forward-pass
    # speed-ups (fast_forward; the benchmark reports both)
    tap = FeatureTap(fold_batchnorm(model, x, [layer]) if fast_forward else model, [layer])
    tap.channels_last = fast_forward and tap.channels_last
    g = Grid.make(grid, tuple(x.shape[-2:]))
    s = torch.full((1, g.n), math.log(init_sigma or math.sqrt(beta)), device=x.device, requires_grad=True)
    lam = 2 * beta if lam is None else lam
    opt = torch.optim.Adam([s], lr=lr)

    def noisy_and_clean():
        eps = torch.randn(draws, *x.shape[1:], generator=gen, device=x.device)
        xp = x + g.to_pixels(s.exp()) * eps
        fp = tap(xp)[layer].flatten(1)
        f = tap(x)[layer].flatten(1)  # recomputed every step, as in the original
        return fp, f

    with torch.no_grad():
        fp, f = noisy_and_clean()
        sigma_f = (fp - f).pow(2).mean()
    for _ in range(steps):
        fp, f = noisy_and_clean()
        loss = (fp - f.detach()).pow(2).mean() / sigma_f - lam * s.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    log_sigma = s.detach()[0]
    return (log_sigma + 0.5 * math.log(2 * math.pi * math.e)).reshape(g.cells), log_sigma

"""Energies of Jacobian columns, ``||J[:, u]||^2``, from vector-Jacobian products.

For ``v`` with ``E[v v^T] = I`` in feature space, ``E[(J^T v)_u^2] = ||J[:, u]||^2``, so K
vector-Jacobian products give an unbiased estimate without forming ``J`` (SPEC section 2). Probes
are orthonormal directions when the feature has at most ``_ORTHO_FACTOR`` times as many
dimensions as probes (exact when it has no more dimensions than probes) and Gaussian otherwise:
a Haar frame's variance is the Gaussian one times ``(m - k) / (m + 2)``, a gain that vanishes
for large features while its QR is a sizeable part of the probe pass (benchmarks/README.md). One
forward pass of the replicated batch serves every layer; each layer then needs one backward pass down to the input.
"""

from __future__ import annotations

import math
import zlib

import torch

from deepinfo._features import FeatureTap

_ORTHO_FACTOR = 8


def rng(seed: int, image: int, tag: str, device) -> torch.Generator:
    """A generator for one (image, purpose): results do not depend on batch composition."""
    g = torch.Generator(device=device)
    g.manual_seed(zlib.crc32(f"{seed}/{image}/{tag}".encode()) + 2**32 * (seed % 2**20))
    return g


def _probes(m: int, k: int, gen: torch.Generator, device, dtype) -> tuple[torch.Tensor, float]:
    """``[k', m]`` probe rows and the weight turning their summed squares into ``||J[:,u]||^2``."""
    if m <= k:
        return torch.eye(m, device=device, dtype=dtype), 1.0
    g = torch.randn(m, k, generator=gen, device=device, dtype=dtype)
    if m <= _ORTHO_FACTOR * k:
        q, _ = torch.linalg.qr(g)  # Haar-random orthonormal k-frame: E[Q Q^T] = (k/m) I
        return q.T.contiguous(), m / k
    return g.T.contiguous(), 1.0 / k


def column_energies(
    tap: FeatureTap,
    x: torch.Tensor,
    layers: list[str],
    n_probes: int,
    batch_size: int,
    seed: int,
    image_offset: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pixel Jacobian energy ``sum_c ||J[:, (c, i, j)]||^2`` for each layer and image.

    Args:
        x: ``[B, C, H, W]`` images.
        n_probes: probes per image and layer (features with at most this many dimensions are
            handled exactly with the standard basis).
    Returns:
        ``[L, B, H, W]`` energies (their sum over pixels is ``delta_f^2 = ||J||_F^2``), and the
        full Jacobians ``{layer: [B, m, C*H*W]}`` of the layers that were handled exactly.
    """
    B, C, H, W = x.shape
    with torch.no_grad():
        dims = {name: f[0].numel() for name, f in tap(x[:1], layers).items()}
    probes, weights = {}, {}
    for name in layers:
        rows, w = [], None
        for b in range(B):
            gen = rng(seed, image_offset + b, f"probe/{name}", x.device)
            p, w = _probes(dims[name], n_probes, gen, x.device, x.dtype)
            rows.append(p)
        probes[name] = torch.stack(rows, 1)  # [k', B, m]
        weights[name] = w
    k_max = max(p.shape[0] for p in probes.values())
    chunk = max(1, batch_size // B)
    energy = x.new_zeros(len(layers), B, H, W)
    exact = {n: x.new_zeros(B, dims[n], C * H * W) for n in layers if dims[n] <= n_probes}
    for start in range(0, k_max, chunk):
        k = min(chunk, k_max - start)
        active = [n for n in layers if probes[n].shape[0] > start]
        xr = x.repeat(k, 1, 1, 1).requires_grad_(True)
        with torch.enable_grad():
            feats = tap(xr, active)
            for name in active:
                v = probes[name][start : start + k]
                if v.shape[0] < k:  # this layer has fewer probes than the chunk: pad with zeros
                    v = torch.cat([v, v.new_zeros(k - v.shape[0], *v.shape[1:])])
                (g,) = torch.autograd.grad(
                    feats[name], xr, grad_outputs=v.reshape(feats[name].shape), retain_graph=True
                )
                li = layers.index(name)
                energy[li] += weights[name] * g.pow(2).sum(1).reshape(k, B, H, W).sum(0)
                if name in exact:  # standard-basis probes: the rows of J themselves
                    rows = min(k, dims[name] - start)
                    exact[name][:, start : start + rows] = g.reshape(k, B, -1)[:rows].transpose(0, 1)
    return energy, exact


HALF_LOG_2PI_E = 0.5 * math.log(2 * math.pi * math.e)

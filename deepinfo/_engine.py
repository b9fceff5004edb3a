"""The estimators' loop: images in chunks, layers one by one, one small result per layer.

``deepinfo.estimators`` holds the math and the per-layer algorithm; this module runs it. It checks
the inputs, guards the model (eval mode, no gradients kept, restored afterwards), computes the
Jacobian energies of every layer of a chunk in one pass, hands each layer to the algorithm as a
:class:`LayerProblem`, and stacks the :class:`LayerMaps` it returns into an :class:`InfoMaps`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from deepinfo._features import FeatureTap, ModelGuard, model_device, resolve_layers
from deepinfo._fold import fold_batchnorm
from deepinfo._grid import Grid
from deepinfo._images import check_images
from deepinfo._jacobian import column_energies
from deepinfo._solver import Sampler, image_generators, measure_ratio
from deepinfo.result import InfoMaps
from deepinfo.settings import Settings


@dataclass
class LayerProblem:
    """One layer and a chunk of ``b`` images: what the per-layer algorithm works on.

    Attributes:
        name: the layer.
        sampler: perturbed forward passes ``h(x + sigma * eps)`` (noise tagged ``draw/<layer>``).
        W: ``[b, G]`` cell energies of the Jacobian, ``W_g = sum_{u in g} ||J[:, u]||^2``.
        delta_f2: ``[b]`` ``delta_f^2 = ||J||_F^2 = sum_g W_g``.
        decoder: the RU decoder of the layer, or ``None`` for CID.
    """

    name: str
    sampler: Sampler
    W: torch.Tensor
    delta_f2: torch.Tensor
    decoder: nn.Module | None
    settings: Settings
    first_image: int  # index of the chunk's first image in the whole batch (seeds the noise)
    min_draws: int  # RU: draws the map itself needs, whatever the ratio's precision

    @property
    def grid(self) -> Grid:
        return self.sampler.grid

    @property
    def channels(self) -> int:
        return self.sampler.x.shape[1]

    def reconstruction_error(self, fp: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``sum_c (g(f') - x)^2`` ``[D, b, H, W]`` of perturbed features ``[D, b, ...]`` of images ``x``."""
        D, b = fp.shape[:2]
        rec = self.decoder(fp.reshape(D * b, *fp.shape[2:]))
        return (rec.reshape(D, b, *x.shape[1:]) - x.unsqueeze(0)).pow(2).sum(2)

    def measure(self, log_sigma: torch.Tensor, tag: str, off_tol: float | None = None,
                idx: torch.Tensor | None = None):
        """The achieved ratio ``r``, its standard error and (RU) the mean reconstruction error
        ``[b, H, W]`` at ``log_sigma``, on fresh noise named ``<tag>/<layer>``; ``idx``: only
        these images of the chunk (their own generators, so the same noise as in a full call).
        ``off_tol``: stop early once ``r`` is clearly on or off the constraint (see ``measure_ratio``)."""
        s = self.settings
        b = self.delta_f2.shape[0]
        gens = image_generators(s.seed, self.first_image, b, f"{tag}/{self.name}", self.W.device)
        sampler = Sampler(self.sampler.tap, self.name, self.sampler.x, self.sampler.f, self.grid, gens,
                          self.sampler.jacobian)
        norm = s.beta * self.delta_f2
        if idx is not None:
            sampler, norm = sampler.subset(idx), norm[idx]
        per_draw = self.reconstruction_error if self.decoder is not None else None
        return measure_ratio(sampler, log_sigma, norm, s.eval_draws, max(s.draw_cap, self.min_draws),
                             rel_se=s.precision, per_draw=per_draw, min_draws=self.min_draws,
                             off_tol=off_tol)[:3]


@dataclass
class LayerMaps:
    """The per-layer algorithm's result for a chunk of ``b`` images and ``G`` cells."""

    pixelwise: torch.Tensor  # [b, G] nats (CID H_g or RU)
    ratio: torch.Tensor  # [b] achieved r
    ratio_se: torch.Tensor  # [b]
    log_sigma: torch.Tensor  # [b, G]
    delta_f2: torch.Tensor  # [b] the layer's sensitivity (from the problem)
    lambdas: torch.Tensor | None  # [b] final multiplier (optimize), else None


Solve = Callable[[LayerProblem, Settings], LayerMaps]


def run(kind: str, model: nn.Module, x: torch.Tensor, layers: str | Sequence[str], settings: Settings,
        solve: Solve, decoders: Mapping[str, nn.Module] | None = None, progress: bool = True) -> InfoMaps:
    """Estimate ``kind`` (``"cid"`` / ``"ru"``) maps of ``layers`` with ``solve`` for every layer and chunk."""
    x = check_images(x, "images", stacklevel=4)
    layers = resolve_layers(model, layers)
    device = model_device(model, x.device)
    x = x.detach().to(device)
    s = settings
    batch_size = s.batch_size or (32 if device.type != "cuda" else None)  # a GPU's is sized below
    B, C, H, W = x.shape
    g = Grid.make(s.grid, (H, W))
    # RU of a cell averages squared errors over draws, channels and the cell's pixels; ~200 such
    # terms give it a sampling sd of about 0.5 * sqrt(2 / 200) = 0.05 nats (chi-square errors)
    min_draws = math.ceil(200 / (C * int(g.pixel_counts().min()))) if kind == "ru" else 0
    out: list[list[LayerMaps]] = [[] for _ in layers]
    bar = tqdm(desc=f"{kind} ({s.method})", disable=not progress, leave=False)
    try:
        with ExitStack() as guards, bar:
            for module in [model, *(decoders or {}).values()]:
                guards.enter_context(ModelGuard(module))
            # the same features from fewer passes over memory (see _fold); the model is not changed
            tap = FeatureTap(fold_batchnorm(model, x[:1], layers), layers)
            if batch_size is None:
                batch_size = gpu_batch_size(tap, x, layers)
            per_chunk = max(1, batch_size // max(s.draws, s.eval_draws))  # perturbed images per pass <= batch_size
            chunks = [(lo, min(B, lo + per_chunk)) for lo in range(0, B, per_chunk)]
            bar.reset(total=len(chunks) * len(layers))
            for lo, hi in chunks:
                for li, problem in enumerate(_problems(tap, x, lo, hi, layers, g, s, decoders, min_draws, batch_size)):
                    out[li].append(solve(problem, s))
                    bar.update(1)
    except torch.cuda.OutOfMemoryError as e:
        if batch_size is None:
            raise torch.cuda.OutOfMemoryError(f"{kind}: out of GPU memory in one pass of 4 images") from e
        raise torch.cuda.OutOfMemoryError(
            f"{kind}: out of GPU memory with batch_size={batch_size} (perturbed images per forward "
            f"pass; peak memory scales with it): pass a smaller one, e.g. batch_size={max(1, batch_size // 4)}"
        ) from e
    return _assemble(kind, layers, out, s, g, (H, W))


def gpu_batch_size(tap: FeatureTap, x: torch.Tensor, layers: list[str], fraction: float = 0.5,
                   probe: int = 4, cap: int = 1024) -> int:
    """Perturbed images per pass that fit in ``fraction`` of the GPU's free memory.

    The memory per image is the peak of one forward and backward pass of ``probe`` copies of an
    image through every measured layer (what the descent and the Jacobian probes do), so the size
    follows the network and the image size. At most ``cap``, at least 1.
    """
    device = x.device
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    xp = x[:1].expand(probe, *x.shape[1:]).clone().requires_grad_(True)
    with torch.enable_grad():
        feats = tap(xp, layers)
        sum(f.float().pow(2).sum() for f in feats.values()).backward()
    per_image = (torch.cuda.max_memory_allocated(device) - before) / probe
    del xp, feats
    free, _ = torch.cuda.mem_get_info(device)
    return fit_batch(free, per_image, fraction, cap)


def fit_batch(free_bytes: float, bytes_per_image: float, fraction: float = 0.5, cap: int = 1024) -> int:
    """``floor(fraction * free / per_image)`` within ``[1, cap]``."""
    return int(max(1, min(cap, fraction * free_bytes // max(bytes_per_image, 1.0))))


def _problems(tap, x, lo, hi, layers, g, s, decoders, min_draws, batch_size):
    """The :class:`LayerProblem` of each layer for the images ``x[lo:hi]`` (energies in one pass)."""
    xc = x[lo:hi]
    energy, jacobians = column_energies(tap, xc, layers, s.n_probes, batch_size, s.seed, image_offset=lo)
    W = g.sum_cells(energy)  # [L, b, G]
    delta = W.sum(-1)  # [L, b]  delta_f^2 = ||J||_F^2
    flat = delta.flatten()
    if bool((flat <= 0).any()):
        li, bi = divmod(int((flat <= 0).nonzero()[0]), hi - lo)
        raise ValueError(f"layer {layers[li]!r} does not depend on the input for image {lo + bi} "
                         "(delta_f^2 = 0): its information discarding is undefined")
    with torch.no_grad():
        f = {k: v.reshape(v.shape[0], -1) for k, v in tap(xc).items()}
    for li, name in enumerate(layers):
        gens = image_generators(s.seed, lo, hi - lo, f"draw/{name}", x.device)
        sampler = Sampler(tap, name, xc, f[name], g, gens, jacobians.get(name))
        decoder = None if decoders is None else decoders[name]
        yield LayerProblem(name, sampler, W[li], delta[li], decoder, s, lo, min_draws)


def _assemble(kind, layers, out, s: Settings, g: Grid, image_size) -> InfoMaps:
    """Stack the per-layer, per-chunk results into maps ``[L, B, Gh, Gw]`` and warn about ratios off."""
    def stack(get):
        return torch.stack([torch.cat([get(m) for m in chunks]) for chunks in out])

    log_cap = math.log(s.sigma_max)
    L, (Gh, Gw) = len(layers), g.cells
    log_sigma = stack(lambda m: m.log_sigma)
    B = log_sigma.shape[1]
    maps = InfoMaps(
        layers=layers,
        pixelwise=stack(lambda m: m.pixelwise).reshape(L, B, Gh, Gw),
        constraint=stack(lambda m: m.ratio),
        constraint_se=stack(lambda m: m.ratio_se),
        sigma=log_sigma.exp().reshape(L, B, Gh, Gw),
        delta_f2=stack(lambda m: m.delta_f2),
        n_capped=(log_sigma >= log_cap - 1e-6).sum(-1),
        kind=kind,
        method=s.method,
        beta=float(s.beta),
        sigma_max=float(s.sigma_max),
        grid=(Gh, Gw),
        image_size=image_size,
        seed=s.seed,
        lambdas=stack(lambda m: m.lambdas) if s.method == "optimize" else None,
        info=dict(n_probes=s.n_probes, steps=s.steps, draws=s.draws, lr=s.lr, eval_draws=s.eval_draws,
                  max_eval_draws=s.draw_cap, rel_se=s.precision, tol=s.tol, init=s.init,
                  calibrate=s.calibrate if s.method == "linear" else None),
    )
    if s.rescales:
        off = ((maps.constraint - 1).abs() > s.tol).nonzero().tolist()
        if off:
            warnings.warn(
                f"{kind}: the constraint ratio is off by more than {s.tol:.0%} for (layer, image) "
                f"{[(layers[a], b) for a, b in off][:10]}; see maps.constraint", stacklevel=4
            )
    return maps

"""The decoder ``g`` of the reconstruction-uncertainty (RU) metric, and how to train it.

RU (paper Section 3.2) needs a decoder ``g`` that maps a layer's feature ``f = h(x)`` back to the
image: ``x_hat = g(f)``. The paper pre-trains ``g`` with the MSE loss ``||g(h(x)) - x||^2`` and
uses the *same* decoder architecture for every layer and every network so that RU values stay
comparable: a ResNet decoder with six residual blocks, where transposed convolutions are added to
both tracks (residual and shortcut) of the first 2-4 blocks to go from the low-resolution feature
up to the image size (paper Section 4, second paragraph; 6 vs 8 blocks in Appendix J).

Public names:

- :class:`ResNetDecoder` -- the architecture, ``[B, *feature_shape] -> [B, C, H, W]`` in [0, 1].
- :func:`train_decoder` -- fit one decoder to one (model, layer); the model is left untouched.
- :func:`decoders_for` -- one trained decoder per layer, the ``{layer: decoder}`` dict that
  ``deepinfo.ru(model, decoders, x, layers)`` takes.
- :class:`DecoderFit` / :class:`DecoderLog` -- what training reports (per-epoch mean MSE, step log).

Everything here needs torch (and tqdm) only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from deepinfo._features import features as capture_features
from deepinfo._features import resolve_layers
from deepinfo._images import check_images

__all__ = [
    "FLAT_START_MAX_SIDE",
    "DecoderFit",
    "DecoderLog",
    "ResNetDecoder",
    "decoders_for",
    "pixel_variance",
    "reconstruction_mse",
    "train_decoder",
]

#: Flat (fully connected) features have no spatial layout: the linear stem maps them to a
#: ``width x h0 x w0`` map whose sides are at most this many pixels, and the upsampling blocks
#: double it from there (32 px -> 8x8 and 2 doublings, 64 -> 3, 128 -> 4, 224 -> 7x7 and 5), which
#: matches the paper's "first 2-4 residual blocks" for the usual image sizes while keeping the
#: stem's weight matrix (``m x width*h0*w0``) moderate for 4096-d FC features.
FLAT_START_MAX_SIDE = 8


# --------------------------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------------------------


def _doublings(size: int, target: int, cap: int) -> int:
    """Smallest k <= cap with ``size * 2**k >= target`` (0 when ``size >= target``)."""
    k = 0
    while size * 2**k < target and k < cap:
        k += 1
    return k


def _flat_doublings(target: int, cap: int) -> int:
    """Smallest k <= cap with ``ceil(target / 2**k) <= FLAT_START_MAX_SIDE``."""
    k = 0
    while math.ceil(target / 2**k) > FLAT_START_MAX_SIDE and k < cap:
        k += 1
    return k


class _ResidualBlock(nn.Module):
    """A pre-activation-free ResNet basic block, optionally upsampling by 2 per spatial dim.

    ``up = (up_h, up_w)``: for each dim that is doubled, both tracks use a transposed
    convolution with stride 2 there (residual track: kernel 4, padding 1; shortcut: kernel 2),
    as the paper describes; a dim that is not doubled keeps stride 1 (kernel 3 / 1).
    Shapes: ``[B, width, h, w] -> [B, width, h * 2**up_h, w * 2**up_w]``.
    """

    def __init__(self, width: int, up: tuple[bool, bool] = (False, False)):
        super().__init__()
        self.up = tuple(bool(u) for u in up)
        if any(self.up):
            stride = tuple(2 if u else 1 for u in self.up)
            kernel = tuple(4 if u else 3 for u in self.up)
            short_kernel = tuple(2 if u else 1 for u in self.up)
            first = nn.ConvTranspose2d(width, width, kernel, stride=stride, padding=1, bias=False)
            self.shortcut = nn.Sequential(
                nn.ConvTranspose2d(width, width, short_kernel, stride=stride, bias=False),
                nn.BatchNorm2d(width),
            )
        else:
            first = nn.Conv2d(width, width, 3, padding=1, bias=False)
            self.shortcut = nn.Identity()
        self.residual = nn.Sequential(
            first,
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.relu(self.residual(z) + self.shortcut(z))


def _check_shape(name: str, shape, *, length: int | None = None) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"{name} must be a tuple of positive ints, got {shape!r}") from None
    if not shape or any(s < 1 for s in shape) or (length is not None and len(shape) != length):
        what = f"{length} positive ints" if length else "a non-empty tuple of positive ints"
        raise ValueError(f"{name} must be {what}, got {shape!r}")
    return shape


class ResNetDecoder(nn.Module):
    """ResNet decoder ``g``: one image's layer feature -> the image, in pixel space [0, 1].

    Args:
        feature_shape: one image's feature shape (no batch dim). ``(C, h, w)`` is a conv
            feature; ``(m,)`` (or ``(C,)``, or ``(C, 1, 1)``) a flat / FC feature. Any other
            number of dims (e.g. ``(T, D)`` tokens) is treated as flat with ``m = prod(shape)``.
        image_shape: ``(C, H, W)`` of the images to reconstruct.
        n_blocks: residual blocks (the paper uses 6; Appendix J compares 8).
        width: channels inside the decoder (constant through all blocks).

    Architecture (``k = n_upsampling_blocks``):

    - stem: conv features -> 1x1 conv to ``width`` channels + BN + ReLU;
      flat features -> linear to ``width * h0 * w0`` + reshape + BN + ReLU, where
      ``h0 = ceil(H / 2**k_h)`` with ``k_h`` the fewest doublings that bring ``H`` down to
      ``FLAT_START_MAX_SIDE`` or less (likewise for W).
    - ``n_blocks`` residual blocks (3x3 convs, BN, ReLU). The first ``k`` are upsampling blocks:
      transposed convs with stride 2 on both the residual and the shortcut track. For conv
      features ``k_h`` is the fewest doublings with ``h * 2**k_h >= H`` (likewise ``k_w``), each
      capped at ``n_blocks``, and ``k = max(k_h, k_w)``; a dim needing fewer doublings than the
      other keeps stride 1 in the later upsampling blocks.
    - when the blocks' output size differs from ``(H, W)`` -- sizes that are not a power-of-two
      ratio (e.g. 6x6 -> 96x96 for a 64x64 image), more than ``n_blocks`` doublings needed, or a
      feature map larger than the image -- one exact bilinear resize (antialiased) to ``(H, W)``;
      it sits before the output conv so that the conv can clean up after it.
    - head: 3x3 conv to ``C`` channels, sigmoid.

    Forward: ``[B, *feature_shape]`` (or already flattened ``[B, prod(feature_shape)]``)
    -> ``[B, C, H, W]`` with values in (0, 1).

    Attributes: ``feature_shape``, ``image_shape``, ``flat`` (bool), ``n_upsampling_blocks``,
    ``block_output_size`` (``(h', w')`` after the blocks), ``resizes`` (bool: the final resize
    is used).
    """

    def __init__(
        self,
        feature_shape: tuple[int, ...],
        image_shape: tuple[int, int, int],
        n_blocks: int = 6,
        width: int = 64,
    ):
        super().__init__()
        feature_shape = _check_shape("feature_shape", feature_shape)
        image_shape = _check_shape("image_shape (C, H, W)", image_shape, length=3)
        if int(n_blocks) != n_blocks or n_blocks < 1:
            raise ValueError(f"n_blocks must be a positive int, got {n_blocks!r}")
        if int(width) != width or width < 1:
            raise ValueError(f"width must be a positive int, got {width!r}")
        n_blocks, width = int(n_blocks), int(width)
        self.feature_shape = feature_shape
        self.image_shape = image_shape
        self.n_blocks = n_blocks
        self.width = width
        self.n_features = math.prod(feature_shape)
        c_img, H, W = image_shape

        conv = len(feature_shape) == 3 and feature_shape[1:] != (1, 1)
        self.flat = not conv
        if conv:
            c_in, h, w = feature_shape
            k_h, k_w = _doublings(h, H, n_blocks), _doublings(w, W, n_blocks)
            start = (h, w)
            self.stem = nn.Sequential(
                nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
            )
        else:
            k_h, k_w = _flat_doublings(H, n_blocks), _flat_doublings(W, n_blocks)
            start = (math.ceil(H / 2**k_h), math.ceil(W / 2**k_w))
            self.stem = nn.Sequential(
                nn.Linear(self.n_features, width * start[0] * start[1]),
                nn.Unflatten(1, (width, *start)),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            )
        self.n_upsampling_blocks = max(k_h, k_w)
        self.blocks = nn.Sequential(
            *(_ResidualBlock(width, (i < k_h, i < k_w)) for i in range(n_blocks))
        )
        self.block_output_size = (start[0] * 2**k_h, start[1] * 2**k_w)
        self.resizes = self.block_output_size != (H, W)
        self.head = nn.Conv2d(width, c_img, 3, padding=1)

    def extra_repr(self) -> str:
        return (
            f"feature_shape={self.feature_shape}, image_shape={self.image_shape}, "
            f"n_blocks={self.n_blocks}, width={self.width}, "
            f"n_upsampling_blocks={self.n_upsampling_blocks}, resizes={self.resizes}"
        )

    def _as_input(self, feature: torch.Tensor) -> torch.Tensor:
        """Validate and bring a feature batch to ``[B, m]`` (flat) or ``[B, C, h, w]`` (conv)."""
        if not isinstance(feature, torch.Tensor):
            raise TypeError(f"feature must be a torch.Tensor, got {type(feature).__name__}")
        shape = tuple(feature.shape)
        if feature.dim() == 1 + len(self.feature_shape) and shape[1:] == self.feature_shape:
            pass
        elif feature.dim() == 2 and shape[1] == self.n_features:
            pass
        else:
            raise ValueError(
                f"feature has shape {shape}; this decoder accepts [B, *{self.feature_shape}] "
                f"or the flattened [B, {self.n_features}]"
            )
        if self.flat:
            return feature.reshape(shape[0], self.n_features)
        return feature.reshape(shape[0], *self.feature_shape)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        z = self.blocks(self.stem(self._as_input(feature)))
        if self.resizes:
            z = F.interpolate(
                z, size=self.image_shape[1:], mode="bilinear", align_corners=False, antialias=True
            )
        return torch.sigmoid(self.head(z))


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass
class DecoderFit:
    """Summary of one decoder's training.

    ``epoch_mse[e]`` is the mean per-pixel squared error ``(g(h(x)) - x)^2`` (pixel space, units
    of pixel variance) over all images of epoch ``e + 1``, with the decoder in training mode as
    the optimizer saw it (batch-norm batch statistics).
    """

    layer: str
    feature_shape: tuple[int, ...]
    image_shape: tuple[int, int, int]
    n_blocks: int
    width: int
    n_upsampling_blocks: int
    epochs: int
    lr: float
    seed: int
    epoch_mse: list[float] = field(default_factory=list)
    n_images_per_epoch: int = 0
    seconds: float = 0.0

    @property
    def final_mse(self) -> float:
        """Mean per-pixel MSE over the last epoch (``nan`` if no epoch ran)."""
        return self.epoch_mse[-1] if self.epoch_mse else float("nan")


class DecoderLog(list):
    """The reconstruction-error log: a list of ``{"epoch", "step", "mse"}`` dicts.

    ``epoch`` and ``step`` (optimizer updates, counted over all epochs) start at 1; ``mse`` is
    that batch's mean per-pixel squared error. ``log.fit`` is the :class:`DecoderFit` summary
    (per-epoch mean MSE), also available as ``decoder.fit``.
    """

    fit: DecoderFit | None = None

    @property
    def epoch_mse(self) -> list[float]:
        return [] if self.fit is None else list(self.fit.epoch_mse)


def _first_tensor(batch) -> torch.Tensor:
    """The images of a loader batch: a bare tensor, or the first element of a tuple / list."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError("loader yielded an empty tuple / list; expected (images, ...)")
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        raise TypeError(
            "loader batches must be image tensors [B, C, H, W] or tuples / lists whose first "
            f"element is one; got {type(batch).__name__}"
        )
    return batch


def _check_images(x: torch.Tensor, image_shape: tuple[int, ...] | None) -> None:
    # The decoder ends in a sigmoid: targets outside [0, 1] (e.g. already normalized images)
    # could never be reached and would mean the model's normalization is applied twice.
    check_images(x, "images", pixel_range="error")
    if image_shape is not None and tuple(x.shape[1:]) != image_shape:
        raise ValueError(
            f"all batches must share one image shape: got {tuple(x.shape[1:])} after {image_shape}"
        )


def _model_device(model: nn.Module) -> torch.device | None:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return None


@torch.no_grad()
def reconstruction_mse(model: nn.Module, layer: str, decoder: nn.Module, images: torch.Tensor) -> float:
    """``mean((decoder(h(images)) - images)^2)`` without noise: what a trained decoder can rebuild
    from the layer (RU cannot go below it). ``images``: ``[B, C, H, W]`` in pixel space."""
    feature = capture_features(model, images, layer)[layer]
    return float(F.mse_loss(decoder(feature), images))


def pixel_variance(images: torch.Tensor) -> float:
    """The per-channel variance of ``images [B, C, H, W]``, pooled: the MSE of a decoder that outputs
    each channel's mean colour, the yardstick a decoder's :func:`reconstruction_mse` is judged by."""
    return float((images - images.mean(dim=(0, 2, 3), keepdim=True)).pow(2).mean())


def train_decoder(
    model: nn.Module,
    layer: str,
    loader: Iterable,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    n_blocks: int = 6,
    width: int = 64,
    device: torch.device | str | None = None,
    progress: bool = True,
    seed: int = 0,
    log_every: int = 10,
) -> tuple[ResNetDecoder, DecoderLog]:
    """Train the RU decoder ``g`` of one layer: minimize ``mean (g(h(x)) - x)^2`` with Adam.

    Args:
        model: the network; frozen (features are computed under ``no_grad``) and in eval mode
            while training, and left exactly as found (per-module training flags, parameters,
            ``requires_grad``, gradients, hooks).
        layer: a module name from ``model.named_modules()``; its output is the feature ``h(x)``.
        loader: an iterable of batches (re-iterated each epoch): image tensors ``[B, C, H, W]``
            in [0, 1], or tuples / lists whose first element is one (``(images, labels)``,
            ``(images, labels, masks)``).
        epochs, lr: Adam epochs and learning rate.
        n_blocks, width: the :class:`ResNetDecoder` architecture; the feature and image shapes
            come from the first batch.
        device: where to train; ``None`` = the model's device (CPU for a model without tensors).
            The model is never moved: a ``device`` that differs from it is an error.
        progress: show a tqdm bar (one tick per batch).
        seed: seeds the decoder's initialization and everything that draws from torch's
            global RNG during training (e.g. a ``DataLoader`` shuffle without its own
            generator); the global RNG state is restored afterwards. Same seed, same loader ->
            same weights (bitwise on CPU; CUDA kernels may be non-deterministic).
        log_every: log a batch's MSE every ``log_every`` steps (and always the first step).

    Returns:
        ``(decoder, log)``: the trained :class:`ResNetDecoder`, on ``device``, in eval mode and
        with ``requires_grad=False`` (ready for ``deepinfo.ru``; gradients still flow through
        it to its input), and the :class:`DecoderLog` step log, whose ``.fit`` (also
        ``decoder.fit``) is the :class:`DecoderFit` summary with the per-epoch mean MSE.
    """
    resolve_layers(model, layer)  # KeyError naming the nearest valid names, before any work
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not (lr > 0):
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if int(log_every) != log_every or log_every < 1:
        raise ValueError(f"log_every must be a positive int, got {log_every!r}")
    model_device = _model_device(model)
    if device is None:
        device = model_device if model_device is not None else torch.device("cpu")
    device = torch.device(device)
    same = model_device is None or (
        model_device.type == device.type and device.index in (None, model_device.index)
    )
    if not same:
        raise ValueError(
            f"the model is on {model_device} but device={device}; move the model there first "
            "or pass device=None (train_decoder never moves the model)"
        )

    try:
        n_batches = len(loader)  # type: ignore[arg-type]
    except TypeError:
        n_batches = None
    total = n_batches * int(epochs) if n_batches is not None else None

    training_flags = [(m, m.training) for m in model.modules()]
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    decoder: ResNetDecoder | None = None
    log = DecoderLog()
    fit: DecoderFit | None = None
    t0 = time.perf_counter()
    model.eval()
    try:
        with torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(seed)
            bar = tqdm(total=total, disable=not progress, desc=f"decoder {layer}", unit="batch")
            step = 0
            for epoch in range(1, int(epochs) + 1):
                sq_sum, n_px, n_img = 0.0, 0, 0
                for batch in loader:
                    x = _first_tensor(batch).to(device)
                    _check_images(x, None if decoder is None else decoder.image_shape)
                    f = capture_features(model, x, layer)[layer]
                    if decoder is None:
                        # The architecture depends on the feature shape, known only now.
                        decoder = ResNetDecoder(
                            tuple(f.shape[1:]), tuple(x.shape[1:]), n_blocks, width
                        ).to(device)
                        opt = torch.optim.Adam(decoder.parameters(), lr=lr)
                        fit = DecoderFit(
                            layer=layer,
                            feature_shape=decoder.feature_shape,
                            image_shape=decoder.image_shape,
                            n_blocks=n_blocks,
                            width=width,
                            n_upsampling_blocks=decoder.n_upsampling_blocks,
                            epochs=int(epochs),
                            lr=float(lr),
                            seed=seed,
                        )
                    decoder.train()
                    loss = F.mse_loss(decoder(f), x)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    step += 1
                    mse = float(loss.detach())
                    sq_sum += mse * x.numel()
                    n_px += x.numel()
                    n_img += x.shape[0]
                    if step == 1 or step % log_every == 0:
                        log.append({"epoch": epoch, "step": step, "mse": mse})
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, mse=f"{mse:.4g}")
                if n_img == 0:
                    raise ValueError(
                        f"loader yielded no batches in epoch {epoch}; it must be re-iterable "
                        "(a DataLoader or a list of batches, not a one-shot generator)"
                    )
                fit.epoch_mse.append(sq_sum / n_px)
                fit.n_images_per_epoch = n_img
            bar.close()
    finally:
        for m, flag in training_flags:
            m.train(flag)

    fit.seconds = time.perf_counter() - t0
    decoder.zero_grad(set_to_none=True)  # no stale training gradients on a frozen module
    decoder.eval().requires_grad_(False)
    decoder.fit = fit
    log.fit = fit
    return decoder, log


def decoders_for(
    model: nn.Module, layers: str | Sequence[str], loader: Iterable, **kw
) -> dict[str, ResNetDecoder]:
    """One trained decoder per layer: ``{layer: decoder}``, in the order of ``layers``.

    All names are checked before any training (KeyError with the nearest names). ``kw`` goes
    to :func:`train_decoder` (``epochs``, ``lr``, ``n_blocks``, ``width``, ``device``,
    ``progress``, ``seed``, ``log_every``); each decoder's summary is ``decoder.fit``.
    This is the ``decoders`` argument of ``deepinfo.ru(model, decoders, x, layers)``.
    """
    names = resolve_layers(model, layers)  # KeyError / ValueError before any training
    return {name: train_decoder(model, name, loader, **kw)[0] for name in names}

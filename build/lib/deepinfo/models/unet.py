"""U-Net (Ronneberger et al., MICCAI 2015) for the ISBI 2012 membrane segmentation (paper App. G.1).

The paper gives no details of its U-Net beyond the citation; this one follows the common PyTorch
form of Ronneberger's network (two 3x3 conv + BatchNorm + ReLU per block, 2x2 max-pool down,
2x2 transposed conv up, skip connections by concatenation, a final 1x1 conv), with two changes
that matter here:

- **padded 3x3 convs**, so the output map has the input's size (the original uses unpadded
  convs and predicts a smaller centre tile); inputs of any size work: when a side is not
  divisible by ``2**levels`` the up-sampled map is zero-padded to its skip connection's size.
- **two output channels** (cell, membrane) as in the original (soft-max over 2 classes), so the
  project's default ``cross_entropy_loss`` and ``evaluate`` (pixel accuracy) apply unchanged:
  ``model(x).argmax(1)`` is the predicted mask (1 = membrane).

BatchNorm after every conv is ours (the original has none): it makes the short CPU schedules of
the cpu profile train reliably, and in eval mode it is a fixed affine map, so the estimators see
a plain deterministic network.

Module names (the layers the estimators measure, in forward order)::

    normalize                     pixel space [0, 1] -> (x - mean) / std
    enc.0 .. enc.{L-1}            encoder blocks, enc.k at 1 / 2**k of the input side
    bottleneck                    max-pool + block at 1 / 2**L of the input side
    dec.0 .. dec.{L-1}            decoder blocks, dec.k at 1 / 2**(L-1-k) (dec.{L-1}: full size)
    head                          1x1 conv to the class logits

``"blocks"`` resolves to every encoder block, the bottleneck and every decoder block;
``"stages"`` to the three ends of the U: ``enc.0``, ``bottleneck``, ``dec.{L-1}`` (see
:mod:`deepinfo.models.layer_names`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepinfo.models.normalize import Normalize

__all__ = ["ISBI_MEAN", "ISBI_STD", "UNet", "unet", "unet_block_names", "unet_stage_names"]

# Mean and standard deviation of the 30 ISBI 2012 training slices (pixel units, [0, 1] scale),
# measured on the challenge's train-volume.tif: 0.4948 and 0.1726.
ISBI_MEAN = 0.4948
ISBI_STD = 0.1726


class DoubleConv(nn.Sequential):
    """(3x3 conv, padding 1 -> BatchNorm -> ReLU) x 2: ``[B, c_in, H, W] -> [B, c_out, H, W]``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    """2x2 max-pool then :class:`DoubleConv`: ``[B, c_in, H, W] -> [B, c_out, H // 2, W // 2]``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(c_in, c_out))


class Up(nn.Module):
    """2x2 transposed conv (halving the channels), concatenation with the skip, :class:`DoubleConv`.

    ``forward(x [B, c_in, h, w], skip [B, c_in // 2, H, W]) -> [B, c_out, H, W]``; the up-sampled
    map (``2h x 2w``) is zero-padded to ``H x W`` when the encoder's pooling floored an odd side.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_in // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(c_in // 2 + c_in // 2, c_out)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dh or dw:
            x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """``[B, C, H, W]`` pixel-space images in [0, 1] -> ``[B, num_classes, H, W]`` logits.

    Args:
        in_channels: image channels (1 for the grey EM slices).
        num_classes: output channels (2: cell / membrane, soft-max over dim 1).
        base_channels: channels of ``enc.0``; they double at every level (the original: 64).
        levels: number of 2x down-sampling steps (the original: 4); the bottleneck works at
            ``1 / 2**levels`` of the input side, so inputs need a side of at least ``2**levels``.
        mean, std: the normalization the model applies first (one value, or one per channel);
            default: the ISBI 2012 training-volume statistics.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base_channels: int = 64,
                 levels: int = 4, mean: float | tuple[float, ...] = ISBI_MEAN,
                 std: float | tuple[float, ...] = ISBI_STD) -> None:
        super().__init__()
        for label, v in (("in_channels", in_channels), ("num_classes", num_classes),
                         ("base_channels", base_channels), ("levels", levels)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"UNet: {label} must be an int >= 1, got {v!r}")
        mean = (mean,) * in_channels if isinstance(mean, (int, float)) else tuple(mean)
        std = (std,) * in_channels if isinstance(std, (int, float)) else tuple(std)
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"UNet: mean and std need 1 or in_channels = {in_channels} values, "
                             f"got {len(mean)} and {len(std)}")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.base_channels, self.levels = base_channels, levels
        widths = [base_channels * 2**k for k in range(levels + 1)]  # enc.0 .. bottleneck
        self.normalize = Normalize(mean, std)
        self.enc = nn.ModuleList(
            [DoubleConv(in_channels, widths[0])] + [Down(widths[k - 1], widths[k]) for k in range(1, levels)]
        )
        self.bottleneck = Down(widths[levels - 1], widths[levels])
        self.dec = nn.ModuleList([Up(widths[k], widths[k - 1]) for k in range(levels, 0, -1)])
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    @property
    def min_input_size(self) -> int:
        """The smallest input side (pixels) the bottleneck can take: ``2**levels``."""
        return 2**self.levels

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(f"UNet with {self.levels} levels needs images [B, {self.in_channels}, H, W] "
                             f"with H, W >= {self.min_input_size}, got {tuple(x.shape)}")
        h = self.normalize(x)
        skips = []
        for block in self.enc:
            h = block(h)
            skips.append(h)
        h = self.bottleneck(h)
        for block, skip in zip(self.dec, reversed(skips)):
            h = block(h, skip)
        return self.head(h)


def unet(base_channels: int = 64, levels: int = 4, *, in_channels: int = 1, num_classes: int = 2,
         seed: int | None = None) -> UNet:
    """A :class:`UNet`; with ``seed`` its initial weights depend on the seed only (torch's
    global RNG is left as it was)."""
    if seed is None:
        return UNet(in_channels, num_classes, base_channels, levels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet(in_channels, num_classes, base_channels, levels)


def unet_block_names(model: nn.Module) -> list[str]:
    """``["enc.0", ..., "enc.{L-1}", "bottleneck", "dec.0", ..., "dec.{L-1}"]`` in forward order."""
    if not _is_unet(model):
        raise ValueError(f"unet_block_names needs a UNet (enc, bottleneck, dec), got {type(model).__name__}")
    return ([f"enc.{k}" for k in range(len(model.enc))] + ["bottleneck"]
            + [f"dec.{k}" for k in range(len(model.dec))])


def unet_stage_names(model: nn.Module) -> list[str]:
    """The three ends of the U: ``["enc.0", "bottleneck", "dec.{L-1}"]`` (first block, coarsest
    block, last block before the 1x1 head)."""
    if not _is_unet(model):
        raise ValueError(f"unet_stage_names needs a UNet (enc, bottleneck, dec), got {type(model).__name__}")
    return ["enc.0", "bottleneck", f"dec.{len(model.dec) - 1}"]


def _is_unet(model: nn.Module) -> bool:
    return (isinstance(getattr(model, "enc", None), nn.ModuleList)
            and isinstance(getattr(model, "dec", None), nn.ModuleList)
            and isinstance(getattr(model, "bottleneck", None), nn.Module))

"""A generated classification data set with exact foreground masks, needing no download.

Each item is one object (its class is its shape: disc, square, triangle, ...) with a random
colour, size, position and rotation, drawn over a cluttered background: a smooth random texture,
random strokes and random blobs. Nothing in the background depends on the class, so a network
can only classify by looking at the object, and the object's mask is known exactly: it is the
set of pixels the object was painted on (pixel centre inside the shape; no anti-aliasing, so no
pixel outside the mask is touched by the object).

Scenes are defined in normalized coordinates ``[0, 1]^2``, so the same item at another
``image_size`` is the same scene rasterized at another resolution (only the pixel noise and
rasterization differ). Item ``i`` depends only on ``(seed, split, i, image_size)`` and is
generated on the fly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from deepinfo.datasets._common import MaskedItem

SHAPES = ("disc", "square", "triangle", "cross", "ring", "bar", "star", "ell")
SPLITS = {"train": 0, "val": 1, "test": 2}

# The largest distance of any shape's points from its centre, in units of the object size; it
# keeps objects fully inside the image.
_EXTENT = 1.16
_SIZE_RANGE = (0.2, 0.32)  # object size (about its radius), fraction of the image side
_NOISE_STD = 0.02


@dataclass(frozen=True)
class SyntheticParams:
    """The scene parameters of one item (normalized coordinates, x to the right, y down).

    Attributes:
        label: class index.
        shape: class name (one of ``SHAPES``).
        center: ``(cx, cy)`` of the object, in ``[0, 1]``.
        size: object size (a disc's radius), fraction of the image side.
        angle: rotation in radians.
        contrast: per-channel offsets of the object colour from the mean of the background it
            covers (each channel moves away from that mean, towards the farther end of [0, 1]).
        shading: strength and direction ``(g, dx, dy)`` of the linear shading across the object.
    """

    label: int
    shape: str
    center: tuple[float, float]
    size: float
    angle: float
    contrast: tuple[float, float, float]
    shading: tuple[float, float, float]


class Synthetic(Dataset):
    """Shapes on cluttered backgrounds: items ``MaskedItem(image [3,S,S], label, mask [S,S])``.

    Args:
        n: number of items.
        image_size: side ``S`` of the square images in pixels (16 to 224 are the intended sizes;
            anything >= 8 works).
        num_classes: number of shape classes, 2 to 8; class ``k`` is ``SHAPES[k]``.
        split: ``"train"``, ``"val"`` or ``"test"``; each split is a different random stream.
        seed: non-negative integer; items differ between seeds.

    Labels cycle through the classes (``label = i % num_classes``), so any ``n`` that is a
    multiple of ``num_classes`` is exactly balanced.

    Attributes:
        classes, num_classes, has_masks (True), targets (list of labels).
    """

    has_masks = True
    task = "classification"
    name = "synthetic"

    def __init__(self, n: int, image_size: int = 32, num_classes: int = 4,
                 split: str = "train", seed: int = 0):
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        if not isinstance(image_size, (int, np.integer)) or image_size < 8:
            raise ValueError(f"image_size must be an integer >= 8 (16 to 224 intended), "
                             f"got {image_size!r}")
        if not 2 <= num_classes <= len(SHAPES):
            raise ValueError(f"num_classes must be between 2 and {len(SHAPES)} "
                             f"(shapes {', '.join(SHAPES)}), got {num_classes!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.n = int(n)
        self.image_size = int(image_size)
        self.num_classes = int(num_classes)
        self.split = split
        self.seed = int(seed)
        self.classes = list(SHAPES[: self.num_classes])
        self.targets = [i % self.num_classes for i in range(self.n)]
        # Pixel-centre coordinates, shared by every item of this size.
        c = (np.arange(self.image_size, dtype=np.float32) + 0.5) / self.image_size
        self._yy, self._xx = np.meshgrid(c, c, indexing="ij")

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return (f"Synthetic(n={self.n}, image_size={self.image_size}, "
                f"num_classes={self.num_classes}, split={self.split!r}, seed={self.seed})")

    # --- random streams -------------------------------------------------------------------

    def _streams(self, index: int) -> tuple[np.random.Generator, ...]:
        """Independent generators for the background, the object and the pixel noise.

        Keyed by (seed, split, index) only, so an item never depends on the other items, on
        ``n`` or on the class count (the background stream does not even see the label).
        """
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for Synthetic of length {self.n}")
        seq = np.random.SeedSequence([self.seed, SPLITS[self.split], int(index)])
        return tuple(np.random.default_rng(s) for s in seq.spawn(3))

    # --- public -----------------------------------------------------------------------------

    def params(self, index: int) -> SyntheticParams:
        """The scene parameters of item ``index`` (no rendering)."""
        _, obj_rng, _ = self._streams(index)
        return self._object_params(index, obj_rng)

    def __getitem__(self, index: int) -> MaskedItem:
        if isinstance(index, (torch.Tensor, np.integer)):
            index = int(index)
        if index < 0:
            index += self.n
        image, mask = self.render(index)
        return MaskedItem(image, index % self.num_classes, mask)

    def render(self, index: int, background: float | torch.Tensor | None = None,
               draw_object: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Render item ``index``, optionally over a replacement background.

        Args:
            index: item index.
            background: None for the item's own background; a number or a float tensor
                broadcastable to ``[3, S, S]`` to paint the object over it instead (the object's
                colour is still chosen from the item's own background, so the object pixels are
                identical to those of ``ds[index]``). Meant for checking masks.
            draw_object: False renders the background alone.

        Returns:
            ``(image [3, S, S] float32, mask [S, S] bool)``; the image is in ``[0, 1]`` unless a
            replacement background outside that range was given.
        """
        bg_rng, obj_rng, noise_rng = self._streams(index)
        own = self._background(bg_rng, noise_rng)
        p = self._object_params(index, obj_rng)
        mask = self._object_mask(p)
        if background is None:
            canvas = own.copy()
        else:
            bg = torch.as_tensor(background, dtype=torch.float32)
            canvas = bg.expand(3, self.image_size, self.image_size).numpy().copy()
        if draw_object:
            colour = self._object_colour(p, own, mask)
            canvas[:, mask] = colour[:, mask]
        else:
            mask = np.zeros_like(mask)
        return torch.from_numpy(canvas), torch.from_numpy(mask)

    # --- scene ------------------------------------------------------------------------------

    def _object_params(self, index: int, rng: np.random.Generator) -> SyntheticParams:
        label = index % self.num_classes
        size = rng.uniform(*_SIZE_RANGE)
        margin = _EXTENT * size
        cx, cy = rng.uniform(margin, 1.0 - margin, size=2)
        angle = rng.uniform(0.0, 2.0 * math.pi)
        contrast = rng.uniform(0.35, 0.6, size=3)
        g = rng.uniform(0.0, 0.25)
        theta = rng.uniform(0.0, 2.0 * math.pi)
        return SyntheticParams(
            label=label, shape=SHAPES[label], center=(float(cx), float(cy)), size=float(size),
            angle=float(angle), contrast=tuple(float(v) for v in contrast),
            shading=(float(g), math.cos(theta), math.sin(theta)))

    def _object_frame(self, p: SyntheticParams) -> tuple[np.ndarray, np.ndarray]:
        """Pixel centres in the object's frame: centred, rotated by -angle, in units of size."""
        dx = self._xx - p.center[0]
        dy = self._yy - p.center[1]
        c, s = math.cos(p.angle), math.sin(p.angle)
        return (c * dx + s * dy) / p.size, (-s * dx + c * dy) / p.size

    def _object_mask(self, p: SyntheticParams) -> np.ndarray:
        px, py = self._object_frame(p)
        return shape_mask(p.shape, px, py)

    def _object_colour(self, p: SyntheticParams, background: np.ndarray,
                       mask: np.ndarray) -> np.ndarray:
        """Object colour per pixel ``[3, S, S]``: contrasting with the background it covers."""
        under = background[:, mask].mean(axis=1) if mask.any() else background.mean(axis=(1, 2))
        # Away from the background, per channel: every channel contrasts by >= 0.35, and the
        # polarity (lighter or darker) follows the background, not the class.
        sign = np.where(under < 0.5, 1.0, -1.0)
        contrast = np.array(p.contrast)
        base = np.clip(under + sign * contrast, 0.0, 1.0).astype(np.float32)
        g, ux, uy = p.shading
        ramp = ((self._xx - p.center[0]) * ux + (self._yy - p.center[1]) * uy) / p.size
        colour = base[:, None, None] * (1.0 + g * ramp)[None]
        return np.clip(colour, 0.0, 1.0).astype(np.float32)

    def _background(self, rng: np.random.Generator, noise_rng: np.random.Generator) -> np.ndarray:
        """Smooth random texture + strokes + blobs + pixel noise, ``[3, S, S]`` in [0, 1]."""
        size = self.image_size
        coords = self._xx[0]  # pixel centres along one axis
        img = np.empty((3, size, size), dtype=np.float32)
        img[:] = rng.uniform(0.15, 0.85, size=3)[:, None, None]
        # Smooth texture: a few low-frequency waves and some finer stripes, each with its own
        # colour direction. Frequencies in cycles per image side (<= 6 so that 16 px is enough).
        waves = np.empty((7, size * size), dtype=np.float32)
        weights = np.empty((3, 7), dtype=np.float32)
        for k in range(7):
            freq = rng.uniform(0.5, 2.5) if k < 4 else rng.uniform(3.0, 6.0)
            amp = rng.uniform(0.03, 0.08) if k < 4 else rng.uniform(0.01, 0.03)
            theta, phase = rng.uniform(0.0, 2.0 * math.pi, size=2)
            weights[:, k] = amp * rng.normal(0.0, 1.0, size=3)
            # cos(a x + b y + phase), computed from 1-D factors (cheap at 224 px).
            ax = 2 * math.pi * freq * math.cos(theta) * coords
            by = 2 * math.pi * freq * math.sin(theta) * coords + phase
            waves[k] = (np.outer(np.cos(by), np.cos(ax))
                        - np.outer(np.sin(by), np.sin(ax))).ravel()
        img += (weights @ waves).reshape(3, size, size)
        pixel = 1.0 / size
        for _ in range(int(rng.integers(2, 7))):  # strokes: straight line segments
            x0, y0 = rng.uniform(0.0, 1.0, size=2)
            theta = rng.uniform(0.0, 2.0 * math.pi)
            length = rng.uniform(0.15, 0.5)
            half_width = max(rng.uniform(0.006, 0.018), 0.5 * pixel)
            colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
            x1, y1 = x0 + length * math.cos(theta), y0 + length * math.sin(theta)
            rows, cols = self._window(min(x0, x1) - half_width, max(x0, x1) + half_width,
                                      min(y0, y1) - half_width, max(y0, y1) + half_width)
            xx, yy = self._xx[rows, cols], self._yy[rows, cols]
            t = np.clip(((xx - x0) * (x1 - x0) + (yy - y0) * (y1 - y0)) / length**2, 0.0, 1.0)
            dist2 = (xx - x0 - t * (x1 - x0)) ** 2 + (yy - y0 - t * (y1 - y0)) ** 2
            img[:, rows, cols][:, dist2 <= half_width**2] = colour[:, None]
        for _ in range(int(rng.integers(1, 5))):  # blobs: small ellipses, smaller than objects
            cx, cy = rng.uniform(0.0, 1.0, size=2)
            rx, ry = rng.uniform(0.02, 0.07, size=2)
            theta = rng.uniform(0.0, math.pi)
            colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
            reach = max(rx, ry)
            rows, cols = self._window(cx - reach, cx + reach, cy - reach, cy + reach)
            dx, dy = self._xx[rows, cols] - cx, self._yy[rows, cols] - cy
            c, s = math.cos(theta), math.sin(theta)
            hit = ((c * dx + s * dy) / rx) ** 2 + ((-s * dx + c * dy) / ry) ** 2 <= 1.0
            img[:, rows, cols][:, hit] = colour[:, None]
        img += _NOISE_STD * noise_rng.standard_normal(size=img.shape, dtype=np.float32)
        return np.clip(img, 0.0, 1.0)

    def _window(self, x_lo: float, x_hi: float, y_lo: float,
                y_hi: float) -> tuple[slice, slice]:
        """Row and column slices holding every pixel centre in ``[x_lo, x_hi] x [y_lo, y_hi]``."""
        size = self.image_size

        def span(lo: float, hi: float) -> slice:
            start = min(max(int(math.floor(lo * size)) - 1, 0), size)
            stop = min(max(int(math.ceil(hi * size)) + 1, 0), size)
            return slice(start, max(start, stop))

        return span(y_lo, y_hi), span(x_lo, x_hi)


def shape_mask(shape: str, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Which points ``(px, py)`` (object frame, units of the object size) lie inside ``shape``.

    Every shape fits in the disc of radius ``_EXTENT`` (1.16).
    """
    r = np.hypot(px, py)
    ax, ay = np.abs(px), np.abs(py)
    if shape == "disc":
        return r <= 1.0
    if shape == "square":
        return np.maximum(ax, ay) <= 0.82
    if shape == "triangle":  # equilateral, circumradius 1.15, one vertex pointing up (-y)
        inside = np.ones_like(px, dtype=bool)
        for deg in (90.0, 210.0, 330.0):  # outward edge normals (y down)
            a = math.radians(deg)
            inside &= px * math.cos(a) + py * math.sin(a) <= 1.15 / 2
        return inside
    if shape == "cross":
        return ((ax <= 1.0) & (ay <= 0.3)) | ((ay <= 1.0) & (ax <= 0.3))
    if shape == "ring":
        return (r <= 1.0) & (r >= 0.55)
    if shape == "bar":
        return (ax <= 1.12) & (ay <= 0.28)
    if shape == "star":  # five points: radius 1.15 at the tips, 0.5 between them
        sector = 2.0 * math.pi / 5
        t = np.mod(np.arctan2(py, px), sector) / sector
        return r <= 0.5 + (1.15 - 0.5) * np.abs(1.0 - 2.0 * t)
    if shape == "ell":
        return (((px >= -0.8) & (px <= -0.2) & (ay <= 0.8))
                | ((ax <= 0.8) & (py >= 0.2) & (py <= 0.8)))
    raise ValueError(f"unknown shape {shape!r}; known shapes: {', '.join(SHAPES)}")

"""Figures: pixel-wise maps overlaid on their images, and the one style of the book's figures
(matplotlib, imported on first use)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: The colormap of every CID / RU map (dark: little discarded, bright: much discarded).
MAP_CMAP = "magma"
#: The palette for networks and curves, in order (colour-blind safe: seaborn's "colorblind").
PALETTE = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494",
           "#ece133", "#56b4e9")


def set_style() -> None:
    """The book's figure style, set once per notebook (``deepinfo.book.report.Report`` calls it):
    figures large enough to read on the page (at 150 dpi even a narrow one spans the text column), no top/right spines, a light grid, the palette
    above for lines and points, :data:`MAP_CMAP` for images."""
    import matplotlib as mpl
    from cycler import cycler

    mpl.rcParams.update({
        "figure.figsize": (7.5, 4.5), "figure.dpi": 150, "savefig.bbox": "tight",
        "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8,
        "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
        "axes.prop_cycle": cycler(color=list(PALETTE)), "image.cmap": MAP_CMAP,
    })


def _image_hwc(image: torch.Tensor):
    img = image.detach().cpu().float()
    if img.dim() != 3:
        raise ValueError(f"image must be [C, H, W], got shape {tuple(img.shape)}")
    img = img.clamp(0, 1).permute(1, 2, 0)
    return img[..., 0].numpy() if img.shape[-1] == 1 else img.numpy()


def overlay(
    image: torch.Tensor,
    pixel_map: torch.Tensor,
    ax=None,
    *,
    alpha: float = 0.6,
    cmap: str = MAP_CMAP,
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
    colorbar: bool = False,
    label: str = "nats",
):
    """Draw ``pixel_map`` ``[Gh, Gw]`` (any grid) over ``image`` ``[C, H, W]`` in ``[0, 1]``.

    The map is stretched over the whole image (each cell covers its pixels, no smoothing), so
    grid maps line up with the picture. Returns the map's ``AxesImage``.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    img = _image_hwc(image)
    H, W = img.shape[:2]
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, extent=(0, W, H, 0))
    m = pixel_map.detach().cpu().float()
    if m.dim() != 2:
        raise ValueError(f"pixel_map must be [Gh, Gw], got shape {tuple(m.shape)}")
    shown = ax.imshow(m.numpy(), cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax,
                      extent=(0, W, H, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar:
        ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label=label)
    return shown


def plot_layers(
    maps,
    images: torch.Tensor,
    image_indices: Sequence[int] | None = None,
    layers: Sequence[str] | None = None,
    *,
    shared_scale: bool = True,
    cmap: str = MAP_CMAP,
    alpha: float = 0.6,
    panel_size: float = 1.8,
):
    """A grid of overlays: one row per image, one column per layer (the paper's Fig. 1(b)/4).

    With ``shared_scale`` (default) every panel uses one colour scale, so layers are compared on
    the same footing, which is the point of CID and RU; ``False`` scales each panel to its own range
    (the paper's "normalized to [0, 1]" view). Returns the figure.
    """
    import matplotlib.pyplot as plt

    layers = list(maps.layers if layers is None else layers)
    idx = list(range(images.shape[0]) if image_indices is None else image_indices)
    data = torch.stack([maps.layer(name) for name in layers])  # [L, B, Gh, Gw]
    vmin, vmax = (float(data[:, idx].min()), float(data[:, idx].max())) if shared_scale else (None, None)
    fig, axes = plt.subplots(len(idx), len(layers) + 1, squeeze=False,
                             figsize=(panel_size * (len(layers) + 1) + (0.6 if shared_scale else 0), panel_size * len(idx)))
    shown = None
    for r, b in enumerate(idx):
        axes[r, 0].imshow(_image_hwc(images[b]), cmap="gray" if images.shape[1] == 1 else None)
        axes[r, 0].set_axis_off()
        if r == 0:
            axes[r, 0].set_title("image", fontsize=9)
        for c, name in enumerate(layers):
            shown = overlay(images[b], data[c, b], axes[r, c + 1], alpha=alpha, cmap=cmap, vmin=vmin, vmax=vmax,
                            title=name if r == 0 else None)
    if shared_scale and shown is not None:
        fig.colorbar(shown, ax=axes, fraction=0.02, pad=0.01, label=f"{maps.kind.upper()} (nats)")
    return fig


def plot_baselines(x: torch.Tensor, maps: dict, methods: Sequence[str], layers: Sequence[str], title: str = ""):
    """Attribution maps of several methods at several layers, each panel on its own colour scale.

    Args:
        x: ``[B, C, H, W]`` images in ``[0, 1]``.
        maps: ``{(method, layer): [B, H, W] map}``; a missing pair is drawn as "not defined".
        methods, layers: the rows (one per method and image) and columns.
    Returns:
        The figure, one row per (method, image), one column per layer; each column's title gives
        the map's mean ``|.|`` on the first image (the magnitudes the rescaling test compares).
    """
    import matplotlib.pyplot as plt

    B = x.shape[0]
    fig, axes = plt.subplots(len(methods) * B, len(layers), squeeze=False,
                             figsize=(1.8 * len(layers), 1.8 * len(methods) * B))
    for mi, method in enumerate(methods):
        for c, layer in enumerate(layers):
            a = maps.get((method, layer))
            for b in range(B):
                ax = axes[mi * B + b, c]
                if a is None:
                    ax.set_xticks([])
                    ax.set_yticks([])
                    for spine in ax.spines.values():
                        spine.set_visible(False)
                    ax.text(0.5, 0.5, "not defined", ha="center", va="center", fontsize=8, transform=ax.transAxes)
                else:
                    m = a[b]
                    overlay(x[b], m, ax, vmin=min(0.0, float(m.min())), vmax=float(m.max()), cmap="viridis")
                if b == 0:
                    mag = "not defined" if a is None else f"mean |.| {float(a.abs().mean()):.2e}"
                    ax.set_title(f"{layer}\n{mag}", fontsize=8)
                if c == 0:
                    ax.set_ylabel(f"{method}, img {b}", fontsize=8)
    if title:
        fig.suptitle(title, y=1.0)
    fig.tight_layout()
    return fig

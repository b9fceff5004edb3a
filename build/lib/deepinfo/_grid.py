"""Grid cells: which pixels share one sigma, and how masks and boxes map onto cells."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Grid:
    """A partition of an ``H x W`` image into ``Gh x Gw`` cells of (nearly) equal size.

    ``grid=None`` gives one cell per pixel; an int ``g`` gives ``g x g`` cells; a pair gives
    ``Gh x Gw``. Row ``i`` belongs to cell row ``i * Gh // H`` (same for columns).
    """

    image_size: tuple[int, int]
    cells: tuple[int, int]

    @classmethod
    def make(cls, grid: int | tuple[int, int] | None, image_size: tuple[int, int]) -> "Grid":
        H, W = image_size
        if grid is None:
            cells = (H, W)
        elif isinstance(grid, int) and not isinstance(grid, bool):
            cells = (grid, grid)
        elif isinstance(grid, (tuple, list)) and len(grid) == 2 and all(isinstance(g, int) for g in grid):
            cells = (int(grid[0]), int(grid[1]))
        else:
            raise ValueError(f"grid must be None, an int or a pair of ints, got {grid!r}")
        if not (1 <= cells[0] <= H and 1 <= cells[1] <= W):
            raise ValueError(f"grid {cells} does not fit an image of {H}x{W}: need 1 <= cells <= pixels per side")
        return cls((H, W), cells)

    @property
    def n(self) -> int:
        return self.cells[0] * self.cells[1]

    def index(self, device=None) -> torch.Tensor:
        """Cell index of every pixel, ``LongTensor [H*W]`` (row-major)."""
        (H, W), (Gh, Gw) = self.image_size, self.cells
        rows = torch.arange(H, device=device) * Gh // H
        cols = torch.arange(W, device=device) * Gw // W
        return (rows[:, None] * Gw + cols[None, :]).reshape(-1)

    def to_pixels(self, per_cell: torch.Tensor) -> torch.Tensor:
        """``[..., G]`` cell values -> ``[..., 1, H, W]`` pixel values (nearest)."""
        idx = self.index(per_cell.device)
        return per_cell[..., idx].reshape(*per_cell.shape[:-1], 1, *self.image_size)

    def sum_cells(self, per_pixel: torch.Tensor) -> torch.Tensor:
        """``[..., H, W]`` pixel values -> ``[..., G]`` sums over each cell."""
        flat = per_pixel.reshape(*per_pixel.shape[:-2], -1)
        out = flat.new_zeros(*flat.shape[:-1], self.n)
        return out.index_add_(-1, self.index(flat.device), flat)

    def pixel_counts(self, device=None) -> torch.Tensor:
        """Number of pixels in each cell, ``[G]``."""
        return torch.bincount(self.index(device), minlength=self.n)

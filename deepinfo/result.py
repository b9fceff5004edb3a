"""The result of an estimator: pixel-wise maps per layer and image, with what was achieved."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from deepinfo._grid import Grid


@dataclass
class InfoMaps:
    """Pixel-wise CID or RU maps for ``L`` layers and ``B`` images.

    Attributes (SPEC names first):
        layers: layer names, in the order given.
        pixelwise: ``[L, B, Gh, Gw]`` pixel-wise entropy in nats (CID ``H_g`` or RU).
        constraint: ``[L, B]`` achieved ratio ``r = E||f'-f||^2 / (beta * delta_f^2)``,
            measured by sampling the real network.
        constraint_se: ``[L, B]`` standard error of ``constraint`` (sampling noise).
        sigma: ``[L, B, Gh, Gw]`` noise standard deviation per cell, pixel units.
        delta_f2: ``[L, B]`` feature sensitivity ``||J||_F^2`` (feature units^2 per pixel unit^2).
        n_capped: ``[L, B]`` number of cells whose sigma hit ``sigma_max``.
        lambdas: ``[L, B]`` final Lagrange multiplier (optimize methods) or ``None``.
        kind: ``"cid"`` or ``"ru"``; method: ``"linear"`` or ``"optimize"``.
        beta, sigma_max, grid (``(Gh, Gw)``), image_size (``(H, W)``), seed: the settings used.
        info: free-form run details (steps, draws, probes, seconds).
    """

    layers: list[str]
    pixelwise: torch.Tensor
    constraint: torch.Tensor
    constraint_se: torch.Tensor
    sigma: torch.Tensor
    delta_f2: torch.Tensor
    n_capped: torch.Tensor
    kind: str
    method: str
    beta: float
    sigma_max: float
    grid: tuple[int, int]
    image_size: tuple[int, int]
    seed: int
    lambdas: torch.Tensor | None = None
    info: dict = field(default_factory=dict)

    def mean(self) -> torch.Tensor:
        """``[L, B]`` mean pixel-wise value per layer and image (the paper's layer CID/RU,
        "normalized by the pixel number"), in nats."""
        return self.pixelwise.mean(dim=(-2, -1))

    def layer(self, name: str) -> torch.Tensor:
        """``[B, Gh, Gw]`` maps of one layer."""
        try:
            return self.pixelwise[self.layers.index(name)]
        except ValueError:
            raise KeyError(f"layer {name!r} is not in these maps; they hold {self.layers}") from None

    def upsampled(self) -> torch.Tensor:
        """``[L, B, H, W]`` maps at the image resolution (each pixel takes its cell's value)."""
        g = Grid(self.image_size, self.grid)
        L, B = self.pixelwise.shape[:2]
        return g.to_pixels(self.pixelwise.reshape(L, B, -1))[:, :, 0]

    @property
    def grid_obj(self) -> Grid:
        return Grid(self.image_size, self.grid)

    def to_frame(self, image_ids=None):
        """A tidy ``pandas.DataFrame``: one row per (layer, image) with the mean value, the
        constraint ratio and its standard error, delta_f^2, the capped-cell count and settings."""
        import pandas as pd

        L, B = self.constraint.shape
        ids = list(range(B)) if image_ids is None else list(image_ids)
        if len(ids) != B:
            raise ValueError(f"image_ids has {len(ids)} entries for {B} images")
        mean = self.mean()
        rows = []
        for li, name in enumerate(self.layers):
            for b in range(B):
                rows.append(
                    {
                        "kind": self.kind,
                        "method": self.method,
                        "layer": name,
                        "layer_index": li,
                        "image": ids[b],
                        "value": float(mean[li, b]),
                        "constraint": float(self.constraint[li, b]),
                        "constraint_se": float(self.constraint_se[li, b]),
                        "delta_f2": float(self.delta_f2[li, b]),
                        "n_capped": int(self.n_capped[li, b]),
                        "lambda": None if self.lambdas is None else float(self.lambdas[li, b]),
                        "beta": self.beta,
                        "grid": f"{self.grid[0]}x{self.grid[1]}",
                    }
                )
        return pd.DataFrame(rows)

    def cpu(self) -> "InfoMaps":
        values = {}
        for f in fields(self):
            v = getattr(self, f.name)
            values[f.name] = v.detach().cpu() if torch.is_tensor(v) else v
        return InfoMaps(**values)

    def save(self, path: str | Path) -> None:
        """Save to a file readable by :meth:`load` (tensors on the CPU)."""
        torch.save(asdict(self.cpu()), Path(path))

    @classmethod
    def load(cls, path: str | Path) -> "InfoMaps":
        data = torch.load(Path(path), weights_only=False)
        data["grid"] = tuple(data["grid"])
        data["image_size"] = tuple(data["image_size"])
        return cls(**data)

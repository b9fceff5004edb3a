"""The estimator runs whose results are recorded in ``engine_reference.pt``.

The file was written by the engine before the refactor of issue 15 (commit cebb0cf) with
``python tests/reference/engine_cases.py --record``; ``tests/test_engine_reference.py`` runs the
same cases with the current code and compares every tensor of the result. The cases cover both
methods, calibration on and off, a grid, several image chunks (small ``batch_size``), a folded
BatchNorm, capped cells (small ``sigma_max``) and RU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

import deepinfo

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "engine_reference.pt"
FIELDS = ("pixelwise", "constraint", "constraint_se", "sigma", "delta_f2", "n_capped", "lambdas")


class _Dim(nn.Module):
    """Scales the three left columns of the image by 1e-3: cells the layers barely see (capped)."""

    def forward(self, x):
        scale = torch.ones_like(x[:1, :1, :1])
        scale[..., :3] = 1e-3
        return x * scale


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        _Dim(), nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 6 * 6, 5),
    ).eval()


def _images() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(5, 3, 12, 12, generator=g)


def _decoders(net: nn.Module) -> dict[str, nn.Module]:
    torch.manual_seed(2)
    return {
        "3": nn.Sequential(nn.Conv2d(6, 3, 3, padding=1), nn.Sigmoid()),
        "5": nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(8, 3, 3, padding=1), nn.Sigmoid()),
    }


def _bn_stats(net: nn.Module) -> None:
    bn = net[2]
    g = torch.Generator().manual_seed(3)
    bn.running_mean.copy_(torch.randn(6, generator=g) * 0.1)
    bn.running_var.copy_(torch.rand(6, generator=g) + 0.5)
    bn.weight.data.copy_(torch.rand(6, generator=g) + 0.5)


def cases() -> dict[str, tuple]:
    """name -> (function, kwargs) of each recorded run (without model and images)."""
    common = dict(steps=4, draws=4, eval_draws=4, n_probes=8, progress=False)
    return {
        "optimize": ("cid", dict(layers=["3", "5", "7"], method="optimize", batch_size=8, seed=3, **common)),
        "linear_grid": ("cid", dict(layers=["3", "5"], method="linear", grid=4, batch_size=8, **common)),
        "linear_uncalibrated": ("cid", dict(layers=["5", "7"], method="linear", calibrate=False, **common)),
        "capped": ("cid", dict(layers=["3", "5"], method="optimize", sigma_max=0.5, batch_size=12, **common)),
        "ru": ("ru", dict(layers=["3", "5"], grid=3, batch_size=8, seed=1, **common)),
    }


def run(name: str) -> deepinfo.InfoMaps:
    kind, kw = cases()[name]
    net = _net()
    _bn_stats(net)
    x = _images()
    layers = kw.pop("layers")
    if kind == "cid":
        return deepinfo.cid(net, x, layers, **kw)
    return deepinfo.ru(net, _decoders(net), x, layers, **kw)


def record() -> None:
    out = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": str(torch.__version__)}
    for name in cases():
        maps = run(name)
        out[name] = {f: getattr(maps, f) for f in FIELDS}
    torch.save(out, REFERENCE)
    print(f"wrote {REFERENCE}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/reference/engine_cases.py --record")
    record()

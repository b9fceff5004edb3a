"""The software and hardware a run used, recorded with its claims and on the book's front page."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from functools import lru_cache

__all__ = ["versions", "describe"]


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """``{"python", "torch", "torchvision", "cuda", "cudnn", "device", "driver", "cpus", "platform",
    "deepinfo"}`` for this process (``cuda``, ``cudnn`` and ``driver`` are "none" without a GPU)."""
    import torch
    import torchvision

    import deepinfo

    out = {"python": platform.python_version(), "torch": str(torch.__version__),
           "torchvision": str(torchvision.__version__), "deepinfo": deepinfo.__version__,
           "cuda": "none", "cudnn": "none", "driver": "none",
           "device": f"CPU ({platform.processor() or platform.machine()})",
           "cpus": str(os.cpu_count()), "platform": platform.platform()}
    if torch.cuda.is_available():
        out["cuda"] = str(torch.version.cuda)
        out["cudnn"] = str(torch.backends.cudnn.version())
        out["device"] = f"{torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}"
        smi = shutil.which("nvidia-smi")
        if smi:
            try:
                out["driver"] = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                                               capture_output=True, text=True, timeout=10).stdout.split("\n")[0].strip()
            except (OSError, subprocess.SubprocessError):
                pass
    return out


def describe(v: dict[str, str]) -> str:
    """One line of prose: ``torch 2.x (CUDA 12.x, cuDNN ...), torchvision ..., Python ...; on <device>``."""
    gpu = f" (CUDA {v.get('cuda')}, cuDNN {v.get('cudnn')}, driver {v.get('driver')})" if v.get("cuda", "none") != "none" else ""
    return (f"torch {v.get('torch')}{gpu}, torchvision {v.get('torchvision')}, Python {v.get('python')}, "
            f"deepinfo {v.get('deepinfo')}; on {v.get('device')}, {v.get('cpus')} CPU cores ({v.get('platform')})")

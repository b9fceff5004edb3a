"""Regenerate docs/own_network_maps.png, the README's example of the `deepinfo maps` command.

    python docs/own_network_figure.py        # needs $DEEPINFO_DATA with the CIFAR-10 copy and checkpoints

It saves the published CIFAR-10 ResNet-20 whole (torch.save), writes four CIFAR-10 test images as
PNG files, runs the command exactly as the README shows it, and keeps the first image's figure.
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

from deepinfo.datasets import cifar10
from deepinfo.models import cifar_resnet
from deepinfo.paths import data_dir

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.save(cifar_resnet(20, weights="published").eval(), tmp / "resnet20.pt")
        (tmp / "cifar").mkdir()
        test = cifar10("test", root=data_dir())
        for i in range(4):
            x = test[i * 1000][0]  # four classes
            Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(tmp / "cifar" / f"{i}.png")
        subprocess.run([sys.executable, "-m", "deepinfo", "maps", "--model", "resnet20.pt", "--images", "cifar/",
                        "--layers", "layer1,layer2,layer3", "--method", "linear", "--grid", "16", "--out", "OUT"],
                       cwd=tmp, check=True)
        shutil.copy(tmp / "OUT" / "0.png", ROOT / "docs" / "own_network_maps.png")
    print(ROOT / "docs" / "own_network_maps.png")


if __name__ == "__main__":
    main()

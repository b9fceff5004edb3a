"""Check: do CID maps on a GPU agree with the CPU's, and what does TF32 do to them?

The estimators measure small feature differences ``f' - f``; cuDNN runs float32 convolutions in
TF32 by default (10-bit mantissa), whose rounding could leak into them. This runs the same
``deepinfo.cid`` (linear method, calibrated and pure closed form) on the CPU and on CUDA, with
TF32 off and on, and prints per layer the mean-CID gap and map correlation between runs, next to
the gap between two seeds on one device (the Monte Carlo noise floor: CPU and CUDA generators
draw different numbers, so CPU vs CUDA can agree no better than that). Same seed on CUDA with
TF32 off and on uses the same noise, so that pair shows TF32's own effect.

    python benchmarks/compare_devices.py [--model resnet20|vgg16] [--images 8] [--images-file x.pt]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import deepinfo  # noqa: E402
from bench_estimators import load_model_and_images  # noqa: E402
from deepinfo.models import block_names, build, resolve_layers  # noqa: E402


def run(model, x, layers, device, seed, tf32, calibrate, grid):
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    model = model.to(device)
    t = time.perf_counter()
    res = deepinfo.cid(model, x.to(device), layers, method="linear", calibrate=calibrate, seed=seed,
                       grid=grid, progress=False)
    if device == "cuda":
        torch.cuda.synchronize()
    return res, time.perf_counter() - t


def compare(a, b):
    """Per layer: mean |gap| of the image CIDs (nats) and mean map correlation."""
    ma, mb = a.mean().cpu(), b.mean().cpu()
    pa, pb = a.pixelwise.cpu().flatten(2), b.pixelwise.cpu().flatten(2)
    gap = (ma - mb).abs().mean(1)
    pa, pb = pa - pa.mean(-1, keepdim=True), pb - pb.mean(-1, keepdim=True)
    corr = ((pa * pb).sum(-1) / (pa.norm(dim=-1) * pb.norm(dim=-1))).mean(1)
    return gap, corr


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20", choices=["resnet20", "vgg16"])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--images-file", default=None, help="vgg16: a saved [N, 3, 224, 224] tensor (uint8 or float)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this check compares the CPU with a GPU")
    torch.manual_seed(0)
    if args.model == "resnet20":
        model, x, source, images = load_model_and_images(args.images, "cpu")
        layers, grid = block_names(model), None
    else:
        model = build("vgg16", num_classes=200).eval()  # random init: the check is numerical
        x = torch.load(args.images_file)[: args.images] if args.images_file else torch.rand(args.images, 3, 224, 224)
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        layers, grid, source, images = resolve_layers(model, "blocks"), 16, "random init", f"{len(x)} images"
    print(f"device check | torch {torch.__version__} | {torch.cuda.get_device_name()} | {args.model} ({source}); "
          f"{images}; grid {grid}")
    runs = {}
    for calibrate in (True, False):
        for key, (device, seed, tf32) in {
            "cpu s0": ("cpu", 0, False), "cpu s1": ("cpu", 1, False),
            "cuda s0": ("cuda", 0, False), "cuda s1": ("cuda", 1, False), "cuda s0 tf32": ("cuda", 0, True),
        }.items():
            if args.model == "vgg16" and device == "cpu":
                continue  # minutes on a CPU; ResNet-20 compares the devices, this TF32 on a deep net
            runs[key], sec = run(model, x, layers, device, seed, tf32, calibrate, grid)
            r = runs[key].constraint
            print(f"  {'calibrated' if calibrate else 'pure'} {key:<13} {sec:7.2f} s   r {float(r.min()):.3f}..{float(r.max()):.3f}",
                  flush=True)
        pairs = [p for p in [("cpu s0", "cpu s1"), ("cuda s0", "cuda s1"), ("cpu s0", "cuda s0"),
                             ("cuda s0", "cuda s0 tf32")] if p[0] in runs and p[1] in runs]
        print(f"\n{'calibrated' if calibrate else 'pure closed form'}: mean-CID gap (nats) / map correlation per layer")
        print(f"{'layer':<14}" + "".join(f"{a + ' vs ' + b:>30}" for a, b in pairs))
        stats = {p: compare(runs[p[0]], runs[p[1]]) for p in pairs}
        for li, name in enumerate(layers):
            print(f"{name:<14}" + "".join(f"{float(stats[p][0][li]):>20.4f} / {float(stats[p][1][li]):.3f}" for p in pairs))
        d0, d1 = runs["cuda s0"].delta_f2.cpu(), runs["cuda s0 tf32"].delta_f2.cpu()
        print(f"delta_f^2, TF32 vs float32 (same probes): relative gap max {float(((d1 - d0) / d0).abs().max()):.2e}\n")
        runs.clear()


if __name__ == "__main__":
    main()

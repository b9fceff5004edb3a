"""Benchmark: what the paper profile's estimates and training cost, on this machine (for a GPU).

For each of the paper's CUB networks (torchvision architectures, 200 classes, 224x224 box
crops), time ``deepinfo.cid`` with the paper profile's estimator settings (grid 16, every block
output, the optimize and the linear method) on a few images, and a few fine-tuning steps at the
profile's batch size; print seconds per map, the achieved constraint ratios, peak memory and
training images per second. Without downloaded ImageNet weights the nets are randomly
initialised: the timings do not depend on the weights (the CID values do, so none are printed).

    python benchmarks/bench_paper_profile.py [--archs alexnet vgg16 resnet50] [--images 4]
        [--device cuda] [--images-file x.pt] [--train-steps 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import deepinfo  # noqa: E402
from bench_estimators import timed  # noqa: E402
from deepinfo.models import build, resolve_layers  # noqa: E402
from deepinfo.toolkit.profile import load_profile  # noqa: E402


def load_images(n, size, images_file):
    """``[n, 3, size, size]`` in [0, 1]: a saved tensor, CUB test box crops, or uniform noise."""
    if images_file:
        x = torch.load(images_file)[:n]
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        return x, f"{x.shape[0]} images from {images_file}"
    try:
        from deepinfo.datasets import get_dataset

        ds = get_dataset("cub200", "test", crop="box", image_size=size)
        idx = [i * (len(ds) // n) for i in range(n)]
        return torch.stack([ds[i][0] for i in idx]), f"{n} CUB-200-2011 test box crops"
    except (FileNotFoundError, ImportError, ValueError):
        g = torch.Generator().manual_seed(0)
        return torch.rand(n, 3, size, size, generator=g), f"{n} uniform-noise images (CUB not found)"


def train_steps(model, x, steps, batch, device, lr=0.01):
    """Seconds per SGD step on a batch of ``batch`` images (the given ones, repeated)."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    xb = x.repeat((batch + len(x) - 1) // len(x), 1, 1, 1)[:batch]
    yb = torch.arange(batch, device=device) % 200

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()

    step()  # warm-up (cuDNN autotuning, allocator); timed() synchronizes before it starts
    _, sec, mib = timed(lambda: [step() for _ in range(steps)], device)
    model.eval()
    return sec / steps, mib


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=["alexnet", "vgg16", "resnet50"])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--images-file", default=None, help="a saved [N, 3, H, W] tensor: float in [0, 1] or uint8")
    ap.add_argument("--methods", nargs="+", default=["linear", "optimize"])
    ap.add_argument("--train-steps", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--weights", default=None, help="'imagenet' to download torchvision's weights")
    args = ap.parse_args()
    prof = load_profile("paper")
    est = prof.estimator
    torch.manual_seed(0)
    x, what = load_images(args.images, args.image_size, args.images_file)
    x = x.to(args.device)
    name = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else "cpu"
    print(f"paper-profile benchmark | torch {torch.__version__} | device {args.device} ({name}) | "
          f"threads {torch.get_num_threads()} | TF32 convolutions {torch.backends.cudnn.allow_tf32}, "
          f"matmuls {torch.backends.cuda.matmul.allow_tf32}")
    print(f"{what}; estimator: beta {est.beta:g}, grid {est.grid}, steps {est.steps}, draws {est.draws}, "
          f"n_probes {est.n_probes}, eval_draws {est.eval_draws}, tol {est.tol}")
    kw = dict(beta=est.beta, grid=est.grid, n_probes=est.n_probes, eval_draws=est.eval_draws,
              sigma_max=est.sigma_max, tol=est.tol, progress=False)
    opt_kw = dict(steps=est.steps, lr=est.lr, draws=est.draws)
    print(f"\n{'arch':<10}{'method':<10}{'maps':>6}{'seconds':>9}{'s/map':>8}{'peak MiB':>10}"
          f"{'r min..max':>16}{'off 5%':>8}")
    train_rows = []
    for arch in args.archs:
        model = build(arch, num_classes=200, weights=args.weights, input_size=args.image_size).to(args.device).eval()
        layers = resolve_layers(model, "blocks")
        deepinfo.cid(model, x[:1], layers[:1], method="linear", **kw)  # warm-up
        for method in args.methods:
            extra = opt_kw if method == "optimize" else {}
            res, sec, mib = timed(lambda: deepinfo.cid(model, x, layers, method=method, **kw, **extra),
                                  args.device)
            n = len(layers) * x.shape[0]
            r = res.constraint
            off = int(((r - 1).abs() > est.tol).sum())
            print(f"{arch:<10}{method:<10}{n:>6}{sec:>9.2f}{sec / n:>8.3f}{mib:>10.0f}"
                  f"{float(r.min()):>8.3f}..{float(r.max()):.3f}{off:>8}", flush=True)
        if args.train_steps:
            tcub = prof.training.cub
            s, mib = train_steps(model, x, args.train_steps, tcub.batch_size, args.device)
            train_rows.append((arch, tcub.batch_size, s, mib))
        del model
        if torch.device(args.device).type == "cuda":
            torch.cuda.empty_cache()
    if train_rows:
        print(f"\n{'arch':<10}{'batch':>6}{'s/step':>9}{'images/s':>10}{'peak MiB':>10}  (fp32 SGD fine-tuning steps)")
        for arch, b, s, mib in train_rows:
            print(f"{arch:<10}{b:>6}{s:>9.3f}{b / s:>10.0f}{mib:>10.0f}")


if __name__ == "__main__":
    main()

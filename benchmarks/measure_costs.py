"""Measure what ``make plan`` assumes about the paper profile's GPU time, in one short run.

``benchmarks/costs.toml`` measures seconds per CID map and fine-tuning images per second of three
CUB networks, and assumes the rest. This script measures the rest on the device at hand, each as
a ratio against a reference timed in the same run (timings on shared machines are noisy; ratios
hold), and prints them as lines of ``costs.toml``:

* ``ru_factor``: one RU map of a VGG-16 block (the decoder on every noise draw) against one CID
  map of the same block, both with the paper profile's estimator;
* ``decoder_factor``: one training image of an RU decoder of that block against one training
  image of the VGG-16 itself;
* ``pgd_factor``: one PGD training step (the profile's ``[adversarial]`` attack) against a clean one;
* ``cifar_train_images_per_second``: the CIFAR ResNets of the profile at the paper's recipe
  (``training.cifar_resnet``: batch size, 32 px), fp32;
* the levers on training time, each against fp32 on the same network and batch: channels-last
  memory and bf16 autocast (their accuracy against fp32 needs a full training run: not measured).

    python benchmarks/measure_costs.py [--device cuda] [--steps 20] [--images 4] [--out costs-measured.toml]
    python benchmarks/measure_costs.py --device cpu --quick      # the code paths, in a minute on a CPU

Random inputs: the timings do not depend on the pixels or the weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import deepinfo  # noqa: E402
from bench_estimators import timed  # noqa: E402
from deepinfo.decoder import ResNetDecoder  # noqa: E402
from deepinfo.models import build, cifar_resnet, resolve_layers  # noqa: E402
from deepinfo.techniques.adversarial import adversarial_loss, pgd_settings  # noqa: E402
from deepinfo.toolkit.profile import load_profile  # noqa: E402


def seconds_per_step(step, steps: int, device: str) -> float:
    """Seconds of one call of ``step()``, after one warm-up call (cuDNN autotuning, allocator)."""
    step()
    _, sec, _ = timed(lambda: [step() for _ in range(steps)], device)
    return sec / steps


def sgd_step(model, x, y, *, loss_fn=None, bf16: bool = False):
    """One SGD step of ``model`` on ``(x, y)``: cross-entropy, or ``loss_fn(model, (x, y))``."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    device_type = x.device.type

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model, (x, y))[0] if loss_fn else F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return step


def training_rows(name, make_model, size, batch, classes, steps, device):
    """Images per second of fp32, channels-last and bf16 training of ``make_model()``."""
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.arange(batch, device=device) % classes
    rows = {}
    for variant in ("fp32", "channels_last", "bf16"):
        model = make_model().to(device).train()
        xv = x
        if variant == "channels_last":
            model = model.to(memory_format=torch.channels_last)
            xv = x.contiguous(memory_format=torch.channels_last)
        rows[variant] = batch / seconds_per_step(sgd_step(model, xv, y, bf16=variant == "bf16"), steps, device)
    print(f"  {name:<14} batch {batch:>4}: " + ", ".join(f"{k} {v:,.0f} img/s" for k, v in rows.items())
          + f" (x{rows['channels_last'] / rows['fp32']:.2f}, x{rows['bf16'] / rows['fp32']:.2f} of fp32)", flush=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per measurement")
    ap.add_argument("--images", type=int, default=4, help="images per CID/RU timing")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: check the code paths (not a measurement)")
    ap.add_argument("--out", help="also write the costs.toml lines to this file")
    args = ap.parse_args(argv)
    p = load_profile("paper")
    dev = args.device
    size, steps, n = (64, 2, 1) if args.quick else (p.data.cub.image_size, args.steps, args.images)
    cub_batch = 4 if args.quick else p.training.cub.batch_size
    name = torch.cuda.get_device_name() if torch.device(dev).type == "cuda" else "cpu"
    print(f"measure_costs | torch {torch.__version__} | {dev} ({name}) | CUB {size} px, {n} images, {steps} steps"
          + (" | QUICK: code paths only, not a measurement" if args.quick else ""), flush=True)
    torch.manual_seed(0)
    settings = deepinfo.Settings.of(p.estimator)
    if args.quick:
        settings = deepinfo.Settings.of(p.estimator, steps=5, eval_draws=4, max_eval_draws=8, n_probes=4)

    # RU against CID on one VGG-16 block, the decoder's training against the classifier's
    vgg = build("vgg16", num_classes=200, input_size=size).to(dev).eval()
    layer = resolve_layers(vgg, "blocks")[2]
    x = torch.rand(n, 3, size, size, device=dev)
    feature = deepinfo.features(vgg, x[:1], [layer])[layer]
    decoder = ResNetDecoder(tuple(feature.shape[1:]), tuple(x.shape[1:]), p.decoder.n_blocks, p.decoder.width)
    decoder = decoder.to(dev).eval()
    deepinfo.cid(vgg, x[:1], [layer], settings, progress=False)  # warm-up
    _, t_cid, _ = timed(lambda: deepinfo.cid(vgg, x, [layer], settings, progress=False), dev)
    _, t_ru, _ = timed(lambda: deepinfo.ru(vgg, {layer: decoder}, x, [layer], settings, progress=False), dev)
    print(f"  RU map / CID map ({layer}): {t_ru:.2f} s / {t_cid:.2f} s = {t_ru / t_cid:.1f}", flush=True)

    xb = torch.rand(cub_batch, 3, size, size, device=dev)
    yb = torch.arange(cub_batch, device=dev) % 200
    classifier = seconds_per_step(sgd_step(vgg.train(), xb, yb), steps, dev)
    decoder.train()
    opt = torch.optim.Adam(decoder.parameters(), lr=p.decoder.lr)

    def decoder_step():
        f = deepinfo.features(vgg, xb, [layer])[layer]
        opt.zero_grad(set_to_none=True)
        F.mse_loss(decoder(f), xb).backward()
        opt.step()

    per_decoder = seconds_per_step(decoder_step, steps, dev)
    pgd = seconds_per_step(sgd_step(vgg, xb, yb, loss_fn=adversarial_loss(**pgd_settings(p))), max(1, steps // 4), dev)
    print(f"  decoder / classifier training image: {per_decoder:.3f} s / {classifier:.3f} s per batch "
          f"= {per_decoder / classifier:.2f}; PGD / clean step: {pgd / classifier:.1f}", flush=True)

    print("  training throughput (images per second) and the levers against fp32:")
    cifar = {}
    rc = p.training.cifar_resnet
    for d in ([20] if args.quick else sorted(set(p.networks.cifar.depths))):
        rows = training_rows(f"resnet{d}", lambda d=d: cifar_resnet(d, num_classes=p.data.cifar.num_classes),
                             32, 8 if args.quick else rc.batch_size, p.data.cifar.num_classes, steps, dev)
        cifar[f"resnet{d}"] = rows
    vgg_rows = training_rows("vgg16", lambda: build("vgg16", num_classes=200, input_size=size), size, cub_batch,
                             200, steps, dev)

    lines = [f"# measured by benchmarks/measure_costs.py on {name}, torch {torch.__version__}",
             f"ru_factor = {t_ru / t_cid:.2f}",
             f"decoder_factor = {per_decoder / classifier:.2f}",
             f"pgd_factor = {pgd / classifier:.1f}",
             "cifar_train_images_per_second = { " + ", ".join(f"{k} = {v['fp32']:.0f}" for k, v in cifar.items()) + " }",
             f"# levers (not applied): channels-last x{vgg_rows['channels_last'] / vgg_rows['fp32']:.2f}, "
             f"bf16 x{vgg_rows['bf16'] / vgg_rows['fp32']:.2f} of fp32 VGG-16 training images per second"]
    print("\nfor benchmarks/costs.toml [gpu]:\n" + "\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

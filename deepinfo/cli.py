"""The ``deepinfo`` command: CID maps and layer curves of your own network, from image files.

    deepinfo maps  --model torchvision:resnet18 --weights DEFAULT --images 'photos/*.png' \\
                   --layers layer1,layer3 --method linear --grid 16 --out OUT
    deepinfo curve --model mypkg.nets:build --images photos/ --layers blocks --out OUT
    deepinfo maps  --model my_model.pt --mean 0.5,0.5,0.5 --std 0.25,0.25,0.25 --images img.png \
                   --layers features.3 --out OUT          # a model saved with torch.save(model)

``maps`` writes ``OUT/maps.pt`` (an :class:`deepinfo.InfoMaps`), ``OUT/maps.csv`` (one row per
layer and image) and one overlay figure per image (``OUT/<image>.png``, one colour scale for all
layers and images). ``curve`` writes the layer curve: ``OUT/curve.csv`` (mean CID per layer with a
95 % bootstrap interval over the images), ``OUT/curve.png`` and ``OUT/maps.pt``.

Everything given is checked before any estimation: the model loads, every layer exists, every
image reads. Errors stop with ``deepinfo: error: ...`` naming what is wrong, exit status 2.
Also run as ``python -m deepinfo``.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import glob
import importlib
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".gif")
CSV_COLUMNS = ("image", "layer", "layer_index", "cid", "constraint", "constraint_se", "n_capped", "method", "beta",
               "grid")
CURVE_COLUMNS = ("layer", "layer_index", "cid", "cid_lo", "cid_hi", "n_images", "constraint_mean")


class UsageError(Exception):
    """Bad input named to the user (exit status 2, no traceback)."""


# ----------------------------------------------------------------------------- the model

def load_model(spec: str, weights: str | None = None) -> nn.Module:
    """The model ``spec`` names, in eval mode.

    ``torchvision:NAME`` (``weights``: a torchvision weights name such as ``DEFAULT``, or none for
    random weights), ``package.module:function`` (called without arguments; ``weights``: a
    state-dict file loaded strictly) or the path of a model saved whole with ``torch.save``.
    A TorchScript file is refused with the reason: its layers cannot be hooked.
    """
    if spec.startswith("torchvision:"):
        name = spec.split(":", 1)[1]
        try:
            import torchvision
        except ImportError:
            raise UsageError("--model torchvision:... needs torchvision: pip install torchvision") from None
        available = torchvision.models.list_models(module=torchvision.models)
        if name not in available:
            near = difflib.get_close_matches(name, available, n=5)
            raise UsageError(f"torchvision has no model {name!r}" + (f"; nearest: {near}" if near else ""))
        try:
            model = torchvision.models.get_model(name, weights=weights)
        except Exception as exc:  # unknown weights name, download refused offline, ...
            raise UsageError(f"cannot build torchvision:{name} with weights {weights!r}: {exc}") from None
        return model.eval()
    path = Path(spec).expanduser()
    if path.is_file():
        return _load_file(path, weights)
    if ":" not in spec:
        raise UsageError(f"--model {spec!r} is neither a file nor torchvision:NAME nor package.module:function")
    module_name, func_name = spec.rsplit(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name!r} for --model {spec}: {exc}") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise UsageError(f"{module_name} has no callable {func_name!r} (--model {spec})")
    try:
        model = func()
    except Exception as exc:
        raise UsageError(f"--model {spec}: calling {func_name}() failed: {exc}") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"--model {spec}: {func_name}() returned {type(model).__name__}, not a torch.nn.Module")
    if weights:
        try:
            state = torch.load(Path(weights).expanduser(), map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state, strict=True)
        except Exception as exc:
            raise UsageError(f"cannot load --weights {weights} into {spec}: {exc}") from None
    return model.eval()


def _load_file(path: Path, weights: str | None) -> nn.Module:
    """A whole model saved with ``torch.save(model, path)`` (unpickled: only load files you trust)."""
    if weights:
        raise UsageError("--weights applies to torchvision: and module:function models, not to a saved model file")
    torchscript = UsageError(
        f"{path} is a TorchScript model: PyTorch runs its layers inside compiled code and cannot hook them "
        "(register_forward_hook is not supported on ScriptModules), so no layer's output can be read. Save the "
        "model itself (torch.save(model, path)) or give package.module:function")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.load names TorchScript archives in a warning
            obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        try:
            torch.jit.load(str(path), map_location="cpu")
        except Exception:
            raise UsageError(f"cannot load {path} as a saved model: {exc}") from None
        raise torchscript from None
    if isinstance(obj, torch.jit.ScriptModule):
        raise torchscript
    if isinstance(obj, nn.Module):
        return obj.eval()
    if isinstance(obj, dict):
        raise UsageError(f"{path} holds a state dict, not a model: give the architecture as --model "
                         f"package.module:function and this file as --weights")
    raise UsageError(f"{path} holds a {type(obj).__name__}, not a torch.nn.Module")


def with_normalization(model: nn.Module, spec: str, mean, std) -> tuple[nn.Module, str]:
    """``(model, prefix)``: wrapped with its normalization when mean/std apply, and the prefix its
    layer names gain. torchvision models get ImageNet's statistics unless told otherwise."""
    from deepinfo.models.normalize import IMAGENET_MEAN, IMAGENET_STD, wrap

    if mean is None and std is None and spec.startswith("torchvision:"):
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    if (mean is None) != (std is None):
        raise UsageError("give both --mean and --std (one value per channel each), or neither")
    if mean is None:
        return model, ""
    try:
        return wrap(model, mean, std), "model."
    except ValueError as exc:
        raise UsageError(f"--mean/--std: {exc}") from None


def resolve(model: nn.Module, spec: str) -> list[str]:
    """The module names ``--layers`` gives (comma-separated names, or ``blocks`` / ``stages``)."""
    from deepinfo.models import resolve_layers

    names = spec if spec in ("blocks", "stages") else [s.strip() for s in spec.split(",") if s.strip()]
    try:
        layers = resolve_layers(model, names)
    except (KeyError, ValueError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        raise UsageError(f"--layers {spec}: {message}") from None
    if not layers:
        raise UsageError(f"--layers {spec}: the model has no {spec} deepinfo recognises; give module names")
    return layers


# ----------------------------------------------------------------------------- the images

def find_images(specs: list[str]) -> list[Path]:
    """Image files from directories, glob patterns or file names, in a stable order."""
    found: list[Path] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise UsageError(f"--images {spec}: the folder holds no image ({', '.join(IMAGE_SUFFIXES)})")
        elif path.is_file():
            files = [path]
        else:
            files = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
            if not files:
                raise UsageError(f"--images {spec}: no such file, folder or matching files")
        found += [f for f in files if f not in found]
    return found


def parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        parts = [int(v) for v in text.lower().replace("x", ",").split(",")]
    except ValueError:
        raise UsageError(f"--size {text!r}: give N or HxW in pixels") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise UsageError(f"--size {text!r}: give N or HxW in pixels")
    return parts[0], parts[1]


def read_images(paths: list[Path], size: tuple[int, int] | None) -> torch.Tensor:
    """``[B, 3, H, W]`` float in [0, 1]: RGB, resized (bilinear) to ``size`` when given."""
    from PIL import Image, UnidentifiedImageError

    arrays = []
    for path in paths:
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
                if size is not None:
                    rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                arrays.append(np.asarray(rgb, dtype=np.float32) / 255.0)
        except (UnidentifiedImageError, OSError) as exc:
            raise UsageError(f"cannot read image {path}: {exc}") from None
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        first = arrays[0].shape
        other = next(p for p, a in zip(paths, arrays) if a.shape != first)
        raise UsageError(f"the images differ in size ({paths[0].name} is {first[1]}x{first[0]}, {other.name} is not); "
                         "give --size N or HxW to resize them")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------- outputs

def write_maps_csv(path: Path, maps, names: list[str], layers: list[str]) -> None:
    mean = maps.mean()
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for li, layer in enumerate(layers):
            for b, name in enumerate(names):
                w.writerow([name, layer, li, f"{float(mean[li, b]):.6g}", f"{float(maps.constraint[li, b]):.6g}",
                            f"{float(maps.constraint_se[li, b]):.3g}", int(maps.n_capped[li, b]), maps.method,
                            f"{maps.beta:g}", f"{maps.grid[0]}x{maps.grid[1]}"])


def curve_rows(maps, layers: list[str], seed: int) -> list[dict]:
    from deepinfo.book.verdicts import bootstrap

    mean = maps.mean().double().numpy()  # [L, B]
    rows = []
    for li, layer in enumerate(layers):
        vals = mean[li]
        lo, hi = (np.quantile(bootstrap(vals, seed=seed), [0.025, 0.975]) if vals.size > 1 else (math.nan, math.nan))
        rows.append({"layer": layer, "layer_index": li, "cid": float(vals.mean()), "cid_lo": float(lo),
                     "cid_hi": float(hi), "n_images": int(vals.size),
                     "constraint_mean": float(maps.constraint[li].double().mean())})
    return rows


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_overlays(out: Path, x: torch.Tensor, maps, names: list[str], layers: list[str]) -> list[Path]:
    """One figure per image: the image, then each layer's map over it, one colour scale for all."""
    from deepinfo.plotting import overlay

    plt = _pyplot()
    vmin, vmax = float(maps.pixelwise.min()), float(maps.pixelwise.max())
    written = []
    for b, name in enumerate(names):
        fig, axes = plt.subplots(1, len(layers) + 1, figsize=(2.6 * (len(layers) + 1), 2.9), squeeze=False)
        axes[0, 0].imshow(x[b].permute(1, 2, 0).clamp(0, 1).numpy())
        axes[0, 0].set_title(name, fontsize=8)
        axes[0, 0].axis("off")
        for li, layer in enumerate(layers):
            im = overlay(x[b], maps.pixelwise[li, b], axes[0, li + 1], vmin=vmin, vmax=vmax, title=layer)
        fig.colorbar(im, ax=axes[0, 1:].tolist(), fraction=0.03, label="CID (nats)")
        path = out / f"{Path(name).stem}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def write_curve(out: Path, rows: list[dict], title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.5, 0.45 * len(rows) + 2), 3.6))
    idx = [r["layer_index"] for r in rows]
    ax.plot(idx, [r["cid"] for r in rows], marker="o", color="C0")
    ax.fill_between(idx, [r["cid_lo"] for r in rows], [r["cid_hi"] for r in rows], color="C0", alpha=0.2,
                    label="95 % bootstrap interval over images")
    ax.set_xticks(idx, [r["layer"] for r in rows], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("CID (nats per cell)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "curve.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- the command

def _floats(text: str | None, what: str):
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"{what} {text!r}: give comma-separated numbers, one per channel") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepinfo", description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text, default_layers in (
            ("maps", "pixel-wise CID maps at some layers: maps.pt, maps.csv and overlay figures", None),
            ("curve", "the layer curve (mean CID per layer): curve.csv, curve.png and maps.pt", "blocks")):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--model", required=True,
                       help="torchvision:NAME, package.module:function (returns the model) or a file saved with "
                            "torch.save(model) (unpickled: only files you trust)")
        p.add_argument("--weights", help="torchvision weights (e.g. DEFAULT) or a state-dict file for module:function")
        p.add_argument("--images", required=True, nargs="+", help="image files, folders or glob patterns")
        p.add_argument("--layers", required=default_layers is None, default=default_layers,
                       help="comma-separated module names of your model, or 'blocks' / 'stages'"
                            + (f" (default {default_layers})" if default_layers else ""))
        p.add_argument("--out", required=True, help="output folder (created)")
        p.add_argument("--size", help="resize every image to N or HxW pixels (bilinear)")
        p.add_argument("--mean", help="per-channel mean the model expects, e.g. 0.485,0.456,0.406 "
                                      "(torchvision models: ImageNet's unless given)")
        p.add_argument("--std", help="per-channel std, e.g. 0.229,0.224,0.225")
        p.add_argument("--method", choices=("linear", "optimize"), default="linear",
                       help="closed form of the linearised layer, calibrated (linear, default) or the paper's "
                            "Lagrangian descent (optimize)")
        p.add_argument("--grid", type=int, default=16, help="cells per side of the CID map (default 16)")
        p.add_argument("--beta", type=float, default=None, help="distortion budget (default deepinfo.DEFAULT_BETA)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
        p.add_argument("--batch-size", type=int, default=None, help="images per estimator batch")
    return parser


def run(args: argparse.Namespace) -> list[Path]:
    import deepinfo

    out = Path(args.out).expanduser()
    # every check before any estimation
    paths = find_images(args.images)
    x = read_images(paths, parse_size(args.size))
    model = load_model(args.model, args.weights)
    model, prefix = with_normalization(model, args.model, _floats(args.mean, "--mean"), _floats(args.std, "--std"))
    inner = model.model if prefix else model
    user_layers = resolve(inner, args.layers)
    layers = [prefix + name for name in user_layers]
    if args.grid < 1:
        raise UsageError(f"--grid must be >= 1, got {args.grid}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: CUDA is not usable here")
    try:
        model(x[:1])  # the model accepts these images (size, channels)
    except Exception as exc:
        raise UsageError(f"the model cannot take these images ({tuple(x.shape[1:])}): {exc}") from None

    print(f"deepinfo {args.command}: {len(paths)} images {tuple(x.shape[1:])}, layers {user_layers}, "
          f"method {args.method}, grid {args.grid}, device {device}", file=sys.stderr)
    kwargs = {"grid": args.grid, "method": args.method, "seed": args.seed, "batch_size": args.batch_size,
              "progress": True}
    if args.beta is not None:
        kwargs["beta"] = args.beta
    maps = deepinfo.cid(model.to(device), x.to(device), layers, **kwargs).cpu()
    maps.layers = list(user_layers)
    out.mkdir(parents=True, exist_ok=True)
    maps.save(out / "maps.pt")
    names = [p.name for p in paths]
    written = [out / "maps.pt"]
    if args.command == "maps":
        write_maps_csv(out / "maps.csv", maps, names, user_layers)
        written += [out / "maps.csv", *write_overlays(out, x, maps, names, user_layers)]
    else:
        rows = curve_rows(maps, user_layers, args.seed)
        with open(out / "curve.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CURVE_COLUMNS)
            w.writeheader()
            w.writerows(rows)
        written += [out / "curve.csv",
                    write_curve(out, rows, f"{args.model}: {len(paths)} images, {args.method}, grid {args.grid}")]
    return written


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        written = run(args)
    except UsageError as exc:
        print(f"deepinfo: error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``make plan``: what a profile's run will do, download, store and cost, before anything runs.

``python -m deepinfo.book.plan --profile paper`` prints every job (the notebooks in order, then the
book) with an estimated time for the device found, every download with its size, the disk the
data need, and what is missing; it exits 1 naming what would stop the run (data to stage by hand,
a GPU the profile requires) and runs nothing.

The estimate rests on measured costs (``benchmarks/costs.toml``): on a CPU, the seconds each
notebook took in a measured run of the same profile; on a GPU, seconds per CID map and training
images per second measured on an H200, times the work each notebook does in this profile (maps:
images x layers x networks; training: epochs x images), counted here from the profile. Networks
the benchmark did not measure are scaled by their FLOPs from the nearest measured one; the
assumed factors (RU maps, decoders, PGD training) are printed with the estimate.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from collections import defaultdict
from dataclasses import dataclass

from deepinfo.book.networks import needed_by, shared
from deepinfo.paths import repo_root
from deepinfo.toolkit.data import check
from deepinfo.toolkit.profile import PROFILES, Profile, load_profile, override_text

COSTS = repo_root() / "benchmarks" / "costs.toml"
# GFLOPs of one forward pass at 224 px (torchvision's model cards); CIFAR ResNets at 32 px
GFLOPS_224 = {"alexnet": 0.71, "vgg16": 15.5, "vgg19": 19.6, "resnet18": 1.8, "resnet34": 3.6, "resnet50": 4.1}
KINDS = {"map": "CID maps", "linear": "CID maps", "ru": "RU maps", "train": "training", "pgd": "training",
         "decoder": "decoders and auto-encoders"}
NEAREST = {"alexnet": "alexnet", "vgg16": "vgg16", "vgg19": "vgg16", "resnet18": "resnet50", "resnet34": "resnet50",
           "resnet50": "resnet50", "cifar": "resnet50", "unet": "vgg16"}

__all__ = ["Work", "workload", "estimate", "main"]


@dataclass(frozen=True)
class Work:
    """Part of a notebook's work: ``count`` CID maps (``kind`` "map", "linear", "ru") or training
    images (``"train"``, ``"decoder"``, ``"pgd"``: epochs x images) of ``arch`` at ``size`` px."""

    kind: str
    arch: str
    count: float
    size: int


def _layers(p: Profile, arch: str, spec: str | None = None) -> int:
    """How many layers the profile measures for ``arch`` (its keywords resolved on the net), or
    how many ``spec`` (a keyword) names."""
    import torch

    from deepinfo.models import build, cifar_resnet, resolve_layers, unet

    with torch.device("meta"):
        if arch.startswith("resnet") and arch[6:].isdigit() and int(arch[6:]) % 6 == 2:
            model = cifar_resnet(int(arch[6:]))
        elif arch == "unet":
            model = unet(p.networks.unet.base_channels, p.networks.unet.levels)
        else:
            model = build(arch, num_classes=p.data.cub.num_classes, width=p.networks.cub.width,
                          input_size=p.data.cub.image_size, batch_norm=p.networks.cub.batch_norm)
    return len(resolve_layers(model, spec or p.layers_for(arch)))


def workload(p: Profile) -> dict[str, list[Work]]:
    """The work of each job of profile ``p``: the shared networks' jobs (:mod:`deepinfo.book.networks`,
    by name) and the notebooks (by stem); a network only one notebook uses is trained by it."""
    jobs = set(shared(p))
    n, L, cub, cif = p.estimator.n_images, (lambda a: _layers(p, a)), p.data.cub.image_size, p.data.cifar.image_size
    R = L if p.decoder.layers == "same" else (lambda a: _layers(p, a, "stages"))  # layers with an RU decoder
    method = "map" if p.estimator.method == "optimize" else "linear"
    depths = list(p.networks.cifar.depths)
    tc, dec = p.training.cub, p.decoder
    cub_train = (p.data.cub.n_train or 5994) * tc.epochs
    cifar_train = (p.data.cifar.n_train or 50000)
    trained_cifar = p.networks.cifar.weights == "train"
    # a decoder trains on its network's training set (capped by decoder.n_train)
    dec_cub = min(dec.n_train or 10**9, p.data.cub.n_train or 5994) * dec.epochs
    dec_cifar = min(dec.n_train or 10**9, cifar_train) * dec.epochs
    w: dict[str, list[Work]] = defaultdict(list)
    seen: set[str] = set()

    def train(nb: str, arch: str, images: float, size: int, kind: str = "train", key: str | None = None):
        key = key or arch
        job = next((j for j in (key, f"cub-{key}") if j in jobs), nb)  # a shared network's own job
        if key not in seen:
            seen.add(key)
            w[job].append(Work(kind, arch, images, size))

    d0 = depths[0]
    # 00: the estimators on a ResNet, both methods
    if trained_cifar:
        train("00_validation", "cifar", cifar_train * p.training.cifar_resnet.epochs, cif, key=f"resnet{d0}")
    w["00_validation"] += [Work("map", "cifar", n.validation * L(f"resnet{d0}"), cif),
                           Work("linear", "cifar", n.validation * L(f"resnet{d0}"), cif)]
    # 01: maps of a CUB net and a CIFAR ResNet, RU at stage outputs
    train("01_maps", "vgg16", cub_train, cub)
    for arch, size, dec_images in (("vgg16", cub, dec_cub), ("cifar", cif, dec_cifar)):
        w["01_maps"] += [Work(method, arch, n.maps * 6, size), Work("ru", arch, (n.ru or n.maps) * 3, size),
                         Work("decoder", arch, 3 * dec_images, size)]
    # 02: layer curves of every CIFAR ResNet (classifier and auto-encoder) and concentration of the CUB nets
    for d in depths:
        if trained_cifar:
            train("02_layer_curves", "cifar", cifar_train * p.training.cifar_resnet.epochs, cif, key=f"resnet{d}")
        train("02_layer_curves", "cifar", cifar_train * p.training.cifar_autoencoder.epochs * 2, cif,
              key=f"resnet{d}-ae")
        layers = L(f"resnet{d}")
        w["02_layer_curves"] += [Work(method, "cifar", 2 * n.layer_curves * layers, cif),
                                 Work("ru", "cifar", 2 * (n.ru or n.layer_curves) * R(f"resnet{d}"), cif),
                                 Work("linear", "cifar", 2 * (n.regimes or n.layer_curves) * layers, cif)]
        for net in (f"resnet{d}", f"resnet{d}-ae"):
            w[f"{net}-decoders"].append(Work("decoder", "cifar", R(f"resnet{d}") * dec_cifar, cif))
    w["02_layer_curves"].append(Work("linear", "cifar", 2 * (len(p.estimator.betas) - 1)
                                     * (n.regimes_beta or n.regimes or n.layer_curves) * L(f"resnet{d0}"), cif))
    for arch in p.networks.cub.archs:
        train("02_layer_curves", arch, cub_train, cub)
        w["02_layer_curves"].append(Work(method, arch, n.layer_curves * L(arch), cub))
    # 03: the beta sweep on a ResNet
    w["03_beta"].append(Work(method, "cifar", len(p.estimator.betas) * n.beta * L(f"resnet{d0}"), cif))
    # 04: rescaling: CID and RU before and after, on the rescaling arch
    a = p.rescaling.arch
    train("04_rescaling", a, cub_train, cub)
    w["04_rescaling"] += [Work(method, a, 2 * n.rescaling * L(a), cub), Work("ru", a, 2 * (n.ru or n.rescaling) * 2, cub),
                          Work("decoder", a, 2 * dec_cub, cub)]
    # 05: concentration of every correlation arch
    for arch in p.networks.cub.correlation_archs:
        train("05_concentration_accuracy", arch, cub_train, cub)
        w["05_concentration_accuracy"].append(Work(method, arch, n.correlation * L(arch), cub))
    # 06, 07: one CID map per image (descriptive arch; localization archs, trained on whole images)
    train("06_descriptive_accuracy", p.evaluation.descriptive_arch, cub_train, cub)
    w["06_descriptive_accuracy"].append(Work(method, p.evaluation.descriptive_arch, n.descriptive, cub))
    for arch in p.evaluation.localization_archs:
        train("07_localization", arch, cub_train, cub, key=f"{arch}-uncropped")
        w["07_localization"].append(Work(method, arch, n.localization, cub))
    # 08: compression stages (retrained), CID and RU at every layer of every stage
    a, stages = p.compression.arch, len(p.compression.keep)
    w["cub-compressed"].append(Work("train", a, stages * (p.data.cub.n_train or 5994) * p.compression.retrain.epochs, cub))
    w["08_compression"].append(Work(method, a, (stages + 1) * n.compression * L(a), cub))
    if p.compression.ru_layers:  # "same", module names, or none (an empty list or tuple)
        w["08_compression"] += [Work("ru", a, (stages + 1) * (n.ru or n.compression) * R(a), cub),
                                Work("decoder", a, (stages + 1) * R(a) * dec_cub, cub)]
    sl = p.second_line
    w["cifar-compressed"].append(Work("train", "cifar", len(sl.keep) * cifar_train * sl.retrain.epochs, cif))
    w["08_compression"].append(Work(method, "cifar", (len(sl.keep) + 1) * sl.n_images * L(f"resnet{sl.base_depth}"), cif))
    # 09: logits-layer CID of the compressed nets and the ResNets (the boundary search is not counted)
    w["09_robustness"] += [Work(method, a, (stages + 1) * n.robustness, cub),
                           Work(method, "cifar", (len(sl.keep) + 1 + len(sl.robustness_depths)) * sl.n_robustness, cif)]
    # 10: distilled students, one per teacher, and the student alone
    s = p.distillation.student
    for t in p.distillation.teachers:
        train("10_distillation", t, cub_train, cub)
        w["10_distillation"].append(Work("train", s, cub_train, cub))
    w["10_distillation"] += [Work(method, s, (len(p.distillation.teachers) + 1) * n.distillation * L(s), cub),
                             Work("train", "cifar", 2 * cifar_train * sl.student_recipe.epochs, cif),
                             Work(method, "cifar", 3 * sl.n_images * L(f"resnet{sl.student_depth}"), cif)]
    # 11: damaged nets (binary task), CID at every layer
    dm = p.damage
    for arch in dm.archs:
        images = 2 * (dm.n_negatives or 5994) * dm.recipe.epochs
        w["11_damage"] += [Work("train", arch, (1 + len(dm.conv_index)) * images, cub),
                           Work(method, arch, (1 + len(dm.conv_index)) * n.damage * L(arch), cub)]
    # 12: one training run with snapshots, CID of each snapshot
    dy = p.dynamics
    dm_method = "map" if (dy.method or p.estimator.method) == "optimize" else "linear"
    w["12_dynamics"] += [Work("train", "cifar", (dy.n_train or cifar_train) * p.training.cifar_resnet.epochs, cif),
                         Work(dm_method, "cifar", len(dy.snapshot_epochs) * n.dynamics * L(f"resnet{dy.depth}"), cif)]
    # 13: a PGD-trained net and its normally trained twin
    a, recipe = p.adversarial.arch, p.adversarial.recipe or tc
    images = (p.data.cub.n_train or 5994) * recipe.epochs
    w["13_adversarial"] += [Work("pgd", a, images, cub), Work("train", a, images, cub),
                            Work(method, a, 2 * n.adversarial * L(a), cub)]
    # 14: RU with each decoder size
    layers = L(f"resnet{d0}")
    w["14_decoders"] += [Work("decoder", "cifar", len(dec.compare_blocks) * layers * dec_cifar, cif),
                         Work("ru", "cifar", len(dec.compare_blocks) * n.decoders * layers, cif)]
    # 15: the U-Net, trained and at its initial weights
    seg = p.data.segmentation
    w["15_unet"] += [Work("train", "unet", (seg.n_train or 24) * p.training.unet.epochs, seg.image_size),
                     Work(method, "unet", 2 * n.unet * L("unet"), seg.image_size)]
    return dict(w)


def _flops(arch: str, size: int) -> float:
    if arch == "cifar":
        return 0.041 * (size / 32) ** 2
    if arch == "unet":
        return 30.0 * (size / 256) ** 2
    return GFLOPS_224[arch] * (size / 224) ** 2


def gpu_seconds(work: Work, costs: dict) -> float:
    """The measured (or FLOPs-scaled) GPU seconds of one piece of work."""
    g = costs["gpu"]
    ref = NEAREST[work.arch]
    scale = _flops(work.arch, work.size) / _flops(ref, 224)
    if work.kind in ("map", "linear", "ru"):
        table = g["linear_seconds_224"] if work.kind == "linear" else g["map_seconds_224"]
        per = max(g["min_map_seconds"], table[ref] * scale) * (g["ru_factor"] if work.kind == "ru" else 1.0)
    else:
        measured = g.get("cifar_train_images_per_second") if work.arch == "cifar" else None
        if measured:  # measured at 32 px (benchmarks/measure_costs.py)
            per = (work.size / 32) ** 2 * len(measured) / sum(measured.values())
        else:
            per = max(g["min_image_seconds"], scale / g["train_images_per_second_224"][ref])
        per *= {"decoder": g["decoder_factor"], "pgd": g["pgd_factor"]}.get(work.kind, 1.0)
    return work.count * per


def estimate(p: Profile, device: str, costs: dict) -> tuple[dict[str, float | None], str]:
    """Seconds per notebook on ``device`` (``"gpu"`` or ``"cpu"``), None where nothing measured
    allows an estimate, and the sentence saying what the estimate rests on."""
    from deepinfo.book.reproduce import notebooks

    names = [nb.stem for nb in notebooks()]
    if device == "cpu":
        measured = costs.get("cpu", {}).get("notebook_seconds", {}).get(p.name)
        if not measured:
            return {nb: None for nb in names}, (f"no measured run of profile {p.name!r} on a CPU: no estimate "
                                                "(the GPU costs do not carry over)")
        return {nb: measured.get(nb) for nb in names}, f"measured notebook times: {costs['cpu']['source']}"
    work = workload(p)
    g = costs["gpu"]
    jobs = [n for n in shared(p) if n in work] + names  # the shared networks' jobs, then the notebooks
    out = {job: sum(gpu_seconds(x, costs) for x in work.get(job, [])) if job in work else None for job in jobs}
    by_kind: dict[str, float] = defaultdict(float)
    for parts in work.values():
        for x in parts:
            by_kind[KINDS[x.kind]] += gpu_seconds(x, costs)
    estimate.by_kind = dict(by_kind)  # shown under the table: where the time goes
    return out, (f"work counted from the profile x GPU costs measured on {g['source']}; other networks scaled "
                 f"by FLOPs; assumed: an RU map = {g['ru_factor']:g} CID maps, a decoder image = "
                 f"{g['decoder_factor']:g} training image, a PGD-10 step = {g['pgd_factor']:g} clean ones; "
                 "not counted: the minimal-perturbation search of 09, the authors' loop of 02, data loading")


def longest_chain(p: Profile, seconds: dict[str, float | None]) -> float:
    """The longest run of jobs that must follow each other (a notebook after the networks it reads,
    a network after those it is built from): no number of GPUs finishes sooner."""
    items = shared(p)

    def chain(name: str) -> float:
        return (seconds.get(name) or 0.0) + max((chain(a) for a in items[name].after), default=0.0)

    return max(((seconds.get(nb) or 0.0) + max((chain(n) for n in needed_by(p, nb)), default=0.0)
                for nb in seconds if nb not in items), default=0.0)


# Levers on the paper profile's GPU time, with what each costs in fidelity (``make plan`` prints
# the estimate with each; bf16 and channels-last training are not levers yet: unmeasured).
LEVERS = (
    ("decoder.layers=stages", "RU decoders only at stage outputs: the RU curves (Fig. 5(b), Fig. 7(a)) get one "
                              "point per stage instead of one per measured block"),
    ("estimator.n_images.ru=25", "RU maps on 25 images instead of the figure's n_images: RU intervals about "
                                 "2x wider (1/sqrt(n))"),
    ("compression.ru_layers=[]", "no RU for the compressed nets: the RU part of Fig. 7(a) is not measured "
                                 "(its claim is undecided)"),
)


def what_if(profile: str, sets: list[str]) -> Profile:
    """``profile`` (a name or a .toml path) with the dotted overrides ``sets``
    (:func:`~deepinfo.toolkit.profile.override_text`), loaded."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "what-if.toml"
        base = profile if profile in PROFILES else str(Path(profile).resolve())
        path.write_text(override_text(base, sets))
        return load_profile(path)


def levers(profile: str, sets: list[str], costs: dict) -> list[tuple[str, str, float]]:
    """``(SET, fidelity cost, estimated GPU seconds in all)`` for each lever of :data:`LEVERS`
    added to ``sets``, then for all of them together."""
    out = []
    for extra, cost in (*LEVERS, (" ".join(s for s, _ in LEVERS), "all of the above")):
        seconds, _ = estimate(what_if(profile, [*sets, *extra.split()]), "gpu", costs)
        out.append((extra, cost, sum(v for v in seconds.values() if v is not None)))
    return out


def _minutes(s: float | None) -> str:
    if s is None:
        return "?"
    return f"{s / 60:.0f} min" if s >= 600 else f"{s / 60:.1f} min"


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(prog="python -m deepinfo.book.plan", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                    help="what if: override a profile key, dotted (repeatable)")
    ap.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                    help="the device to estimate for (default: the one found here)")
    args = ap.parse_args(argv)
    p = load_profile(args.profile)
    if args.sets:
        p = what_if(args.profile, args.sets)
    found = "gpu" if torch.cuda.is_available() else "cpu"
    # a profile that requires CUDA is estimated for the GPU it will run on
    device = ("gpu" if p.device == "cuda" else found) if args.device == "auto" else args.device
    costs = tomllib.loads(COSTS.read_text()) if COSTS.is_file() else {}
    stops: list[str] = []
    print(f"plan for profile {p.name!r} ({p.description})")
    where = torch.cuda.get_device_name(0) if found == "gpu" else "no usable GPU"
    print(f"device here: {where}; estimating for: {device}")
    if p.device == "cuda" and found != "gpu":
        stops.append(f"profile {p.name!r} requires CUDA (device = \"cuda\") and this machine has {where}")

    print("\ndata:")
    results = check(p)
    download = sum(i.size_bytes for i, problem in results if problem and i.fetch is not None)
    for item, problem in results:
        state = "present" if problem is None else ("to download" if item.fetch is not None else "MISSING")
        print(f"  {state:<12} {item.name:<22} {item.size_bytes / 2**20:>8,.0f} MB  {item.source}")
        if problem and item.fetch is None:
            stops.append(f"{item.name}: {problem} (get it: {item.source})")
        elif problem and not problem.startswith("missing"):
            print(f"               ({problem})")
    if not results:
        print("  none: synthetic data, generated on the fly")
    archives = sum(i.size_bytes for i, problem in results if problem and i.fetch is not None and i.name == "cub200")
    print(f"  downloads: {download / 2**30:.2f} GB; disk for the data: {(download + archives) / 2**30:.2f} GB "
          "(archives are extracted beside themselves)")

    print(f"\njobs, in order (estimated time on the {device}):")
    seconds, basis = estimate(p, device, costs) if costs else ({}, "no benchmarks/costs.toml: no estimate")
    networks = set(shared(p))
    for job, s in seconds.items():
        print(f"  {'network ' + job if job in networks else job:<30} {_minutes(s):>9}")
    print(f"  {'book':<30} {'< 1 min':>9}")
    known = [s for s in seconds.values() if s is not None]
    total = sum(known)
    print(f"  {'in all':<30} {_minutes(total):>9}"
          + (f"  ({len(seconds) - len(known)} not estimated)" if len(known) < len(seconds) else ""))
    split = getattr(estimate, "by_kind", None) if device == "gpu" else None
    if device == "gpu" and known:
        chain = longest_chain(p, seconds)
        print(f"  on k GPUs side by side (make reproduce JOBS=k): at least max(in all / k, "
              f"{_minutes(chain).strip()}), the longest chain of jobs that wait for each other")
    elif device == "cpu":
        print("  (on a CPU the shared networks train inside the measured notebook times)")
    if split:
        print("  where the time goes: " + ", ".join(f"{k} {_minutes(v)}" for k, v in sorted(split.items(), key=lambda kv: -kv[1])))
    print(f"\nthe estimate rests on: {basis}")
    if device == "gpu" and costs and total > 4 * 3600:
        print("\nabove 4 hours on one GPU; levers (make reproduce SET=\"...\"), each estimated the same way:")
        for extra, cost, seconds_all in levers(args.profile, args.sets, costs):
            print(f"  {extra:<38} {_minutes(seconds_all):>9} in all: {cost}")
    if stops:
        print("\nthe run would stop:", file=sys.stderr)
        for s in stops:
            print(f"  - {s}", file=sys.stderr)
        return 1
    print("\nnothing missing: `make reproduce PROFILE=" + p.name + "` can run")
    return 0


if __name__ == "__main__":
    sys.exit(main())

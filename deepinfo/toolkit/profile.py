"""Run profiles: every size, schedule and setting of an experiment in one validated TOML file.

A profile fixes what a notebook runs: which data (and how much of it), which networks, how they
are trained, how the estimators are set, which layers are measured, and the settings of each
technique studied (compression, distillation, adversarial training, damage, learning dynamics).
Three ship with the package (``deepinfo/toolkit/profiles/*.toml``):

- ``smoke`` -- synthetic data only, tiny nets and schedules: the notebooks' default, CI.
- ``cpu``   -- the offline real data (CIFAR-10 JPEG copy, CUB-200 classes 1-50, ISBI 2012),
  published CIFAR ResNets, narrow CUB nets at low resolution: the book in under an hour on 2 cores.
- ``paper`` -- the paper's data, architectures and schedules, for a GPU.

Public names: :func:`load_profile`, :func:`available_profiles`, :class:`Profile` and its section
dataclasses (all frozen). Loading validates everything: an unknown key anywhere is a
``ValueError`` naming the key, its section, the accepted keys and the nearest one; a missing key,
a value of the wrong type or out of range is a ``ValueError`` too. Optional values (``None``) are
written by leaving the key out (TOML has no null).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

from deepinfo.paths import data_dir as _data_dir
from deepinfo.settings import Settings
from deepinfo.toolkit.training import Recipe

__all__ = [
    "CUB_ARCHS",
    "PROFILES",
    "Adversarial",
    "CifarData",
    "CifarNets",
    "Compression",
    "CubData",
    "CubNets",
    "Damage",
    "Data",
    "Decoder",
    "Distillation",
    "Dynamics",
    "Estimator",
    "Evaluation",
    "ImagesPerFigure",
    "Networks",
    "Profile",
    "Rescaling",
    "SecondLine",
    "SegmentationData",
    "Training",
    "UNetNet",
    "available_profiles",
    "load_profile",
    "override_text",
]

#: The profiles shipped with the package, in order of size.
PROFILES = ("smoke", "cpu", "paper")

#: Architectures of the CUB-200 experiments (``deepinfo.models.build`` names).
CUB_ARCHS = ("alexnet", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50")

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CifarData:
    """Small-image classification data (CIFAR-10; ResNet-20/32/44, auto-encoders, dynamics)."""

    dataset: Literal["synthetic", "cifar10"]
    image_size: int  # side, pixels
    num_classes: int
    n_train: int | None = None  # None = the whole split (a subset must be drawn at random)
    n_test: int | None = None


@dataclass(frozen=True)
class CubData:
    """Bird classification data (CUB-200-2011; AlexNet / VGG / ResNet-18/34/50)."""

    dataset: Literal["synthetic", "cub200"]
    image_size: int  # side in pixels of the (square) network input after cropping
    num_classes: int
    crop: Literal["box", "box1.5"]  # classification crops (``CUB200(crop=...)``); paper: "box"
    concentration_crop: Literal["box", "box1.5"]  # crops for concentration; paper Fig. 5(c): "box1.5"
    n_train: int | None = None
    n_test: int | None = None


@dataclass(frozen=True)
class SegmentationData:
    """Segmentation data for the U-Net (ISBI 2012 EM stacks)."""

    dataset: Literal["synthetic", "isbi2012"]
    image_size: int  # side, pixels, of the images the U-Net sees (resized)
    n_train: int | None = None
    n_test: int | None = None


@dataclass(frozen=True)
class Data:
    """Where the data come from. ``data_dir`` left out = ``$DEEPINFO_DATA`` or ``<repo>/data``."""

    download: bool  # may loaders fetch missing data (only the official sources)
    cifar: CifarData
    cub: CubData
    segmentation: SegmentationData
    data_dir: str | None = None
    # DataLoader worker processes that read (and decode) training images; the data order and the
    # augmentation come from the training process's seeded generators, so results do not depend
    # on it (nor does the checkpoint cache key)
    num_workers: int = 0


@dataclass(frozen=True)
class CifarNets:
    depths: tuple[int, ...]  # ResNet depths 6n+2
    weights: Literal["published", "train"]  # published checkpoints, or train with training.cifar_resnet


@dataclass(frozen=True)
class CubNets:
    archs: tuple[str, ...]  # layer curves, maps, concentration (Fig. 1, 4, 5(c))
    correlation_archs: tuple[str, ...]  # concentration vs accuracy (Fig. 3(a))
    width: float  # channel multiplier (1.0 = the published architecture)
    dropout: float  # dropout of AlexNet/VGG's FC layers (torchvision: 0.5)
    batch_norm: bool  # BatchNorm2d after every AlexNet/VGG conv (torchvision's vgg*_bn); ResNets always have it
    weights: str | None = None  # "imagenet" = fine-tune from ImageNet weights; None = random init


@dataclass(frozen=True)
class UNetNet:
    base_channels: int  # channels of the first level (doubling per level)
    levels: int  # down-sampling steps


@dataclass(frozen=True)
class Networks:
    cifar: CifarNets
    cub: CubNets
    unet: UNetNet


@dataclass(frozen=True)
class Training:
    """One :class:`~deepinfo.toolkit.training.Recipe` per network family."""

    cifar_resnet: Recipe  # CIFAR ResNets trained here (dynamics; all of them when weights = "train")
    cifar_autoencoder: Recipe  # the ResNet auto-encoders of Fig. 5(a,b)
    cub: Recipe  # every CUB classifier (also the distilled students and the PGD-trained nets)
    unet: Recipe


@dataclass(frozen=True)
class ImagesPerFigure:
    """Images measured per notebook (the estimators' cost scales with these)."""

    maps: int
    layer_curves: int
    beta: int
    rescaling: int
    correlation: int
    descriptive: int
    localization: int
    compression: int
    robustness: int
    distillation: int
    damage: int
    dynamics: int
    adversarial: int
    decoders: int
    unet: int
    validation: int
    ru: int | None = None  # images for RU in notebooks that also measure CID (RU costs ~10x a CID map); None: all
    regimes: int | None = None  # 02: images of the many-image linear layer curves (None: layer_curves)
    regimes_beta: int | None = None  # 02: the same over the other betas, on the shallowest ResNet (None: regimes)
    paper_loop: int | None = None  # 02: images for the authors' fixed-lambda loop (None: 1)


@dataclass(frozen=True, kw_only=True)
class Estimator(Settings):
    """The estimators' settings (:class:`deepinfo.Settings`, the same names and defaults, checked
    there, ``batch_size`` included), and what the notebooks add: the beta sweep and images per figure.
    ``deepinfo.cid(model, x, layers, P.estimator)`` takes it as it is."""

    betas: tuple[float, ...]  # the sweep of Fig. 3(b)
    n_images: ImagesPerFigure


@dataclass(frozen=True)
class Decoder:
    """RU decoders (``deepinfo.decoder``) and the auto-encoders' decoder."""

    n_blocks: int
    compare_blocks: tuple[int, ...]  # Appendix J
    layers: Literal["same", "stages"]  # decoders for every measured layer, or stage outputs only
    width: int
    epochs: int
    batch_size: int
    lr: float
    n_train: int | None = None  # training images per decoder (None = the whole train split)


@dataclass(frozen=True)
class Evaluation:
    descriptive_fractions: tuple[float, ...]  # fractions of least-important pixels removed (Fig. 6)
    descriptive_fill: Literal["mean", "zero", "blur"]  # what removed pixels become
    descriptive_arch: str
    localization_archs: tuple[str, ...]  # Table 2 (trained on uncropped images)
    robustness_top_k: int  # Table 3: attacks towards the top-k wrong classes
    robustness_max_steps: int  # steps of the minimal-perturbation search
    baselines: tuple[str, ...]  # attribution baselines shown beside CID maps


@dataclass(frozen=True)
class Rescaling:
    arch: str
    factor: float  # w_L /= factor, b_L /= factor, w_{L+1} *= factor (Sec. 3.4)


@dataclass(frozen=True)
class Compression:
    arch: str
    keep: tuple[float, ...]  # fractions of the weights kept
    retrain: Recipe  # retraining with the pruning masks fixed
    layers: str | tuple[str, ...] = "stages"  # Fig. 7(a)'s layers: "blocks" / "stages" or module names
    ru_layers: str | tuple[str, ...] = "same"  # RU at: "same" (the layers above) or module names ([] = none)


@dataclass(frozen=True)
class Distillation:
    student: str
    teachers: tuple[str, ...]
    temperature: float
    alpha: float  # weight of the distillation term (1 - alpha on the labels)


@dataclass(frozen=True)
class Adversarial:
    arch: str
    epsilon: float  # L-inf radius, pixel units
    step_size: float
    steps: int
    random_start: bool
    # training of the PGD-trained net AND of its normally trained twin (same data and schedule);
    # left out (None) = training.cub (the twin is then the shared cub_model(P, arch)). Hinted as a
    # plain Recipe, not Recipe | None, so a bad key inside the table gets the Recipe's own message.
    recipe: Recipe = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Damage:
    archs: tuple[str, ...]
    conv_index: tuple[int, ...]  # which conv layer is replaced, counted from the end (-1 = last)
    n_filters: int
    kernel_size: int
    negatives: Literal["synthetic", "cifar10", "imagenet"]  # the non-bird class
    recipe: Recipe  # training of the original and the damaged nets (binary task)
    # layers measured in notebook 11 ("blocks", "stages" or module names); the damaged layers
    # themselves are always measured too
    layers: str | tuple[str, ...]
    n_negatives: int | None = None  # None = as many as there are bird images


@dataclass(frozen=True)
class Dynamics:
    depth: int
    snapshot_epochs: tuple[int, ...]  # 0 = before training
    n_train: int | None = None  # training images of the run (a subset of data.cifar); None = data.cifar.n_train
    method: Literal["optimize", "linear"] | None = None  # CID method of this figure; None = estimator.method
    # blocks measured (module names, or "stages" / "blocks"); None = layers.resnet<depth>
    layers: str | tuple[str, ...] | None = None


@dataclass(frozen=True)
class SecondLine:
    """A second line of evidence on the CIFAR ResNets (notebooks 08, 09, 10).

    The claims on compression, robustness and distillation need no object masks, so besides the
    bird classifiers they are measured on the CIFAR ResNets of ``networks.cifar`` (the published
    weights in the cpu and paper profiles: far stronger than the CUB nets trained from scratch)
    and on networks derived from them here.
    """

    base_depth: int  # the ResNet pruned (08) whose stages join the robustness table (09)
    keep: tuple[float, ...]  # fractions of the conv + FC weights kept, one pruning stage each
    retrain: Recipe  # retraining of each pruning stage, on data.cifar's training images
    layers: str | tuple[str, ...]  # layers compared in 08 and 10 ("blocks", "stages" or module names)
    teacher_depth: int  # 10: the teacher ResNet (networks.cifar's weights)
    student_depth: int  # 10: the student ResNet, trained here alone and distilled (same recipe)
    student_recipe: Recipe
    robustness_depths: tuple[int, ...]  # 09: ResNets measured beside the pruned stages
    n_images: int  # test images of the paired comparisons (08, 10)
    n_robustness: int  # 09: test images per net (each net's mean CID and distance is one point)


@dataclass(frozen=True)
class Profile:
    """A run profile; see ``deepinfo/toolkit/profiles/*.toml`` for the values and where each comes from."""

    name: str
    description: str
    artifacts: str  # folder name under the artifacts root
    seed: int
    data: Data
    networks: Networks
    training: Training
    estimator: Estimator
    decoder: Decoder
    layers: dict[str, str | tuple[str, ...]]  # arch -> module names, or a keyword ("blocks", "stages")
    evaluation: Evaluation
    rescaling: Rescaling
    compression: Compression
    distillation: Distillation
    adversarial: Adversarial
    damage: Damage
    dynamics: Dynamics
    second_line: SecondLine
    # where networks train: "cuda" requires a usable GPU (a run fails at once without one),
    # "auto" takes the GPU when there is one, "cpu" never does
    device: Literal["auto", "cuda", "cpu"] = "auto"

    def torch_device(self) -> torch.device:
        """The device of this profile's training (see ``device``).

        Raises:
            RuntimeError: ``device = "cuda"`` and CUDA is not usable here, saying why.
        """
        import torch

        if self.device == "cpu":
            return torch.device("cpu")
        if torch.cuda.is_available():
            return torch.device("cuda")
        if self.device == "auto":
            return torch.device("cpu")
        why = ("this torch build has no CUDA" if torch.version.cuda is None
               else f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU")
        raise RuntimeError(
            f"profile {self.name!r} requires CUDA (device = \"cuda\"), but {why}. Run it on a GPU "
            f"machine, or extend it with device = \"auto\" to run it (slowly) on the CPU")

    @property
    def needs_data(self) -> bool:
        """Whether any data set comes from the data directory (anything but synthetic)."""
        d = self.data
        return any(s.dataset != "synthetic" for s in (d.cifar, d.cub, d.segmentation)) or (
            self.damage.negatives != "synthetic"
        )

    def data_root(self) -> Path:
        """The data directory this profile reads (``deepinfo.paths.data_dir(data.data_dir)``)."""
        return _data_dir(self.data.data_dir)

    def layers_for(self, arch: str) -> str | tuple[str, ...]:
        """The layers to measure for ``arch`` (a keyword or module names)."""
        try:
            return self.layers[arch]
        except KeyError:
            raise KeyError(
                f"profile {self.name!r} sets no layers for {arch!r}; it has {sorted(self.layers)}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for logging, and as part of cache configurations)."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------


def available_profiles() -> list[str]:
    """Names of the profiles shipped with the package."""
    return list(PROFILES)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(hint)[0])}"
    if origin is dict:
        return f"table of {_type_name(typing.get_args(hint)[1])}"
    if dataclasses.is_dataclass(hint):
        return "table"
    return getattr(hint, "__name__", str(hint))


def _describe(value: Any) -> str:
    """``a string ('ten')``, ``an int (3)``, ``a list``, ``a table``: what the TOML held."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    kind = {bool: "a bool", int: "an int", float: "a float", str: "a string"}.get(type(value), type(value).__name__)
    return f"{kind} ({value!r})"


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` (parsed TOML) as type ``hint``; ``where`` is the dotted key for messages."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ValueError(f"[{where}] must be a table, got {_describe(value)}")
        return _build(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        for option in options:
            try:
                return _coerce(value, option, where)
            except ValueError:
                pass
        raise ValueError(f"{where} must be {_type_name(hint)}, got {_describe(value)}")
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices or isinstance(value, bool):
            raise ValueError(f"{where} must be one of {list(choices)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            item = _type_name(typing.get_args(hint)[0])
            raise ValueError(f"{where} must be a list of {item}, got {_describe(value)}")
        item = typing.get_args(hint)[0]
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"[{where}] must be a table, got {_describe(value)}")
        item = typing.get_args(hint)[1]
        return {str(k): _coerce(v, item, f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be a bool (true / false), got {_describe(value)}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{where} must be an int, got {_describe(value)}")
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"{where} must be a number, got {_describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {_describe(value)}")
        return value
    raise TypeError(f"profile schema: unsupported type {hint!r} at {where}")  # a bug in the schema


def _build(cls: type, table: dict[str, Any], where: str) -> Any:
    """Instantiate dataclass ``cls`` from a TOML table, refusing unknown and missing keys."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    section = f"[{where}]" if where else "the top level"
    for key in table:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown key {key!r} in {section}{hint}; accepted keys: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        dotted = f"{where}.{name}" if where else name
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"missing key {name!r} in {section} (expected {_type_name(hints[name])})")
            continue
        kwargs[name] = _coerce(table[name], hints[name], dotted)
    try:
        return cls(**kwargs)
    except ValueError as exc:  # e.g. Recipe's own checks
        raise ValueError(f"{section}: {exc}") from None


def _check(p: Profile) -> None:
    """Cross-field checks that the types alone cannot express."""
    problems: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    need(bool(_SAFE_NAME.match(p.artifacts)), f"artifacts must be a plain folder name, got {p.artifacts!r}")
    need(bool(_SAFE_NAME.match(p.name)), f"name must be a plain name, got {p.name!r}")
    need(p.data.num_workers >= 0, f"data.num_workers must be >= 0, got {p.data.num_workers}")
    sets = (("data.cifar", p.data.cifar), ("data.cub", p.data.cub), ("data.segmentation", p.data.segmentation))
    for label, spec in sets:
        need(spec.image_size >= 8, f"{label}.image_size must be >= 8, got {spec.image_size}")
        for key in ("n_train", "n_test"):
            n = getattr(spec, key)
            need(n is None or n >= 1, f"{label}.{key} must be >= 1 (leave it out for all images), got {n}")
            need(spec.dataset != "synthetic" or n is not None, f"{label}.{key} is required for synthetic data")
        if hasattr(spec, "num_classes"):
            need(spec.num_classes >= 2, f"{label}.num_classes must be >= 2, got {spec.num_classes}")
    if p.data.cifar.dataset == "cifar10":
        need(p.data.cifar.num_classes == 10,
             f"data.cifar.num_classes must be 10 for cifar10, got {p.data.cifar.num_classes}")
    need(p.data.cifar.dataset != "synthetic" or p.networks.cifar.weights == "train",
         "networks.cifar.weights = 'published' needs dataset cifar10 (the checkpoints are CIFAR-10 models)")

    for d in p.networks.cifar.depths + (p.dynamics.depth,):
        need(d >= 8 and (d - 2) % 6 == 0, f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, ...), got {d}")
    need(len(p.networks.cifar.depths) >= 1, "networks.cifar.depths is empty")
    need(0 < p.networks.cub.width <= 4, f"networks.cub.width must be in (0, 4], got {p.networks.cub.width}")
    need(0 <= p.networks.cub.dropout < 1, f"networks.cub.dropout must be in [0, 1), got {p.networks.cub.dropout}")
    need(p.networks.cub.weights in (None, "imagenet"),
         f"networks.cub.weights must be 'imagenet' or left out (random init), got {p.networks.cub.weights!r}")
    need(p.networks.unet.base_channels >= 1 and p.networks.unet.levels >= 1, "networks.unet sizes must be >= 1")

    used = {
        "networks.cub.archs": p.networks.cub.archs,
        "networks.cub.correlation_archs": p.networks.cub.correlation_archs,
        "evaluation.localization_archs": p.evaluation.localization_archs,
        "evaluation.descriptive_arch": (p.evaluation.descriptive_arch,),
        "rescaling.arch": (p.rescaling.arch,),
        "compression.arch": (p.compression.arch,),
        "distillation.student": (p.distillation.student,),
        "distillation.teachers": p.distillation.teachers,
        "adversarial.arch": (p.adversarial.arch,),
        "damage.archs": p.damage.archs,
    }
    for key, archs in used.items():
        for a in archs:
            close = difflib.get_close_matches(a, CUB_ARCHS, n=1)
            need(a in CUB_ARCHS, f"{key}: unknown architecture {a!r}"
                 + (f" (did you mean {close[0]!r}?)" if close else "") + f"; accepted: {', '.join(CUB_ARCHS)}")
    # torchvision has ImageNet weights for vgg16_bn / vgg19_bn but none for an AlexNet with BN.
    need(not (p.networks.cub.batch_norm and p.networks.cub.weights == "imagenet"
              and any("alexnet" in archs for archs in used.values())),
         "networks.cub.batch_norm = true with weights = 'imagenet' needs ImageNet weights of AlexNet "
         "with batch norm, which torchvision does not have; set batch_norm = false or leave weights out")
    need(set(p.damage.archs) <= {"vgg16", "vgg19"}, f"damage.archs must be VGG nets, got {p.damage.archs}")
    need(p.distillation.student not in p.distillation.teachers, "distillation.student is also a teacher")

    needed = {a for archs in used.values() for a in archs if a in CUB_ARCHS}
    needed |= {f"resnet{d}" for d in p.networks.cifar.depths + (p.dynamics.depth,)}
    needed.add("unet")
    missing = sorted(needed - set(p.layers))
    need(not missing, f"[layers] has no entry for {missing}")
    known = needed | set(CUB_ARCHS) | {f"resnet{6 * n + 2}" for n in range(1, 200)}
    for arch, spec in p.layers.items():
        close = difflib.get_close_matches(arch, sorted(known), n=1)
        need(arch in known, f"[layers]: unknown architecture {arch!r}"
             + (f" (did you mean {close[0]!r}?)" if close else ""))
        need(spec != () and spec != "", f"[layers].{arch} is empty")

    e = p.estimator
    need(all(b > 0 for b in e.betas), "estimator.betas must be > 0")
    need(list(e.betas) == sorted(set(e.betas)) and len(e.betas) >= 2,
         f"estimator.betas must be >= 2 increasing values, got {e.betas}")
    for f in dataclasses.fields(ImagesPerFigure):
        v = getattr(e.n_images, f.name)
        need(v is None or v >= 1, f"estimator.n_images.{f.name} must be >= 1")

    dec = p.decoder
    need(dec.n_blocks >= 1 and all(b >= 1 for b in dec.compare_blocks), "decoder block counts must be >= 1")
    need(dec.n_blocks in dec.compare_blocks, "decoder.compare_blocks must include decoder.n_blocks")
    need(dec.width >= 1 and dec.epochs >= 1 and dec.batch_size >= 1 and dec.lr > 0, "decoder sizes must be positive")
    need(dec.n_train is None or dec.n_train >= 1, "decoder.n_train must be >= 1 or left out")

    ev = p.evaluation
    fractions = ev.descriptive_fractions
    need(all(0 <= f < 1 for f in fractions) and list(fractions) == sorted(set(fractions)),
         f"evaluation.descriptive_fractions must increase within [0, 1), got {ev.descriptive_fractions}")
    need(ev.robustness_top_k >= 1 and ev.robustness_max_steps >= 1, "evaluation robustness settings must be >= 1")
    need(ev.robustness_top_k < p.data.cub.num_classes,
         f"evaluation.robustness_top_k ({ev.robustness_top_k}) must be < data.cub.num_classes "
         f"({p.data.cub.num_classes})")

    need(p.rescaling.factor > 0 and p.rescaling.factor != 1, "rescaling.factor must be > 0 and != 1")
    keep = p.compression.keep
    need(all(0 < k < 1 for k in keep) and list(keep) == sorted(set(keep), reverse=True),
         f"compression.keep must be decreasing fractions in (0, 1), got {keep}")
    comp_layers, comp_ru = p.compression.layers, p.compression.ru_layers
    need(comp_layers in ("blocks", "stages") if isinstance(comp_layers, str) else len(comp_layers) >= 1,
         f"compression.layers must be 'blocks', 'stages' or a non-empty list of module names, got {comp_layers!r}")
    need(comp_ru == "same" if isinstance(comp_ru, str)
         else isinstance(comp_layers, str) or set(comp_ru) <= set(comp_layers),
         f"compression.ru_layers must be 'same' or a list of module names (empty: no RU) among "
         f"compression.layers, got {comp_ru!r}")
    sl = p.second_line
    depths = (sl.base_depth, sl.teacher_depth, sl.student_depth, *sl.robustness_depths)
    need(all(d >= 8 and (d - 2) % 6 == 0 for d in depths),
         f"second_line: CIFAR ResNet depths must be 6n + 2 (20, 32, 44, 56, ...), got {list(depths)}")
    need(bool(sl.keep) and all(0 < k < 1 for k in sl.keep) and list(sl.keep) == sorted(set(sl.keep), reverse=True),
         f"second_line.keep must be decreasing fractions in (0, 1), got {list(sl.keep)}")
    need(sl.teacher_depth != sl.student_depth, "second_line: the teacher and the student have the same depth")
    need(sl.n_images >= 1 and sl.n_robustness >= 1,
         f"second_line.n_images and n_robustness must be >= 1, got {sl.n_images}, {sl.n_robustness}")
    need(p.distillation.temperature > 0 and 0 <= p.distillation.alpha <= 1,
         "distillation: temperature must be > 0 and alpha in [0, 1]")
    adv = p.adversarial
    need(adv.epsilon > 0 and adv.step_size > 0 and adv.steps >= 1,
         "adversarial: epsilon and step_size must be > 0, steps >= 1")
    dmg = p.damage
    need(all(i < 0 for i in dmg.conv_index),
         f"damage.conv_index counts from the end (-1, -2, ...), got {dmg.conv_index}")
    need(dmg.n_filters >= 1 and dmg.kernel_size >= 1 and dmg.kernel_size % 2 == 1,
         "damage: n_filters must be >= 1 and kernel_size odd")
    need(dmg.n_negatives is None or dmg.n_negatives >= 1, "damage.n_negatives must be >= 1 or left out")
    need(dmg.layers in ("blocks", "stages") if isinstance(dmg.layers, str)
         else len(dmg.layers) >= 1 and all(isinstance(n, str) and n for n in dmg.layers),
         f"damage.layers must be 'blocks', 'stages' or a non-empty list of module names, got {dmg.layers!r}")
    need(p.dynamics.n_train is None or p.dynamics.n_train >= 1,
         f"dynamics.n_train must be >= 1 or left out, got {p.dynamics.n_train}")
    need(p.dynamics.n_train is None or p.data.cifar.n_train is None or p.dynamics.n_train <= p.data.cifar.n_train,
         f"dynamics.n_train ({p.dynamics.n_train}) must be <= data.cifar.n_train ({p.data.cifar.n_train}): "
         "it is a subset of that training set")
    need(len(p.dynamics.snapshot_epochs) >= 1, "dynamics.snapshot_epochs is empty")
    need(p.dynamics.layers is None or (p.dynamics.layers != () and p.dynamics.layers != ""),
         "dynamics.layers is empty (leave it out to use layers.resnet<depth>)")
    need(adv.epsilon <= 1, f"adversarial.epsilon is in pixel units (images in [0, 1]), got {adv.epsilon}")
    snaps = p.dynamics.snapshot_epochs
    need(list(snaps) == sorted(set(snaps)) and all(0 <= s <= p.training.cifar_resnet.epochs for s in snaps),
         f"dynamics.snapshot_epochs must increase within 0..training.cifar_resnet.epochs "
         f"({p.training.cifar_resnet.epochs}), got {snaps}")
    if problems:
        raise ValueError(f"profile {p.name!r} is inconsistent:\n  - " + "\n  - ".join(problems))


def _read(name_or_path: str | os.PathLike, seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], str]:
    """The TOML table of a profile with its ``extends`` chain merged in, and where it came from."""
    shipped = isinstance(name_or_path, str) and name_or_path in PROFILES
    if shipped:
        text = resources.files("deepinfo.toolkit").joinpath("profiles", f"{name_or_path}.toml").read_text(encoding="utf-8")
        source, here = f"shipped profile {name_or_path!r}", None
    else:
        path = Path(name_or_path).expanduser()
        looks_like_path = path.suffix == ".toml" or os.sep in str(name_or_path)
        if not (looks_like_path and path.is_file()):
            close = difflib.get_close_matches(str(name_or_path), PROFILES, n=1)
            raise ValueError(
                f"unknown profile {str(name_or_path)!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f": give one of {', '.join(PROFILES)} or the path of an existing .toml file"
            )
        text = path.read_text(encoding="utf-8")
        source, here = str(path), path.resolve().parent
    if source in seen:
        raise ValueError(f"profiles extend each other in a circle: {' -> '.join(seen + (source,))}")
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{source} is not valid TOML: {exc}") from None
    parent = table.pop("extends", None)
    if parent is None:
        return table, source
    if not isinstance(parent, str):
        raise ValueError(f"{source}: extends must be a profile name or a .toml path, got {parent!r}")
    if parent not in PROFILES and here is not None and not Path(parent).expanduser().is_absolute():
        parent = str(here / parent)  # relative to the file that extends it
    base, _ = _read(parent, seen + (source,))
    return _merge(base, table), source


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``top``'s keys replaced; tables are merged key by key, everything else replaced."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def override_text(base: str, assignments: list[str]) -> str:
    """A profile (TOML text) that extends ``base`` and sets dotted keys, e.g.
    ``["estimator.batch_size=64", "estimator.n_images.layer_curves=32"]``.

    Values are TOML (``64``, ``1e-4``, ``true``, ``[0.5, 0.25]``, ``"vgg16"``); a value that is
    not TOML is taken as a string (``estimator.method=linear``).
    """
    lines = [f"extends = {json.dumps(str(base))}"]
    for item in assignments:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
            raise ValueError(f"an override is KEY=VALUE with a dotted key (estimator.batch_size=64), got {item!r}")
        if key in ("name", "extends"):
            raise ValueError(f"{key} cannot be overridden (the run keeps its profile's name and artifacts)")
        try:
            tomllib.loads(f"v = {value}")
        except tomllib.TOMLDecodeError:
            value = json.dumps(value)
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def load_profile(name_or_path: str | os.PathLike | Profile) -> Profile:
    """Load and validate a profile.

    A profile file may start from another with ``extends = "paper"`` (a shipped name, or a path
    relative to the file) and set only what differs: its tables are merged key by key into the
    other's (see :func:`override_text` for dotted overrides from a command line).

    Args:
        name_or_path: a shipped profile name (``"smoke"``, ``"cpu"``, ``"paper"``), the path of a
            TOML file with the same schema, or a :class:`Profile` (returned as is).

    Raises:
        ValueError: unknown profile name (lists the shipped ones), unknown / missing keys,
            wrong types or inconsistent values (the message names the key and its section).
    """
    if isinstance(name_or_path, Profile):
        return name_or_path
    table, source = _read(name_or_path)
    try:
        profile = _build(Profile, table, "")
        _check(profile)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    shipped = isinstance(name_or_path, str) and name_or_path in PROFILES
    if shipped and profile.name != name_or_path:
        raise ValueError(f"{source}: its name is {profile.name!r}, expected {name_or_path!r}")
    return profile

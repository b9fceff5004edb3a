"""Run profiles: every size, schedule and setting of an experiment in one validated TOML file.

A profile fixes what a notebook runs: which data (and how much of it), which networks, how they
are trained, how the estimators are set, which layers are measured, and the settings of each
technique studied (compression, distillation, adversarial training, damage, learning dynamics).
Three ship with the package (``deepinfo/toolkit/profiles/*.toml``):

- ``smoke`` -- synthetic data only, tiny nets and schedules: the notebooks' default, CI.
- ``cpu``   -- the offline real data (CIFAR-10 JPEG copy, CUB-200 classes 1-50, ISBI 2012),
  published CIFAR ResNets, narrow CUB nets at low resolution: the book in under an hour on 2 cores.
- ``paper`` -- the paper's data, architectures and schedules, for a GPU.

Public names: :func:`load_profile`, :func:`override_text`, :func:`available_profiles`,
:class:`Profile` and its section dataclasses (all frozen). A small generic loader turns the TOML
tables into these dataclasses: an unknown key anywhere is a ``ValueError`` naming the key, its
section, the accepted keys and the nearest one; a missing key or a value of the wrong type is one
too. The values are checked by the code that owns them: each section in its ``__post_init__``
(the estimator's keys by :class:`deepinfo.Settings`, a recipe by
:class:`~deepinfo.toolkit.training.Recipe`, a CIFAR ResNet depth by
:func:`~deepinfo.models.cifar_resnet.blocks_per_stage`, architecture names against
:data:`deepinfo.models.vision.ARCHITECTURES`), and the :class:`Profile` what spans sections. So a
section built in code (``dataclasses.replace``) is checked like a loaded one. Optional values
(``None``) are written by leaving the key out (TOML has no null).
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

from deepinfo.models.cifar_resnet import blocks_per_stage
from deepinfo.models.vision import ARCHITECTURES
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
CUB_ARCHS = ARCHITECTURES

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_set(spec) -> None:
    """The sizes of a data set section."""
    _need(spec.image_size >= 8, f"image_size must be >= 8, got {spec.image_size}")
    for key in ("n_train", "n_test"):
        n = getattr(spec, key)
        _need(n is None or n >= 1, f"{key} must be >= 1 (leave it out for all images), got {n}")
        _need(spec.dataset != "synthetic" or n is not None, f"{key} is required for synthetic data")
    if hasattr(spec, "num_classes"):
        _need(spec.num_classes >= 2, f"num_classes must be >= 2, got {spec.num_classes}")


def _check_archs(key: str, archs) -> None:
    """Architecture names as ``deepinfo.models.build`` knows them (the nearest one suggested)."""
    for a in archs:
        close = difflib.get_close_matches(a, ARCHITECTURES, n=1)
        _need(a in ARCHITECTURES, f"{key}: unknown architecture {a!r}"
              + (f" (did you mean {close[0]!r}?)" if close else "") + f"; accepted: {', '.join(ARCHITECTURES)}")


@dataclass(frozen=True)
class CifarData:
    """Small-image classification data (CIFAR-10; ResNet-20/32/44, auto-encoders, dynamics)."""

    dataset: Literal["synthetic", "cifar10"]
    image_size: int  # side, pixels
    num_classes: int
    n_train: int | None = None  # None = the whole split (a subset must be drawn at random)
    n_test: int | None = None

    def __post_init__(self) -> None:
        _check_set(self)
        _need(self.dataset != "cifar10" or self.num_classes == 10,
              f"num_classes must be 10 for cifar10, got {self.num_classes}")


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

    def __post_init__(self) -> None:
        _check_set(self)


@dataclass(frozen=True)
class SegmentationData:
    """Segmentation data for the U-Net (ISBI 2012 EM stacks)."""

    dataset: Literal["synthetic", "isbi2012"]
    image_size: int  # side, pixels, of the images the U-Net sees (resized)
    n_train: int | None = None
    n_test: int | None = None

    def __post_init__(self) -> None:
        _check_set(self)


@dataclass(frozen=True)
class Data:
    """Where the data come from. ``data_dir`` left out = ``$DEEPINFO_DATA`` or ``<repo>/data``."""

    download: bool  # may loaders fetch missing data (only the official sources)
    cifar: CifarData
    cub: CubData
    segmentation: SegmentationData
    data_dir: str | None = None
    # which CIFAR-10 the loaders accept: "official" (torchvision's batches, downloaded if allowed;
    # the paper's), "jpeg" (the offline JPEG copy only) or "any" (the JPEG copy when present)
    cifar10_copy: Literal["any", "official", "jpeg"] = "any"
    # DataLoader worker processes that read (and decode) training images; the data order and the
    # augmentation come from the training process's seeded generators, so results do not depend
    # on it (nor does the checkpoint cache key)
    num_workers: int = 0

    def __post_init__(self) -> None:
        _need(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")


@dataclass(frozen=True)
class CifarNets:
    depths: tuple[int, ...]  # ResNet depths 6n+2
    weights: Literal["published", "train"]  # published checkpoints, or train with training.cifar_resnet

    def __post_init__(self) -> None:
        _need(len(self.depths) >= 1, "depths is empty")
        for d in self.depths:
            blocks_per_stage(d)


@dataclass(frozen=True)
class CubNets:
    archs: tuple[str, ...]  # layer curves, maps, concentration (Fig. 1, 4, 5(c))
    correlation_archs: tuple[str, ...]  # concentration vs accuracy (Fig. 3(a))
    width: float  # channel multiplier (1.0 = the published architecture)
    dropout: float  # dropout of AlexNet/VGG's FC layers (torchvision: 0.5)
    batch_norm: bool  # BatchNorm2d after every AlexNet/VGG conv (torchvision's vgg*_bn); ResNets always have it
    weights: str | None = None  # "imagenet" = fine-tune from ImageNet weights; None = random init

    def __post_init__(self) -> None:
        _check_archs("archs", self.archs)
        _check_archs("correlation_archs", self.correlation_archs)
        _need(0 < self.width <= 4, f"width must be in (0, 4], got {self.width}")
        _need(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        _need(self.weights in (None, "imagenet"),
              f"weights must be 'imagenet' or left out (random init), got {self.weights!r}")


@dataclass(frozen=True)
class UNetNet:
    base_channels: int  # channels of the first level (doubling per level)
    levels: int  # down-sampling steps

    def __post_init__(self) -> None:
        _need(self.base_channels >= 1 and self.levels >= 1, "base_channels and levels must be >= 1")


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

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            _need(v is None or v >= 1, f"{f.name} must be >= 1")


@dataclass(frozen=True, kw_only=True)
class Estimator(Settings):
    """The estimators' settings (:class:`deepinfo.Settings`, the same names and defaults, checked
    there, ``batch_size`` included), and what the notebooks add: the beta sweep and images per figure.
    ``deepinfo.cid(model, x, layers, P.estimator)`` takes it as it is."""

    betas: tuple[float, ...]  # the sweep of Fig. 3(b)
    n_images: ImagesPerFigure

    def __post_init__(self) -> None:
        super().__post_init__()
        _need(all(b > 0 for b in self.betas), "betas must be > 0")
        _need(list(self.betas) == sorted(set(self.betas)) and len(self.betas) >= 2,
              f"betas must be >= 2 increasing values, got {self.betas}")


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

    def __post_init__(self) -> None:
        _need(self.n_blocks >= 1 and all(b >= 1 for b in self.compare_blocks), "block counts must be >= 1")
        _need(self.n_blocks in self.compare_blocks, "compare_blocks must include n_blocks")
        _need(self.width >= 1 and self.epochs >= 1 and self.batch_size >= 1 and self.lr > 0, "sizes must be positive")
        _need(self.n_train is None or self.n_train >= 1, "n_train must be >= 1 or left out")


@dataclass(frozen=True)
class Evaluation:
    descriptive_fractions: tuple[float, ...]  # fractions of least-important pixels removed (Fig. 6)
    descriptive_fill: Literal["mean", "zero", "blur"]  # what removed pixels become
    descriptive_arch: str
    localization_archs: tuple[str, ...]  # Table 2 (trained on uncropped images)
    robustness_top_k: int  # Table 3: attacks towards the top-k wrong classes
    robustness_max_steps: int  # steps of the minimal-perturbation search
    baselines: tuple[str, ...]  # attribution baselines shown beside CID maps

    def __post_init__(self) -> None:
        f = self.descriptive_fractions
        _need(all(0 <= x < 1 for x in f) and list(f) == sorted(set(f)),
              f"descriptive_fractions must increase within [0, 1), got {f}")
        _need(self.robustness_top_k >= 1 and self.robustness_max_steps >= 1, "robustness settings must be >= 1")
        _check_archs("localization_archs", self.localization_archs)
        _check_archs("descriptive_arch", (self.descriptive_arch,))


@dataclass(frozen=True)
class Rescaling:
    arch: str
    factor: float  # w_L /= factor, b_L /= factor, w_{L+1} *= factor (Sec. 3.4)

    def __post_init__(self) -> None:
        _check_archs("arch", (self.arch,))
        _need(self.factor > 0 and self.factor != 1, "factor must be > 0 and != 1")


@dataclass(frozen=True)
class Compression:
    arch: str
    keep: tuple[float, ...]  # fractions of the weights kept
    retrain: Recipe  # retraining with the pruning masks fixed
    layers: str | tuple[str, ...] = "stages"  # Fig. 7(a)'s layers: "blocks" / "stages" or module names
    ru_layers: str | tuple[str, ...] = "same"  # RU at: "same" (the layers above) or module names ([] = none)

    def __post_init__(self) -> None:
        _check_archs("arch", (self.arch,))
        _need(all(0 < k < 1 for k in self.keep) and list(self.keep) == sorted(set(self.keep), reverse=True),
              f"keep must be decreasing fractions in (0, 1), got {self.keep}")
        layers, ru = self.layers, self.ru_layers
        _need(layers in ("blocks", "stages") if isinstance(layers, str) else len(layers) >= 1,
              f"layers must be 'blocks', 'stages' or a non-empty list of module names, got {layers!r}")
        _need(ru == "same" if isinstance(ru, str) else isinstance(layers, str) or set(ru) <= set(layers),
              f"ru_layers must be 'same' or a list of module names (empty: no RU) among layers, got {ru!r}")


@dataclass(frozen=True)
class Distillation:
    student: str
    teachers: tuple[str, ...]
    temperature: float
    alpha: float  # weight of the distillation term (1 - alpha on the labels)

    def __post_init__(self) -> None:
        _check_archs("student", (self.student,))
        _check_archs("teachers", self.teachers)
        _need(self.student not in self.teachers, "the student is also a teacher")
        _need(self.temperature > 0 and 0 <= self.alpha <= 1, "temperature must be > 0 and alpha in [0, 1]")


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

    def __post_init__(self) -> None:
        _check_archs("arch", (self.arch,))
        _need(0 < self.epsilon <= 1, f"epsilon must be in (0, 1] (pixel units, images in [0, 1]), got {self.epsilon}")
        _need(self.step_size > 0 and self.steps >= 1, "step_size must be > 0 and steps >= 1")


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

    def __post_init__(self) -> None:
        _need(set(self.archs) <= {"vgg16", "vgg19"}, f"archs must be VGG nets, got {self.archs}")
        _need(all(i < 0 for i in self.conv_index), f"conv_index counts from the end (-1, -2, ...), got {self.conv_index}")
        _need(self.n_filters >= 1 and self.kernel_size >= 1 and self.kernel_size % 2 == 1,
              "n_filters must be >= 1 and kernel_size odd")
        _need(self.n_negatives is None or self.n_negatives >= 1, "n_negatives must be >= 1 or left out")
        _need(self.layers in ("blocks", "stages") if isinstance(self.layers, str)
              else len(self.layers) >= 1 and all(isinstance(n, str) and n for n in self.layers),
              f"layers must be 'blocks', 'stages' or a non-empty list of module names, got {self.layers!r}")


@dataclass(frozen=True)
class Dynamics:
    depth: int
    snapshot_epochs: tuple[int, ...]  # 0 = before training
    n_train: int | None = None  # training images of the run (a subset of data.cifar); None = data.cifar.n_train
    method: Literal["optimize", "linear"] | None = None  # CID method of this figure; None = estimator.method
    # blocks measured (module names, or "stages" / "blocks"); None = layers.resnet<depth>
    layers: str | tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        blocks_per_stage(self.depth)
        _need(self.n_train is None or self.n_train >= 1, f"n_train must be >= 1 or left out, got {self.n_train}")
        snaps = self.snapshot_epochs
        _need(len(snaps) >= 1 and list(snaps) == sorted(set(snaps)) and snaps[0] >= 0,
              f"snapshot_epochs must be increasing epochs >= 0, got {snaps}")
        _need(self.layers is None or (self.layers != () and self.layers != ""),
              "layers is empty (leave it out to use layers.resnet<depth>)")


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

    def __post_init__(self) -> None:
        for d in (self.base_depth, self.teacher_depth, self.student_depth, *self.robustness_depths):
            blocks_per_stage(d)
        _need(bool(self.keep) and all(0 < k < 1 for k in self.keep)
              and list(self.keep) == sorted(set(self.keep), reverse=True),
              f"keep must be decreasing fractions in (0, 1), got {list(self.keep)}")
        _need(self.teacher_depth != self.student_depth, "the teacher and the student have the same depth")
        _need(self.n_images >= 1 and self.n_robustness >= 1,
              f"n_images and n_robustness must be >= 1, got {self.n_images}, {self.n_robustness}")


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

    def __post_init__(self) -> None:
        """What no section can check alone (each section checks its own keys)."""
        p = self
        _need(bool(_SAFE_NAME.match(p.artifacts)), f"artifacts must be a plain folder name, got {p.artifacts!r}")
        _need(bool(_SAFE_NAME.match(p.name)), f"name must be a plain name, got {p.name!r}")
        _need(p.data.cifar.dataset != "synthetic" or p.networks.cifar.weights == "train",
              "networks.cifar.weights = 'published' needs dataset cifar10 (the checkpoints are CIFAR-10 models)")
        # torchvision has ImageNet weights for vgg16_bn / vgg19_bn but none for an AlexNet with BN
        _need(not (p.networks.cub.batch_norm and p.networks.cub.weights == "imagenet"
                   and "alexnet" in self.cub_archs()),
              "networks.cub.batch_norm = true with weights = 'imagenet' needs ImageNet weights of AlexNet "
              "with batch norm, which torchvision does not have; set batch_norm = false or leave weights out")
        _need(p.evaluation.robustness_top_k < p.data.cub.num_classes,
              f"evaluation.robustness_top_k ({p.evaluation.robustness_top_k}) must be < data.cub.num_classes "
              f"({p.data.cub.num_classes})")
        needed = self.cub_archs() | {f"resnet{d}" for d in p.networks.cifar.depths + (p.dynamics.depth,)} | {"unet"}
        missing = sorted(needed - set(p.layers))
        _need(not missing, f"[layers] has no entry for {missing}")
        for arch, spec in p.layers.items():
            known = arch in ARCHITECTURES or arch == "unet" or (arch.startswith("resnet") and arch[6:].isdigit())
            close = difflib.get_close_matches(arch, sorted(needed | set(ARCHITECTURES)), n=1)
            _need(known, f"[layers]: unknown architecture {arch!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            _need(spec != () and spec != "", f"[layers].{arch} is empty")
        n_train = p.data.cifar.n_train
        _need(p.dynamics.n_train is None or n_train is None or p.dynamics.n_train <= n_train,
              f"dynamics.n_train ({p.dynamics.n_train}) must be <= data.cifar.n_train ({n_train}): "
              "it is a subset of that training set")
        epochs = p.training.cifar_resnet.epochs
        _need(p.dynamics.snapshot_epochs[-1] <= epochs,
              f"dynamics.snapshot_epochs must be within 0..training.cifar_resnet.epochs ({epochs}), "
              f"got {p.dynamics.snapshot_epochs}")

    def cub_archs(self) -> set[str]:
        """Every CUB architecture some section uses."""
        return {*self.networks.cub.archs, *self.networks.cub.correlation_archs, *self.evaluation.localization_archs,
                self.evaluation.descriptive_arch, self.rescaling.arch, self.compression.arch,
                self.distillation.student, *self.distillation.teachers, self.adversarial.arch, *self.damage.archs}

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
        raise ValueError(f"{section}: {exc}" if where else str(exc)) from None


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
    not TOML is taken as a string (``estimator.method=linear``). A key given twice takes its last
    value.
    """
    values: dict[str, str] = {}
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
        values[key] = value
    return "\n".join([f"extends = {json.dumps(str(base))}", *(f"{k} = {v}" for k, v in values.items())]) + "\n"


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
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    shipped = isinstance(name_or_path, str) and name_or_path in PROFILES
    if shipped and profile.name != name_or_path:
        raise ValueError(f"{source}: its name is {profile.name!r}, expected {name_or_path!r}")
    return profile

"""One training loop for every network in the project: seeded, resumable, with snapshots.

Every model the experiments need (CIFAR ResNets, CUB AlexNet/VGG/ResNet, auto-encoders, U-Net,
distilled students, PGD-trained nets, pruned nets being retrained) is trained by :func:`train`.
What differs between them is the :class:`Recipe` (optimizer, schedule, augmentation) and the
``loss_fn`` plugged in; the loop itself -- seeding, learning-rate schedule, checkpointing after
every epoch, progress bar -- is shared, so a result never depends on which script trained it.

Public names:

- :class:`Recipe` -- the training hyper-parameters (a frozen dataclass; profiles hold these).
- :class:`History` -- what training reports: per-epoch loss / accuracy / lr / wall time, snapshots.
- :func:`train` -- the loop; ``loss_fn(model, batch)`` makes it fit distillation, adversarial
  training, auto-encoders or segmentation without a second loop.
- :func:`evaluate` -- accuracy (top-1, or pixel accuracy for dense labels) of a model on a data set.
- :func:`learning_rate` -- the schedule as a pure function of (fractional) epoch.
- :func:`augment` -- pad + random crop + horizontal flip on a batch, with an explicit generator.
- :func:`cross_entropy_loss` -- the default ``loss_fn``.
- :func:`seed_everything`, :func:`default_device`, :func:`atomic_torch_save` -- small helpers.

Determinism: the data order and the augmentation of epoch ``e`` come from generators seeded by
``(seed, e)``, and the global RNGs (dropout, a ``loss_fn``'s own noise) are seeded once and saved
with every state file. So the same seed gives bit-identical weights on CPU, and a run that is
interrupted and resumed ends exactly where the uninterrupted run ends.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from deepinfo.models._checkpoint import file_digest

__all__ = [
    "AUGMENTS",
    "OPTIMIZERS",
    "SCHEDULES",
    "History",
    "LossFn",
    "Recipe",
    "atomic_torch_save",
    "load_verified",
    "load_or_discard",
    "CorruptFile",
    "augment",
    "cross_entropy_loss",
    "default_device",
    "evaluate",
    "learning_rate",
    "seed_everything",
    "train",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")
AUGMENTS = ("none", "flip", "crop_flip")

#: Version of the state-file layout; a state file of another version is refused, not misread.
STATE_FORMAT = 1

#: ``loss_fn(model, batch)`` returns the loss (a scalar tensor) or ``(loss, logits)``; with logits
#: the loop also reports training accuracy. ``batch`` is the data set's items collated, moved to
#: the device, images augmented: ``(images [B, C, H, W], labels, *rest)``.
LossFn = Callable[[nn.Module, Sequence[Any]], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]


# --------------------------------------------------------------------------------------------
# Recipe
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """How to train a network (all epochs counted from 0, learning rates in optimizer units).

    Args:
        epochs: passes over the training set.
        batch_size: images per step.
        lr: peak learning rate.
        optimizer: ``"sgd"`` (with ``momentum``, ``nesterov``), ``"adam"`` or ``"adamw"``.
        momentum: SGD momentum (ignored by Adam).
        weight_decay: L2 penalty (decoupled for ``"adamw"``), applied to every trainable tensor.
        nesterov: Nesterov momentum for SGD.
        schedule: ``"cosine"`` (per step, from ``lr`` to 0 over all epochs), ``"step"`` (multiply
            by ``gamma`` at each epoch in ``milestones``) or ``"constant"``.
        milestones: epochs at which the step schedule decays (strictly increasing, < epochs).
        gamma: decay factor of the step schedule.
        warmup_epochs: linear warm-up from ``lr / (warmup steps)`` to ``lr`` over this many
            (possibly fractional) epochs, before the schedule takes over.
        augment: ``"none"``, ``"flip"`` (random horizontal flip) or ``"crop_flip"`` (zero-pad by
            ``crop_padding`` pixels, random crop back to the original size, random flip).
        crop_padding: padding of the random crop, pixels (4 is the CIFAR standard).
        label_smoothing: label smoothing of the default cross-entropy loss.
        grad_clip: clip the global gradient norm to this value (``None``: no clipping).
    """

    epochs: int
    batch_size: int
    lr: float
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    augment: Literal["none", "flip", "crop_flip"] = "none"
    crop_padding: int = 4
    label_smoothing: float = 0.0
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"Recipe: {message}")

        def is_int(v) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def is_num(v) -> bool:
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

        need(is_int(self.epochs) and self.epochs >= 1, f"epochs must be an int >= 1, got {self.epochs!r}")
        need(is_int(self.batch_size) and self.batch_size >= 1,
             f"batch_size must be an int >= 1, got {self.batch_size!r}")
        need(is_num(self.lr) and math.isfinite(self.lr) and self.lr > 0,
             f"lr must be a finite number > 0, got {self.lr!r}")
        need(self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        need(self.augment in AUGMENTS, f"augment must be one of {AUGMENTS}, got {self.augment!r}")
        need(is_num(self.momentum) and 0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum!r}")
        need(is_num(self.weight_decay) and self.weight_decay >= 0,
             f"weight_decay must be >= 0, got {self.weight_decay!r}")
        need(isinstance(self.nesterov, bool), f"nesterov must be a bool, got {self.nesterov!r}")
        need(not (self.nesterov and (self.optimizer != "sgd" or self.momentum == 0)),
             "nesterov needs optimizer 'sgd' with momentum > 0")
        need(is_num(self.gamma) and 0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma!r}")
        need(is_num(self.warmup_epochs) and 0 <= self.warmup_epochs < self.epochs,
             f"warmup_epochs must be in [0, epochs={self.epochs}), got {self.warmup_epochs!r}")
        need(is_int(self.crop_padding) and self.crop_padding >= 0,
             f"crop_padding must be an int >= 0, got {self.crop_padding!r}")
        need(is_num(self.label_smoothing) and 0 <= self.label_smoothing < 1,
             f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        need(self.grad_clip is None or (is_num(self.grad_clip) and self.grad_clip > 0),
             f"grad_clip must be None or > 0, got {self.grad_clip!r}")
        try:
            milestones = tuple(self.milestones)
        except TypeError:
            raise ValueError(f"Recipe: milestones must be a sequence of ints, got {self.milestones!r}") from None
        need(all(is_int(m) for m in milestones), f"milestones must be ints, got {self.milestones!r}")
        need(all(0 < m < self.epochs for m in milestones),
             f"milestones must lie in 1..epochs-1 = 1..{self.epochs - 1}, got {milestones}")
        need(all(a < b for a, b in zip(milestones, milestones[1:])),
             f"milestones must be strictly increasing, got {milestones}")
        need(self.schedule == "step" or not milestones,
             f"milestones are only used by schedule 'step', not {self.schedule!r}; drop them")
        object.__setattr__(self, "milestones", tuple(int(m) for m in milestones))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (``milestones`` as a list)."""
        out = asdict(self)
        out["milestones"] = list(self.milestones)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        """Inverse of :meth:`to_dict`; an unknown key is a ``ValueError`` naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Recipe: unknown keys {unknown}; accepted: {sorted(known)}")
        data = dict(data)
        if "milestones" in data:
            data["milestones"] = tuple(data["milestones"])
        return cls(**data)


def learning_rate(recipe: Recipe, epoch: float) -> float:
    """Learning rate at fractional epoch ``epoch`` (``e + i / n_batches`` for step ``i`` of epoch ``e``).

    Warm-up (linear, ``warmup_epochs``) then the schedule: ``cosine`` is
    ``lr * 0.5 * (1 + cos(pi * epoch / epochs))`` (continuous, per step), ``step`` is
    ``lr * gamma ** (number of milestones <= floor(epoch))`` (per epoch, as PyTorch's
    ``MultiStepLR``), ``constant`` is ``lr``.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if recipe.schedule == "cosine":
        lr = recipe.lr * 0.5 * (1.0 + math.cos(math.pi * min(epoch, recipe.epochs) / recipe.epochs))
    elif recipe.schedule == "step":
        passed = sum(1 for m in recipe.milestones if m <= math.floor(epoch))
        lr = recipe.lr * recipe.gamma**passed
    else:
        lr = recipe.lr
    if recipe.warmup_epochs > 0 and epoch < recipe.warmup_epochs:
        lr *= (epoch + 1e-3) / recipe.warmup_epochs
    return float(lr)


# --------------------------------------------------------------------------------------------
# History
# --------------------------------------------------------------------------------------------


@dataclass
class History:
    """What :func:`train` reports, one entry per finished epoch.

    Attributes:
        train_loss: mean training loss of the epoch (over images, augmented).
        train_acc: training accuracy of the epoch in [0, 1] (``nan`` when the ``loss_fn`` gives no
            logits).
        val_acc: accuracy on ``val_set`` after the epoch (``nan`` without a ``val_set``).
        lr: learning rate at the first step of the epoch.
        epoch_time: wall-clock seconds of the epoch (training + validation).
        snapshots: ``{epoch: state_dict}`` on CPU for the epochs asked for in ``keep_epochs``;
            epoch 0 is the initial weights, epoch ``e`` the weights after ``e`` epochs.
    """

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        """Number of finished epochs."""
        return len(self.train_loss)

    @property
    def total_time(self) -> float:
        """Seconds spent training (all epochs, across resumes)."""
        return float(sum(self.epoch_time))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, floats, CPU tensors): loadable with ``torch.load(weights_only=True)``."""
        return {
            "train_loss": list(self.train_loss),
            "train_acc": list(self.train_acc),
            "val_acc": list(self.val_acc),
            "lr": list(self.lr),
            "epoch_time": list(self.epoch_time),
            "snapshots": {int(k): dict(v) for k, v in self.snapshots.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "History":
        return cls(
            train_loss=[float(v) for v in data["train_loss"]],
            train_acc=[float(v) for v in data["train_acc"]],
            val_acc=[float(v) for v in data["val_acc"]],
            lr=[float(v) for v in data["lr"]],
            epoch_time=[float(v) for v in data["epoch_time"]],
            snapshots={int(k): dict(v) for k, v in data.get("snapshots", {}).items()},
        )


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global RNG and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then ``os.replace`` it into place, and
    record its sha256 in ``<path>.sha256`` (read back by :func:`load_verified`).

    A crash while writing leaves the previous file (or none), never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
        digest = file_digest(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _digest_path(path).write_text(digest + "\n")


class CorruptFile(RuntimeError):
    """A file this project wrote that cannot be read back as written (its ``path`` is named)."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"{path}: {why}")
        self.path = path


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def load_verified(path: str | os.PathLike) -> Any:
    """``torch.load`` (weights only, on the CPU) of a file :func:`atomic_torch_save` wrote, after
    checking it against the sha256 recorded beside it.

    A file from before the checksums is loaded as it is and its checksum recorded then.

    Raises:
        CorruptFile: the digest differs from the recorded one (truncated or altered), or the file
            cannot be unpickled; the message names the file.
    """
    path = Path(path)
    recorded = _digest_path(path)
    if recorded.is_file():
        want = recorded.read_text().split()[0] if recorded.read_text().strip() else ""
        got = file_digest(path)
        if got != want:
            raise CorruptFile(path, f"its sha256 {got[:16]}... is not the {want[:16]}... recorded when it was "
                                    "written (truncated or altered)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CorruptFile(path, f"cannot be read back ({type(exc).__name__}: {exc})") from exc
    if not recorded.is_file():
        recorded.write_text(file_digest(path) + "\n")
    return obj


def load_or_discard(path: str | os.PathLike, again: str, load: Callable[[Path], Any] | None = None) -> Any:
    """``load(path)`` (default :func:`load_verified`) of a cached file, or None when there is none.

    A file that cannot be read back as written is deleted with a warning naming it and saying
    what happens instead (``again``: "training it again", ...), and None is returned.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        return (load or load_verified)(path)
    except CorruptFile as exc:  # truncated or altered: found, named, made again
        warnings.warn(f"{exc}; deleting it and {again}", stacklevel=3)
        discard(path)
        return None


def discard(path: str | os.PathLike) -> None:
    """Delete a cached file and its recorded checksum."""
    path = Path(path)
    path.unlink(missing_ok=True)
    _digest_path(path).unlink(missing_ok=True)


def _derived_seed(seed: int, *stream: int) -> int:
    """A 63-bit seed for an independent stream (e.g. (epoch, 0) = data order of that epoch)."""
    text = "/".join(str(int(s)) for s in (seed, *stream))
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


def _cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _rng_state() -> dict[str, Any]:
    """Global RNG states (torch CPU/CUDA, numpy, random) as weights_only-loadable values."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "random": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(_as_tuple(state["random"]))


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _batch_parts(batch: Any) -> list[Any]:
    if isinstance(batch, (list, tuple)) and len(batch) >= 2 and torch.is_tensor(batch[0]):
        return list(batch)
    raise ValueError(
        "each data set item must be a tuple (image [C, H, W], label, ...); got a batch of type "
        f"{type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (list, tuple)) else "")
    )


def _to_device(parts: list[Any], device: torch.device) -> list[Any]:
    non_blocking = device.type == "cuda"
    return [p.to(device, non_blocking=non_blocking) if torch.is_tensor(p) else p for p in parts]


# --------------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------------


def augment(
    parts: Sequence[Any], recipe: Recipe, generator: torch.Generator
) -> list[Any]:
    """Apply the recipe's augmentation to one collated batch ``(images, labels, *rest)``.

    ``images [B, C, H, W]`` get a random crop (zero padding of ``recipe.crop_padding`` pixels,
    as torchvision's ``RandomCrop(size, padding)``) and/or a horizontal flip with probability 1/2,
    drawn per image from ``generator`` (a CPU generator, so CPU and GPU runs see the same
    augmentation). Every other tensor of the batch whose shape is ``[B, ..., H, W]`` (dense labels,
    masks) gets the same geometric transform, so it stays aligned; other entries are untouched.
    """
    parts = list(parts)
    if recipe.augment == "none":
        return parts
    images = parts[0]
    if images.dim() != 4:
        raise ValueError(f"augmentation needs images of shape [B, C, H, W], got {tuple(images.shape)}")
    B, _, H, W = images.shape
    pad = recipe.crop_padding if recipe.augment == "crop_flip" else 0
    dy = torch.randint(0, 2 * pad + 1, (B,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (B,), generator=generator)
    flip = torch.rand(B, generator=generator) < 0.5

    def transform(t: torch.Tensor) -> torch.Tensor:
        if pad:
            padded = F.pad(t, (pad, pad, pad, pad))
            rows = (dy.to(t.device)[:, None] + torch.arange(H, device=t.device))  # [B, H]
            cols = (dx.to(t.device)[:, None] + torch.arange(W, device=t.device))  # [B, W]
            lead = t.shape[1:-2]
            flat = padded.reshape(B, -1, H + 2 * pad, W + 2 * pad)
            idx_b = torch.arange(B, device=t.device)[:, None, None, None]
            idx_c = torch.arange(flat.shape[1], device=t.device)[None, :, None, None]
            t = flat[idx_b, idx_c, rows[:, None, :, None], cols[:, None, None, :]].reshape(B, *lead, H, W)
        f = flip.to(t.device).reshape(B, *([1] * (t.dim() - 1)))
        return torch.where(f, t.flip(-1), t)

    out = [transform(images)]
    for p in parts[1:]:
        dense = torch.is_tensor(p) and p.dim() >= 3 and p.shape[0] == B and tuple(p.shape[-2:]) == (H, W)
        out.append(transform(p) if dense else p)
    return out


# --------------------------------------------------------------------------------------------
# Loss, evaluation
# --------------------------------------------------------------------------------------------


def cross_entropy_loss(label_smoothing: float = 0.0) -> LossFn:
    """The default ``loss_fn``: cross-entropy of ``model(images)`` against ``labels``.

    Works for classification (logits ``[B, K]``, labels ``[B]``) and dense prediction (logits
    ``[B, K, H, W]``, labels ``[B, H, W]``). Returns ``(loss, logits)``.
    """

    def loss_fn(model: nn.Module, batch: Sequence[Any]):
        images, labels = batch[0], batch[1]
        logits = model(images)
        return F.cross_entropy(logits, labels.long(), label_smoothing=label_smoothing), logits

    return loss_fn


def _correct(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int] | None:
    """(number correct, number of labels), or None when logits and labels do not pair up."""
    if not torch.is_tensor(labels) or logits.dim() != labels.dim() + 1:
        return None
    pred = logits.argmax(1)
    if pred.shape != labels.shape:
        return None
    return int((pred == labels).sum()), labels.numel()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    *,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> float:
    """Accuracy of ``model`` on ``dataset``, in [0, 1].

    Items are ``(image [C, H, W], label, ...)``; accuracy is the fraction of labels equal to the
    arg-max of the logits over dim 1 (top-1 for ``[B, K]`` logits, pixel accuracy for dense
    ``[B, K, H, W]`` logits and ``[B, H, W]`` labels). The model is run in eval mode and put back
    in the mode it was in. ``device=None`` uses the device of the model's parameters.
    """
    if len(dataset) == 0:
        raise ValueError("evaluate: the data set is empty")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
        for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
            images, labels = _to_device(_batch_parts(batch)[:2], device)
            counted = _correct(model(images), labels)
            if counted is None:
                raise ValueError("evaluate: logits [B, K, ...] do not pair with labels [B, ...]")
            correct += counted[0]
            total += counted[1]
    finally:
        model.train(was_training)
    return correct / total


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int = 128) -> torch.Tensor:
    """The model's outputs ``[N, ...]`` on every item's image (in order), in the model's current mode."""
    loader = DataLoader(dataset, batch_size=batch_size)
    return torch.cat([model(b[0]) for b in loader])


@torch.no_grad()
def held_out(model: nn.Module, dataset: Dataset, batch_size: int = 256) -> tuple[float, float]:
    """Accuracy and mean cross-entropy (nats) of a classifier on ``dataset``, in eval mode."""
    device = next(model.parameters()).device
    model.eval()
    correct = total = 0
    loss = 0.0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        xb, yb = batch[0].to(device), torch.as_tensor(batch[1]).to(device)
        logits = model(xb)
        loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
        total += len(yb)
    return correct / total, loss / total


@torch.no_grad()
def autoencoder_mse(model: nn.Module, dataset: Dataset, batch_size: int = 256) -> float:
    """Mean squared reconstruction error of an auto-encoder over every pixel and channel of ``dataset``."""
    total, count = 0.0, 0
    for batch in DataLoader(dataset, batch_size=batch_size):
        images = batch[0]
        total += float(F.mse_loss(model(images), images, reduction="sum"))
        count += images.numel()
    return total / count


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def _make_optimizer(params: list[torch.Tensor], recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
            nesterov=recipe.nesterov,
        )
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def _check_keep(keep_epochs: Iterable[int], epochs: int) -> frozenset[int]:
    keep = frozenset(int(e) for e in keep_epochs)
    bad = sorted(e for e in keep if not 0 <= e <= epochs)
    if bad:
        raise ValueError(f"keep_epochs {bad} out of range: accepted 0 (initial weights) .. {epochs}")
    return keep


def _load_state(path: Path, recipe: Recipe, seed: int, keep: frozenset[int]) -> dict[str, Any]:
    state = load_verified(path)
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"state file {path} has format {state.get('format')!r}, expected {STATE_FORMAT}")
    if state["recipe"] != recipe.to_dict() or state["seed"] != seed:
        raise ValueError(
            f"state file {path} belongs to another run (recipe {state['recipe']}, seed {state['seed']}); "
            f"this run has recipe {recipe.to_dict()}, seed {seed}. Delete it to start over."
        )
    if sorted(state["keep_epochs"]) != sorted(keep):
        raise ValueError(
            f"state file {path} kept snapshots at epochs {sorted(state['keep_epochs'])}, "
            f"this run asks for {sorted(keep)}; delete it to start over"
        )
    return state


def train(
    model: nn.Module,
    train_set: Dataset,
    recipe: Recipe,
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
    val_set: Dataset | None = None,
    loss_fn: LossFn | None = None,
    state_path: str | os.PathLike | None = None,
    keep_epochs: Iterable[int] = (),
    on_epoch_end: Callable[[int, nn.Module, History], None] | None = None,
    progress: bool = True,
    num_workers: int = 0,
) -> History:
    """Train ``model`` on ``train_set`` following ``recipe``; resumable, seeded, in place.

    Args:
        model: the network (already initialised; seed before building it for reproducible
            initial weights). Moved to ``device``; left in eval mode at the end.
        train_set: items ``(image [C, H, W] in [0, 1], label, ...)``; extra entries (e.g. masks)
            are passed on to ``loss_fn``.
        recipe: optimizer, schedule, augmentation, epochs, batch size.
        seed: seeds the global RNGs at a fresh start, the data order and the augmentation
            (per epoch, from ``(seed, epoch)``).
        device: ``None`` = CUDA when available, else CPU.
        val_set: evaluated (accuracy) after every epoch when given.
        loss_fn: ``loss_fn(model, batch) -> loss`` or ``(loss, logits)``, with
            ``batch = (images, labels, *rest)`` on the device and augmented. Default:
            :func:`cross_entropy_loss` with the recipe's label smoothing. It is called with the
            model in train mode; one that switches modes (e.g. eval for a PGD attack) must
            switch back. Whatever it closes over (teacher, epsilon...) is not hashed anywhere.
        state_path: after every epoch the full training state (model, optimizer, RNG states,
            history, epoch) is written here atomically; when the file exists at the start,
            training resumes from it (it must come from the same recipe, seed and keep_epochs).
        keep_epochs: epochs whose weights are kept in ``History.snapshots`` (0 = before
            training, ``e`` = after ``e`` epochs).
        on_epoch_end: ``on_epoch_end(epoch, model, history)`` after epoch ``epoch`` (1-based) has
            been recorded and saved; an exception there stops training, which then resumes after
            that epoch.
        progress: show a tqdm bar over epochs x batches with loss and accuracy.
        num_workers: DataLoader workers (0 keeps everything in this process).

    Returns:
        The :class:`History` of all epochs (including those done before a resume).

    Raises:
        FloatingPointError: the loss became NaN or infinite (the message says where).
        ValueError: bad recipe, data items of the wrong form, a state file from another run.
    """
    if not isinstance(recipe, Recipe):
        raise ValueError(f"recipe must be a deepinfo.toolkit.training.Recipe, got {type(recipe).__name__}")
    n_items = len(train_set)
    if n_items == 0:
        raise ValueError("train: the training set is empty")
    keep = _check_keep(keep_epochs, recipe.epochs)
    device = torch.device(device) if device is not None else default_device()
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train: the model has no trainable parameters")
    optimizer = _make_optimizer(params, recipe)
    loss_fn = loss_fn or cross_entropy_loss(recipe.label_smoothing)
    state_path = Path(state_path) if state_path is not None else None

    history, start = History(), 0
    state = None if state_path is None else load_or_discard(
        state_path, "starting this training over", lambda path: _load_state(path, recipe, seed, keep))
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = History.from_dict(state["history"])
        _set_rng_state(state["rng"])
        start = int(state["epoch"])
    else:
        seed_everything(seed)
        if 0 in keep:
            history.snapshots[0] = _cpu_state_dict(model)

    # A last batch of a single image breaks BatchNorm in training mode; drop just that case.
    drop_last = n_items % recipe.batch_size == 1 and n_items > 1
    n_batches = n_items // recipe.batch_size if drop_last else math.ceil(n_items / recipe.batch_size)
    bar = tqdm(
        total=recipe.epochs * n_batches, initial=start * n_batches, disable=not progress,
        desc=f"train {type(model).__name__}", unit="batch", dynamic_ncols=True,
    )
    try:
        for epoch in range(start, recipe.epochs):
            t0 = time.perf_counter()
            loader = DataLoader(
                train_set, batch_size=recipe.batch_size, shuffle=True, drop_last=drop_last,
                generator=torch.Generator().manual_seed(_derived_seed(seed, epoch, 0)),
                num_workers=num_workers, pin_memory=device.type == "cuda",
            )
            aug_gen = torch.Generator().manual_seed(_derived_seed(seed, epoch, 1))
            model.train()
            loss_sum, n_seen, correct, n_labels = 0.0, 0, 0, 0
            first_lr = None
            for step, batch in enumerate(loader):
                lr = learning_rate(recipe, epoch + step / n_batches)
                first_lr = lr if first_lr is None else first_lr
                for group in optimizer.param_groups:
                    group["lr"] = lr
                # augmented where the step runs (the draws come from the CPU generator either way,
                # so the batch is the same): the crop's gather of a batch of 32 at 224 px takes
                # 14 ms on the CPU of an H200 machine and 0.4 ms on the GPU, whose VGG-16 step is
                # 26 ms; with 8 workers too, an epoch of 1,500 CUB images went from 4.6 s to 1.8 s
                parts = augment(_to_device(_batch_parts(batch), device), recipe, aug_gen)
                out = loss_fn(model, parts)
                loss, logits = out if isinstance(out, tuple) else (out, None)
                if loss.dim() != 0:
                    raise ValueError(f"loss_fn must return a scalar loss, got shape {tuple(loss.shape)}")
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    raise FloatingPointError(
                        f"loss is {loss_value} at epoch {epoch + 1}, step {step + 1} (lr {lr:.3g}); "
                        "lower the learning rate or check the data"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if recipe.grad_clip is not None:
                    nn.utils.clip_grad_norm_(params, recipe.grad_clip)
                optimizer.step()

                b = parts[0].shape[0]
                loss_sum += loss_value * b
                n_seen += b
                counted = _correct(logits.detach(), parts[1]) if logits is not None else None
                if counted is not None:
                    correct += counted[0]
                    n_labels += counted[1]
                bar.update(1)
                postfix = {"epoch": f"{epoch + 1}/{recipe.epochs}", "loss": f"{loss_sum / n_seen:.4f}"}
                if n_labels:
                    postfix["acc"] = f"{correct / n_labels:.3f}"
                bar.set_postfix(postfix, refresh=False)

            val = math.nan
            if val_set is not None:
                val = evaluate(model, val_set, max(recipe.batch_size, 256), device=device)
            history.train_loss.append(loss_sum / n_seen)
            history.train_acc.append(correct / n_labels if n_labels else math.nan)
            history.val_acc.append(val)
            history.lr.append(float(first_lr))
            history.epoch_time.append(time.perf_counter() - t0)
            if epoch + 1 in keep:
                history.snapshots[epoch + 1] = _cpu_state_dict(model)
            if val_set is not None:
                bar.set_postfix({**postfix, "val": f"{val:.3f}"}, refresh=True)
            if state_path is not None:
                atomic_torch_save(
                    {
                        "format": STATE_FORMAT,
                        "epoch": epoch + 1,
                        "seed": seed,
                        "recipe": recipe.to_dict(),
                        "keep_epochs": sorted(keep),
                        "model": _cpu_state_dict(model),
                        "optimizer": optimizer.state_dict(),
                        "rng": _rng_state(),
                        "history": history.to_dict(),
                    },
                    state_path,
                )
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, model, history)
    finally:
        bar.close()
    model.eval()
    return history

"""Trained checkpoints, cached under the artifacts folder and keyed by their full configuration.

A notebook asks for a trained network by describing it -- model name and arguments, data set and
arguments, technique settings -- plus the recipe, profile and seed. :func:`get_trained` hashes that
description (:func:`config_key`) and returns the checkpoint stored under that key, or trains one
(resumably) and stores it. Two notebooks describing the same network share one checkpoint; a
change to anything in the description trains a new one; nothing stale is ever returned.

Layout (``deepinfo.paths.artifacts_dir(profile, "checkpoints")``)::

    <name>-<key>.pt        {"format", "name", "key", "config", "model", "history"}
    <name>-<key>.json      the configuration, for humans
    <name>-<key>.pt.partial   the training state while training (resumed after a crash)

The key covers only what the caller describes: code passed as ``build_model`` / ``build_data`` /
``loss_fn`` cannot be hashed, so every setting they close over must appear in ``config``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from deepinfo.paths import artifacts_dir
from deepinfo.toolkit.training import (History, LossFn, Recipe, atomic_torch_save, default_device, discard, load_or_discard,
                                       load_verified, seed_everything, train)

__all__ = [
    "CACHE_FORMAT",
    "canonical",
    "checkpoint_path",
    "config_key",
    "full_config",
    "get_trained",
    "load_checkpoint",
    "locked",
]

#: Bumped when the checkpoint layout or the training loop changes what a key means.
CACHE_FORMAT = 1

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")


def canonical(obj: Any, where: str = "config") -> Any:
    """``obj`` as plain JSON values, the same for equal configurations.

    Dataclasses become dicts, tuples / lists lists, paths and dtypes / devices strings, enums
    their value; dict keys must be strings. Floats stay floats (``1`` and ``1.0`` differ on
    purpose: they are different TOML / Python values). Anything else -- functions, modules,
    tensors, data sets -- is a ``ValueError``, since it cannot be hashed faithfully: describe it.
    """
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"{where}: non-finite float {obj!r} cannot be part of a configuration")
        return obj
    if isinstance(obj, enum.Enum):
        return canonical(obj.value, where)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: canonical(getattr(obj, f.name), f"{where}.{f.name}") for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: keys must be strings, got {k!r}")
            out[k] = canonical(v, f"{where}.{k}")
        return out
    if isinstance(obj, (list, tuple)):
        return [canonical(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (torch.dtype, torch.device)):
        return str(obj)
    raise ValueError(
        f"{where}: a {type(obj).__name__} cannot be part of a configuration; describe it with "
        "plain values (str, int, float, bool, None, lists, dicts, dataclasses)"
    )


def config_key(config: Mapping[str, Any], length: int = 16) -> str:
    """The first ``length`` hex digits of the sha256 of ``config``'s canonical JSON (sorted keys)."""
    text = json.dumps(canonical(config), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def _profile_name(profile: Any) -> str:
    name = getattr(profile, "artifacts", profile)  # a deepinfo.toolkit.profile.Profile or its name
    if not isinstance(name, str) or not _SAFE_NAME.match(name):
        raise ValueError(f"profile must be a profile name or a Profile, got {profile!r}")
    return name


def full_config(
    name: str,
    config: Mapping[str, Any],
    recipe: Recipe,
    *,
    profile: Any,
    seed: int,
    keep_epochs: Iterable[int] = (),
) -> dict[str, Any]:
    """Everything the cache key covers: name, the caller's config, recipe, profile, seed."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name):
        raise ValueError(
            f"checkpoint name must be a plain file-name part (letters, digits, '_', '-', '.', '+', '='), got {name!r}"
        )
    if not isinstance(recipe, Recipe):
        raise ValueError(f"recipe must be a deepinfo.toolkit.training.Recipe, got {type(recipe).__name__}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    out = {
        "cache_format": CACHE_FORMAT,
        "name": name,
        "config": canonical(config),
        "recipe": canonical(recipe),
        "profile": _profile_name(profile),
        "seed": seed,
    }
    keep = sorted({int(e) for e in keep_epochs})
    if keep:  # only then: snapshots change what is stored, not the weights
        out["keep_epochs"] = keep
    return out


def checkpoint_path(
    name: str,
    config: Mapping[str, Any],
    recipe: Recipe,
    *,
    profile: Any,
    seed: int,
    keep_epochs: Iterable[int] = (),
) -> Path:
    """Where :func:`get_trained` stores this configuration: ``<artifacts>/<profile>/checkpoints/<name>-<key>.pt``."""
    full = full_config(name, config, recipe, profile=profile, seed=seed, keep_epochs=keep_epochs)
    return artifacts_dir(full["profile"], "checkpoints", create=False) / f"{name}-{config_key(full)}.pt"


def _atomic_write_text(text: str, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def locked(path: str | os.PathLike):
    """Hold an exclusive lock on ``<path>.lock`` (``fcntl.flock``): of several processes that need
    the same cached file (notebooks run side by side), one trains it while the others wait, then
    find it in the cache. The lock goes with the process if it dies."""
    import fcntl

    lock = Path(path).with_name(Path(path).name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a cached checkpoint (weights-only unpickling, checked against its recorded sha256):
    ``{"config", "model", "history", ...}``. Raises :class:`~deepinfo.toolkit.training.CorruptFile`
    naming the file when it cannot be read back as written."""
    ckpt = load_verified(path)
    if ckpt.get("format") != CACHE_FORMAT:
        raise ValueError(f"{path}: checkpoint format {ckpt.get('format')!r}, expected {CACHE_FORMAT}")
    return ckpt


def get_trained(
    name: str,
    config: Mapping[str, Any],
    build_model: Callable[[], nn.Module],
    build_data: Callable[[], Dataset],
    recipe: Recipe,
    *,
    profile: Any,
    seed: int,
    device: str | torch.device | None = None,
    val_data: Dataset | Callable[[], Dataset] | None = None,
    loss_fn: LossFn | None = None,
    keep_epochs: Iterable[int] = (),
    progress: bool = True,
    num_workers: int = 0,
) -> tuple[nn.Module, History]:
    """The trained model for this configuration: loaded from the cache, or trained and cached.

    Args:
        name: short name of the network (file-name safe), e.g. ``"resnet32"``, ``"vgg16-pruned"``.
        config: everything else that defines the network and its training that is not in
            ``recipe`` / ``profile`` / ``seed``: model arguments, data set and arguments,
            technique settings (teacher, epsilon, pruning ratio...). Plain values and dataclasses.
        build_model: returns a freshly initialised model (called after seeding with ``seed``).
        build_data: returns the training set; called only when training is needed.
        recipe: the training recipe.
        profile: the profile (or its name); selects the artifacts folder.
        seed: training seed (also seeds the model's initialisation).
        device: ``None`` = CUDA when available, else CPU.
        val_data: a data set, or a function returning one, evaluated after each epoch while
            training (only built when training).
        loss_fn: see :func:`deepinfo.toolkit.training.train`; describe what it does in ``config``.
        keep_epochs: weight snapshots to keep in ``History.snapshots`` (part of the key when given).
        progress: tqdm bar while training.
        num_workers: DataLoader workers while training; not part of the key (the trained weights
            do not depend on it).

    Returns:
        ``(model, history)``; the model is on ``device`` and in eval mode.

    A cache hit builds the model, loads the weights and returns at once: no data are built and
    nothing is trained. A miss trains with the state file ``<checkpoint>.partial`` (so an
    interrupted run resumes where it stopped), then writes ``<name>-<key>.json`` and
    ``<name>-<key>.pt`` atomically and removes the state file.
    """
    keep_epochs = tuple(keep_epochs)
    full = full_config(name, config, recipe, profile=profile, seed=seed, keep_epochs=keep_epochs)
    key = config_key(full)
    path = artifacts_dir(full["profile"], "checkpoints") / f"{name}-{key}.pt"
    device = torch.device(device) if device is not None else default_device()

    with locked(path):  # notebooks side by side: one trains, the others wait and load
        ckpt = load_or_discard(path, f"training {name} again", load_checkpoint)
        if ckpt is not None:
            if ckpt["config"] != full:  # a truncated-hash collision, or a file edited by hand
                raise ValueError(f"{path} holds another configuration than its key says; delete it")
            torch.manual_seed(seed)
            model = build_model()
            model.load_state_dict(ckpt["model"])
            return model.to(device).eval(), History.from_dict(ckpt["history"])

        seed_everything(seed)
        model = build_model()
        train_set = build_data()
        val_set = val_data() if callable(val_data) and not isinstance(val_data, Dataset) else val_data
        partial = path.with_name(path.name + ".partial")
        history = train(
            model, train_set, recipe, seed=seed, device=device, val_set=val_set, loss_fn=loss_fn,
            state_path=partial, keep_epochs=keep_epochs, progress=progress, num_workers=num_workers,
        )
        _atomic_write_text(json.dumps({"key": key, **full}, indent=2, sort_keys=True) + "\n", path.with_suffix(".json"))
        atomic_torch_save(
            {
                "format": CACHE_FORMAT,
                "name": name,
                "key": key,
                "config": full,
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "history": history.to_dict(),
            },
            path,
        )
        discard(partial)  # the training state and its checksum: the checkpoint replaces them
        return model.eval(), history

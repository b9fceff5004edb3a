"""Reading state dicts from checkpoint files, and checking torch.hub-style hash prefixes."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

# torch.hub's convention: "<name>-<first hex digits of the file's sha256>.<ext>".
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """The hex digest of a file's contents (read in 1 MiB chunks)."""
    h = hashlib.new(algorithm)
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def unwrap_state_dict(obj: object) -> dict[str, Tensor]:
    """The state dict inside a loaded checkpoint, without a ``module.`` (DataParallel) prefix.

    Accepts a plain state dict or a dict with a ``state_dict`` / ``model`` entry holding one.
    """
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(
            "a checkpoint must be a state dict (name -> tensor) or a dict whose 'state_dict' "
            f"or 'model' entry is one; got {type(obj).__name__}"
        )
    prefix = "module."
    if obj and all(k.startswith(prefix) for k in obj):
        return {k[len(prefix):]: v for k, v in obj.items()}
    return dict(obj)


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Load ``path`` on the CPU (tensors only, ``weights_only=True``) and unwrap its state dict."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    return unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def check_hash_prefix(path: str | os.PathLike) -> None:
    """Check a file named ``<name>-<sha256 prefix>.<ext>`` against its contents, like torch.hub.

    Raises ``ValueError`` when the name carries no hash or the digest does not start with it.
    """
    path = Path(path)
    match = _HASH_IN_NAME.search(path.name)
    if match is None:
        raise ValueError(f"{path.name} carries no '-<sha256 prefix>.' hash in its name")
    digest = file_digest(path)
    if not digest.startswith(match.group(1)):
        raise ValueError(
            f"{path} is corrupt or not the published file: its sha256 {digest[:16]}... "
            f"does not start with {match.group(1)} as its name says"
        )

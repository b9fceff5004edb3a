"""Where things live: the repository root, the data directory and the artifact folders.

Every path is resolved from the repository root (the folder holding ``pyproject.toml`` above
this package), never from the working directory, so notebooks, tests and scripts agree wherever
they are started. An installed copy (no repository around it) falls back to
``~/.cache/deepinfo``.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "DEEPINFO_DATA"
ARTIFACTS_ENV = "DEEPINFO_ARTIFACTS"


def repo_root() -> Path:
    """The repository root, or ``~/.cache/deepinfo`` for an installed package."""
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").is_file():
        return here
    return Path.home() / ".cache" / "deepinfo"


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """The data directory: ``root`` if given, else ``$DEEPINFO_DATA``, else ``<repo>/data``.

    A relative path is taken relative to the repository root.
    """
    chosen = root if root is not None else os.environ.get(DATA_ENV) or "data"
    path = Path(chosen).expanduser()
    return path if path.is_absolute() else (repo_root() / path).resolve()


def artifacts_dir(profile: str, *parts: str, create: bool = True) -> Path:
    """``<repo>/artifacts/<profile>/<parts...>`` (or under ``$DEEPINFO_ARTIFACTS``)."""
    base = os.environ.get(ARTIFACTS_ENV)
    base_path = Path(base).expanduser() if base else repo_root() / "artifacts"
    if not base_path.is_absolute():
        base_path = (repo_root() / base_path).resolve()
    path = base_path.joinpath(profile, *parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path

"""What ``workflow/Snakefile`` needs to know about a run: the profile file, the notebooks, the
package's code, where each job's marker and log go, and whether jobs need a GPU.

The workflow runs one job per shared network (``python -m deepinfo.book.networks <name>``: the
networks, auto-encoders and decoders that several pages read, see :mod:`deepinfo.book.networks`),
one job per notebook (``python -m deepinfo.book.reproduce --exactly <notebook>``, papermill
underneath) once the networks it reads are trained, then the scoreboard, then the book. Snakemake
decides what is up to date (a job reruns when the notebook, the profile or the package's code has
changed since its marker was made), runs independent jobs side by side (``make reproduce
JOBS=4``), and deletes only a failed job's marker: the executed notebook, with its error, stays
under ``artifacts/<profile>/notebooks/``. A network that only one page uses is trained in that
page's job; two runs outside the workflow wait for each other on the cache
(``deepinfo.toolkit.cache.locked``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from deepinfo.book import networks
from deepinfo.book.reproduce import BOOK, BUILD_RECORD, NOTEBOOKS, is_scoreboard, notebooks, write_overrides
from deepinfo.paths import artifacts_dir, repo_root
from deepinfo.toolkit.profile import PROFILES, load_profile

__all__ = ["Workflow"]


@dataclass
class Workflow:
    """The run of ``profile`` (a shipped name or a .toml path) with the dotted overrides ``sets``."""

    profile: str
    sets: tuple[str, ...] = ()

    def __post_init__(self):
        base = load_profile(self.profile)
        if self.sets:
            self.profile_arg = str(write_overrides(base, self.profile, list(self.sets)))
        elif self.profile in PROFILES:
            self.profile_arg = self.profile
        else:
            self.profile_arg = str(Path(self.profile).expanduser().resolve())
        self.p = load_profile(self.profile_arg)
        self.root = repo_root()

    def _rel(self, path: Path) -> str:
        path = Path(path)
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)

    @property
    def profile_file(self) -> str:
        """The profile's TOML file (an input of every job)."""
        if self.profile_arg in PROFILES:
            return str(resources.files("deepinfo.toolkit").joinpath("profiles", f"{self.profile_arg}.toml"))
        return self.profile_arg

    @property
    def code(self) -> list[str]:
        """The package's Python files and shipped profiles (inputs of every job)."""
        pkg = Path(__file__).resolve().parent.parent
        return sorted(self._rel(p) for p in pkg.rglob("*") if p.suffix in (".py", ".toml")
                      and "__pycache__" not in p.parts)

    @property
    def pages(self) -> list[str]:
        return [nb.stem for nb in notebooks() if not is_scoreboard(nb)]

    def select(self, only: list[str]) -> list[str]:
        """The pages to run: all, or those ``only`` names (stems or number prefixes)."""
        from deepinfo.book.reproduce import select

        return [nb.stem for nb in select(only or None, scoreboard=False) if not is_scoreboard(nb)]

    @property
    def scoreboard(self) -> str:
        return next(nb.stem for nb in notebooks() if is_scoreboard(nb))

    def notebook(self, stem: str) -> str:
        return self._rel(NOTEBOOKS / f"{stem}.ipynb")

    def done(self, stem: str) -> str:
        """The marker a successful job leaves (the executed notebook sits beside it)."""
        return self._rel(artifacts_dir(self.p.artifacts, "notebooks", create=False) / f"{stem}.done")

    def network_done(self, name: str) -> str:
        """The marker of a shared network's job (the network itself is in the checkpoint cache)."""
        return self._rel(artifacts_dir(self.p.artifacts, "networks", create=False) / f"{name}.done")

    def networks_for(self, stem: str) -> list[str]:
        """The markers of the shared networks the page ``stem`` reads (:data:`networks.USES`)."""
        return [self.network_done(n) for n in networks.needed_by(self.p, stem)]

    def networks_before(self, name: str) -> list[str]:
        """The markers of the shared networks that ``name`` is built from."""
        return [self.network_done(n) for n in networks.shared(self.p)[name].after]

    def log(self, stem: str) -> str:
        return self._rel(artifacts_dir(self.p.artifacts, "logs", create=False) / f"{stem}.job.log")

    @property
    def book(self) -> str:
        return self._rel(BOOK / "_build" / "html" / BUILD_RECORD)

    @property
    def gpus(self) -> int:
        """GPUs one job holds: 1 for a profile that requires CUDA (so JOBS beyond the GPUs wait)."""
        return 1 if self.p.device == "cuda" else 0

    @property
    def python(self) -> str:
        return sys.executable

"""What a notebook of the book writes: tables, figures, glued numbers and its claim.

    report = Report("02_layer_curves", profile)      # in the notebook, after the parameters cell
    report.table(frame, "cid_per_layer")             # CSV under artifacts/<profile>/tables/
    report.figure(fig, "layer_curves")               # PNG under artifacts/<profile>/figures/
    report.glue("cid_gap", 0.123)                    # "0.123" for {glue:text}`cid_gap` in the text
    report.claim("Deeper nets discard more.", held=True, numbers={...}, evidence="...")

Every claim is also written to ``artifacts/<profile>/claims/<notebook>.json``; the scoreboard
page collects them. Paths come from the repository root (``deepinfo.paths``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .paths import artifacts_dir
from .profile import Profile, load_profile


@dataclass
class Claim:
    """One claim of the paper as checked in one run."""

    notebook: str
    item: str  # the paper's figure or table
    claim: str  # the paper's words (or a faithful summary)
    held: bool | None  # None: could not be decided in this run (say why in `evidence`)
    numbers: dict[str, float]
    evidence: str  # the rule that decided it, in words
    profile: str
    data: str

    @property
    def verdict(self) -> str:
        return {True: "held", False: "not held", None: "undecided"}[self.held]


@dataclass
class Report:
    """Artifacts of one notebook in one profile."""

    notebook: str
    profile: Profile | str
    claims: list[Claim] = field(default_factory=list)
    glued: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        self.profile = load_profile(self.profile)
        self.root = artifacts_dir(self.profile.artifacts)
        self.started = time.time()
        for sub in ("tables", "figures", "claims"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # a rerun replaces this notebook's claims instead of adding to them
        self._claims_path.unlink(missing_ok=True)

    @property
    def _claims_path(self) -> Path:
        return self.root / "claims" / f"{self.notebook}.json"

    def table(self, frame, name: str, show: bool = True) -> Path:
        """Write a tidy ``pandas.DataFrame`` as CSV; returns its path."""
        path = self.root / "tables" / f"{self.notebook}__{name}.csv"
        frame.to_csv(path, index=False)
        if show:
            _display(frame)
        return path

    def figure(self, fig, name: str, dpi: int = 110) -> Path:
        """Save a matplotlib figure as PNG (it still shows in the notebook); returns its path."""
        path = self.root / "figures" / f"{self.notebook}__{name}.png"
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        return path

    def glue(self, name: str, value: Any, fmt: str = "{:.3f}") -> str:
        """Glue a number for the book's text as a formatted string (plain Python value)."""
        if hasattr(value, "item"):
            value = value.item()
        text = fmt.format(value) if isinstance(value, (int, float)) else str(value)
        self.glued[name] = text
        try:
            from myst_nb import glue
        except ImportError:  # outside the book tool chain the number is still recorded
            return text
        glue(name, text, display=False)
        return text

    def claim(
        self,
        claim: str,
        held: bool | None,
        numbers: dict[str, float],
        evidence: str,
        item: str,
        data: str,
    ) -> Claim:
        """Record the paper's claim and whether it held in this run, with the deciding numbers."""
        clean = {k: _plain(v) for k, v in numbers.items()}
        c = Claim(self.notebook, item, claim, None if held is None else bool(held), clean, evidence,
                  self.profile.name, data)
        self.claims.append(c)
        self._claims_path.write_text(json.dumps([asdict(x) for x in self.claims], indent=2))
        _display_markdown(_claim_markdown(c))
        return c


def _plain(v: Any) -> float | int | str:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _claim_markdown(c: Claim) -> str:
    mark = {True: "HELD", False: "NOT HELD", None: "UNDECIDED"}[c.held]
    nums = ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in c.numbers.items())
    return (f"**Claim ({c.item}).** {c.claim}\n\n**In this run: {mark}.** {c.evidence}\n\n"
            f"Numbers: {nums}.\n\n*Profile `{c.profile}`; data: {c.data}.*")


def load_claims(profile: str) -> list[Claim]:
    """Every claim recorded under ``artifacts/<profile>/claims``, in notebook order."""
    folder = artifacts_dir(profile, "claims", create=False)
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        out += [Claim(**c) for c in json.loads(path.read_text())]
    return out


def _display(obj):
    try:
        from IPython.display import display
    except ImportError:
        return
    display(obj)


def _display_markdown(text: str):
    try:
        from IPython.display import Markdown, display
    except ImportError:
        print(text)
        return
    display(Markdown(text))

"""What a notebook of the book writes: tables, figures, glued numbers and its claim.

    report = Report("02_layer_curves", profile)      # in the notebook, after the parameters cell
    report.table(frame, "cid_per_layer")             # CSV under artifacts/<profile>/tables/
    report.figure(fig, "layer_curves")               # PNG under artifacts/<profile>/figures/
    report.glue("cid_gap", 0.123)                    # "0.123" for {glue:text}`cid_gap` in the text
    report.claim("Deeper nets discard more.", decide(per_image_differences, threshold=0.0),
                 rationale="...", setup=[Condition(...)], item="Fig. 5(a)", data="...")

Every claim is also written to ``artifacts/<profile>/claims/<notebook>.json``; the scoreboard
page collects them. Paths come from the repository root (``deepinfo.paths``).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from deepinfo.paths import artifacts_dir
from deepinfo.plotting import set_style
from deepinfo.toolkit.environment import versions
from deepinfo.toolkit.profile import Profile, load_profile
from deepinfo.book.verdicts import INCONCLUSIVE, Condition, Verdict


@dataclass
class Claim:
    """One claim of the paper as decided in one run (see :mod:`deepinfo.book.verdicts`)."""

    notebook: str
    item: str  # the paper's figure or table
    claim: str  # the paper's words (or a faithful summary)
    verdict: str  # "held", "not held" or "inconclusive"
    effect: float
    interval: list[float]  # [lo, hi]
    n_units: int
    unit: str
    threshold: float
    side: str
    rule: str  # the decision rule, in words (effect, threshold, side), fixed before the run
    rationale: str  # why this rule tests the paper's claim (one sentence, from the paper's text)
    setup_met: bool
    setup: str  # the paper's setup conditions the claim relies on, and how this run meets them
    conditions: list[dict]  # each Condition: name, met, observed, paper
    numbers: dict[str, float]
    evidence: str  # what decided it: the verdict line and the per-unit detail
    profile: str
    data: str
    n_needed: int | None = None
    design: str = ""
    confidence: float = 0.95
    environment: dict = field(default_factory=dict)  # deepinfo.toolkit.environment.versions() of the run
    detail: str = ""  # the per-unit detail alone (evidence = the verdict line + this)

    @property
    def decisive(self) -> bool:
        """Held or not held (the interval cleared the threshold)."""
        return self.verdict != INCONCLUSIVE

    @property
    def evidence_about_paper(self) -> bool:
        """Decided on a run that met every condition of the paper's setup it relies on."""
        return self.decisive and self.setup_met

    def effect_text(self) -> str:
        """``+0.012 [+0.004, +0.020] over 64 images`` (and what an inconclusive one would need)."""
        lo, hi = self.interval
        text = f"{_fmt(self.effect)} [{_fmt(lo)}, {_fmt(hi)}] over {self.n_units} {self.unit}"
        if self.verdict == INCONCLUSIVE and self.n_needed:
            text += f"; ~{self.n_needed} {self.unit} would decide"
        return text

    def setup_text(self, brief: bool = False) -> str:
        """``met`` or the unmet conditions with their numbers (``brief``: their names only)."""
        unmet = [Condition(**c) for c in self.conditions if not c["met"]]
        if not unmet:
            return "met" if self.conditions else "not checked"
        if brief:
            return f"not met ({len(unmet)} of {len(self.conditions)}): " + ", ".join(c.name for c in unmet)
        return "not met: " + "; ".join(c.words().removesuffix(" (not met)") for c in unmet)


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
        try:
            set_style()  # one style for every figure of the book
        except ImportError:  # no matplotlib: a report without figures still works
            pass
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
            _display(_readable(frame))
        return path

    def show(self, frame, caption: str = "") -> None:
        """Show a table the way the page shows every table: 4 significant digits, a named index
        turned into columns, no row numbers, "n/a" for a missing value (nothing is written; see
        :meth:`table`)."""
        import pandas as pd

        if isinstance(frame, pd.Series):
            frame = frame.to_frame()
        if isinstance(frame, pd.DataFrame):
            if any(n is not None for n in frame.index.names):
                frame = frame.reset_index()
            frame = _readable(frame)
            if caption and hasattr(frame, "set_caption"):
                frame = frame.set_caption(caption)
        _display(frame)

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
        verdict: Verdict,
        *,
        rationale: str,
        setup: Sequence[Condition] = (),
        numbers: dict[str, Any] | None = None,
        detail: str = "",
        item: str,
        data: str,
    ) -> Claim:
        """Record the paper's claim as decided in this run.

        Args:
            claim: the paper's words.
            verdict: from :func:`deepinfo.book.verdicts.decide` (or its siblings), on per-unit values.
            rationale: one sentence on why this rule tests what the paper says.
            setup: the conditions of the paper's setup the claim relies on, checked in this run.
            numbers: further numbers to keep (per network, per layer ...).
            detail: the per-unit detail in words (shown under the verdict).
            item, data: the paper's figure or table; the data, networks and sizes of this run.
        """
        if not isinstance(verdict, Verdict):
            raise TypeError(f"verdict must be a deepinfo.book.verdicts.Verdict, got {type(verdict).__name__}")
        setup = list(setup)
        setup_met = all(c.met for c in setup)
        setup_words = "; ".join(c.words() for c in setup) or "no condition of the paper's setup checked"
        evidence = verdict.summary() + (f". {detail}" if detail else "")
        clean = {k: _plain(v) for k, v in (numbers or {}).items()}
        c = Claim(self.notebook, item, claim, verdict.verdict, _finite_or_none(verdict.effect),
                  [_finite_or_none(v) for v in verdict.interval], verdict.n_units, verdict.unit, verdict.threshold,
                  verdict.side, verdict.rule, rationale, setup_met, setup_words,
                  [asdict(x) for x in setup], clean, evidence, self.profile.name, data, verdict.n_needed,
                  verdict.design, verdict.confidence, versions(), detail)
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
    lo, hi = c.interval
    unmet = [x for x in c.conditions if not x["met"]]
    setup = ("Setup: every condition of the paper's setup it relies on is met (" + c.setup + ")."
             if c.setup_met else
             f"**Setup: {len(unmet)} of {len(c.conditions)} conditions of the paper's setup not met** -- "
             "this verdict is about this run's setup, not the paper's. " + c.setup + ".")
    more = ""
    if c.verdict == INCONCLUSIVE:
        more = (f" Roughly {c.n_needed} {c.unit} at the observed spread would decide." if c.n_needed
                else " More units at the observed spread would not decide.")
    design = f" *Design:* {c.design}." if c.design else ""
    return (f"**Claim ({c.item}).** {c.claim}\n\n"
            f"**In this run: {c.verdict.upper()}.** Effect {_fmt(c.effect)}, {c.confidence:.0%} interval "
            f"[{_fmt(lo)}, {_fmt(hi)}] over {c.n_units} {c.unit}; threshold {c.threshold:.4g} "
            f"({c.side}).{more}{design}\n\n"
            f"*Rule (fixed before the run):* {c.rule}. *Why this rule:* {c.rationale}\n\n"
            f"{setup}\n\n" + (f"{c.detail}\n\n" if c.detail else "") + f"*Profile `{c.profile}`; data: {c.data}.*")


def _finite_or_none(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _fmt(v) -> str:
    return f"{v:+.4g}" if isinstance(v, (int, float)) else "n/a" if v is None else str(v)


SCOREBOARD_GROUPS = (
    "Evidence about the paper: decided, on a setup that meets the paper's",
    "Decided on a setup short of the paper's: evidence about this run's networks, not the paper's",
    "Inconclusive: the interval straddles the threshold",
)


def scoreboard_groups(claims: Sequence[Claim]) -> list[tuple[str, list[Claim]]]:
    """The claims in the scoreboard's three groups (book order kept within each)."""
    return list(zip(SCOREBOARD_GROUPS, (
        [c for c in claims if c.evidence_about_paper],
        [c for c in claims if c.decisive and not c.setup_met],
        [c for c in claims if not c.decisive])))


def load_claims(profile: str) -> list[Claim]:
    """Every claim recorded under ``artifacts/<profile>/claims``, in notebook order.

    A file written before claims carried interval verdicts (no ``verdict`` key) is skipped with a
    warning: its notebook has to run again.
    """
    folder = artifacts_dir(profile, "claims", create=False)
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        records = json.loads(path.read_text())
        if any("verdict" not in c for c in records):
            warnings.warn(f"{path} was written by an older deepinfo (no interval verdicts): rerun "
                          f"{path.stem} to include its claims", stacklevel=2)
            continue
        out += [Claim(**c) for c in records]
    return out


def _readable(frame):
    """The table as a reader sees it on the page: 4 significant digits, no pandas index (the CSV
    keeps every digit)."""

    def fmt(v):
        if isinstance(v, float):
            return "n/a" if v != v else f"{v:.4g}"
        return v

    try:
        return frame.style.hide(axis="index").format(fmt)
    except Exception:  # no jinja2 (a plain install): the frame as it is
        return frame


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


#: Background of each verdict on the scoreboard.
VERDICT_COLOURS = {"held": "#c8e6c9", "not held": "#ffcdd2", "inconclusive": "#eeeeee"}
_SCOREBOARD_WIDTHS = {"paper item": "12%", "claim": "42%", "verdict": "9%", "effect [95 % interval]": "17%",
                      "paper's setup": "20%"}


def _scoreboard_cells(row: dict) -> dict:
    """One scoreboard row as HTML: the notebooks' text escaped, then the few tags of the layout."""
    import html

    e = lambda v: html.escape(str(v))  # noqa: E731
    return {
        "paper item": f'{e(row["paper item"])}<br><a href="{e(row["page"])}.html">{e(row["page"])}</a>',
        "claim": (f'{e(row["claim"])}<div style="color:#555; margin-top:0.4em">Rule: {e(row["rule"])}. '
                  f'{e(row["rationale"])}</div>'
                  f'<div style="color:#777; font-style:italic; margin-top:0.3em">Data: {e(row["data"])}</div>'),
        "verdict": e(row["verdict"]),
        "effect [95 % interval]": e(row["effect and interval"]),
        "paper's setup": e(row["setup"]),
    }


def scoreboard_table(frame, caption: str):
    """The scoreboard's rows (claims with page, paper item, claim, rule, rationale, data, verdict,
    effect and interval, setup) as a styled table: fixed column widths, text wrapped, each
    verdict on its colour."""
    import pandas as pd

    shown = pd.DataFrame([_scoreboard_cells(r) for r in frame.to_dict("records")], columns=list(_SCOREBOARD_WIDTHS))
    return (shown.style.hide(axis="index")
            .set_caption(caption)
            .set_properties(**{"text-align": "left", "vertical-align": "top", "font-size": "0.8em",
                               "white-space": "normal", "overflow-wrap": "anywhere"})
            .map(lambda v: f"background-color: {VERDICT_COLOURS.get(v, 'white')}; font-weight: bold; "
                           "overflow-wrap: normal", subset=["verdict"])
            .set_table_styles([{"selector": "", "props": [("border-collapse", "collapse"), ("width", "100%"),
                                                          ("table-layout", "fixed")]},
                               {"selector": "caption", "props": [("caption-side", "top"), ("text-align", "left"),
                                                                 ("font-size", "0.9em"), ("font-weight", "bold"),
                                                                 ("margin-top", "1.2em")]},
                               {"selector": "th", "props": [("text-align", "left"), ("font-size", "0.85em")]},
                               {"selector": "td, th", "props": [("border-bottom", "1px solid #ddd"),
                                                                ("padding", "4px 6px")]}]
                              + [{"selector": f"th.col{i}, td.col{i}", "props": [("width", w)]}
                                 for i, w in enumerate(_SCOREBOARD_WIDTHS.values())]))

"""How a claim of the paper is decided: an effect over units, its interval, a threshold fixed first.

Every claim in the book is decided the same way (SPEC section 4, "How a claim is decided"):

1. Before any number is computed, the notebook fixes the rule: the unit (images, networks, seeds,
   layers), the effect (e.g. the mean over images of a paired difference), the side the paper
   predicts and the smallest effect the claim needs (``threshold``).
2. The effect is computed from one value per unit, and a percentile bootstrap over the units gives
   its interval (``confidence``, 95 % by default). Paired designs pass the per-unit differences;
   two independent groups are resampled separately (:func:`decide_difference`); a correlation
   resamples the (x, y) pairs (:func:`decide_correlation`).
3. The verdict: **held** when the whole interval lies on the paper's side of the threshold,
   **not held** when it lies on the other side (the opposite effect, or one smaller than the claim
   needs), **inconclusive** when it straddles the threshold -- then ``n_needed`` says roughly how
   many units the observed spread would need to decide (the interval narrows as 1/sqrt(n)).
   Fewer than ``MIN_UNITS`` (5) units never decide: a percentile interval over 2-4 values is far
   too narrow to be a confidence statement.

Per-unit values measured with a noisy estimator already carry that noise, so resampling the units
includes it. When the units are few aggregates whose estimator noise is *not* resampled (e.g. one
mean per network, each from a seeded estimate), pass its standard deviation as ``noise_sd``: every
bootstrap replicate of the effect is then jittered by that much, widening the interval.

For an equivalence claim ("RU barely moves") use ``side="within"``: the threshold is a margin m,
held when the interval lies inside (-m, m), not held when it lies wholly outside.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Callable, Mapping, Sequence

import numpy as np

HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"
#: fewer units than this cannot decide: a percentile bootstrap over 2-4 values is far too narrow
#: (two positive values give an interval above 0), and 4 points have only 4! = 24 orderings
MIN_UNITS = 5
VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE)
SIDES = ("greater", "less", "within")

__all__ = ["Verdict", "Condition", "decide", "decide_difference", "decide_correlation", "correlation", "combine",
           "parts_text", "undecidable", "bootstrap", "accuracy_condition", "reconstruction_condition",
           "constraint_condition", "on_constraint", "permutation_p", "HELD", "NOT_HELD", "INCONCLUSIVE", "VERDICTS", "MIN_UNITS"]


@dataclass(frozen=True)
class Verdict:
    """The decision on one claim, with everything needed to read it.

    Attributes:
        verdict: ``"held"``, ``"not held"`` or ``"inconclusive"``.
        effect: the statistic on all units (e.g. mean paired difference, in the values' unit).
        interval: ``(lo, hi)``, the bootstrap percentile interval of ``effect``.
        n_units: number of units the effect rests on.
        unit: what a unit is, in words ("images", "networks", ...).
        threshold: the smallest effect the claim needs (``side="within"``: the margin).
        side: ``"greater"`` (the paper predicts effect > threshold), ``"less"``, or ``"within"``.
        confidence: the interval's coverage.
        n_needed: for an inconclusive verdict, roughly how many units the observed spread would
            need for the interval to clear the threshold (None when it cannot, e.g. a zero effect).
        design: a note on what the design can decide (e.g. a correlation over 4 networks), or "".
    """

    verdict: str
    effect: float
    interval: tuple[float, float]
    n_units: int
    unit: str
    threshold: float
    side: str
    confidence: float = 0.95
    n_needed: int | None = None
    design: str = ""
    rule_text: str = ""  # set by combine: every part's rule
    part: str = ""  # set by combine: the name of the part this verdict shows

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {self.side!r}")

    @property
    def rule(self) -> str:
        """The decision rule in words."""
        if self.rule_text:
            return self.rule_text
        if self.side == "within":
            target = f"inside (-{self.threshold:.4g}, {self.threshold:.4g})"
        else:
            target = f"{'above' if self.side == 'greater' else 'below'} {self.threshold:.4g}"
        return (f"held when the {self.confidence:.0%} bootstrap interval over {self.unit} lies {target}, "
                f"not held when it lies wholly on the other side, inconclusive otherwise")

    def summary(self, fmt: str = "{:+.4f}") -> str:
        """One line: verdict, effect, interval, units, and what an inconclusive one would need."""
        lo, hi = self.interval
        unit = self.unit.removesuffix("s") if self.n_units == 1 else self.unit
        text = (f"{self.verdict}: effect {fmt.format(self.effect)} "
                f"[{fmt.format(lo)}, {fmt.format(hi)}] over {self.n_units} {unit}")
        if self.verdict == INCONCLUSIVE:
            text += (f"; roughly {self.n_needed} {self.unit} at this spread would decide"
                     if self.n_needed else "; more units at this spread would not decide")
        if self.design:
            text += f" ({self.design})"
        return text

    def to_dict(self) -> dict:
        d = asdict(self)
        d["interval"] = [float(self.interval[0]), float(self.interval[1])]
        return d


@dataclass(frozen=True)
class Condition:
    """One condition of the paper's setup that a claim relies on, checked with numbers.

    Args:
        name: what is checked, e.g. ``"classifier accuracy"``.
        met: whether this run meets it.
        observed: what this run has, in words with the numbers (``"VGG-16 29 %"``).
        paper: what the paper's setup has (``"fine-tuned ~75 %"``).
    """

    name: str
    met: bool
    observed: str
    paper: str = ""

    def __post_init__(self):
        object.__setattr__(self, "met", bool(self.met))

    def words(self) -> str:
        paper = f" vs the paper's {self.paper}" if self.paper else ""
        return f"{self.name}: {self.observed}{paper}{'' if self.met else ' (not met)'}"


def bootstrap(values: Sequence[float] | np.ndarray, stat: Callable[[np.ndarray], float] = np.mean, *,
              n_boot: int = 4000, seed: int = 0) -> np.ndarray:
    """``n_boot`` replicates of ``stat`` over units resampled with replacement.

    ``values`` has one row per unit (1-D, or 2-D for paired columns such as (x, y)).
    """
    arr = np.asarray(values, dtype=float)
    n = arr.shape[0]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    return np.array([stat(arr[i]) for i in idx], dtype=float)


def _decide(effect: float, replicates: np.ndarray, n: int, *, threshold: float, side: str, unit: str,
            confidence: float, noise_sd: float, seed: int, design: str = "") -> Verdict:
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}")
    if noise_sd < 0 or not math.isfinite(noise_sd):
        raise ValueError(f"noise_sd must be finite and >= 0, got {noise_sd}")
    reps = replicates[np.isfinite(replicates)]
    if not math.isfinite(effect) or reps.size < 0.9 * replicates.size:
        # e.g. a correlation of a constant: nothing can be decided from these units
        return Verdict(INCONCLUSIVE, float(effect), (float("nan"), float("nan")), n, unit, float(threshold),
                       side, confidence, None, design or "the effect is undefined on these units")
    if noise_sd > 0:
        reps = reps + np.random.default_rng(seed + 1).normal(0.0, noise_sd, size=reps.shape)
    alpha = 1 - confidence
    lo, hi = (float(v) for v in np.quantile(reps, [alpha / 2, 1 - alpha / 2]))
    if side == "within":
        m = abs(threshold)
        verdict = HELD if (-m < lo and hi < m) else NOT_HELD if (lo >= m or hi <= -m) else INCONCLUSIVE
        distance = m - abs(effect)  # how far the effect is from the nearest margin
    else:
        above, below = lo > threshold, hi < threshold
        if side == "greater":
            verdict = HELD if above else NOT_HELD if below else INCONCLUSIVE
        else:
            verdict = HELD if below else NOT_HELD if above else INCONCLUSIVE
        distance = effect - threshold
    if n < MIN_UNITS and verdict != INCONCLUSIVE:
        verdict = INCONCLUSIVE
        design = "; ".join(x for x in (design, f"fewer than {MIN_UNITS} {unit}: a bootstrap interval over so few "
                                                 "units is not a decision") if x)
    n_needed = None
    if verdict == INCONCLUSIVE and distance != 0:
        half = (hi - lo) / 2
        n_needed = int(math.ceil(n * (half / abs(distance)) ** 2))
        n_needed = max(n_needed, n + 1, MIN_UNITS)
    return Verdict(verdict, float(effect), (lo, hi), int(n), unit, float(threshold), side, confidence,
                   n_needed, design)


def _finite_units(values, unit: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ValueError(f"need at least one value per {unit}, got none")
    keep = np.all(np.isfinite(arr.reshape(arr.shape[0], -1)), axis=1)
    return arr[keep]


def decide(values: Sequence[float] | np.ndarray, *, threshold: float = 0.0, side: str = "greater",
           unit: str = "images", stat: Callable[[np.ndarray], float] = np.mean, confidence: float = 0.95,
           noise_sd: float = 0.0, n_boot: int = 4000, seed: int = 0, design: str = "",
           if_none: str | None = None, min_units: int = 1) -> Verdict:
    """Decide a claim from one value per unit (a paired design passes per-unit differences).

    Args:
        values: ``[n]`` per-unit values (non-finite ones are dropped and not counted).
        threshold: the smallest effect the claim needs, fixed before the run (``side="within"``:
            the equivalence margin).
        side: ``"greater"`` if the paper predicts ``stat(values) > threshold``, ``"less"``, or ``"within"``.
        unit: what a unit is, in words, for the report.
        stat: the effect, computed on the units (default the mean).
        confidence: coverage of the percentile interval.
        noise_sd: estimator noise (sd of the effect) not already present in the per-unit values.
        n_boot, seed: bootstrap replicates and their seed (the verdict is deterministic).
        design: a note on what this design can decide, shown beside the verdict.
        if_none: when fewer than ``min_units`` values are finite (by default: none, e.g. every
            map missed the constraint), return an inconclusive verdict giving this reason
            instead of raising.
        min_units: the fewest finite values the rule decides on (with ``if_none``).

    Returns:
        :class:`Verdict`. With a single unit the interval is the point (plus ``noise_sd``): such a
        verdict is flagged in ``design``.
    """
    n_finite = int(np.isfinite(np.asarray(values, dtype=float)).sum())
    if if_none is not None and n_finite < max(1, min_units):
        return undecidable(if_none, unit=unit, n_units=n_finite, threshold=threshold, side=side)
    arr = _finite_units(values, unit)
    if arr.shape[0] == 0:
        raise ValueError(f"every value per {unit} is non-finite: nothing to decide")
    if arr.shape[0] == 1 and not design:
        design = f"one {unit.rstrip('s')} only: no spread over units to resample"
    effect = float(stat(arr))
    reps = bootstrap(arr, stat, n_boot=n_boot, seed=seed)
    return _decide(effect, reps, arr.shape[0], threshold=threshold, side=side, unit=unit,
                   confidence=confidence, noise_sd=noise_sd, seed=seed, design=design)


def decide_difference(a: Sequence[float], b: Sequence[float], *, threshold: float = 0.0, side: str = "greater",
                      unit: str = "images", confidence: float = 0.95, noise_sd: float = 0.0, n_boot: int = 4000,
                      seed: int = 0, design: str = "") -> Verdict:
    """Decide ``mean(a) - mean(b)`` for two independent groups (each resampled on its own).

    For paired units (the same images in two networks), pass ``a - b`` to :func:`decide` instead.
    ``n_units`` is ``len(a) + len(b)``; ``n_needed`` is in the same total.
    """
    xa, xb = _finite_units(a, unit), _finite_units(b, unit)
    if xa.shape[0] == 0 or xb.shape[0] == 0:
        raise ValueError("both groups need at least one finite value")
    effect = float(xa.mean() - xb.mean())
    reps = (bootstrap(xa, np.mean, n_boot=n_boot, seed=seed)
            - bootstrap(xb, np.mean, n_boot=n_boot, seed=seed + 7))
    return _decide(effect, reps, xa.shape[0] + xb.shape[0], threshold=threshold, side=side, unit=unit,
                   confidence=confidence, noise_sd=noise_sd, seed=seed, design=design)


def _rank(v: np.ndarray) -> np.ndarray:
    order = v.argsort(kind="stable")
    ranks = np.empty(len(v), float)
    ranks[order] = np.arange(len(v), dtype=float)
    # average ranks over ties
    for value in np.unique(v):
        tie = v == value
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def _corr(xy: np.ndarray, method: str) -> float:
    x, y = xy[:, 0], xy[:, 1]
    if method == "spearman":
        x, y = _rank(x), _rank(y)
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def correlation(x: Sequence[float], y: Sequence[float], method: str = "spearman", *,
                drop_nonfinite: bool = False) -> float:
    """Spearman (ranks, ties averaged) or Pearson correlation of two equal-length sequences.

    NaN when there are fewer than 3 pairs, a non-finite value (unless ``drop_nonfinite``, which
    leaves out the pairs that have one), or a constant column: a number that cannot be computed
    is not reported as 0.
    """
    if method not in ("spearman", "pearson"):
        raise ValueError(f"method must be 'spearman' or 'pearson', got {method!r}")
    xy = np.column_stack([np.asarray(x, float).ravel(), np.asarray(y, float).ravel()])
    if drop_nonfinite:
        xy = xy[np.isfinite(xy).all(axis=1)]
    if xy.shape[0] < 3 or not np.isfinite(xy).all():
        return float("nan")
    return _corr(xy, method)


def decide_correlation(x: Sequence[float], y: Sequence[float], *, threshold: float = 0.0, side: str = "greater",
                       method: str = "spearman", unit: str = "networks", confidence: float = 0.95,
                       n_boot: int = 4000, seed: int = 0) -> Verdict:
    """Decide a correlation between ``x`` and ``y`` over units, resampling the (x, y) pairs.

    Replicates that resample a constant column (undefined correlation) are dropped; when more
    than a tenth are, the verdict is inconclusive. With few units a correlation design cannot
    decide (n units give n! orderings: 4 networks cannot reach 95 %): ``design`` says so and the
    verdict is inconclusive whatever the bootstrap interval, with ``n_needed`` the smallest number
    of units that could decide. From 5 units on, the bootstrap interval decides.
    """
    if method not in ("spearman", "pearson"):
        raise ValueError(f"method must be 'spearman' or 'pearson', got {method!r}")
    xy = _finite_units(np.column_stack([np.asarray(x, float), np.asarray(y, float)]), unit)
    n = xy.shape[0]
    if n < 3:
        raise ValueError(f"a correlation needs at least 3 {unit}, got {n}")
    design = ""
    if math.factorial(n) * (1 - confidence) / 2 < 1:
        design = (f"a correlation over {n} {unit} cannot reach {confidence:.0%} confidence: even a perfect "
                  f"ordering has one-sided permutation p = 1/{n}! = {1 / math.factorial(n):.3f}")
    effect = _corr(xy, method)
    reps = bootstrap(xy, lambda v: _corr(v, method), n_boot=n_boot, seed=seed)
    verdict = _decide(effect, reps, n, threshold=threshold, side=side, unit=unit, confidence=confidence,
                      noise_sd=0.0, seed=seed, design=design)
    if design:
        # n points have only n! orderings: a resampling interval over them (often [1, 1] for a
        # perfect order of 4) is not a confidence statement, so the design cannot decide
        smallest = next(k for k in range(n + 1, 20) if math.factorial(k) * (1 - confidence) / 2 >= 1)
        return Verdict(INCONCLUSIVE, verdict.effect, verdict.interval, n, unit, verdict.threshold, side,
                       confidence, smallest, design + "; its bootstrap interval over so few units is not a decision")
    return verdict


def combine(parts: Sequence[Verdict] | Mapping[str, Verdict]) -> Verdict:
    """One verdict for a claim made of several parts (every beta, every teacher, fall and rise ...).

    Conservative: not held if any part is not held, held only if every part is held, otherwise
    inconclusive. The result carries the part that decides it -- the first part not held; for
    held, the part whose interval clears its threshold by the least; for inconclusive, the part
    that needs the most units (``n_needed`` is then the largest of the open parts') -- and
    ``design`` names the parts and which one is shown. ``parts`` may be a list or ``{name: verdict}``.
    """
    named = dict(parts) if isinstance(parts, Mapping) else {f"part {i + 1}": v for i, v in enumerate(parts)}
    if not named:
        raise ValueError("combine needs at least one verdict")
    names, vs = list(named), list(named.values())
    if len(vs) == 1:
        return replace(vs[0], part=names[0])

    def slack(v: Verdict) -> float:  # how far the interval's near end clears the threshold
        lo, hi = v.interval
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return -math.inf
        if v.side == "within":
            return v.threshold - max(abs(lo), abs(hi))
        return lo - v.threshold if v.side == "greater" else v.threshold - hi

    open_parts = [i for i, v in enumerate(vs) if v.verdict == INCONCLUSIVE]
    n_needed = None
    if any(v.verdict == NOT_HELD for v in vs):
        k, verdict = next(i for i, v in enumerate(vs) if v.verdict == NOT_HELD), NOT_HELD
    elif not open_parts:
        k, verdict = min(range(len(vs)), key=lambda i: slack(vs[i])), HELD
    else:
        k, verdict = max(open_parts, key=lambda i: vs[i].n_needed or math.inf), INCONCLUSIVE
        if all(vs[i].n_needed for i in open_parts):
            n_needed = max(vs[i].n_needed for i in open_parts)
    counts = ", ".join(f"{n} {kind}" for kind in VERDICTS if (n := sum(v.verdict == kind for v in vs)))
    design = (f"all {len(vs)} parts must hold ({'; '.join(names)}: {counts}); shown: {names[k]}"
              + (f"; {vs[k].design}" if vs[k].design else ""))
    if len({v.rule for v in vs}) == 1:
        rules = f"held only if every part ({', '.join(names)}) is held, each {vs[0].rule}"
    else:
        rules = "held only if every part is held -- " + "; ".join(f"{name}: {v.rule}" for name, v in named.items())
    return replace(vs[k], verdict=verdict, n_needed=n_needed, design=design, rule_text=rules, part=names[k])


def parts_text(parts: Mapping[str, Verdict]) -> str:
    """``Part <name>: <summary>.`` for each named part, for a claim's ``detail``."""
    return " ".join(f"Part {name}: {v.summary()}." for name, v in parts.items())


def undecidable(why: str, *, unit: str = "units", n_units: int = 0, effect: float = float("nan"),
                threshold: float = 0.0, side: str = "greater") -> Verdict:
    """An inconclusive verdict for a run that cannot measure the effect at all (say why)."""
    return Verdict(INCONCLUSIVE, float(effect), (float("nan"), float("nan")), int(n_units), unit,
                   float(threshold), side, 0.95, None, why)


# --- conditions of the paper's setup, checked with numbers ------------------------------------

def accuracy_condition(network: str, accuracy: float, paper: float, *, paper_words: str = "",
                       fraction: float = 0.8) -> Condition:
    """A classifier near the paper's accuracy: met when ``accuracy >= fraction * paper`` (both in [0, 1])."""
    return Condition(f"{network} accuracy", accuracy >= fraction * paper, f"{accuracy:.1%}",
                     paper_words or f"~{paper:.0%}")


def reconstruction_condition(name: str, mses: Mapping[str, float], variance: float, *,
                             max_share: float = 0.5) -> Condition:
    """Decoders (or auto-encoders) that reconstruct: every test MSE at most ``max_share`` of the images'
    pixel variance (a decoder that outputs the mean image scores 100 %)."""
    worst = max(mses.values())
    return Condition(f"{name} decoders reconstruct", worst <= max_share * variance,
                     "test MSE " + ", ".join(f"{k} {m:.4f}" for k, m in mses.items())
                     + f" vs pixel variance {variance:.4f} (worst {worst / variance:.0%} of it)",
                     f"decoders that reconstruct the image (here: MSE at most {max_share:.0%} of the pixel variance)")


def constraint_condition(ratios, tol: float, *, min_share: float = 0.9) -> Condition:
    """Maps that met the distortion constraint (``|r - 1| <= tol``); met when at least ``min_share`` did.

    The maps off the constraint are left out of the verdict (see :func:`on_constraint`).
    """
    r = np.asarray(ratios, dtype=float).ravel()
    ok = int(on_constraint(r, tol).sum())
    return Condition("maps on the constraint", ok >= min_share * r.size,
                     f"{ok} of {r.size} within {tol:.0%} of r = 1 ({r.size - ok} left out)",
                     "every map (the paper's fairness argument)")


def ratio_error(ratios):
    """The largest ``|r - 1|`` of maps' achieved ratios ``r`` (NaN skipped; NaN for none), a scalar
    of the ratios' dtype: how far the worst map is from the constraint."""
    import pandas as pd

    return (pd.Series(ratios) - 1).abs().max()


def on_constraint(ratios, tol: float) -> np.ndarray:
    """Boolean mask of the maps whose achieved ratio is within ``tol`` of 1 (finite)."""
    r = np.asarray(ratios, dtype=float)
    return np.isfinite(r) & (np.abs(r - 1) <= tol)


def permutation_p(a: Sequence[float], b: Sequence[float], max_units: int = 8) -> float:
    """One-sided exact permutation p of the Spearman correlation of ``a`` and ``b``: the share of
    the orderings of ``b`` whose rho is at least the observed one (pairs with a non-finite value
    dropped). NaN when rho is undefined or there are more than ``max_units`` pairs (``n!`` orderings)."""
    from itertools import permutations

    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    r = correlation(a, b, "spearman", drop_nonfinite=True)
    if not math.isfinite(r) or len(a) > max_units:
        return float("nan")
    rs = [correlation(a, np.array(perm), "spearman", drop_nonfinite=True) for perm in permutations(b)]
    return float(np.mean([v >= r - 1e-12 for v in rs]))

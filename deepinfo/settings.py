"""The estimators' settings: one frozen object for ``cid``, ``ru``, the profiles and the notebooks.

Every choice that changes the numbers of a map is a field here, with its default and its check;
``deepinfo.cid(model, x, layers, settings, **overrides)`` takes it (or its fields by name), and a
profile's ``[estimator]`` section is a :class:`Settings` with the profile's extras
(:class:`deepinfo.toolkit.profile.Estimator`). ``batch_size`` is here too, so that a profile can
size the work to its GPU, although it never changes a map.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Literal

#: The paper's feature-distortion budget (SPEC: pixel-variance units).
DEFAULT_BETA = 1.5e-4
METHODS = ("optimize", "linear")


@dataclass(frozen=True)
class Settings:
    """How sigma is found and checked (SPEC section 2).

    Args:
        beta: the feature-distortion budget ``E||f'-f||^2 = beta * delta_f^2`` (pixel variance units).
        grid: ``None`` (one sigma per pixel), ``g`` (``g x g`` cells) or ``(Gh, Gw)``.
        method: ``"optimize"`` (the paper's Lagrangian, Eq. 3-4) or ``"linear"`` (the closed form
            of the linearised layer). RU always optimises.
        n_probes: vector-Jacobian probes per image for the cell energies ``W_g`` and ``delta_f^2``
            (exact when the feature has at most this many dimensions).
        steps, draws, lr: descent steps, noise draws per step and Adam step size on ``log sigma``
            (``optimize`` only).
        eval_draws, max_eval_draws, rel_se: noise draws per round, and at most in all (default
            512 for ``optimize``, 128 for ``linear``), to measure the achieved ratio ``r``; rounds
            continue until its relative standard error is below ``rel_se`` (default 1 % for
            ``optimize``, 2 % for ``linear``).
        sigma_max: cap on sigma, pixel units; cells at the cap are counted in ``n_capped``.
        tol: accepted ``|r - 1|``; the projection brings every map within it.
        init: the descent starts from the closed form (``"linear"``) or from ``sigma = sqrt(beta)``
            everywhere (``"constant"``).
        calibrate: ``linear`` only: keep the closed form's shape but scale it so that the real
            (non-linear) network meets the constraint. ``False`` gives the pure closed form, whose
            ratio then shows how non-linear the layer is.
        seed: noise and probes come from generators seeded by ``(seed, image index, layer)``, so
            an image's map depends neither on the other images nor on the batch size.
        batch_size: the largest number of perturbed images in one forward pass; peak memory
            scales with it. ``None``: 32 on a CPU (batches that stay in cache run faster); on a
            GPU, what fits in half its free memory (measured on one pass, at most 1024). It
            never changes a map.
    """

    beta: float = DEFAULT_BETA
    grid: int | tuple[int, int] | None = None
    method: Literal["optimize", "linear"] = "optimize"
    n_probes: int = 32
    steps: int = 20
    draws: int = 8
    lr: float = 0.02
    eval_draws: int = 8
    max_eval_draws: int | None = None
    rel_se: float | None = None
    sigma_max: float = 10.0
    tol: float = 0.05
    init: Literal["linear", "constant"] = "linear"
    calibrate: bool = True
    seed: int = 0
    batch_size: int | None = None

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        number = (int, float)
        need(isinstance(self.beta, number) and math.isfinite(self.beta) and self.beta > 0,
             f"beta must be a positive number (the paper uses {DEFAULT_BETA}), got {self.beta!r}")
        need(self.method in METHODS, f"method must be one of {METHODS}, got {self.method!r}")
        need(self.init in ("linear", "constant"), f"init must be 'linear' or 'constant', got {self.init!r}")
        need(isinstance(self.sigma_max, number) and self.sigma_max > 0,
             f"sigma_max must be positive, got {self.sigma_max!r}")
        need(isinstance(self.tol, number) and 0 < self.tol < 1, f"tol must be in (0, 1), got {self.tol!r}")
        need(isinstance(self.lr, number) and self.lr > 0, f"lr must be positive, got {self.lr!r}")
        for key, least in (("n_probes", 1), ("draws", 1), ("eval_draws", 1), ("steps", 0)):
            v = getattr(self, key)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= least,
                 f"{key} must be an integer >= {least}, got {v!r}")
        need(self.max_eval_draws is None or self.max_eval_draws >= self.eval_draws,
             f"max_eval_draws must be >= eval_draws ({self.eval_draws}) or None, got {self.max_eval_draws!r}")
        need(self.rel_se is None or 0 < self.rel_se < 1, f"rel_se must be in (0, 1) or None, got {self.rel_se!r}")
        need(isinstance(self.seed, int), f"seed must be an integer, got {self.seed!r}")
        need(self.batch_size is None or (isinstance(self.batch_size, int) and self.batch_size >= 1),
             f"batch_size must be a positive integer or None, got {self.batch_size!r}")

    @property
    def precision(self) -> float:
        """``rel_se``, or its default: the optimised maps get the tighter check, the fast method a cheaper one."""
        if self.rel_se is not None:
            return self.rel_se
        return 0.01 if self.method == "optimize" else 0.02

    @property
    def draw_cap(self) -> int:
        """``max_eval_draws``, or its default for the method."""
        if self.max_eval_draws is not None:
            return self.max_eval_draws
        return 512 if self.method == "optimize" else 128

    @property
    def rescales(self) -> bool:
        """Whether the maps are projected onto the constraint (always, except the pure closed form)."""
        return self.method == "optimize" or self.calibrate

    @classmethod
    def of(cls, settings: Settings | None = None, **overrides) -> Settings:
        """``settings`` (or the defaults) with ``overrides`` replaced, as a plain :class:`Settings`.

        ``settings`` may be a subclass carrying more fields (a profile's ``[estimator]`` section):
        only the estimator's fields are kept. An unknown override is a ``TypeError`` naming the
        nearest field.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        for key in overrides:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                raise TypeError(f"unknown estimator setting {key!r}"
                                + (f" (did you mean {close[0]!r}?)" if close else "")
                                + f"; the settings are {', '.join(names)}")
        if settings is None:
            return cls(**overrides)
        if not isinstance(settings, Settings):
            raise TypeError(f"settings must be a deepinfo.Settings, got {type(settings).__name__} "
                            f"({settings!r}); pass single settings by name, e.g. beta=1e-3")
        values = {n: getattr(settings, n) for n in names}
        values.update(overrides)
        return cls(**values)

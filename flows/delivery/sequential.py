"""An always-valid confidence sequence on the difference of two means: canary minus production.

**Why a confidence sequence.** The canary flow looks at the evidence every few minutes and stops at the
first look that is convincing. A fixed-sample test (a z-test, a t-test, a 95% interval) read at every look
is wrong far more often than its level says: a 95% interval read at each of 200 looks promotes one of
two equal models 20% of the time, against 2.4% for this sequence (``bench/bench_canary.py``, share 0.1).
A confidence sequence is a sequence of intervals that holds *simultaneously* at every sample size,
``P(exists n: delta outside CS_n) <= alpha``, so it may be read after every new label and the flow may stop
on any look (Howard, Ramdas, McAuliffe & Sekhon, "Time-uniform,
nonparametric, nonasymptotic confidence sequences", Annals of Statistics 2021).

**Which one.** The asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas
("Time-uniform central limit theory and asymptotic confidence sequences", Annals of Statistics 2024;
arXiv:2103.06476) with the Gaussian-mixture (Robbins) boundary: the time-uniform analogue of the CLT
interval. It needs no known variance and no bounds on the scores (any per-row score with a finite variance:
0/1 correctness, a Brier score, an unbounded squared error), and it is stated in the metric's own units, so
a person reads "accuracy difference +0.031, between +0.004 and +0.058". Its guarantee is asymptotic, like
the CLT's: its miscoverage tends to at most alpha as the looks start later; ``min_labels`` per side (see
:mod:`flows.delivery.verdict`) keeps the first look away from tiny samples, and the bench and the tests
measure the coverage reached at the defaults. The mSPRT of Johari, Koomen, Pekelis & Walsh ("Peeking at A/B
tests", KDD 2017) is the same normal-mixture idea in always-valid p-value form.

**The form used.** For one stream of ``t`` observations with variance ``sigma^2`` the paper's two-sided
``(1 - alpha)`` sequence is ``mean_t +- sigma_t * M(t)`` with

    M(t) = sqrt( 2 (t rho^2 + 1) / (t^2 rho^2) * ln( sqrt(t rho^2 + 1) / alpha ) ),

which is where the normal-mixture martingale ``exp(rho^2 S_t^2 / (2 (t rho^2 + 1))) / sqrt(t rho^2 + 1)``
of the standardized sum ``S_t`` reaches ``1 / alpha`` (Ville's inequality): the mixture over a symmetric
``N(0, rho^2)`` covers both tails at once, so alpha is the total, not alpha/2 per side. ``rho`` is fixed
before any data; ``rho^2 = (-2 ln alpha + ln(-2 ln alpha + 1)) / t*`` is the paper's closed-form
approximation of the value that makes the sequence tightest at ``t = t*`` (``planned_labels`` here; the
exact minimiser uses Lambert's W_{-1} and gives a width within 0.01% of it at ``t*``). At ``t*`` and
alpha = 0.05 the half-width is 3.04 ``sigma / sqrt(t)`` against the fixed-sample 1.96: the price of
looking as often as one likes.

For two independent arms the stream is the ``n = n_c + n_p`` labelled rows of both, each the canary's with
probability ``pi`` (its share of labelled rows). The difference of the arms' means equals ``delta`` plus the
mean of the pseudo-outcomes ``A_i (Y_i - mu_c) / pi_n - (1 - A_i) (Y_i - mu_p) / (1 - pi_n)`` with
``pi_n = n_c / n``, whose variance ``var_c / pi + var_p / (1 - pi)`` is estimated by ``n W`` with
``W = var_c / n_c + var_p / n_p`` (the Welch variance of the difference). So the radius is

    radius = sqrt(n W) * M(n),

the formula with ``t = n`` and ``sigma_t^2 = n W``: at a fixed ``n`` it is the Welch interval with ``M(n)`` in
place of 1.96. This is the paper's randomized-experiment (ATE) construction with the arms' means in place
of fitted regressions. The rows are taken as independent draws per arm, in a random split that stays the
same during the canary: a canary share changed midway, or traffic whose mix of easy and hard rows moves
with the share, is outside the guarantee.

**Small samples.** Fewer than two rows on a side give an unbounded bound (no variance to estimate). Each
arm's variance also counts one pseudo-row at the variance of all rows of both arms, so identical rows cannot
claim certainty: two correct rows against two wrong ones give a radius of 8, not 0. The term vanishes
like 1/n and leaves the asymptotic guarantee as it is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ArrayLike = Any
"""A float or a numpy array: the functions below work element-wise, so a simulation passes whole arrays."""


@dataclass(frozen=True)
class Arm:
    """One side's labelled rows, summarised: count, mean and sample variance (ddof=1) of the scores."""

    n: int
    mean: float
    var: float

    @classmethod
    def of(cls, scores: np.ndarray | list[float]) -> Arm:
        values = np.asarray(scores, dtype=np.float64).ravel()
        if not np.all(np.isfinite(values)):
            raise ValueError("scores must be finite numbers")
        n = int(values.size)
        mean = float(values.mean()) if n else 0.0
        return cls(n=n, mean=mean, var=float(values.var(ddof=1)) if n > 1 else 0.0)


@dataclass(frozen=True)
class Bound:
    """The confidence sequence at this look: ``estimate`` = mean(canary) - mean(production) (None without
    a row on each side), ``lower``/``upper`` its ``1 - alpha`` bounds (infinite with fewer than two rows on
    a side), ``radius`` their half-width."""

    estimate: float | None
    lower: float
    upper: float
    radius: float
    alpha: float
    n_canary: int
    n_production: int
    planned_labels: int

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.radius)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict: infinite bounds are None."""
        return {key: None if isinstance(value, float) and not math.isfinite(value) else value
                for key, value in asdict(self).items()}


def mixture_rho2(alpha: float, planned_labels: float) -> float:
    """The mixture's ``rho^2`` that makes the sequence tightest near ``planned_labels`` observations."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if planned_labels < 1:
        raise ValueError(f"planned_labels must be at least 1, got {planned_labels}")
    log_term = -2.0 * math.log(alpha)
    return (log_term + math.log(log_term + 1.0)) / planned_labels


def mixture_margin(n: ArrayLike, *, alpha: float, planned_labels: float) -> ArrayLike:
    """``M(n)``: the half-width of the sequence for the mean of ``n`` unit-variance observations."""
    rho2 = mixture_rho2(alpha, planned_labels)
    t = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        margin = np.sqrt(2.0 * (t * rho2 + 1.0) / (t * t * rho2) * np.log(np.sqrt(t * rho2 + 1.0) / alpha))
    return np.where(t >= 1, margin, np.inf)


def difference_bounds(n_c: ArrayLike, mean_c: ArrayLike, var_c: ArrayLike, n_p: ArrayLike,
                      mean_p: ArrayLike, var_p: ArrayLike, *, alpha: float, planned_labels: float
                      ) -> tuple[ArrayLike, ArrayLike]:
    """``(estimate, radius)`` of the sequence for ``mean_c - mean_p``, element-wise over arrays of arms.

    The radius is infinite where a side has fewer than two rows; variances are the arms' ddof=1 ones, with
    the one-pseudo-row floor of the module's docstring applied here.
    """
    n_c, n_p = np.asarray(n_c, dtype=np.float64), np.asarray(n_p, dtype=np.float64)
    mean_c, mean_p = np.asarray(mean_c, dtype=np.float64), np.asarray(mean_p, dtype=np.float64)
    var_c, var_p = np.asarray(var_c, dtype=np.float64), np.asarray(var_p, dtype=np.float64)
    n = n_c + n_p
    estimate = mean_c - mean_p
    ok = (n_c >= 2) & (n_p >= 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        ss_c, ss_p = var_c * (n_c - 1), var_p * (n_p - 1)
        pooled = (ss_c + ss_p + n_c * n_p / n * estimate**2) / (n - 1)
        w = (ss_c + pooled) / (n_c * n_c) + (ss_p + pooled) / (n_p * n_p)
        radius = np.sqrt(n * w) * mixture_margin(n, alpha=alpha, planned_labels=planned_labels)
    return estimate, np.where(ok, radius, np.inf)


def confidence_sequence(canary: Arm, production: Arm, *, alpha: float, planned_labels: int) -> Bound:
    """The ``1 - alpha`` confidence sequence on mean(canary) - mean(production) at this look."""
    estimate, radius = difference_bounds(canary.n, canary.mean, canary.var, production.n, production.mean,
                                         production.var, alpha=alpha, planned_labels=planned_labels)
    radius = float(radius)
    both = canary.n > 0 and production.n > 0
    center = float(estimate) if both else None
    lower, upper = (center - radius, center + radius) if center is not None and math.isfinite(radius) \
        else (-math.inf, math.inf)
    return Bound(estimate=center, lower=lower, upper=upper, radius=radius, alpha=alpha, n_canary=canary.n,
                 n_production=production.n, planned_labels=planned_labels)

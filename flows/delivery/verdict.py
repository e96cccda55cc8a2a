"""The canary's verdict from the guardrails and the confidence sequence: promote, roll back, or keep watching.

The order, at every look:

1. **A guardrail breached** (:mod:`flows.delivery.guardrails`): roll back at once, labels or not. Errors and
   latency hurt users now; they need no statistics beyond ``min_requests`` on each side.
2. **Labels**, once each side has ``min_labels`` labelled rows: with ``delta`` the difference
   mean(canary) - mean(production) in the metric's units and ``m`` the margin, *promote* when the
   sequence's lower bound is above ``-m`` (the canary is better, or no worse than production by more than
   ``m``); *roll back* when its upper bound is below ``-m`` (worse by more than ``m``).
3. Otherwise **continue**; past ``max_duration`` since the canary started, ``on_timeout`` decides instead.

**What alpha guarantees.** The confidence sequence misses ``delta`` at *any* look with probability at most
alpha in total (both tails together; :mod:`flows.delivery.sequential`). A wrong promotion needs
``lower > -m >= delta``, a wrong roll-back for being worse needs ``upper < -m <= delta``; each is a miss of
``delta``, so however many looks the flow takes and whenever it stops:

* ``P(ever promote | delta <= -m) <= alpha``: a canary worse than the margin allows is promoted at most
  alpha of the time;
* ``P(ever roll back for being worse | delta >= -m) <= alpha``.

With ``m = 0`` this is a test of "better" against "worse"; with ``m > 0`` a non-inferiority test: a canary
that is cheaper or faster but no better is promoted once it is shown within ``m`` of production. The
guarantee is asymptotic (see :mod:`flows.delivery.sequential`); ``min_labels`` is the floor below which the
variance is not trusted. Guardrail roll-backs and timeouts are policies, not statistical claims.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np

from flows.delivery.guardrails import GuardrailResult
from flows.delivery.policy import CanaryPolicy
from flows.delivery.sequential import ArrayLike, Bound

PROMOTE: Literal["promote"] = "promote"
ROLLBACK: Literal["rollback"] = "rollback"
CONTINUE: Literal["continue"] = "continue"
Action = Literal["promote", "rollback", "continue"]

CODES = {0: CONTINUE, 1: PROMOTE, -1: ROLLBACK}
"""The codes of :func:`label_decision`."""


@dataclass(frozen=True)
class Verdict:
    """The action, one readable sentence with the numbers, and the evidence behind it (JSON-safe)."""

    action: Action
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.action != CONTINUE

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def label_decision(lower: ArrayLike, upper: ArrayLike, n_canary: ArrayLike, n_production: ArrayLike, *,
                   margin: float, min_labels: int) -> ArrayLike:
    """The label rule alone, element-wise: 1 promote, -1 roll back (worse), 0 not yet. One place for the rule
    that :func:`decide` applies to one look and a simulation applies to arrays of looks."""
    enough = (np.asarray(n_canary) >= min_labels) & (np.asarray(n_production) >= min_labels)
    promote = enough & (np.asarray(lower) > -margin)
    worse = enough & (np.asarray(upper) < -margin)
    return np.where(promote, 1, np.where(worse, -1, 0))


def _signed(value: float) -> str:
    return f"{value:+.3f}" if abs(value) >= 0.0005 or value == 0 else f"{value:+.2g}"


def _difference(bound: Bound, metric: str) -> str:
    """``accuracy difference +0.031 (95% confidence sequence +0.004 to +0.058) on 812 canary and 7,204
    production labelled rows``."""
    level = f"{100 * (1 - bound.alpha):g}%"
    rows = f"on {bound.n_canary:,} canary and {bound.n_production:,} production labelled rows"
    if bound.estimate is None:
        return f"no {metric} difference yet {rows}"
    if not bound.bounded:
        return f"{metric} difference {_signed(bound.estimate)} (not yet bounded) {rows}"
    return (f"{metric} difference {_signed(bound.estimate)} ({level} confidence sequence "
            f"{_signed(bound.lower)} to {_signed(bound.upper)}) {rows}")


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def decide(bound: Bound, guardrails: GuardrailResult, policy: CanaryPolicy, *, started_at: datetime,
           now: datetime, metric: str | None = None) -> Verdict:
    """The verdict at this look. ``metric`` names the score in the reason (default the policy's, else
    "score"); ``started_at`` is when the canary began taking traffic."""
    name = metric or policy.metric or "score"
    elapsed = (now - started_at).total_seconds()
    code = int(label_decision(bound.lower, bound.upper, bound.n_canary, bound.n_production,
                              margin=policy.margin, min_labels=policy.min_labels))
    evidence: dict[str, Any] = {
        "metric": name, "margin": policy.margin, "alpha": policy.alpha, "min_labels": policy.min_labels,
        "bound": bound.to_json(), "guardrails_breached": list(guardrails.breached),
        "guardrails_judged": guardrails.enough, "elapsed_s": round(elapsed, 3),
        "max_duration_s": policy.timeout.total_seconds(), "label_rule": CODES[code],
    }
    difference = _difference(bound, name)
    if guardrails.breached:
        return Verdict(ROLLBACK, "canary breached a guardrail: " + "; ".join(guardrails.breached), evidence)
    if code == 1:
        if bound.lower > 0:
            return Verdict(PROMOTE, f"canary better: {difference}", evidence)
        return Verdict(PROMOTE, f"canary no worse than production within the margin {policy.margin:g}: "
                                f"{difference}", evidence)
    if code == -1:
        within = f" by more than the margin {policy.margin:g}" if policy.margin else ""
        return Verdict(ROLLBACK, f"canary worse{within}: {difference}", evidence)
    if bound.n_canary < policy.min_labels or bound.n_production < policy.min_labels:
        waiting = (f"waiting for labels: {bound.n_canary:,} canary and {bound.n_production:,} production "
                   f"labelled rows, {policy.min_labels:,} each needed")
    else:
        threshold = _signed(-policy.margin) if policy.margin else "0"
        waiting = (f"not enough evidence yet: {difference}; a verdict needs the whole sequence above or "
                   f"below {threshold}")
    if elapsed >= policy.timeout.total_seconds() and policy.on_timeout == ROLLBACK:
        evidence["timed_out"] = True
        return Verdict(ROLLBACK, f"no verdict after {_age(elapsed)} (max_duration {policy.max_duration}), "
                                 f"rolled back as on_timeout says; {waiting}", evidence)
    return Verdict(CONTINUE, waiting, evidence)

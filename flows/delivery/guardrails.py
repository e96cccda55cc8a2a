"""Label-free guardrails: the canary's error rate and p99 latency against production's, over the same minutes.

They need no labels, so they act from the canary's first minutes, long before enough labels arrive for
:mod:`flows.delivery.sequential`. Both sides are compared only over the minutes (UTC, floor of the request
timestamp) in which **both** served requests: a minute when only one side had traffic (the canary had not
loaded yet, production alone at night) would compare different load, different batch sizes, different
times of day. Within those minutes the split between the sides is random (sticky by key), so anything a
client does wrong reaches both sides at the same rate and cancels out of the comparison.

**What counts as an error.** An answer whose outcome depends on the version that served it: a status >= 500
(the model failed or timed out, or the gateway could not load it: 503), 409 (the version refused to load:
untrusted or tampered artifact) and 422 (the version's signature refused input that reached it: a canary
with a changed signature shows here). Not errors: 400 (malformed framing), 401 (auth), 404 (unknown model or
entity), 413 (body too large) and 429 (rate limited), which are decided before or regardless of the version.

**Latency.** The p99 over every request of the side in the shared minutes, errors included (a canary that
fails fast is caught by the error-rate guardrail, one that times out by both), by numpy's default linear
interpolation. The p99 guardrail fires on a ratio (``max_latency_ratio``) and an absolute difference
(``min_latency_increase_ms``) together: a model answering in a fraction of a millisecond has a p99 that
moves by half its value from scheduling noise alone (0.3 ms against 0.2 ms was seen on an idle gateway).

A guardrail fires only with at least ``min_requests`` requests on each side in the shared minutes (the
result's ``enough``): with fewer, one slow request is the p99 and one error is a few percent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from flows.delivery.policy import CanaryPolicy

PRODUCTION = "production"
CANARY = "canary"
ERROR_STATUSES = frozenset({409, 422})
"""4xx answers that count as errors besides every status >= 500 (see the module's docstring)."""


def is_error(status: Any) -> np.ndarray:
    """Which statuses count as errors of the version that answered."""
    codes = pd.to_numeric(pd.Series(status), errors="coerce").fillna(0).astype(np.int64).to_numpy()
    return (codes >= 500) | np.isin(codes, list(ERROR_STATUSES))


@dataclass(frozen=True)
class SideStats:
    """One side's requests in the shared minutes."""

    requests: int
    errors: int
    error_rate: float | None
    p99_ms: float | None
    rows: int


@dataclass(frozen=True)
class GuardrailResult:
    """The comparison: per-side numbers, the shared minutes, what was breached (readable reasons) and
    whether there were enough requests on each side to judge at all."""

    sides: dict[str, SideStats]
    minutes: int
    ignored_requests: int
    breached: list[str] = field(default_factory=list)
    enough: bool = False

    @property
    def ok(self) -> bool:
        return not self.breached

    def to_json(self) -> dict[str, Any]:
        return {"sides": {side: asdict(stats) for side, stats in self.sides.items()}, "minutes": self.minutes,
                "ignored_requests": self.ignored_requests, "breached": list(self.breached),
                "enough": self.enough}


def _side(frame: pd.DataFrame) -> SideStats:
    n = len(frame)
    errors = int(is_error(frame["status"]).sum()) if n else 0
    latency = pd.to_numeric(frame["latency_ms"], errors="coerce").dropna().to_numpy(dtype=np.float64) if n \
        else np.empty(0)
    rows = int(pd.to_numeric(frame["rows"], errors="coerce").fillna(0).sum()) if n and "rows" in frame else 0
    return SideStats(requests=n, errors=errors, error_rate=errors / n if n else None,
                     p99_ms=float(np.percentile(latency, 99)) if latency.size else None, rows=rows)


def shared_minutes(requests: pd.DataFrame) -> pd.DataFrame:
    """The production and canary requests of the minutes in which both sides had at least one."""
    if not len(requests):
        return requests
    frame = requests[requests["role"].isin((PRODUCTION, CANARY))]
    minute = pd.to_datetime(frame["timestamp"], utc=True).dt.floor("min")
    roles_per_minute = frame.groupby(minute)["role"].nunique()
    both = roles_per_minute.index[roles_per_minute == 2]
    return frame[minute.isin(both).to_numpy()]


def check_guardrails(requests: pd.DataFrame, policy: CanaryPolicy | None = None) -> GuardrailResult:
    """Compare the canary's error rate and p99 latency with production's over the minutes both served.

    ``requests`` holds one row per request: ``timestamp`` (UTC), ``role``, ``latency_ms``, ``status`` and
    ``rows`` (``request_id``, ``model`` and ``model_version`` may be there too, and are not read). Requests
    of other roles (shadow) and of minutes only one side served are left out (``ignored_requests``).
    """
    policy = policy or CanaryPolicy()
    columns = ("timestamp", "role", "latency_ms", "status")
    if not len(requests) or any(c not in requests.columns for c in columns):
        empty = SideStats(requests=0, errors=0, error_rate=None, p99_ms=None, rows=0)
        return GuardrailResult(sides={CANARY: empty, PRODUCTION: empty}, minutes=0,
                               ignored_requests=len(requests), breached=[], enough=False)
    shared = shared_minutes(requests)
    stamps = pd.to_datetime(shared["timestamp"], utc=True) if len(shared) else None
    minutes = int(stamps.dt.floor("min").nunique()) if stamps is not None else 0
    canary, production = (_side(shared[shared["role"] == role]) for role in (CANARY, PRODUCTION))
    enough = min(canary.requests, production.requests) >= policy.min_requests
    breached: list[str] = []
    where = f"over {minutes} minute{'s' if minutes != 1 else ''} both served"
    if enough and canary.error_rate is not None and production.error_rate is not None \
            and canary.error_rate > production.error_rate + policy.max_error_rate_increase:
        breached.append(f"error rate {canary.error_rate:.1%} on the canary ({canary.errors:,} of "
                        f"{canary.requests:,} requests) against {production.error_rate:.1%} on production "
                        f"({production.errors:,} of {production.requests:,}), more than "
                        f"{policy.max_error_rate_increase * 100:g} points above, {where}")
    if enough and canary.p99_ms is not None and production.p99_ms is not None \
            and canary.p99_ms > policy.max_latency_ratio * production.p99_ms \
            and canary.p99_ms - production.p99_ms >= policy.min_latency_increase_ms:
        ratio = canary.p99_ms / production.p99_ms if production.p99_ms > 0 else float("inf")
        breached.append(f"p99 latency {canary.p99_ms:,.1f} ms on the canary against "
                        f"{production.p99_ms:,.1f} ms on production ({ratio:.1f}x, more than "
                        f"{policy.max_latency_ratio:g}x and {policy.min_latency_increase_ms:g} ms), {where}")
    return GuardrailResult(sides={CANARY: canary, PRODUCTION: production}, minutes=minutes,
                           ignored_requests=len(requests) - len(shared), breached=breached, enough=enough)

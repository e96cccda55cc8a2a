"""The canary policy: how much traffic a canary gets, what is better or worse, and when to stop waiting.

A plain pydantic model with working defaults, embedded in a model spec as its ``canary:`` section and shown
in the docs with its field descriptions. Durations are written the way people say them (``10m``, ``12h``,
``2d``) and parsed by :func:`parse_duration`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flows.delivery.scores import canonical_metric

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """``"90s"``, ``"10m"``, ``"12h"``, ``"2d"``, ``"1w"`` or a sum of them (``"1h30m"``) as a timedelta; a
    plain number is seconds. Raises :class:`ValueError` naming the text when it is none of these, or not
    longer than zero."""
    if isinstance(text, timedelta):
        value = text
    elif isinstance(text, (int, float)) and not isinstance(text, bool):
        value = timedelta(seconds=float(text))
    else:
        raw = str(text).strip().lower()
        compact = raw.replace(" ", "")
        parts = _DURATION_PART.findall(compact)
        if not parts or "".join(f"{n}{u}" for n, u in parts) != compact:
            raise ValueError(f"invalid duration {text!r}: expected e.g. '90s', '10m', '12h', '2d', '1w' or "
                             "'1h30m'")
        value = timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))
    if value <= timedelta(0):
        raise ValueError(f"a duration must be longer than zero, got {text!r}")
    return value


class CanaryPolicy(BaseModel):
    """How one model's canary is run and judged. Every field has a working default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    share: float = Field(
        default=0.1, gt=0, le=1,
        description="Share of requests the canary answers (sticky by entity key or request id) when it "
        "starts.")
    alpha: float = Field(
        default=0.05, gt=0, lt=1,
        description="Error rate of the label-based verdict, however often the flow looks: a canary worse "
        "than production by more than the margin is promoted with probability at most alpha, and one within "
        "the margin is rolled back for being worse with probability at most alpha.")
    margin: float = Field(
        default=0.0, ge=0,
        description="Non-inferiority margin in the metric's own units: promote when the canary is shown "
        "better than production minus the margin (difference > -margin), roll back when shown worse than "
        "that.")
    metric: str | None = Field(
        default=None,
        description="Per-row score compared: accuracy, brier or log_loss (classification), absolute_error or "
        "squared_error (regression); the spec's neg_* names are accepted. None: accuracy for classification, "
        "absolute_error for regression.")
    planned_labels: int = Field(
        default=2000, ge=2,
        description="Labelled rows (both sides together) at which the confidence sequence is tightest; fixed "
        "before the canary starts. About what the canary is expected to collect by its decision.")
    min_labels: int = Field(
        default=100, ge=2,
        description="Labelled rows each side needs before any label-based verdict: the bound's variance is "
        "estimated from the rows, and too few of them can look certain by chance.")
    max_duration: str = Field(
        default="2d",
        description="How long a canary may run without a verdict (e.g. '12h', '2d'); then on_timeout "
        "decides.")
    on_timeout: Literal["rollback", "continue"] = Field(
        default="rollback",
        description="What a canary past max_duration without a verdict gets: 'rollback' (production stays, "
        "the canary's traffic returns to it) or 'continue' (keep judging until a verdict).")
    min_requests: int = Field(
        default=50, ge=1,
        description="Requests each side needs, in the minutes both served, before a guardrail can fire.")
    max_error_rate_increase: float = Field(
        default=0.02, ge=0, le=1,
        description="Roll back at once when the canary's error rate exceeds production's by more than this "
        "(absolute: 0.02 is 2 percentage points).")
    max_latency_ratio: float = Field(
        default=1.5, ge=1,
        description="Roll back at once when the canary's p99 latency exceeds this many times production's (and by "
        "at least min_latency_increase_ms).")
    min_latency_increase_ms: float = Field(
        default=5.0, ge=0,
        description="The p99 guardrail also needs the canary this many milliseconds slower than production: "
        "at sub-millisecond latencies a ratio is noise (0.3 ms against 0.2 ms is 1.5x, and nobody's problem).")
    schedule: str = Field(
        default="10m",
        description="How often the canary flow looks (its deployment's interval), e.g. '10m'.")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        return None if value is None else canonical_metric(value)

    @field_validator("max_duration", "schedule")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value.strip()

    @property
    def timeout(self) -> timedelta:
        """``max_duration`` as a timedelta."""
        return parse_duration(self.max_duration)

    @property
    def interval(self) -> timedelta:
        """``schedule`` as a timedelta."""
        return parse_duration(self.schedule)

"""The monitoring policy: what counts as drift or decay, and what esteira does about it.

A plain pydantic model with defaults, so that a model spec can embed it as ``monitoring:`` and a
monitor run works without one. The drift defaults are whylogs' own "DRIFT" boundaries (p < 0.05 for
KS and chi-squared, Hellinger >= 0.4): a feature is drifted only where whylogs itself would say so.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TriggerMode = Literal["auto", "event", "direct", "off"]


class MonitoringPolicy(BaseModel):
    """Thresholds and actions of one model's monitor. Every field has a working default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_minutes: float = Field(
        default=60.0, gt=0, description="Look-back window when a run is given no start/end (gateway traffic)."
    )
    min_rows: int = Field(
        default=100,
        ge=1,
        description="Fewer rows in the window: status 'insufficient_data', decision 'none'.",
    )
    min_labelled: int = Field(
        default=50, ge=1, description="Fewer labelled rows: performance is not judged (drift still is)."
    )

    pvalue_threshold: float = Field(
        default=0.05, gt=0, lt=1, description="KS / chi-squared p-value below which a feature has drifted."
    )
    ks_min_statistic: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Also require a KS statistic this large: on big windows tiny shifts are 'significant'.",
    )
    categorical_min_hellinger: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Also require the category shares to differ by this Hellinger distance: the chi-squared test "
        "alone calls any shift of shares drift on a big window. Hellinger: bounded 0..1, symmetric, no smoothing "
        "for a category absent on one side (PSI is infinite there), independent of the two sample sizes.",
    )
    hellinger_threshold: float = Field(
        default=0.4, gt=0, le=1, description="Hellinger distance at or above which a feature has drifted."
    )
    hellinger: list[str] = Field(
        default_factory=list, description="Features scored with Hellinger instead of KS / chi-squared."
    )
    ignore: list[str] = Field(
        default_factory=list, description="Features left out of drift (ids, free text)."
    )
    dataset_drift_share: float = Field(
        default=0.3,
        gt=0,
        le=1,
        description="Share of drifted features at which the dataset has drifted (decision 'retrain').",
    )
    warn_on_any_drift: bool = Field(
        default=True,
        description="One drifted feature under the dataset share gives 'warn' rather than 'none'.",
    )
    retrain_on_drift: bool = Field(
        default=True, description="Dataset drift alone decides 'retrain'; otherwise it only warns."
    )

    metric: str | None = Field(
        default=None, description="Performance metric; default the spec's metric (roc_auc if no spec)."
    )
    max_metric_drop: float = Field(
        default=0.05, ge=0, description="Drop below the evaluation metric (absolute) that decides 'retrain'."
    )
    warn_metric_drop: float = Field(
        default=0.02, ge=0, description="Drop below the evaluation metric (absolute) that decides 'warn'."
    )

    label_delay: str | float = Field(
        default=0.0,
        description="How long after a window ends its labels are all in (e.g. '1d', '6h'; a number is seconds). A "
        "window's labels have matured once now >= window end + label_delay: only then does its realised metric "
        "count toward the decision, and later runs re-judge earlier windows as their labels arrive. 0: labels are "
        "immediate, every window is judged once on the labels it has.",
    )
    retrain_on_estimate: bool = Field(
        default=False,
        description="Decide on the metric estimated from the model's calibrated confidence (CBPE) while a window's "
        "labels have not matured, by the same drops as the realised metric; otherwise the estimate is reported only.",
    )
    rejudge_limit: int = Field(
        default=6,
        ge=0,
        description="Earlier windows re-judged per run at most (with a label_delay): each reads its window of the "
        "inference log again. Windows whose labels matured since they were judged go first.",
    )

    cooldown_minutes: float = Field(
        default=10.0,
        ge=0,
        description="After a retrain was started, further retrain decisions start nothing.",
    )
    request_grace_minutes: float = Field(
        default=5.0,
        ge=0,
        description="A retrain requested through the Prefect event, with no run of the retrain flow seen yet, holds "
        "the cool-down this long (the automation creates the run within seconds). After it the request is taken "
        "as lost (the server was down, the event dropped) and the next retrain decision asks again.",
    )
    trigger: TriggerMode = Field(
        default="auto",
        description="'event': emit the Prefect event (a deployment trigger starts retraining); 'direct': run "
        "the retrain flow in-process; 'auto': event with a Prefect server (PREFECT_API_URL), else "
        "direct; 'off': decide and report only.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> MonitoringPolicy:
        if self.warn_metric_drop > self.max_metric_drop:
            raise ValueError("warn_metric_drop must not exceed max_metric_drop")
        overlap = set(self.hellinger) & set(self.ignore)
        if overlap:
            raise ValueError(f"features both scored with Hellinger and ignored: {sorted(overlap)}")
        return self

    @field_validator("label_delay")
    @classmethod
    def _delay(cls, value: str | float) -> str | float:
        _as_delay(value)
        return value

    @property
    def labels_mature_after(self) -> timedelta:
        """``label_delay`` as a timedelta (zero: labels are immediate)."""
        return _as_delay(self.label_delay)

    @property
    def window(self) -> timedelta:
        return timedelta(minutes=self.window_minutes)

    @property
    def cooldown(self) -> timedelta:
        return timedelta(minutes=self.cooldown_minutes)

    @property
    def request_grace(self) -> timedelta:
        return timedelta(minutes=self.request_grace_minutes)


def _as_delay(value: str | float) -> timedelta:
    """A label delay: zero, or a duration as the canary policy writes them (``'90s'``, ``'6h'``, ``'1d'``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        return timedelta(0)
    if isinstance(value, str) and value.strip() in ("0", "0s", "0m", "0h", "0d"):
        return timedelta(0)
    # imported here: flows.delivery imports the monitoring package, which imports this module
    from flows.delivery.policy import parse_duration

    return parse_duration(value)


def resolve_policy(
    base: Any = None, override: MonitoringPolicy | dict[str, Any] | None = None
) -> MonitoringPolicy:
    """The policy of a run: ``base``, then the fields of ``override`` on top.

    ``base`` is a policy, its dict form (a spec's ``monitoring:`` section), an object with a
    ``monitoring`` attribute (a model spec that embeds the policy) or None (the defaults).
    ``override`` as a dict changes only the fields it names, so a flow parameter like
    ``{"min_rows": 10}`` does not reset the rest of the spec's policy to defaults.
    """
    if base is not None and not isinstance(base, (MonitoringPolicy, dict)):
        base = getattr(base, "monitoring", None)
    if isinstance(base, dict):
        base = MonitoringPolicy.model_validate(base)
    if not isinstance(base, MonitoringPolicy):
        base = MonitoringPolicy()
    if override is None:
        return base
    if isinstance(override, MonitoringPolicy):
        return override
    return MonitoringPolicy.model_validate({**base.model_dump(), **override})

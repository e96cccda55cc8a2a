"""From drift and performance to a decision (none / warn / retrain), and the retrain cool-down.

Kept pure (no registry, no Prefect) so the rule is read and tested in one place. The cool-down's
state is the registry itself: the newest report that actually started a retrain (its
``triggered_run`` is set). No extra table, and it survives restarts and works across processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from flows.monitoring.drift import DriftResult
from flows.monitoring.performance import PerformanceResult
from flows.monitoring.policy import MonitoringPolicy
from registry.models import MonitoringReport

NONE, WARN, RETRAIN = "none", "warn", "retrain"


@dataclass(frozen=True)
class Decision:
    decision: str
    reasons: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) or "no drift, no performance decay"


def decide(drift: DriftResult, performance: PerformanceResult, policy: MonitoringPolicy) -> Decision:
    """The strongest of the drift verdict and the performance verdict, with every reason that led to it."""
    level = NONE
    reasons: list[str] = []

    def raise_to(new: str, why: str) -> None:
        nonlocal level
        order = (NONE, WARN, RETRAIN)
        if order.index(new) > order.index(level):
            level = new
        reasons.append(why)

    share = drift.share
    if share is not None and drift.drifted:
        names = ", ".join(drift.drifted[:8]) + (" ..." if len(drift.drifted) > 8 else "")
        what = f"{len(drift.drifted)}/{len(drift.features)} features drifted ({share:.0%}: {names})"
        if share >= policy.dataset_drift_share:
            raise_to(
                RETRAIN if policy.retrain_on_drift else WARN,
                f"dataset drift: {what} >= {policy.dataset_drift_share:.0%}",
            )
        elif policy.warn_on_any_drift:
            raise_to(WARN, f"feature drift: {what} < {policy.dataset_drift_share:.0%}")
    if performance.status == "ok" and performance.drop is not None:
        what = (
            f"{performance.metric} {performance.value:.4f} on {performance.n_labelled} labelled rows vs "
            f"{performance.baseline:.4f} at evaluation (drop {performance.drop:+.4f})"
        )
        if performance.drop > policy.max_metric_drop:
            raise_to(RETRAIN, f"performance decay: {what} > {policy.max_metric_drop}")
        elif performance.drop > policy.warn_metric_drop:
            raise_to(WARN, f"performance decay: {what} > {policy.warn_metric_drop}")
    return Decision(level, tuple(reasons))


def as_utc(value: datetime) -> datetime:
    """SQLite hands timestamps back naive; the registry writes them in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def active_cooldown(
    reports: list[MonitoringReport], policy: MonitoringPolicy, now: datetime | None = None
) -> MonitoringReport | None:
    """The report whose retrain is still cooling down, if any.

    ``reports`` are the model's recent retrain reports (newest first, as the registry returns them);
    only those that started a run count, so a decision suppressed by the cool-down does not extend it.
    """
    if policy.cooldown_minutes <= 0:
        return None
    now = now or datetime.now(UTC)
    for report in reports:
        if not report.triggered_run:
            continue
        if now - as_utc(report.created_at) < policy.cooldown:
            return report
    return None

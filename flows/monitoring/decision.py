"""From drift and performance to a decision (none / warn / retrain), and the retrain cool-down.

Performance speaks through three numbers: the window's realised metric once its labels have matured, the
metric estimated from confidence while they have not (when the policy says so), and earlier windows judged
again as their labels arrived. All three decide by the same two drops.

Kept pure (no registry, no Prefect) so the rule is read and tested in one place. The cool-down's
state is the registry itself: the retrain reports and what their ``triggered_run`` says. No extra table,
and it survives restarts and works across processes.

A retrain report's ``triggered_run`` is None (nothing asked: trigger off, or held by the cool-down),
``pending`` (claimed before the trigger, so that a concurrent monitor sees the cool-down), ``event:<id>``
(requested through the Prefect event, no run seen yet) or the id of a run of the retrain flow (started: the
run wrote it, or the monitor found it). An emitted event is only a request: emitted while the Prefect server
is down it is dropped, and nothing ever runs. So a request holds the cool-down for a short grace only; a
started run holds it for the whole cool-down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flows.monitoring.drift import DriftResult
from flows.monitoring.estimate import Estimate
from flows.monitoring.performance import PerformanceResult
from flows.monitoring.policy import MonitoringPolicy
from registry.models import MonitoringReport

NONE, WARN, RETRAIN = "none", "warn", "retrain"

CLAIMED = "pending"
EVENT_PREFIX = "event:"
REQUESTED, STARTED = "requested", "started"


@dataclass(frozen=True)
class Decision:
    decision: str
    reasons: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) or "no drift, no performance decay"


@dataclass(frozen=True)
class EarlierWindow:
    """An earlier window judged again now that more of its labels are in (:mod:`flows.monitoring.rejudge`)."""

    report_id: int
    start: datetime | None
    end: datetime | None
    performance: PerformanceResult
    coverage: float | None
    matured: bool

    @property
    def name(self) -> str:
        span = (f" {self.start.isoformat(timespec='minutes')} to {self.end.isoformat(timespec='minutes')}"
                if self.start is not None and self.end is not None else "")
        return f"window{span} (report {self.report_id})"


def _decay(drop: float, policy: MonitoringPolicy) -> tuple[str, float] | None:
    """The level a metric drop reaches and the threshold it passed, by the policy's two drops."""
    if drop > policy.max_metric_drop:
        return RETRAIN, policy.max_metric_drop
    if drop > policy.warn_metric_drop:
        return WARN, policy.warn_metric_drop
    return None


def decide(drift: DriftResult, performance: PerformanceResult, policy: MonitoringPolicy, *, matured: bool = True,
           estimate: Estimate | None = None, earlier: Sequence[EarlierWindow] = ()) -> Decision:
    """The strongest of the drift verdict and the performance verdicts, with every reason that led to it.

    The window's realised metric counts once its labels have ``matured``; until then (or while too few of
    them are in to judge), with the policy's ``retrain_on_estimate``, the metric estimated from confidence
    counts by the same drops. ``earlier`` windows re-judged in this run count when their labels have matured.
    """
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
    judged = matured and performance.status == "ok" and performance.drop is not None
    if judged and (verdict := _decay(performance.drop, policy)):  # type: ignore[arg-type]
        what = (
            f"{performance.metric} {performance.value:.4f} on {performance.n_labelled} labelled rows vs "
            f"{performance.baseline:.4f} at evaluation (drop {performance.drop:+.4f})"
        )
        raise_to(verdict[0], f"performance decay: {what} > {verdict[1]}")
    if (not judged and policy.retrain_on_estimate and estimate is not None and estimate.status == "ok"
            and estimate.drop is not None and (verdict := _decay(estimate.drop, policy))):
        what = (f"{estimate.metric} {estimate.value:.4f} estimated ({estimate.method}, from calibrated confidence) "
                f"on {estimate.rows} rows vs {estimate.baseline:.4f} at evaluation (drop {estimate.drop:+.4f})")
        why = "labels not matured" if not matured else f"realised {performance.status}"
        raise_to(verdict[0], f"estimated performance decay, {why}: {what} > {verdict[1]}")
    for window in earlier:
        result = window.performance
        if window.matured and result.status == "ok" and result.drop is not None \
                and (verdict := _decay(result.drop, policy)):
            coverage = f", coverage {window.coverage:.0%}" if window.coverage is not None else ""
            raise_to(verdict[0], f"performance decay in earlier {window.name}, re-judged on its matured labels: "
                                 f"{result.metric} {result.value:.4f} on {result.n_labelled} labelled rows{coverage} "
                                 f"vs {result.baseline:.4f} at evaluation (drop {result.drop:+.4f}) > {verdict[1]}")
    return Decision(level, tuple(reasons))


def as_utc(value: datetime) -> datetime:
    """SQLite hands timestamps back naive; the registry writes them in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def retrain_status(triggered_run: str | None) -> str | None:
    """What a report's ``triggered_run`` says: None (nothing asked), ``requested`` (claimed, or an event emitted,
    and no run seen yet) or ``started`` (a run of the retrain flow)."""
    if not triggered_run:
        return None
    if triggered_run == CLAIMED or triggered_run.startswith(EVENT_PREFIX):
        return REQUESTED
    return STARTED


def _holds_for(report: MonitoringReport, policy: MonitoringPolicy) -> timedelta | None:
    status = retrain_status(report.triggered_run)
    if status is None:
        return None
    return policy.cooldown if status == STARTED else min(policy.cooldown, policy.request_grace)


def active_cooldown(
    reports: list[MonitoringReport], policy: MonitoringPolicy, now: datetime | None = None
) -> MonitoringReport | None:
    """The report whose retrain is still cooling down, if any.

    ``reports`` are the model's recent retrain reports (newest first, as the registry returns them). A started
    run holds the cool-down for ``cooldown``; a request with no run seen yet for ``request_grace`` at most; a
    decision suppressed by the cool-down asked for nothing and does not extend it.
    """
    if policy.cooldown_minutes <= 0:
        return None
    now = now or datetime.now(UTC)
    for report in reports:
        holds = _holds_for(report, policy)
        if holds is not None and now - as_utc(report.created_at) < holds:
            return report
    return None


def lost_requests(
    reports: list[MonitoringReport], policy: MonitoringPolicy, now: datetime | None = None
) -> list[MonitoringReport]:
    """Requests older than the grace with still no run: taken as lost, so that a new decision asks again."""
    now = now or datetime.now(UTC)
    return [r for r in reports if retrain_status(r.triggered_run) == REQUESTED
            and now - as_utc(r.created_at) >= policy.request_grace]

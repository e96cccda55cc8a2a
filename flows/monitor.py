"""The monitor flow: a window of traffic (or a batch) against the production version's reference.

One run: load the production version, its reference profile (the training set's whylogs profile,
stored at registration) and its monitoring policy; read the target; score drift per feature and
performance on the labelled rows; decide none / warn / retrain; write the report to the registry;
publish the drift table and picture; on a retrain decision outside the cool-down, emit the
``esteira.model.retrain-requested`` event (a Prefect server's deployment trigger starts retraining)
or, with no server, run the retrain flow in-process. The report records which run was started.

:func:`run_monitor` is the procedure as a plain function (tests, the CLI); :func:`monitor` is the
Prefect flow around it, whose registry and log reads and registry writes are retried tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow

from esteira import profiles
from flows.monitoring import report as reporting
from flows.monitoring.decision import NONE, RETRAIN, Decision, active_cooldown, as_utc, decide
from flows.monitoring.drift import DriftResult, feature_drift
from flows.monitoring.performance import PerformanceResult, window_performance
from flows.monitoring.policy import MonitoringPolicy, TriggerMode, resolve_policy
from flows.monitoring.target import Target, from_frame, from_gateway
from flows.monitoring.trigger import (
    RETRAIN_EVENT,
    TriggerResult,
    emit_retrain_event,
    resolve_mode,
    retrain_payload,
    run_direct,
)
from flows.reporting import LogReporter, Reporter
from flows.train import Step, direct_step, prefect_step
from registry import Registry
from registry.models import ModelVersion, MonitoringReport

log = logging.getLogger("esteira.flows.monitor")

Retrainer = Callable[[dict[str, Any], str | None], TriggerResult]
"""Starts a retrain in-process from the event payload and the spec; the default runs :mod:`flows.retrain`."""


# -- context: what the production version was trained and evaluated on ---------------------------------------


@dataclass(frozen=True)
class MonitorContext:
    model_name: str
    version: ModelVersion
    reference: bytes | None
    features: list[str] | None
    label: str
    metric: str
    policy: MonitoringPolicy
    spec_source: str | None = None


def _spec_of(
    registry: Registry, mv: ModelVersion, spec: str | None
) -> tuple[Any, dict[str, Any] | None, str | None]:
    """(ModelSpec or None, the spec's ``monitoring`` section, where it came from).

    Order: the ``spec`` given; the spec the version was trained with (its training run); the shipped
    ``flows/specs/<model>.yaml``. A ``monitoring:`` section is taken out before validation so that
    specs can carry it whether or not :class:`flows.spec.ModelSpec` has embedded the policy yet.
    """
    import yaml

    from flows.spec import ModelSpec, builtin_spec_path, load_spec

    data: dict[str, Any] | None = None
    source: str | None = None
    if spec is not None:
        path = Path(spec) if "\n" not in spec else None
        if path is not None and path.suffix not in (".yaml", ".yml", ".json"):
            path = builtin_spec_path(spec)
        text = path.read_text() if path is not None else spec
        data, source = yaml.safe_load(text), str(path or "inline")
    elif mv.training_run_id is not None:
        data, source = (
            dict(registry.get_run(mv.training_run_id).spec or {}) or None,
            f"training run {mv.training_run_id}",
        )
    if data is None and builtin_spec_path(mv.model_name).exists():
        path = builtin_spec_path(mv.model_name)
        data, source = yaml.safe_load(path.read_text()), str(path)
    if not isinstance(data, dict):
        return None, None, None
    data = dict(data)
    return load_spec(data), data.get("monitoring"), source


def load_context(
    registry: Registry,
    model_name: str,
    *,
    alias: str = "production",
    spec: str | None = None,
    policy: MonitoringPolicy | dict[str, Any] | None = None,
    label: str | None = None,
) -> MonitorContext:
    """The version behind ``alias``, its reference profile, features, label, metric and policy."""
    mv = registry.get_by_alias(model_name, alias)
    model_spec, monitoring, source = _spec_of(registry, mv, spec)
    resolved = resolve_policy(monitoring if monitoring is not None else model_spec, policy)
    inputs = [column["name"] for column in (mv.signature or {}).get("inputs", [])] or None
    metric = (
        resolved.metric
        or (model_spec.metric if model_spec is not None else None)
        or mv.tags.get("metric")
        or "roc_auc"
    )
    return MonitorContext(
        model_name=model_name,
        version=mv,
        reference=registry.read_reference_profile(mv),
        features=inputs,
        label=label or (model_spec.label if model_spec is not None else "label"),
        metric=metric,
        policy=resolved,
        spec_source=source,
    )


# -- assessment: pure given the context and the target -------------------------------------------------------


@dataclass
class Assessment:
    status: str
    drift: DriftResult
    performance: PerformanceResult
    decision: Decision
    notes: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return "; ".join(
            [*self.notes, self.decision.reason] if self.decision.reasons or not self.notes else self.notes
        )


def _scorer(registry: Registry, ctx: MonitorContext) -> Callable[[pd.DataFrame], Any]:
    """Recompute scores with the production predictor (hash-checked) when the rows carry none."""

    def score(rows: pd.DataFrame) -> Any:
        predictor = registry.load_predictor(ctx.version)
        names = ctx.features or list(rows.columns)
        return predictor.predict({name: rows[name].to_numpy() for name in names})["probability"]

    return score


def assess(
    ctx: MonitorContext, target: Target, *, scorer: Callable[[pd.DataFrame], Any] | None = None
) -> Assessment:
    """Drift, performance and the decision.

    Too little data is a verdict (status 'insufficient_data', decision 'none'), not an error.
    """
    policy = ctx.policy
    rows = target.frame
    if rows is not None and "model_version" in rows.columns:
        rows = rows[
            rows["model_version"] == ctx.version.version
        ]  # judge this version against its own baseline
    if target.n_rows < policy.min_rows or target.profile is None:
        performance = PerformanceResult("insufficient_labels", ctx.metric, 0)
        note = f"{target.n_rows} rows in the window, fewer than min_rows={policy.min_rows}"
        return Assessment("insufficient_data", DriftResult(), performance, Decision(NONE), [note])
    notes: list[str] = []
    if ctx.reference is None:
        drift = DriftResult(unscored=list(ctx.features or []))
        notes.append(f"version {ctx.version.version} has no reference profile: drift not scored")
    else:
        drift = feature_drift(ctx.reference, target.profile, ctx.features, policy)
    performance = window_performance(
        rows,
        label=target.label_column,
        metric=ctx.metric,
        baseline=ctx.version.metrics or {},
        policy=policy,
        scorer=scorer,
    )
    return Assessment("ok", drift, performance, decide(drift, performance, policy), notes)


# -- the procedure -------------------------------------------------------------------------------------------


@dataclass
class MonitorOutcome:
    report_id: int
    model_name: str
    version: int
    status: str
    decision: str
    reason: str
    drift_share: float | None
    n_rows: int
    n_labelled: int
    triggered_run: str | None
    trigger_mode: str | None
    picture: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def default_window(
    start: datetime | None, end: datetime | None, policy: MonitoringPolicy, now: datetime
) -> tuple[datetime, datetime]:
    """The window to judge. Given neither bound: the last complete ``window_minutes`` window.

    Complete and epoch-aligned (10:00-11:00, not 10:17-11:17) because the gateway profiles traffic
    per aligned window (hourly by default) and the merged profile covers whole windows: an aligned
    window makes the profile (drift) and the logged rows (counts, performance) describe the same
    traffic, and a window still filling up would be judged on a partial sample.
    """
    if start is None and end is None:
        width = policy.window.total_seconds()
        end = datetime.fromtimestamp(now.timestamp() // width * width, tz=UTC)
    end = as_utc(end or now)
    return as_utc(start or end - policy.window), end


def read_target(
    ctx: MonitorContext,
    *,
    frame: pd.DataFrame | None,
    batch_uri: str | None,
    start: datetime | None,
    end: datetime | None,
    now: datetime,
) -> Target:
    """A batch (frame or parquet URI) if given, else the gateway's traffic in the window."""
    if frame is None and batch_uri is not None:
        frame = pd.read_parquet(batch_uri)
    if frame is not None:
        return from_frame(frame, label=ctx.label, features=ctx.features, start=start, end=end)
    lo, hi = default_window(start, end, ctx.policy, now)
    return from_gateway(ctx.model_name, lo, hi, features=ctx.features)


def _record(registry: Registry, report: MonitoringReport) -> MonitoringReport:
    return registry.record_report(report)


def _retrain_in_cooldown(registry: Registry, ctx: MonitorContext, now: datetime) -> MonitoringReport | None:
    recent = registry.reports(ctx.model_name, decision=RETRAIN, since=now - ctx.policy.cooldown, limit=20)
    return active_cooldown(recent, ctx.policy, now)


def act(
    registry: Registry,
    ctx: MonitorContext,
    report: MonitoringReport,
    assessment: Assessment,
    *,
    mode: TriggerMode,
    spec: str | None,
    retrainer: Retrainer | None,
) -> TriggerResult | None:
    """Start retraining for a recorded retrain decision: event or direct run. Returns what was done."""
    resolved = resolve_mode(mode)
    if resolved == "off":
        return TriggerResult("off", None, "retrain not started: trigger is 'off'")
    payload = retrain_payload(
        model_name=ctx.model_name,
        version=ctx.version.version,
        report_id=report.id,  # type: ignore[arg-type]
        reason=assessment.decision.reason,
        drift_share=assessment.drift.share,
        performance=assessment.performance.to_json(),
    )
    if resolved == "event":
        run = emit_retrain_event(payload)
        if run is None:
            return TriggerResult(
                "event", None, "retrain event not emitted: Prefect is not emitting events here"
            )
        return TriggerResult("event", run, f"emitted {RETRAIN_EVENT} ({run})")
    return (retrainer or run_direct)(payload, spec)


def run_monitor(
    model_name: str,
    *,
    registry: Registry | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    frame: pd.DataFrame | None = None,
    batch_uri: str | None = None,
    spec: str | None = None,
    policy: MonitoringPolicy | dict[str, Any] | None = None,
    alias: str = "production",
    label: str | None = None,
    trigger: TriggerMode | None = None,
    reporter: Reporter | None = None,
    retrainer: Retrainer | None = None,
    flow_run_id: str | None = None,
    step: Step = direct_step,
    now: datetime | None = None,
    home: Path | None = None,
) -> MonitorOutcome:
    """Monitor ``model_name``'s ``alias`` version on a batch (``frame`` / ``batch_uri``) or a time window.

    ``trigger`` overrides the policy's trigger mode. ``retrainer`` replaces the in-process retrain
    run (tests, or a caller with its own runner). Returns the outcome; the registry holds the report.
    """
    from esteira.settings import get_settings

    registry = registry or Registry.from_url()
    reporter = reporter or LogReporter()
    now = now or datetime.now(UTC)
    ctx: MonitorContext = step(
        load_context,
        registry,
        model_name,
        alias=alias,
        spec=spec,
        policy=policy,
        label=label,
        name="load-context",
        retries=2,
    )
    target: Target = step(
        read_target,
        ctx,
        frame=frame,
        batch_uri=batch_uri,
        start=start,
        end=end,
        now=now,
        name="read-target",
        retries=2,
    )
    scorer = _scorer(registry, ctx)
    assessment = assess(ctx, target, scorer=scorer)

    blocking = None
    if assessment.decision.decision == RETRAIN:
        blocking = step(_retrain_in_cooldown, registry, ctx, now, name="check-cooldown", retries=2)
    will_trigger = assessment.decision.decision == RETRAIN and blocking is None
    reason = assessment.reason
    if blocking is not None:
        started = as_utc(blocking.created_at)
        reason += (
            f"; cool-down: retrain {blocking.triggered_run} was started by report {blocking.id} at "
            f"{started.isoformat(timespec='seconds')}, no retrain before "
            f"{(started + ctx.policy.cooldown).isoformat(timespec='seconds')}"
        )
    report = step(
        _record,
        registry,
        MonitoringReport(
            model_name=model_name,
            version=ctx.version.version,
            window_start=target.start,
            window_end=target.end,
            n_rows=target.n_rows,
            n_labelled=assessment.performance.n_labelled,
            status=assessment.status,
            drift={**assessment.drift.to_json(), "source": target.source, "policy": ctx.policy.model_dump()},
            drift_share=assessment.drift.share,
            performance=assessment.performance.to_json(),
            decision=assessment.decision.decision,
            reason=reason[:4000],
            # claimed before the trigger so that a concurrent run sees the cool-down already
            triggered_run="pending" if will_trigger else None,
            flow_run_id=flow_run_id,
        ),
        name="record-report",
        retries=2,
    )

    done: TriggerResult | None = None
    if will_trigger:
        try:
            done = act(
                registry,
                ctx,
                report,
                assessment,
                mode=trigger or ctx.policy.trigger,
                spec=spec,
                retrainer=retrainer,
            )
        except Exception as exc:
            log.exception("retrain trigger failed")
            done = TriggerResult(
                resolve_mode(trigger or ctx.policy.trigger),
                None,
                f"retrain trigger failed: {type(exc).__name__}: {exc}",
            )
        assert done is not None
        fresh = registry.reports(model_name, limit=50)
        current = next((r for r in fresh if r.id == report.id), report)
        # the retrain flow may already have written its own run id and outcome (direct mode)
        triggered = done.run if current.triggered_run in (None, "pending") else current.triggered_run
        report = step(
            registry.update_report,
            report.id,
            triggered_run=triggered,
            reason=(
                f"{current.reason}; {done.detail}"
                if done.detail and done.detail not in current.reason
                else current.reason
            )[:4000],
            name="update-report",
            retries=2,
        )

    picture: Path | None = None
    png: bytes | None = None
    try:
        if assessment.drift.features and ctx.reference is not None and target.profile is not None:
            distributions = profiles.compare_distributions(
                ctx.reference, target.profile, list(assessment.drift.features)
            )
            png = reporting.plot_drift(
                distributions,
                assessment.drift,
                title=f"{model_name} v{ctx.version.version}: reference vs target "
                f"({len(assessment.drift.drifted)}/{len(assessment.drift.features)} drifted)",
            )
            picture = reporting.save_picture(png, home or get_settings().home, model_name, now, report.id)
    except Exception:
        log.exception("drift picture not drawn")
    summaries = (
        (profiles.profile_summary(ctx.reference), profiles.profile_summary(target.profile))
        if ctx.reference is not None and target.profile is not None and assessment.drift.features
        else (None, None)
    )
    key = reporting.artifact_key(model_name)
    reporter.table(
        f"{key}-drift",
        reporting.drift_rows(assessment.drift, *summaries)
        or [{"feature": "-", "drifted": "nothing scored", "status": assessment.status}],
        f"Per-feature drift of {model_name} v{ctx.version.version}",
    )
    reporter.markdown(
        f"{key}-report",
        reporting.summary_markdown(
            model_name=model_name,
            version=ctx.version.version,
            report_id=report.id,
            status=report.status,
            decision=report.decision,
            reason=report.reason,
            n_rows=report.n_rows,
            n_labelled=report.n_labelled,
            drift_share=report.drift_share,
            performance=report.performance,
            window=(target.start, target.end),
            source=target.source,
            triggered_run=report.triggered_run,
            picture=picture,
            png=png,
        ),
        f"Monitoring report {report.id} of {model_name}",
    )
    log.info("monitor %s v%s: %s (%s)", model_name, ctx.version.version, report.decision, report.reason)
    return MonitorOutcome(
        report_id=report.id,
        model_name=model_name,
        version=ctx.version.version,
        status=report.status,  # type: ignore[arg-type]
        decision=report.decision,
        reason=report.reason,
        drift_share=report.drift_share,
        n_rows=report.n_rows,
        n_labelled=report.n_labelled,
        triggered_run=report.triggered_run,
        trigger_mode=done.mode if done else None,
        picture=str(picture) if picture else None,
    )


# -- Prefect -------------------------------------------------------------------------------------------------


@flow(name="monitor", log_prints=True)
def monitor(
    model_name: str = "churn",
    start: datetime | None = None,
    end: datetime | None = None,
    batch_uri: str | None = None,
    spec: str | None = None,
    policy: dict[str, Any] | None = None,
    alias: str = "production",
    trigger: TriggerMode | None = None,
    database_url: str | None = None,
    frame: Any = None,
) -> dict[str, Any]:
    """Monitor a model: gateway traffic in ``[start, end)`` (default: the policy's window up to now),
    or a batch (``batch_uri``: parquet; ``frame``: a DataFrame, from Python only).

    ``policy`` overrides fields of the spec's monitoring policy (e.g. ``{"min_rows": 500}``);
    ``trigger`` overrides its trigger mode (auto / event / direct / off).
    Artifacts: ``monitor-<model>-drift`` (table), ``monitor-<model>-report`` (markdown with the picture).
    """
    from prefect.runtime import flow_run

    from flows.reporting import PrefectReporter

    registry = Registry.from_url(database_url)
    try:
        outcome = run_monitor(
            model_name,
            registry=registry,
            start=start,
            end=end,
            frame=frame,
            batch_uri=batch_uri,
            spec=spec,
            policy=policy,
            alias=alias,
            trigger=trigger,
            reporter=PrefectReporter(),
            flow_run_id=str(flow_run.id) if flow_run.id else None,
            step=prefect_step,
        )
    finally:
        registry.close()
    return outcome.to_dict()

"""The monitor flow: a window of traffic (or a batch) against the production version's reference.

One run: load the production version, its reference profile (the training set's whylogs profile,
stored at registration) and its monitoring policy; compact the inference log's closed hours (a window of
gateway traffic only); read the target; score drift per feature, performance on the labelled rows (which
decides once the window's labels have matured, the policy's ``label_delay`` after its end) and performance
estimated from the version's calibrated confidence on every row; judge again the earlier windows whose labels
have come in since (:mod:`flows.monitoring.rejudge`); decide none / warn / retrain; write the report to the registry;
publish the drift table and picture; on a retrain decision outside the cool-down, emit the
``esteira.model.retrain-requested`` event (a Prefect server's deployment trigger starts retraining)
or, with no server, run the retrain flow in-process. The report records which run was started, or that a
retrain was requested: an event is confirmed when a run of the retrain flow for it is seen (the run writes
its id on the report when it starts; the next pass also looks for runs still waiting for a worker), and a
request left unconfirmed past a short grace is taken as lost, so the next retrain decision asks again.

:func:`run_monitor` is the procedure as a plain function (tests, the CLI); :func:`monitor` is the
Prefect flow around it, whose registry and log reads and registry writes are retried tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow

from core import profiles
from core.project import Project, current_project, optional_project
from flows.errors import TrainingInputError
from flows.features import FeastFetcher, FeatureFetcher, read_rows
from flows.monitoring import report as reporting
from flows.monitoring.decision import (
    EVENT_PREFIX,
    RETRAIN,
    STARTED,
    Decision,
    EarlierWindow,
    active_cooldown,
    as_utc,
    decide,
    lost_requests,
    retrain_status,
)
from flows.monitoring.drift import DriftResult, feature_drift
from flows.monitoring.estimate import Estimate, estimate_window
from flows.monitoring.performance import (
    PerformanceResult,
    maturity,
    realised_json,
    report_json,
    window_performance,
)
from flows.monitoring.policy import MonitoringPolicy, TriggerMode, resolve_policy
from flows.monitoring.rejudge import Rejudged, rejudge
from flows.monitoring.target import Target, compact_gateway_log, from_frame, from_gateway
from flows.monitoring.trigger import (
    RETRAIN_EVENT,
    TriggerResult,
    emit_retrain_event,
    find_retrain_runs,
    resolve_mode,
    retrain_payload,
    run_direct,
    server_configured,
)
from flows.reporting import LogReporter, Reporter
from flows.spec import ModelSpec, load_spec, models_with_alias, resolve_spec
from flows.tasks import DEFAULT_METRIC, Task, task_of
from flows.train import Step, direct_step, prefect_step
from flows.validation import coerce_features
from registry import Registry
from registry.models import ModelVersion, MonitoringReport

log = logging.getLogger("esteira.flows.monitor")

Retrainer = Callable[[dict[str, Any], str | None], TriggerResult]
"""Starts a retrain in-process from the event payload and the spec; the default runs :mod:`flows.retrain`."""


# -- context: what the production version was trained and evaluated on ---------------------------------------


class MonitorInputError(ValueError):
    """A batch the monitor cannot judge (missing columns, unreadable); the message names what is missing."""


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
    task: Task = "binary"
    classes: list[Any] | None = None
    timestamp: str = "event_timestamp"
    project: Project | None = None

    @property
    def signature(self) -> dict[str, Any]:
        return self.version.signature or {}


def _spec_of(registry: Registry, mv: ModelVersion, spec: str | None, project: Project | None
             ) -> tuple[ModelSpec | None, str | None]:
    """(the model's spec, where it came from): the ``spec`` given (a name in the project's ``specs/`` or a
    path); else the spec the version was trained with (its training run); else the project's spec named
    like the model."""
    if spec is not None:
        return resolve_spec(spec, project), spec
    if mv.training_run_id is not None:
        stored = dict(registry.get_run(mv.training_run_id).spec or {})
        if stored:
            return load_spec(stored), f"training run {mv.training_run_id}"
    if project is not None and mv.model_name in project.spec_names():
        return resolve_spec(mv.model_name, project), str(project.spec_path(mv.model_name))
    return None, None


def load_context(
    registry: Registry,
    model_name: str,
    *,
    alias: str = "production",
    spec: str | None = None,
    policy: MonitoringPolicy | dict[str, Any] | None = None,
    label: str | None = None,
    project: Project | None = None,
) -> MonitorContext:
    """The version behind ``alias``, its reference profile, features, label, metric and policy."""
    mv = registry.get_by_alias(model_name, alias)
    model_spec, source = _spec_of(registry, mv, spec, project)
    resolved = resolve_policy(model_spec.monitoring if model_spec is not None else None, policy)
    signature = mv.signature or {}
    task = task_of(signature)
    inputs = [column["name"] for column in signature.get("inputs", [])] or None
    metric = resolved.metric or (model_spec.metric if model_spec is not None else None) or mv.tags.get("metric") \
        or DEFAULT_METRIC[task]
    return MonitorContext(
        model_name=model_name,
        version=mv,
        reference=registry.read_reference_profile(mv),
        features=inputs,
        label=label or (model_spec.label if model_spec is not None else signature.get("label", "label")),
        metric=metric,
        policy=resolved,
        spec_source=source,
        task=task,
        classes=signature.get("classes"),
        timestamp=model_spec.labels.timestamp_column if model_spec is not None else "event_timestamp",
        project=project,
    )


# -- assessment: pure given the context and the target -------------------------------------------------------


@dataclass
class Assessment:
    status: str
    drift: DriftResult
    performance: PerformanceResult
    decision: Decision
    notes: list[str] = field(default_factory=list)
    estimate: Estimate | None = None
    realised: dict[str, Any] = field(default_factory=dict)
    """The realised side of the report's performance: coverage, maturity (:func:`realised_json`)."""
    earlier: Sequence[EarlierWindow] = ()

    @property
    def reason(self) -> str:
        return "; ".join(
            [*self.notes, self.decision.reason] if self.decision.reasons or not self.notes else self.notes
        )

    def performance_json(self) -> dict[str, Any]:
        """The report's ``performance``: realised at the top level and under ``realised``, the estimate beside."""
        return report_json(self.performance, self.realised, self.estimate.to_json() if self.estimate else None)

    def evidence(self) -> dict[str, Any]:
        """The metric behind a retrain request (the event's ``metric``, ``metric_value``, ``metric_drop``): this
        window's realised one when it could decide, else the worst re-judged earlier window's, else the
        estimate."""
        if self.realised.get("matured", True) and self.performance.status == "ok":
            return self.performance.to_json()
        judged = [w.performance for w in self.earlier if w.matured and w.performance.drop is not None]
        if judged:
            return max(judged, key=lambda p: p.drop or 0.0).to_json()
        if self.estimate is not None and self.estimate.status == "ok":
            return {"metric": self.estimate.metric, "value": self.estimate.value, "drop": self.estimate.drop}
        return self.performance.to_json()


def _scorer(registry: Registry, ctx: MonitorContext) -> Callable[[pd.DataFrame], Any]:
    """Recompute outputs with the production predictor (hash-checked) when the rows carry none."""

    def score(rows: pd.DataFrame) -> Any:
        predictor = registry.load_predictor(ctx.version)
        names = ctx.features or list(rows.columns)
        return predictor.predict({name: rows[name].to_numpy() for name in names})

    return score


def assess(
    ctx: MonitorContext,
    target: Target,
    *,
    scorer: Callable[[pd.DataFrame], Any] | None = None,
    now: datetime | None = None,
    earlier: Sequence[EarlierWindow] = (),
) -> Assessment:
    """Drift, performance (realised on the labels in hand, estimated from confidence) and the decision.

    A window of gateway traffic has matured once ``now`` is the policy's ``label_delay`` past its end; a batch
    carries the labels it has. ``earlier``: windows re-judged in this run (:mod:`flows.monitoring.rejudge`).
    Too little data is a verdict (status 'insufficient_data', decision 'none' unless an earlier window says
    otherwise), not an error.
    """
    policy = ctx.policy
    now = now or datetime.now(UTC)
    rows = target.frame
    if rows is not None and "model_version" in rows.columns:
        rows = rows[
            rows["model_version"] == ctx.version.version
        ]  # judge this version against its own baseline
    matured, matures_at = maturity(target.end if target.source != "batch" else None, policy.labels_mature_after, now)
    if target.n_rows < policy.min_rows or target.profile is None:
        performance = PerformanceResult("insufficient_labels", ctx.metric, 0)
        note = f"{target.n_rows} rows in the window, fewer than min_rows={policy.min_rows}"
        realised = realised_json(performance, rows=target.n_rows, matured=matured, matures_at=matures_at,
                                 source=target.source)
        decision = decide(DriftResult(), performance, policy, matured=matured, earlier=earlier)
        return Assessment("insufficient_data", DriftResult(), performance, decision, [note], realised=realised,
                          earlier=earlier)
    notes: list[str] = []
    if ctx.reference is None:
        drift = DriftResult(unscored=list(ctx.features or []))
        notes.append(f"version {ctx.version.version} has no reference profile: drift not scored")
    else:
        drift = feature_drift(ctx.reference, target.profile, ctx.features, policy)
    performance = window_performance(
        rows,
        label=target.label_column,
        task=ctx.task,
        metric=ctx.metric,
        baseline=ctx.version.metrics or {},
        policy=policy,
        classes=ctx.classes,
        scorer=scorer,
    )
    n_rows = len(rows) if rows is not None else target.n_rows
    realised = realised_json(performance, rows=n_rows, matured=matured, matures_at=matures_at, source=target.source)
    if not matured:
        coverage = f"{realised['coverage']:.0%}" if realised["coverage"] is not None else "-"
        notes.append(f"labels not matured (label_delay {policy.label_delay}, until "
                     f"{matures_at.isoformat(timespec='minutes') if matures_at else '-'}): realised {ctx.metric} on "
                     f"{performance.n_labelled} labelled rows (coverage {coverage}) decides nothing yet")
    estimate = None
    if ctx.version.calibration is not None:
        estimate = estimate_window(rows, task=ctx.task, metric=ctx.metric, calibration=ctx.version.calibration,
                                   baseline=ctx.version.metrics or {}, scorer=scorer)
    decision = decide(drift, performance, policy, matured=matured, estimate=estimate, earlier=earlier)
    return Assessment("ok", drift, performance, decision, notes, estimate=estimate, realised=realised,
                      earlier=earlier)


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
    retrain: str | None = None  # None, 'requested' (no run seen yet) or 'started'

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


def batch_rows(ctx: MonitorContext, frame: pd.DataFrame, fetcher: FeatureFetcher | None = None) -> pd.DataFrame:
    """A batch ready to judge: as given when it has every model input, else with the inputs built through
    the model's feature service, point-in-time at each row's timestamp (what the model would have seen).

    Building needs the feature service's join keys, the timestamp column (the spec's label timestamp, or
    ``event_timestamp``), its request fields and the model's request features; a missing one is a
    :class:`MonitorInputError` naming it. Labels, when the batch has them, are the spec's label column.
    """
    inputs = ctx.features or []
    if all(name in frame.columns for name in inputs):
        return frame
    service = ctx.version.feature_service
    if not service:
        missing = [n for n in inputs if n not in frame.columns]
        raise MonitorInputError(f"the batch lacks model inputs {missing} and {ctx.version.ref} has no feature "
                                "service to build them from")
    signature = ctx.signature
    keys = [k["name"] for k in signature.get("entity_keys", [])]
    request = [f["name"] for f in signature.get("request_fields", [])]
    needed = list(dict.fromkeys([*keys, ctx.timestamp, *request, *signature.get("request_features", [])]))
    missing = [c for c in needed if c not in frame.columns]
    if missing or not keys:
        raise MonitorInputError(
            f"the batch has neither the model's inputs nor what builds them: missing {missing or keys}. Give "
            f"either every input ({', '.join(inputs)}) or the rows to look them up: {', '.join(needed)}"
            f" (plus {ctx.label!r} when the labels are known)")
    fetcher = fetcher or FeastFetcher(ctx.project)
    store_features = [n for n in inputs if n not in signature.get("request_features", [])]
    base = frame.drop(columns=[c for c in frame.columns if c in store_features])
    try:
        joined = fetcher.historical(service, base, ctx.timestamp)
    except (ValueError, KeyError) as exc:
        raise MonitorInputError(f"building the batch's features through {service!r} failed: {exc}") from exc
    return coerce_features(joined, {c["name"]: c.get("dtype", "float64") for c in signature.get("inputs", [])})


def read_target(
    ctx: MonitorContext,
    *,
    frame: pd.DataFrame | None,
    batch_uri: str | None,
    start: datetime | None,
    end: datetime | None,
    now: datetime,
    fetcher: FeatureFetcher | None = None,
) -> Target:
    """A batch (frame, or parquet/CSV path or URI) if given, else the gateway's traffic in the window."""
    if frame is None and batch_uri is not None:
        location = ctx.project.resolve(batch_uri) if ctx.project is not None else batch_uri
        try:
            frame = read_rows(location, timestamp=ctx.timestamp, what="batch")
        except TrainingInputError as exc:
            raise MonitorInputError(str(exc)) from None
    if frame is not None:
        if (start is not None or end is not None) and ctx.timestamp in frame.columns:
            stamps = pd.to_datetime(frame[ctx.timestamp], utc=True)
            keep = pd.Series(True, index=frame.index)
            if start is not None:
                keep &= stamps >= as_utc(start)
            if end is not None:
                keep &= stamps < as_utc(end)
            frame = frame[keep]
        rows = batch_rows(ctx, frame.reset_index(drop=True), fetcher)
        return from_frame(rows, label=ctx.label, features=ctx.features, start=start, end=end)
    lo, hi = default_window(start, end, ctx.policy, now)
    return from_gateway(ctx.model_name, lo, hi, features=ctx.features)


def _record(registry: Registry, report: MonitoringReport) -> MonitoringReport:
    return registry.record_report(report)


def confirm_requests(registry: Registry, reports: list[MonitoringReport]) -> list[MonitoringReport]:
    """``reports`` with each event request that has a run of the retrain flow by now marked as started (its
    ``triggered_run`` becomes the run's id). The run writes its id itself when it starts; this also confirms a
    run still queued behind another retrain or waiting for a worker. Asks Prefect only when there is a request
    to confirm and a server to ask."""
    requested = [r for r in reports if r.triggered_run and r.triggered_run.startswith(EVENT_PREFIX)]
    if not requested or not server_configured():
        return reports
    since = min(as_utc(r.created_at) for r in requested) - timedelta(minutes=5)  # clocks of two services
    runs = find_retrain_runs([r.id for r in requested if r.id is not None], since)
    confirmed = {
        report_id: registry.update_report(report_id, triggered_run=run_id,
                                          reason=_with_note(report.reason, f"retrain run {run_id} confirmed"))
        for report in requested if (report_id := report.id) is not None and (run_id := runs.get(report_id))
    }
    return [confirmed.get(r.id, r) for r in reports]  # type: ignore[arg-type]


def _with_note(reason: str, note: str) -> str:
    return (f"{reason}; {note}" if reason else note)[:4000]


def _retrain_in_cooldown(registry: Registry, ctx: MonitorContext, now: datetime
                         ) -> tuple[MonitoringReport | None, list[MonitoringReport]]:
    """(the report holding the cool-down, if any; the requests taken as lost)."""
    recent = registry.reports(ctx.model_name, decision=RETRAIN, since=now - ctx.policy.cooldown, limit=20)
    recent = confirm_requests(registry, recent)
    return active_cooldown(recent, ctx.policy, now), lost_requests(recent, ctx.policy, now)


def _give_up_lost(registry: Registry, lost: list[MonitoringReport], asked_again: int | None, policy: MonitoringPolicy
                  ) -> None:
    """Mark requests that never got a run: nothing was started for them (``triggered_run`` None, as for a decision
    held by the cool-down), and the reason says which report asked again. Should the run still appear, it writes
    its id on the report when it starts."""
    for report in lost:
        if report.id is None:
            continue
        note = (f"retrain request {report.triggered_run} saw no run of the retrain flow within "
                f"{policy.request_grace_minutes:g} min (was the Prefect server reachable?)")
        if asked_again is not None:
            note += f"; report {asked_again} asked again"
        registry.update_report(report.id, triggered_run=None, reason=_with_note(report.reason, note))


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
        performance=assessment.evidence(),
        project=str(ctx.project.root) if ctx.project is not None else None,
    )
    if resolved == "event":
        run = emit_retrain_event(payload)
        if run is None:
            return TriggerResult(
                "event", None, "retrain event not emitted: Prefect is not emitting events here"
            )
        return TriggerResult("event", run, f"retrain requested: emitted {RETRAIN_EVENT} ({run}); it holds the "
                                           "cool-down once a run of the retrain flow is seen")
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
    project: Project | str | None = None,
    fetcher: FeatureFetcher | None = None,
    compact: bool = True,
) -> MonitorOutcome:
    """Monitor ``model_name``'s ``alias`` version on a batch (``frame`` / ``batch_uri``) or a time window.

    ``trigger`` overrides the policy's trigger mode. ``retrainer`` replaces the in-process retrain
    run (tests, or a caller with its own runner). ``compact``: before reading a window, compact the
    inference log's closed hours (:func:`flows.monitoring.target.compact_gateway_log`). Returns the
    outcome; the registry holds the report.
    """
    from core.settings import get_settings

    registry = registry or Registry.from_url()
    reporter = reporter or LogReporter()
    now = now or datetime.now(UTC)
    resolved_project = optional_project(project)
    ctx: MonitorContext = step(
        load_context,
        registry,
        model_name,
        alias=alias,
        spec=spec,
        policy=policy,
        label=label,
        project=resolved_project,
        name="load-context",
        retries=2,
    )
    if compact and frame is None and batch_uri is None:
        step(compact_gateway_log, model_name, name="compact-log")
    target: Target = step(
        read_target,
        ctx,
        frame=frame,
        batch_uri=batch_uri,
        start=start,
        end=end,
        now=now,
        fetcher=fetcher,
        name="read-target",
        retries=2,
    )
    scorer = _scorer(registry, ctx)
    rejudged: list[Rejudged] = []
    if ctx.policy.labels_mature_after > timedelta(0):  # labels come late: earlier windows may have more now
        rejudged = step(rejudge, registry, model_name, policy=ctx.policy, now=now,
                        versions={ctx.version.version: ctx.version}, name="rejudge", retries=2)
    earlier = [r.window for r in rejudged if r.changed and r.version == ctx.version.version]
    assessment = assess(ctx, target, scorer=scorer, now=now, earlier=earlier)

    blocking: MonitoringReport | None = None
    lost: list[MonitoringReport] = []
    if assessment.decision.decision == RETRAIN:
        blocking, lost = step(_retrain_in_cooldown, registry, ctx, now, name="check-cooldown", retries=2)
    will_trigger = assessment.decision.decision == RETRAIN and blocking is None
    reason = assessment.reason
    if blocking is not None:
        started = as_utc(blocking.created_at)
        if retrain_status(blocking.triggered_run) == STARTED:
            reason += (
                f"; cool-down: retrain {blocking.triggered_run} was started by report {blocking.id} at "
                f"{started.isoformat(timespec='seconds')}, no retrain before "
                f"{(started + ctx.policy.cooldown).isoformat(timespec='seconds')}"
            )
        else:
            reason += (
                f"; cool-down: report {blocking.id} requested a retrain at {started.isoformat(timespec='seconds')} "
                f"({blocking.triggered_run}), no run seen yet; asked again if none by "
                f"{(started + ctx.policy.request_grace).isoformat(timespec='seconds')}"
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
            performance=assessment.performance_json(),
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
        current = registry.get_report(report.id)  # type: ignore[arg-type]
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
    if lost:
        step(_give_up_lost, registry, lost, report.id if will_trigger else None, ctx.policy, name="give-up-lost",
             retries=2)

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
            console_url=get_settings().resolved_console_url,
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
        retrain=retrain_status(report.triggered_run),
    )


# -- Prefect -------------------------------------------------------------------------------------------------


@flow(name="monitor", log_prints=True)
def monitor(
    model_name: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    batch_uri: str | None = None,
    spec: str | None = None,
    policy: dict[str, Any] | None = None,
    alias: str = "production",
    trigger: TriggerMode | None = None,
    project: str | None = None,
    frame: Any = None,
    compact: bool = True,
) -> dict[str, Any]:
    """Monitor a model: gateway traffic in ``[start, end)`` (default: the policy's window up to now), or a
    batch (``batch_uri``: parquet or CSV, relative to the project or a URI; ``frame``: a DataFrame, from
    Python only) of entity rows with timestamps (features are built through the model's feature service)
    or of rows that already hold the model's inputs. No ``model_name``: every model of the project with a
    version behind ``alias`` (what the scheduled deployment does).

    ``policy`` overrides fields of the spec's monitoring policy (e.g. ``{"min_rows": 500}``);
    ``trigger`` overrides its trigger mode (auto / event / direct / off). ``compact``: compact the inference
    log's closed hours before reading a window (one file per hour instead of one per replica and second; at
    most a minute per run, newest hours first). The registry is the settings' one
    (``ESTEIRA_DATABASE_URL`` in the worker's environment): a database URL carries a password, and Prefect
    stores and shows a run's parameters.
    Artifacts: ``monitor-<model>-drift`` (table), ``monitor-<model>-report`` (markdown with the picture).
    """
    from prefect.runtime import flow_run

    from flows.reporting import PrefectReporter

    registry = Registry.from_url()
    try:
        names = [model_name] if model_name else models_with_alias(registry, current_project(project), alias)
        outcomes = {
            name: run_monitor(
                name,
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
                project=project,
                compact=compact,
            ).to_dict()
            for name in names
        }
    finally:
        registry.close()
    return outcomes[model_name] if model_name else outcomes

"""The canary flow: judge a model's ``canary`` version against ``production`` on the same traffic, then act.

The gateway sends the model's canary share of requests to the canary (sticky by entity key or request id)
and logs every answer with its role; labels join by request id whenever they arrive. One run of this flow:

1. find the canary and when it began (its ``promote`` event on the ``canary`` alias);
2. read the inference log from that moment: labelled rows answered by each side (per-row scores, higher is
   better, :mod:`flows.delivery.scores`) and every request's latency and status (the ``requests`` records);
3. bound the difference of mean scores with a confidence sequence that stays valid however often this flow
   looks (:mod:`flows.delivery.sequential`) and check the label-free guardrails over the minutes both sides
   served (:mod:`flows.delivery.guardrails`);
4. decide promote / rollback / continue (:mod:`flows.delivery.verdict`), write the evidence as a report
   (kind ``canary``) and, for a final verdict, conclude the canary through ``Registry.end_canary``: one
   transaction with the verdict, the alias moves and the reason, which the gateway then hot-loads.

:func:`run_canary` is the procedure as a plain function (tests, the CLI, the demo); :func:`canary` is the
Prefect flow around it: scheduled, and started by the ``esteira.model.canary-started`` event.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow

from core.inference_log import read_requests, read_window
from core.project import Project, current_project, optional_project
from flows.delivery.guardrails import GuardrailResult, check_guardrails
from flows.delivery.policy import CanaryPolicy
from flows.delivery.scores import default_metric, row_scores
from flows.delivery.sequential import Arm, Bound, confidence_sequence
from flows.delivery.verdict import CONTINUE, PROMOTE, Verdict, decide
from flows.monitor import _spec_of
from flows.reporting import LogReporter, Reporter
from flows.spec import models_with_alias
from flows.tasks import task_of
from flows.train import Step, direct_step, prefect_step
from registry import NotFound, Registry
from registry.api import CANARY, PRODUCTION
from registry.models import MonitoringReport

log = logging.getLogger("esteira.flows.canary")

ACTOR = "canary-flow"
SIDES = (PRODUCTION, CANARY)


@dataclass(frozen=True)
class CanaryState:
    """What is being judged: the two versions and when the canary began taking traffic."""

    model_name: str
    canary_version: int
    production_version: int
    started_at: datetime
    share: float | None
    task: str
    classes: list[Any] | None
    policy: CanaryPolicy


@dataclass
class Evidence:
    """The labelled rows' scores on each side and the request records of both, from the canary's start."""

    metric: str
    canary: np.ndarray
    production: np.ndarray
    requests: pd.DataFrame
    rows: dict[str, int]
    note: str = ""


@dataclass(frozen=True)
class CanaryOutcome:
    model_name: str
    canary_version: int
    production_version: int
    action: str
    reason: str
    report_id: int | None
    labelled: dict[str, int]
    bound: dict[str, Any]
    guardrails: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_state(registry: Registry, model_name: str, *, spec: str | None = None,
               policy: CanaryPolicy | dict[str, Any] | None = None, project: Project | None = None
               ) -> CanaryState | None:
    """The model's canary and production versions and its canary policy (the spec's ``canary`` section,
    with ``policy`` overriding fields), or None when the model has no canary or no production."""
    aliases = registry.aliases(model_name)
    if CANARY not in aliases or PRODUCTION not in aliases:
        return None
    mv = registry.get_version(model_name, aliases[CANARY])
    model_spec, _ = _spec_of(registry, mv, spec, project)
    base = model_spec.canary if model_spec is not None else CanaryPolicy()
    if isinstance(policy, CanaryPolicy):
        resolved = policy
    else:
        resolved = CanaryPolicy.model_validate({**base.model_dump(), **(policy or {})})
    started_at = registry.canary_started_at(model_name, mv.version)
    if started_at is None:
        raise LookupError(f"no promote event of {model_name}@{CANARY} to version {mv.version} in the audit log")
    signature = mv.signature or {}
    return CanaryState(model_name=model_name, canary_version=mv.version, production_version=aliases[PRODUCTION],
                       started_at=started_at,
                       share=registry.canary_share(model_name), task=task_of(signature),
                       classes=signature.get("classes"), policy=resolved)


def read_evidence(state: CanaryState, now: datetime, *, root: str | None = None) -> Evidence:
    """Scores of the labelled rows each version answered in its role since the canary began, and the request
    records of both (for the guardrails). Rows of another version (production moved meanwhile) are left out."""
    metric = state.policy.metric or default_metric(state.task)
    frame = read_window(state.model_name, state.started_at, now, root=root, role=None, classes=state.classes,
                        task=state.task)
    versions = {PRODUCTION: state.production_version, CANARY: state.canary_version}
    scores: dict[str, np.ndarray] = {}
    rows: dict[str, int] = {}
    notes = []
    for side in SIDES:
        served = frame[(frame["role"] == side) & (frame["model_version"] == versions[side])] if len(frame) else frame
        rows[side] = len(served)
        try:
            scores[side] = row_scores(served, task=state.task, classes=state.classes, metric=metric)
        except ValueError as exc:  # labels that are no class of the model: no label-based verdict
            scores[side] = np.empty(0)
            notes.append(f"{side}: {exc}")
    requests = read_requests(state.model_name, state.started_at, now, root=root)
    if len(requests):
        requests = requests[requests["model_version"] == requests["role"].map(versions)]
    return Evidence(metric, scores[CANARY], scores[PRODUCTION], requests, rows, "; ".join(notes))


def judge(state: CanaryState, evidence: Evidence, now: datetime) -> tuple[Verdict, Bound, GuardrailResult]:
    """The verdict on the evidence: pure, so a test can call it on any numbers."""
    policy = state.policy
    bound = confidence_sequence(Arm.of(evidence.canary), Arm.of(evidence.production), alpha=policy.alpha,
                                planned_labels=policy.planned_labels)
    guardrails = check_guardrails(evidence.requests, policy)
    verdict = decide(bound, guardrails, policy, started_at=state.started_at, now=now, metric=evidence.metric)
    return verdict, bound, guardrails


def _report(state: CanaryState, evidence: Evidence, verdict: Verdict, bound: Bound, guardrails: GuardrailResult,
            now: datetime, flow_run_id: str | None) -> MonitoringReport:
    performance = {
        "metric": evidence.metric, "production_version": state.production_version,
        "canary_version": state.canary_version, "share": state.share,
        "labelled": {CANARY: int(len(evidence.canary)), PRODUCTION: int(len(evidence.production))},
        "served_rows": evidence.rows,
        "mean": {CANARY: float(np.mean(evidence.canary)) if len(evidence.canary) else None,
                 PRODUCTION: float(np.mean(evidence.production)) if len(evidence.production) else None},
        "bound": bound.to_json(), "guardrails": guardrails.to_json(), "evidence": verdict.evidence,
        "policy": state.policy.model_dump(mode="json"), "note": evidence.note,
    }
    return MonitoringReport(model_name=state.model_name, kind="canary", version=state.canary_version,
                            window_start=state.started_at, window_end=now,
                            n_rows=sum(evidence.rows.values()), n_labelled=len(evidence.canary) + len(evidence.production),
                            status="ok", performance=performance, decision=verdict.action,
                            reason=verdict.reason[:4000], flow_run_id=flow_run_id)


def verdict_markdown(state: CanaryState, report: MonitoringReport, console_url: str | None = None) -> str:
    """The verdict as a person reads it in the Prefect UI: the action and why, then the evidence."""
    perf = report.performance
    bound, guard = perf["bound"], perf["guardrails"]
    lines = [f"# Canary of {state.model_name}: v{state.canary_version} against production "
             f"v{state.production_version}", "", f"**Verdict: {report.decision}**: {report.reason}", "",
             "| | canary | production |", "|---|---|---|",
             f"| labelled rows | {perf['labelled'][CANARY]} | {perf['labelled'][PRODUCTION]} |",
             f"| mean {perf['metric']} | {_num(perf['mean'][CANARY])} | {_num(perf['mean'][PRODUCTION])} |"]
    for side_key, title in (("error_rate", "error rate"), ("p99_ms", "p99 latency (ms)"), ("requests", "requests")):
        sides = guard.get("sides", {})
        lines.append(f"| {title} | {_num(sides.get(CANARY, {}).get(side_key))} | "
                     f"{_num(sides.get(PRODUCTION, {}).get(side_key))} |")
    lines += ["", f"Difference (canary - production): {_num(bound.get('estimate'))}, "
              f"{100 * (1 - bound['alpha']):.0f}% confidence sequence [{_num(bound.get('lower'))}, "
              f"{_num(bound.get('upper'))}] (margin {perf['policy']['margin']}).",
              f"Guardrails: {'; '.join(guard.get('breached') or []) or 'none breached'}."]
    if console_url and report.id is not None:
        lines += ["", f"[The report in the console]({console_url.rstrip('/')}/reports/{report.id})"]
    return "\n".join(lines)


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:+.4f}" if abs(value) < 1 else f"{value:,.1f}"
    return str(value)


def run_canary(
    model_name: str,
    *,
    registry: Registry | None = None,
    spec: str | None = None,
    policy: CanaryPolicy | dict[str, Any] | None = None,
    project: Project | str | None = None,
    now: datetime | None = None,
    root: str | None = None,
    reporter: Reporter | None = None,
    flow_run_id: str | None = None,
    step: Step = direct_step,
    act: bool = True,
) -> CanaryOutcome | None:
    """Judge ``model_name``'s canary once; with ``act``, conclude it on a final verdict. None: no canary.

    ``root`` is the inference log's root (default: the settings'); ``now`` the end of the evidence window.
    """
    from core.settings import get_settings

    registry = registry or Registry.from_url()
    reporter = reporter or LogReporter()
    now = now or datetime.now(UTC)
    state = step(load_state, registry, model_name, spec=spec, policy=policy, project=optional_project(project),
                 name="load-canary", retries=2)
    if state is None:
        log.info("%s has no canary (or no production) to judge", model_name)
        return None
    evidence = step(read_evidence, state, now, root=root, name="read-evidence", retries=2)
    verdict, bound, guardrails = judge(state, evidence, now)
    report = step(registry.record_report, _report(state, evidence, verdict, bound, guardrails, now, flow_run_id),
                  name="record-verdict", retries=2)
    reason = verdict.reason
    if act and verdict.action != CONTINUE:
        details = {"report_id": report.id, "metric": evidence.metric, "bound": bound.to_json(),
                   "guardrails": guardrails.breached, "production_version": state.production_version}
        try:  # one transaction, compare-and-set on the judged version: not retried, never applied twice
            step(registry.end_canary, model_name, promote=verdict.action == PROMOTE,
                 reason=f"canary verdict (report {report.id}): {verdict.reason}"[:4000], actor=ACTOR,
                 details=details, version=state.canary_version, name="conclude-canary")
        except NotFound as exc:  # another judge concluded (or someone ended) this canary meanwhile
            reason = f"{verdict.reason}; not applied: {exc}"
            report = registry.update_report(report.id, reason=reason[:4000])  # type: ignore[arg-type]
    reporter.markdown(f"canary-{model_name.lower().replace('_', '-').replace('.', '-')}-verdict",
                      verdict_markdown(state, report, get_settings().resolved_console_url),
                      f"Canary verdict {report.id} of {model_name}")
    log.info("canary %s v%s vs v%s: %s (%s)", model_name, state.canary_version, state.production_version,
             verdict.action, verdict.reason)
    return CanaryOutcome(model_name=model_name, canary_version=state.canary_version,
                         production_version=state.production_version, action=verdict.action, reason=reason,
                         report_id=report.id, labelled={CANARY: len(evidence.canary),
                                                        PRODUCTION: len(evidence.production)},
                         bound=bound.to_json(), guardrails=guardrails.to_json())


# -- Prefect -------------------------------------------------------------------------------------------------


@flow(name="canary", log_prints=True)
def canary(model_name: str | None = None, spec: str | None = None, policy: dict[str, Any] | None = None,
           project: str | None = None, act: bool = True) -> dict[str, Any]:
    """Judge canaries: ``model_name``'s, or (none given) every model of the project that has one, which is
    what the schedule does; the ``esteira.model.canary-started`` event starts it for the model at once.

    ``policy`` overrides fields of the spec's canary policy (``{"alpha": 0.01}``); ``act=False`` writes the
    verdict report without moving any alias. The registry and the inference log are the settings' ones.
    Artifact: ``canary-<model>-verdict`` (markdown: the verdict and its evidence).
    """
    from prefect.runtime import flow_run

    from flows.reporting import PrefectReporter

    registry = Registry.from_url()
    try:
        names = [model_name] if model_name else models_with_alias(registry, current_project(project), CANARY)
        outcomes = {}
        for name in names:
            outcome = run_canary(name, registry=registry, spec=spec, policy=policy, project=project,
                                 reporter=PrefectReporter(), flow_run_id=str(flow_run.id) if flow_run.id else None,
                                 step=prefect_step, act=act)
            outcomes[name] = outcome.to_dict() if outcome else {"action": "none", "reason": "no canary"}
    finally:
        registry.close()
    return outcomes[model_name] if model_name else outcomes

"""The retrain flow: the training flow on fresh data, started by a monitor's retrain decision.

A thin wrapper by design: validation, the search on Ray, the comparison with production on the same
holdout and the promotion rule are the training procedure's (:func:`flows.train.train`), so a
retrain is held to exactly the bar of any training. What this adds: which spec to use (the one
production was trained with, so a retrain does not silently change the model's definition), the
reason and scores it was started for, and the link back to the monitoring report: the report gets
this run's id (``triggered_run``) when it starts, which confirms the monitor's request (until then the
request holds the cool-down only briefly, see :mod:`flows.monitoring.decision`), and the outcome when it
ends, including "data failed validation, production unchanged".

Started by the ``esteira.model.retrain-requested`` event through the retrain deployment's trigger
(``deployments.yaml``), or in-process by the monitor when there is no Prefect server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from prefect import flow

from core.project import Project, optional_project
from flows.errors import DataValidationError
from flows.features import FeatureFetcher
from flows.monitoring.trigger import RETRAIN_FLOW
from flows.reporting import LogReporter, Reporter
from flows.spec import ModelSpec, load_spec, resolve_spec
from flows.train import Step, TrainResult, direct_step, prefect_step, train
from registry import Registry
from registry.errors import NotFound

log = logging.getLogger("esteira.flows.retrain")


def spec_for_retrain(registry: Registry, model_name: str, spec: str | None = None,
                     project: Project | None = None, now: datetime | None = None) -> ModelSpec:
    """The spec to retrain with, its label window moved forward to now.

    The one given; else the spec production was trained with (so a retrain does not silently change the
    model's definition); else the project's spec of that name. A relative window (``-90d``) already
    follows the clock; an absolute one keeps its width and ends now: "retrain on fresh data".
    """
    chosen: ModelSpec | None = None
    if spec:
        chosen = resolve_spec(spec, project)
    else:
        try:
            mv = registry.get_by_alias(model_name, "production")
        except NotFound:
            mv = None
        if mv is not None and mv.training_run_id is not None:
            stored = dict(registry.get_run(mv.training_run_id).spec or {})
            if stored:
                chosen = load_spec(stored)
    if chosen is None:
        chosen = resolve_spec(model_name, project)
    return chosen.model_copy(update={"labels": chosen.labels.moved_forward(now)})


@dataclass(frozen=True)
class RetrainOutcome:
    """``status``: 'promoted', 'registered' (not promoted) or 'rejected' (data failed validation)."""

    status: str
    summary: str
    version: int | None = None
    result: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "summary": self.summary,
            "version": self.version,
            "result": self.result,
        }


def _note_on_report(
    registry: Registry, model_name: str, report_id: int | None, *, note: str | None = None, **fields: Any
) -> None:
    """Set ``fields`` on the monitoring report and append ``note`` to its reason.

    Best effort: a retrain must not fail because its report cannot be annotated.
    """
    if report_id is None:
        return
    try:
        if note:
            base = registry.get_report(report_id).reason
            fields["reason"] = (f"{base}; {note}" if base else note)[:4000]
        registry.update_report(report_id, **fields)
    except Exception:
        log.exception("could not annotate monitoring report %s", report_id)


def run_retrain(
    model_name: str,
    *,
    reason: str = "",
    drift_share: float = 0.0,
    metric_drop: float = 0.0,
    report_id: int | None = None,
    spec: str | None = None,
    project: Project | str | None = None,
    registry: Registry | None = None,
    fetcher: FeatureFetcher | None = None,
    entities: pd.DataFrame | None = None,
    reporter: Reporter | None = None,
    parallel: bool = True,
    flow_run_id: str | None = None,
    step: Step = direct_step,
) -> RetrainOutcome:
    """Train ``model_name`` again on fresh data (the spec's entity window, relative to now).

    Failed data validation is an expected outcome, not a crash of the caller's loop: it returns
    status 'rejected' with the validation summary, with no version registered and no alias moved.
    Other failures (search failed, feature store down) are recorded on the report and raised.
    """
    registry = registry or Registry.from_url()
    run_ref = flow_run_id or "in-process"
    _note_on_report(registry, model_name, report_id, triggered_run=run_ref)
    log.info(
        "retraining %s: %s (drift share %.2f, metric drop %.4f)",
        model_name,
        reason or "no reason given",
        drift_share,
        metric_drop,
    )
    try:
        resolved = optional_project(project)
        model_spec = spec_for_retrain(registry, model_name, spec, resolved)
        result: TrainResult = train(
            model_spec,
            project=resolved,
            registry=registry,
            fetcher=fetcher,
            entities=entities,
            reporter=reporter or LogReporter(),
            parallel=parallel,
            flow_run_id=flow_run_id,
            actor=f"retrain/{run_ref}",
            step=step,
        )
    except DataValidationError as exc:
        summary = f"retrain {run_ref}: new data failed validation, production unchanged: {exc}"
        _note_on_report(registry, model_name, report_id, note=summary)
        return RetrainOutcome("rejected", summary)
    except Exception as exc:
        summary = f"retrain {run_ref} failed, production unchanged: {type(exc).__name__}: {exc}"
        _note_on_report(registry, model_name, report_id, note=summary)
        raise
    status = "promoted" if result.promoted else "registered"
    summary = (
        f"retrain {run_ref}: v{result.version} {'promoted to' if result.promoted else 'set as'} "
        f"{result.alias} ({result.reason})"
    )
    _note_on_report(registry, model_name, report_id, note=summary)
    return RetrainOutcome(status, summary, result.version, result.to_dict())


@flow(name=RETRAIN_FLOW, log_prints=True)
def retrain(
    model_name: str,
    reason: str = "",
    drift_share: float = 0.0,
    metric_drop: float = 0.0,
    report_id: int | None = None,
    spec: str | None = None,
    project: str | None = None,
    parallel: bool = True,
) -> Any:
    """Retrain a model on fresh data because a monitor decided so (``reason``, ``drift_share``,
    ``metric_drop`` and ``report_id`` come from the ``esteira.model.retrain-requested`` event payload).

    Ends Failed (with the reason) when the new data fails validation: nothing was registered, and a
    failed run is what an operator watching the UI or an automation should see. The registry is the
    settings' one (the worker's ``ESTEIRA_DATABASE_URL``), never a parameter: Prefect shows parameters.
    Artifacts: the training flow's (``validation-report``, ``trial-leaderboard``, ``evaluation``).
    """
    from prefect.runtime import flow_run
    from prefect.states import Failed

    from flows.reporting import PrefectReporter

    registry = Registry.from_url()
    try:
        outcome = run_retrain(
            model_name,
            reason=reason,
            drift_share=drift_share,
            metric_drop=metric_drop,
            report_id=report_id,
            spec=spec,
            project=project,
            registry=registry,
            reporter=PrefectReporter(),
            parallel=parallel,
            flow_run_id=str(flow_run.id) if flow_run.id else None,
            step=prefect_step,
        )
    finally:
        registry.close()
    if outcome.status == "rejected":
        return Failed(message=outcome.summary)
    return outcome.to_dict()

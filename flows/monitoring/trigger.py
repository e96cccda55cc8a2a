"""A retrain decision becomes action: a Prefect event, or the retrain flow run in-process.

With a Prefect server, the monitor only emits ``esteira.model.retrain-requested``; the retrain
deployment's trigger in ``deployments.yaml`` turns the event into a run on a worker, so the monitor
neither waits for training nor needs to know where it runs. Without a server (embedded, ephemeral
mode) nothing would listen to the event, so the same decision runs the retrain flow directly.

An emitted event is a request, not a run: Prefect's events client drops what it cannot deliver (a server
down or restarting). :func:`find_retrain_runs` is how a later monitor pass learns that a run was created for
a request (:mod:`flows.monitoring.decision` says what an unconfirmed request counts for).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flows.monitoring.decision import EVENT_PREFIX
from flows.monitoring.policy import TriggerMode
from registry.events import model_resource_id as model_resource_id  # one resource id for every esteira event
from registry.events import prefect_resource

RETRAIN_EVENT = "esteira.model.retrain-requested"
RETRAIN_FLOW = "retrain"
"""The retrain flow's name (:mod:`flows.retrain`): its runs, whichever deployment created them, answer requests."""
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TriggerResult:
    """``mode`` used; ``run`` goes to the report's ``triggered_run``; ``detail`` to its reason."""

    mode: str
    run: str | None
    detail: str = ""


def server_configured() -> bool:
    """Whether a Prefect API (server or Cloud) is configured; ephemeral mode has none."""
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url or os.environ.get("PREFECT_API_URL"))


def resolve_mode(mode: TriggerMode) -> str:
    if mode != "auto":
        return mode
    return "event" if server_configured() else "direct"


def retrain_payload(
    *,
    model_name: str,
    version: int | None,
    report_id: int,
    reason: str,
    drift_share: float | None,
    performance: dict[str, Any],
    project: str | None = None,
) -> dict[str, Any]:
    """The event payload; also the retrain flow's parameters (``deployments.yaml`` templates them).

    Numbers are always numbers (0.0 rather than None): a deployment trigger templates the payload
    into parameters, and "None" would not validate as a float.
    """
    return {
        "model_name": model_name,
        "version": version if version is not None else 0,
        "report_id": report_id,
        "reason": reason,
        "drift_share": float(drift_share or 0.0),
        "metric": performance.get("metric") or "",
        "metric_value": float(performance.get("value") or 0.0),
        "metric_drop": float(performance.get("drop") or 0.0),
        "project": project or "",
    }


def emit_retrain_event(payload: dict[str, Any]) -> str | None:
    """Emit the event; its id (``event:<uuid>``), or None when Prefect is not emitting events here."""
    from prefect.events import emit_event

    name = payload["model_name"]
    event = emit_event(
        event=RETRAIN_EVENT,
        resource=prefect_resource(name),
        payload=payload,
    )
    return f"{EVENT_PREFIX}{event.id}" if event is not None else None


def find_retrain_runs(report_ids: Collection[int], since: datetime) -> dict[int, str]:
    """Runs of the retrain flow created for these reports (their ``report_id`` parameter) since ``since``,
    started or still waiting for a worker: report id -> flow run id. Empty when the API cannot be asked: an
    unanswered request stays unconfirmed, which is the safe side (the next decision asks again).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )

    wanted = set(report_ids)
    try:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[RETRAIN_FLOW])),
                flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since)),
                limit=200,
            )
    except Exception as exc:  # noqa: BLE001 - a monitor pass must not fail because Prefect is away
        log.warning("could not look up retrain runs (%s: %s); requests stay unconfirmed", type(exc).__name__, exc)
        return {}
    found: dict[int, str] = {}
    for run in runs:
        report_id = run.parameters.get("report_id")
        if isinstance(report_id, str) and report_id.isdigit():  # a template may render it as text
            report_id = int(report_id)
        if report_id in wanted:
            found.setdefault(report_id, str(run.id))
    return found


def run_direct(payload: dict[str, Any], spec: str | None) -> TriggerResult:
    """Run the retrain flow here and now; a failed retrain is reported, never raised into the monitor.

    The retrain flow writes its run id and outcome onto the report itself (it has ``report_id``), so
    the detail returned here only matters when it could not (it crashed first).
    """
    from prefect.client.schemas.objects import State

    from flows.retrain import retrain

    # a sync flow called with return_state=True returns its State (the stubs cannot tell)
    state: State[Any] = retrain(  # type: ignore[assignment]
        model_name=payload["model_name"],
        reason=payload["reason"],
        drift_share=payload["drift_share"],
        report_id=payload["report_id"],
        metric_drop=payload["metric_drop"],
        spec=spec,
        project=payload.get("project") or None,
        return_state=True,
    )
    run_id = str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None
    if state.is_completed():
        return TriggerResult("direct", run_id)
    return TriggerResult(
        "direct", run_id, state.message or f"retrain run {run_id} {state.type.value.lower()}"
    )

"""A retrain the monitor asks for through the Prefect event counts once a run of the retrain flow exists.

An event emitted while the Prefect server is down is dropped by Prefect's events client: nothing runs. The
monitor records such a retrain as requested, holds the cool-down for it only for a short grace, and asks again
on its next retrain decision; a request whose run the automation created is confirmed and holds the whole
cool-down. The server here is a real one (Prefect's test harness) with the retrain deployment and the trigger
of ``deployments.yaml``, and no worker: the run is created, never executed.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import ESTEIRA_ROOT
from flows.monitor import run_monitor
from flows.monitoring.decision import active_cooldown, lost_requests, retrain_status
from flows.monitoring.policy import MonitoringPolicy
from registry.models import MonitoringReport
from tests.prefect_stack import flow_runs_of, free_port, wait_for
from tests.test_monitor import MODEL, make_frame, production  # noqa: F401 - production is a fixture

POLICY = {"cooldown_minutes": 30, "request_grace_minutes": 2}


def _report(triggered_run: str | None, minutes_ago: float, now: datetime) -> MonitoringReport:
    return MonitoringReport(model_name=MODEL, decision="retrain", triggered_run=triggered_run,
                            created_at=now - timedelta(minutes=minutes_ago))


def test_the_cooldown_holds_for_a_started_run_and_only_briefly_for_a_request() -> None:
    now = datetime.now(UTC)
    policy = MonitoringPolicy(**POLICY)
    started = _report("3f1c2d9e-run", 20, now)
    fresh_request = _report("event:1b2c", 1, now)
    old_request = _report("event:9a8b", 5, now)
    stale_claim = _report("pending", 5, now)
    assert [retrain_status(r.triggered_run) for r in (started, fresh_request, stale_claim)] == [
        "started", "requested", "requested"]
    assert active_cooldown([fresh_request, started], policy, now) is fresh_request
    assert active_cooldown([old_request, stale_claim], policy, now) is None
    assert active_cooldown([old_request, started], policy, now) is started
    assert lost_requests([fresh_request, old_request, stale_claim, started], policy, now) == [old_request, stale_claim]


@pytest.fixture(scope="module")
def prefect_with_retrain_trigger() -> Iterator[None]:
    """A temporary Prefect server with the ``retrain/on-drift`` deployment and its event trigger, as
    ``deployments.yaml`` declares them.

    Its own server, not the session's (``prefect_harness``): the trigger would turn any retrain request sent
    to a shared server into a run, and the monitor confirms a request by any run of the retrain flow with the
    report's id, which the runs other modules make for their own registries' reports (ids from 1) would match.
    """
    from prefect.events import DeploymentTriggerTypes
    from prefect.testing.utilities import prefect_test_harness
    from pydantic import TypeAdapter

    from flows.retrain import retrain

    declared = yaml.safe_load(Path(ESTEIRA_ROOT, "deployments.yaml").read_text())["deployments"]
    on_drift = next(d for d in declared if d["name"] == "on-drift")
    triggers = [TypeAdapter(DeploymentTriggerTypes).validate_python(t) for t in on_drift["triggers"]]
    with prefect_test_harness(server_startup_timeout=90):
        retrain.to_deployment(name="on-drift", triggers=triggers).apply()
        yield


@pytest.mark.slow
def test_a_retrain_requested_while_prefect_is_down_is_asked_again_and_confirmed_by_its_run(
    prefect_with_retrain_trigger: None, registry: Any, production: Any  # noqa: F811 - the imported fixture
) -> None:
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    shifted = make_frame(400, 8, shift=1.0)

    def monitor(now: datetime | None = None) -> Any:
        return run_monitor(MODEL, registry=registry, frame=shifted, trigger="event", policy=POLICY, now=now)

    # Prefect keeps one events worker per client type, not per API URL: the one the registry's own events
    # (register, promote) started still sends to the live server. Drain it so this pass gets a worker of its own.
    EventsWorker.drain_all()
    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):  # nothing listens
        dropped = monitor()
        EventsWorker.drain_all()  # the pass's process ends here: Prefect's events client gives up, event dropped
    assert dropped.decision == "retrain" and dropped.retrain == "requested"
    assert dropped.triggered_run is not None and dropped.triggered_run.startswith("event:")

    # The server answers again; the next pass comes after the grace: the dropped request does not hold it.
    later = datetime.now(UTC) + timedelta(minutes=3)
    again = monitor(later)
    assert again.retrain == "requested" and again.triggered_run not in (None, dropped.triggered_run)
    given_up = registry.get_report(dropped.report_id)
    assert given_up.triggered_run is None and f"report {again.report_id} asked again" in given_up.reason

    (run,) = wait_for(lambda: [r for r in flow_runs_of("retrain/on-drift")
                               if r.parameters.get("report_id") == again.report_id], 60, "the triggered retrain run")
    # Past the grace again, but a run exists for the second request now: it is confirmed and holds the cool-down.
    held = monitor(later + timedelta(minutes=3))
    assert held.decision == "retrain" and held.retrain is None
    assert f"cool-down: retrain {run.id} was started by report {again.report_id}" in held.reason
    assert registry.get_report(again.report_id).triggered_run == str(run.id)
    assert len(flow_runs_of("retrain/on-drift")) == 1

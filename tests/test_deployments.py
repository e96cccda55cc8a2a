"""deployments.yaml: statically against the flow files (fast), and against a real local Prefect
stack, server + `esteira-local` process worker (slow).

The same code as `esteira up` starts the stack of a copy of the churn example in a temporary ESTEIRA_HOME
(its own PREFECT_HOME, a free port on 127.0.0.1, scheduler off so schedules create no runs during the
test). Then: every
deployment of the file is registered with its schedule or trigger; materialize then train run on
the worker to COMPLETED; the monitor's retrain event starts a run of the retrain deployment through the
automation (the continuous-training path); `up` again reuses the running processes; `down` stops them.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import ESTEIRA_ROOT, Settings
from esteira.stack import WORK_POOL, StackInfo, pid_running, registered_deployments, stack_status, start_stack
from tests.prefect_stack import flow_runs_of, free_port, running_stack, wait_for

RETRAIN_EVENT = "esteira.model.retrain-requested"


def _file_deployments() -> list[dict[str, Any]]:
    return yaml.safe_load((ESTEIRA_ROOT / "deployments.yaml").read_text())["deployments"]


def _flow_signature(entrypoint: str) -> dict[str, bool]:
    """Parameter name -> has a default, of the entrypoint's function, read with ``ast`` (no import:
    the fast tier must not pay for Ray and Feast)."""
    path, func = entrypoint.rsplit(":", 1)
    tree = ast.parse((ESTEIRA_ROOT / path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == func:
            assert any("flow" in ast.unparse(d) for d in node.decorator_list), f"{entrypoint} is not a @flow"
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            defaults = [False] * (len(node.args.posonlyargs + node.args.args) - len(node.args.defaults))
            defaults += [True] * len(node.args.defaults) + [d is not None for d in node.args.kw_defaults]
            return {a.arg: has for a, has in zip(args, defaults, strict=True)}
    raise AssertionError(f"{func} not found in {path}")


@pytest.mark.parametrize("spec", _file_deployments(), ids=lambda spec: spec["name"])
def test_deployment_matches_its_flow(spec: dict[str, Any]) -> None:
    """Entrypoints, parameters and trigger parameters name what the flow functions accept, and
    every deployment goes to the local process pool without a pull step (deploy records its own folder)."""
    if not (ESTEIRA_ROOT / spec["entrypoint"].rsplit(":", 1)[0]).is_file():
        pytest.fail(f"{spec['entrypoint']} does not exist")
    signature = _flow_signature(spec["entrypoint"])
    given = set(spec.get("parameters") or {})
    assert given <= set(signature), f"unknown parameters {given - set(signature)}"
    for trigger in spec.get("triggers") or []:
        templated = set(trigger.get("parameters") or {})
        assert templated <= set(signature), f"unknown trigger parameters {templated - set(signature)}"
        assert {p for p, has_default in signature.items() if not has_default} <= templated | given
    assert spec["work_pool"]["name"] == WORK_POOL
    assert "pull" not in spec


def test_retrain_trigger_listens_to_the_monitor_event() -> None:
    from flows.monitoring.trigger import RETRAIN_EVENT as emitted
    from flows.monitoring.trigger import model_resource_id

    (retrain,) = [spec for spec in _file_deployments() if spec["name"] == "on-drift"]
    (trigger,) = retrain["triggers"]
    assert trigger["expect"] == [emitted] == [RETRAIN_EVENT]
    assert model_resource_id("churn").startswith(trigger["match"]["prefect.resource.id"].rstrip("*"))


def test_canary_trigger_listens_to_the_registrys_canary_started_event() -> None:
    from registry.events import CANARY_STARTED, model_resource_id

    (judge,) = [spec for spec in _file_deployments() if spec["entrypoint"] == "flows/canary.py:canary"]
    (trigger,) = judge["triggers"]
    assert trigger["expect"] == [CANARY_STARTED]
    assert model_resource_id("churn").startswith(trigger["match"]["prefect.resource.id"].rstrip("*"))
    assert judge["schedules"], "the canary flow also looks on a schedule"


def test_down_never_signals_a_recycled_pid(tmp_path: Path) -> None:
    """A stale stack.json (after a reboot) whose pid now belongs to another session leader."""
    import subprocess
    import sys

    from esteira.stack import stop_stack

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        settings = Settings(home=tmp_path / "home", prefect_port=free_port())
        settings.home.mkdir(parents=True)
        stale = StackInfo(api_url="http://127.0.0.1:1/api", ui_url="http://127.0.0.1:1", prefect_home="",
                          work_pool=WORK_POOL, project_dir=str(ESTEIRA_ROOT), server_pid=other.pid,
                          worker_pid=other.pid)
        (settings.home / "stack.json").write_text(stale.to_json())
        assert not pid_running(other.pid)
        assert stop_stack(settings) == []
        assert other.poll() is None, "esteira down signalled a process it did not start"
    finally:
        other.kill()
        other.wait()


def test_stack_env_points_only_at_the_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Children never inherit a variable that would send them to the user's server, home or profile."""
    from esteira.stack import child_env, stack_env

    monkeypatch.setenv("PREFECT_API_URL", "http://example.invalid/api")
    monkeypatch.setenv("PREFECT_PROFILE", "users-profile")
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "DEBUG")
    settings = Settings(home=tmp_path / "home", project=tmp_path / "project", prefect_port=4999)
    env = child_env(settings)
    assert env["ESTEIRA_PROJECT"] == str((tmp_path / "project").resolve())  # flow runs act on the stack's project
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4999/api"
    assert env["PREFECT_HOME"] == str(settings.home / "prefect")
    assert env["ESTEIRA_HOME"] == str(settings.home)
    assert "PREFECT_PROFILE" not in env
    assert env["PREFECT_LOGGING_LEVEL"] == "DEBUG"  # tuning passes through
    assert stack_env(settings).items() <= env.items()


def _full_names(settings: Settings) -> dict[str, str]:
    """Deployment name -> ``flow-name/deployment-name`` as the server knows them (the flow name
    comes from the ``@flow`` decorator, so it is read back rather than guessed)."""
    return {full.split("/", 1)[1]: full for full in registered_deployments(settings)}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, StackInfo]]:
    from tests.projects import copy_example, project_module

    base = tmp_path_factory.mktemp("stack")
    project = copy_example("churn", base / "churn")
    project_module(project, "generator").generate_batch(project / "data", n_customers=300)
    with running_stack(base / "esteira-home", project=project) as (settings, info):
        yield settings, info
    assert not pid_running(info.server_pid), "esteira down left the server running"
    assert not pid_running(info.worker_pid), "esteira down left the worker running"


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_every_deployment_is_registered(stack: tuple[Settings, StackInfo]) -> None:
    settings, info = stack
    assert not info.skipped_deployments, f"flow files missing for {info.skipped_deployments}"
    assert {spec["name"] for spec in _file_deployments()} <= set(_full_names(settings))
    # Isolation: the server's database is under the temporary home, not ~/.prefect.
    assert Path(info.prefect_home).is_relative_to(settings.home)
    assert any(Path(info.prefect_home).glob("*.db")), "the server did not use the stack's PREFECT_HOME"


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_schedules_pool_and_trigger_are_configured(stack: tuple[Settings, StackInfo]) -> None:
    from prefect.client.orchestration import get_client

    settings, _ = stack
    names = _full_names(settings)
    with get_client(sync_client=True) as client:
        for spec in _file_deployments():
            if spec["name"] not in names:
                continue  # reported by test_every_deployment_is_registered
            deployment = client.read_deployment_by_name(names[spec["name"]])
            assert deployment.work_pool_name == WORK_POOL
            assert len(deployment.schedules) == len(spec.get("schedules") or []), spec["name"]
            assert deployment.entrypoint == spec["entrypoint"]
        monitor = client.read_deployment_by_name(names["every-15-minutes"])
        assert monitor.schedules[0].schedule.interval.total_seconds() == 900
        automations = client.read_automations_by_name("retrain-when-monitoring-asks")
    assert len(automations) == 1
    assert automations[0].trigger.expect == {RETRAIN_EVENT}


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_the_server_turns_a_schedule_into_scheduled_runs(stack: tuple[Settings, StackInfo]) -> None:
    """The insert the scheduler service does, asked for explicitly (the test server runs without
    the scheduler). Regression: with SQLAlchemy 2.1, Prefect 3.8's bulk insert of scheduled runs
    fails ("Can't evaluate bulk DML statement") and no schedule ever produces a run."""
    from datetime import UTC, datetime, timedelta

    import httpx
    from prefect.client.orchestration import get_client

    settings, info = stack
    with get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name(_full_names(settings)["nightly"])
    start = datetime.now(UTC) + timedelta(days=30)  # far ahead: the worker must not pick them up
    for attempt in range(5):  # Prefect answers 503 while its SQLite database is locked; its own client retries too
        response = httpx.post(f"{info.api_url}/deployments/{nightly.id}/schedule",
                              json={"start_time": start.isoformat(), "max_runs": 2, "min_runs": 2}, timeout=30)
        if response.status_code != 503:
            break
        time.sleep(1 + attempt)
    response.raise_for_status()
    runs = [r for r in flow_runs_of(_full_names(settings)["nightly"]) if r.state and r.state.is_scheduled()]
    assert len(runs) == 2
    assert all((r.expected_start_time.hour, r.expected_start_time.minute) == (2, 30) for r in runs)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_materialize_then_train_run_to_completed_on_the_worker(stack: tuple[Settings, StackInfo]) -> None:
    """Two deployments in the order the loop runs them, with their file parameters (none name the project
    or a model: the worker's ESTEIRA_PROJECT does): materialize (real Feast) then train every spec (real Ray
    in the flow-run process), each to COMPLETED on the process worker; the new model version lands in the
    registry of the stack's ESTEIRA_HOME."""
    from prefect.deployments import run_deployment

    from registry import Registry

    settings, _ = stack
    names = _full_names(settings)
    materialized = run_deployment(names["hourly"], timeout=150)
    assert materialized.state is not None and materialized.state.is_completed(), materialized.state
    trained = run_deployment(names["nightly"], timeout=240)
    assert trained.state is not None and trained.state.is_completed(), trained.state
    registry = Registry.from_url(settings.resolved_database_url)
    try:
        versions = registry.list_versions("churn")
    finally:
        registry.close()
    assert versions and versions[0].flow_run_id == str(trained.id)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_retrain_event_starts_the_retrain_deployment(stack: tuple[Settings, StackInfo]) -> None:
    """What the monitor does when it decides to retrain: one event, and the automation runs the deployment."""
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    settings, _ = stack
    name = _full_names(settings)["on-drift"]
    assert flow_runs_of(name) == []
    emit_event(
        event=RETRAIN_EVENT,
        resource={"prefect.resource.id": "esteira.model.churn", "prefect.resource.name": "churn"},
        payload={"model_name": "churn", "reason": "drift", "drift_share": 0.5, "metric_drop": 0.0,
                 "report_id": 1},
    )
    EventsWorker.drain_all(timeout=15)
    runs = wait_for(lambda: flow_runs_of(name), 60, "the automation to create a retrain run")
    assert len(runs) == 1
    assert runs[0].parameters["model_name"] == "churn"
    assert runs[0].parameters["reason"] == "drift"
    assert runs[0].parameters["drift_share"] == 0.5
    # The worker picks it up (what it then does with tiny data is the retrain flow's business).
    wait_for(lambda: (r := flow_runs_of(name)[0]).state and (r.state.is_running() or r.state.is_final()),
             90, "the worker to start the retrain run")


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_up_again_reuses_the_running_stack(stack: tuple[Settings, StackInfo]) -> None:
    """`esteira up` twice: same processes, deployments upserted, still exactly one automation."""
    from prefect.client.orchestration import get_client

    settings, info = stack
    again = start_stack(settings, scheduler=False, timeout=120)
    assert (again.server_pid, again.worker_pid) == (info.server_pid, info.worker_pid)
    assert again.deployments == info.deployments
    assert again.timings_s["server"] < 5
    with get_client(sync_client=True) as client:
        assert len(client.read_automations_by_name("retrain-when-monitoring-asks")) == 1
    assert stack_status(settings).up

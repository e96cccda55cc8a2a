"""Every gateway replica records what it serves in the registry, so a reader sees all replicas at once.

The registry half runs on SQLite and on PostgreSQL; the gateway half runs a real ``ModelService`` (poll
loop, hot swap, heartbeat) on a real SQLite registry through its FastAPI app, without Ray Serve.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.app import build_app
from gateway.config import GatewayConfig
from gateway.service import ModelService
from gateway.testing import SIGNATURE_NUMERIC, example_row, numeric_classifier
from registry import GatewayReplica, NotFound, Registry
from tests.prefect_stack import wait_for

SERVING_V1 = {"scorer@production": {"version": 1, "flavor": "sklearn", "role": "serving"}}


@pytest.fixture(params=["sqlite", "postgresql"])
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    """A fresh registry on each database (PostgreSQL skips, saying why, when it is not running)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    registry = Registry.from_url(url, str(tmp_path / "artifacts"))
    yield registry
    registry.close()


def only(registry: Registry, replica_id: str) -> GatewayReplica:
    return next(r for r in registry.gateway_replicas() if r.replica_id == replica_id)


# -- the registry API ----------------------------------------------------------------------------------------


def test_a_replica_row_is_inserted_refreshed_and_stopped(reg: Registry) -> None:
    first = reg.record_replica("r1", host="node-a", pid=11, project="/srv/project", served=SERVING_V1)
    time.sleep(0.01)
    swapped = {"scorer@production": {"version": 2, "flavor": "sklearn", "role": "serving"},
               "scorer:1": {"version": 1, "flavor": "sklearn", "role": "pinned"}}
    reg.record_replica("r1", host="node-a", pid=11, project="/srv/project", served=swapped,
                       refused={"scorer:3": "IntegrityError: artifact hash mismatch"})

    [row] = reg.gateway_replicas()
    assert (row.replica_id, row.host, row.pid, row.project) == ("r1", "node-a", 11, "/srv/project")
    assert row.served == swapped and row.refused == {"scorer:3": "IntegrityError: artifact hash mismatch"}
    assert row.serving_version("scorer") == 2 and row.models == {"scorer"}
    assert row.started_at == first.started_at and row.seen_at > first.seen_at
    assert row.seen_at.tzinfo is not None
    assert abs(datetime.now(timezone.utc) - row.seen_at) < timedelta(seconds=30)
    assert row.stopped_at is None

    stopped = reg.stop_replica("r1")
    assert stopped.stopped_at is not None and only(reg, "r1").stopped_at is not None
    reg.record_replica("r1", host="node-a", pid=11, served=swapped)  # a heartbeat that was in flight at stop
    assert only(reg, "r1").stopped_at is not None, "a late heartbeat must not bring a stopped replica back"
    with pytest.raises(NotFound):
        reg.stop_replica("never-recorded")


def test_replicas_filter_by_model_and_by_when_last_seen(reg: Registry) -> None:
    reg.record_replica("idle", host="h", pid=1)
    time.sleep(0.4)
    reg.record_replica("a", host="h", pid=2, served=SERVING_V1)
    reg.record_replica("b", host="h", pid=3, served={
        "other@production": {"version": 4, "flavor": "sklearn", "role": "serving"},
        "scorer:7": {"version": 7, "flavor": "sklearn", "role": "pinned"}})

    assert [r.replica_id for r in reg.gateway_replicas()] == ["b", "a", "idle"]  # last seen first
    assert [r.replica_id for r in reg.gateway_replicas(model_name="scorer")] == ["b", "a"]
    assert [r.replica_id for r in reg.gateway_replicas(model_name="other")] == ["b"]
    assert reg.gateway_replicas(model_name="absent") == []
    assert [r.replica_id for r in reg.gateway_replicas(seen_within_s=0.3)] == ["b", "a"]
    assert [r.replica_id for r in reg.gateway_replicas(model_name="other", seen_within_s=0.3)] == ["b"]
    assert only(reg, "b").serving_version("scorer") is None  # held for a pinned route, not serving requests


def test_a_replica_start_prunes_rows_not_seen_for_long(reg: Registry) -> None:
    reg.record_replica("died", host="h", pid=1, served=SERVING_V1)
    reg.record_replica("stopped", host="h", pid=2)
    reg.stop_replica("stopped")
    time.sleep(0.6)
    reg.record_replica("alive", host="h", pid=3)
    reg.record_replica("alive", host="h", pid=3, prune_after_s=0.1)  # a heartbeat, not a start: no pruning
    assert {r.replica_id for r in reg.gateway_replicas()} == {"died", "stopped", "alive"}

    reg.record_replica("started", host="h", pid=4, prune_after_s=0.5)
    assert {r.replica_id for r in reg.gateway_replicas()} == {"alive", "started"}


# -- the gateway ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return {"v1": numeric_classifier("logistic", seed=0), "v2": numeric_classifier("logistic", seed=3)}


@pytest.fixture
def scorer(registry: Registry, models: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Registry:
    """``scorer`` v1 in production and v2 registered; replicas beat every 0.1 s."""
    from core.settings import get_settings

    monkeypatch.setenv("ESTEIRA_GATEWAY_HEARTBEAT_S", "0.1")
    get_settings.cache_clear()
    for key in ("v1", "v2"):
        registry.register_version("scorer", models[key], signature=SIGNATURE_NUMERIC)
    registry.promote("scorer", 1, reason="first")
    return registry


def replica_service(registry: Registry, home: Path, replica_id: str) -> ModelService:
    config = GatewayConfig(database_url=registry.url, artifact_root=registry.artifacts.root,
                           inference_log_uri=str(home / "inference"), log_inference=False, feast_lookup=False,
                           poll_interval_s=0.05)
    return ModelService.from_config(config, replica_id=replica_id)


def soon(condition: Any, what: str) -> None:
    wait_for(condition, 5.0, what, interval=0.02)


def predicted_version(client: TestClient) -> int:
    response = client.post("/v1/models/scorer/predict", json={"inputs": example_row()})
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


def test_a_replica_records_the_hot_swap_its_heartbeats_and_its_stop(scorer: Registry,
                                                                    esteira_home: Path) -> None:
    with TestClient(build_app(replica_service(scorer, esteira_home, "replica-a"))) as client:
        # written once the first sync is done
        soon(lambda: scorer.gateway_replicas(model_name="scorer"), "the first write")
        [row] = scorer.gateway_replicas()
        assert (row.replica_id, row.pid, row.stopped_at) == ("replica-a", os.getpid(), None)
        assert row.served == SERVING_V1 and row.refused == {}

        scorer.promote("scorer", 2, reason="better")
        soon(lambda: only(scorer, "replica-a").serving_version("scorer") == 2, "the hot swap's write")
        assert predicted_version(client) == 2
        pinned = only(scorer, "replica-a").served["scorer:1"]  # v1 stays loaded: an instant rollback
        assert pinned == {"version": 1, "flavor": "sklearn", "role": "pinned"}

        seen = only(scorer, "replica-a").seen_at
        # nothing changed: the heartbeat alone
        soon(lambda: only(scorer, "replica-a").seen_at > seen, "a heartbeat")
        assert scorer.gateway_replicas(seen_within_s=3 * 0.1 + 1)[0].replica_id == "replica-a"
    assert only(scorer, "replica-a").stopped_at is not None


def test_a_replica_keeps_serving_when_its_registry_url_becomes_unreachable(
        scorer: Registry, esteira_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.heartbeat")
    service = replica_service(scorer, esteira_home, "replica-b")
    manager = service.manager
    with TestClient(build_app(service)) as client:
        soon(lambda: scorer.gateway_replicas(model_name="scorer"), "the first write")
        reachable = manager._registry_factory
        unreachable = Registry("postgresql+psycopg://esteira@127.0.0.1:1/registry", scorer.artifacts.root,
                               migrate=False)  # nothing listens on port 1: every connection is refused
        manager._registry_factory, manager._registry = (lambda: unreachable), None
        soon(lambda: not manager.health.ok, "the registry to count as down")
        last_seen = only(scorer, "replica-b").seen_at

        until = time.monotonic() + 1.0  # ten heartbeats
        while time.monotonic() < until:
            assert predicted_version(client) == 1
            time.sleep(0.05)
        failures = [r for r in caplog.records if "replica-b" in r.getMessage() and "record" in r.getMessage()]
        assert len([r for r in failures if r.levelno == logging.WARNING]) == 1, "one warning, not one a tick"
        assert len([r for r in failures if r.levelno == logging.DEBUG]) >= 3
        assert only(scorer, "replica-b").seen_at == last_seen

        manager._registry_factory, manager._registry = reachable, None
        soon(lambda: only(scorer, "replica-b").seen_at > last_seen, "writes to resume")
        assert any("written again" in r.getMessage() for r in caplog.records)
        unreachable.close()
    assert only(scorer, "replica-b").stopped_at is not None

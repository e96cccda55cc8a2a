"""The gateway on real Ray Serve: hot swap under load, refusal, a third-party flavor, a PostgreSQL outage.

Serve starts once for the module on 127.0.0.1 and a free port (the session's ``ray_local`` cluster),
with one application on a SQLite registry and, when PostgreSQL is there, a second one on PostgreSQL.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import GatewayConfig
from gateway.testing import SIGNATURE_NUMERIC, example_row, free_port, numeric_classifier

pytestmark = pytest.mark.slow

ROW = example_row()
# Replicas run on this venv's interpreter: under `uv run`, Ray's uv hook would otherwise give workers a
# fresh environment synced from uv.lock, without the plugin the session installs (conftest.py's
# threshold_plugin), as a cluster image would have it installed in production.
ACTOR_OPTIONS = {"num_cpus": 0.25, "runtime_env": {"py_executable": sys.executable,
                                                   "env_vars": {"OMP_NUM_THREADS": "1", "WHYLOGS_NO_ANALYTICS": "1"}}}


def _config(registry: Any, home: Path, **extra: Any) -> dict[str, Any]:
    return GatewayConfig(database_url=registry.url, artifact_root=registry.artifacts.root,
                         inference_log_uri=str(home / "inference"), feast_lookup=False, poll_interval_s=0.2,
                         log_flush_interval_s=0.5, **extra).to_args()


@dataclass
class Served:
    url: str
    registry: Any
    versions: list[int] = field(default_factory=list)


@pytest.fixture(scope="module")
def serve_port(ray_local: None) -> Iterator[int]:
    from ray import serve

    serve.shutdown()  # another module may have left Serve up on another port
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"enable_access_log": False})
    yield port
    serve.shutdown()


@pytest.fixture(scope="module")
def sqlite_app(serve_port: int, threshold_plugin: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from ray import serve

    from gateway.deployment import Gateway
    from registry import Registry

    home = tmp_path_factory.mktemp("ray-sqlite")
    registry = Registry.from_url(f"sqlite:///{home}/registry.db", str(home / "artifacts"))
    versions = [registry.register_version("churn", numeric_classifier("logistic", seed=s),
                                          signature=SIGNATURE_NUMERIC).version for s in (0, 3, 7)]
    registry.promote("churn", versions[0])
    rule = registry.register_version("rule", {"feature": "support_calls", "threshold": 2.5}, flavor="threshold",
                                     signature={"inputs": [{"name": "support_calls", "dtype": "int64"}],
                                                "outputs": [{"name": "label"}, {"name": "margin"}]})
    registry.promote("rule", rule.version)
    app = Gateway.options(name="gw-sqlite", ray_actor_options=ACTOR_OPTIONS).bind(_config(registry, home))
    serve.run(app, name="esteira-sqlite", route_prefix="/")
    with httpx.Client(timeout=10) as client:
        _wait_ready(client, f"http://127.0.0.1:{serve_port}")
    yield Served(url=f"http://127.0.0.1:{serve_port}", registry=registry, versions=versions)
    serve.delete("esteira-sqlite")
    registry.close()


def _wait_ready(client: httpx.Client, url: str, timeout: float = 20.0) -> None:
    """What a load balancer does: wait for the replica's readiness before sending traffic."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.get(url + "/v2/health/ready").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "gateway never became ready"
        time.sleep(0.1)


def _predict(client: httpx.Client, url: str, path: str = "/v1/models/churn/predict") -> httpx.Response:
    return client.post(url + path, json={"inputs": ROW})


def test_serves_plain_and_v2_on_ray(sqlite_app: Served) -> None:
    with httpx.Client(timeout=10) as client:
        body = _predict(client, sqlite_app.url).json()
        assert body.get("model") == "churn" and body["version"] == sqlite_app.versions[0], body
        assert client.get(sqlite_app.url + "/v2/health/ready").json()["status"] == "ok"
        infer = client.post(sqlite_app.url + "/v2/models/churn/infer", json={"inputs": [
            {"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [12, 70.5, 2]}]}).json()
        assert infer["model_version"] == str(sqlite_app.versions[0])
        bad = client.post(sqlite_app.url + "/v1/models/churn/predict", json={"inputs": {**ROW, "extra": 1}})
        assert bad.status_code == 422 and bad.json()["field"] == "inputs.extra"
        assert "esteira_gateway_requests_total" in client.get(sqlite_app.url + "/metrics").text
        assert client.get(sqlite_app.url + "/openapi.json").json()["info"]["title"] == "esteira gateway"


def test_third_party_flavor_plugin_is_served_without_gateway_change(sqlite_app: Served) -> None:
    with httpx.Client(timeout=10) as client:
        response = client.post(sqlite_app.url + "/v1/models/rule/predict",
                               json={"inputs": [{"support_calls": 1}, {"support_calls": 4}]})
        assert response.status_code == 200, (response.text, client.get(sqlite_app.url + "/v2/health/ready").text)
        assert [p["label"] for p in response.json()["predictions"]] == [0, 1]
        assert client.get(sqlite_app.url + "/v2/models/rule").json()["platform"] == "esteira-threshold"


class LoadLoop:
    """``clients`` threads sending requests until stopped (bounded by ``max_s``), recording every answer."""

    def __init__(self, url: str, clients: int = 12, max_s: float = 40.0) -> None:
        self.url, self.clients, self.max_s = url, clients, max_s
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answers: list[tuple[float, int, float]] = []  # (time sent, version or -status, latency)
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_s
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set() and time.monotonic() < deadline:
                sent = time.monotonic()
                try:
                    response = _predict(client, self.url)
                    latency = time.monotonic() - sent
                    if response.status_code == 200:
                        record = (sent, int(response.json()["version"]), latency)
                    else:
                        record = (sent, -response.status_code, latency)
                        with self.lock:
                            self.failures.append(f"{response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as exc:
                    record = (sent, -1, time.monotonic() - sent)
                    with self.lock:
                        self.failures.append(repr(exc))
                with self.lock:
                    self.answers.append(record)

    def __enter__(self) -> LoadLoop:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)

    def first_seen(self, version: int, after: float) -> float | None:
        with self.lock:
            times = [sent for sent, v, _ in self.answers if v == version and sent >= after]
        return min(times) if times else None

    def wait_for(self, version: int, after: float, timeout: float = 5.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.first_seen(version, after)
            if seen is not None:
                return seen - after
            time.sleep(0.02)
        raise AssertionError(f"version {version} not served within {timeout} s")


def test_hot_swap_under_load_has_no_failed_or_stalled_request(sqlite_app: Served) -> None:
    registry, (_v1, v2, v3) = sqlite_app.registry, sqlite_app.versions
    delays = {}
    with LoadLoop(sqlite_app.url) as load:
        time.sleep(1.0)
        for label, action, expect in (
            ("promote v2", lambda: registry.promote("churn", v2, reason="test"), v2),
            ("promote v3", lambda: registry.promote("churn", v3, reason="test"), v3),
            ("rollback", lambda: registry.rollback("churn", reason="test"), v2),
        ):
            moved = time.monotonic()
            action()
            delays[label] = load.wait_for(expect, moved)
            time.sleep(0.7)
    assert not load.failures, load.failures[:5]
    assert len(load.answers) > 100
    assert all(delay < 2.0 for delay in delays.values()), delays
    worst = max(latency for _, _, latency in load.answers)
    assert worst < 1.5, f"a request stalled for {worst:.2f} s"
    registry.rollback("churn", reason="test cleanup")  # back to v1 for the next tests


def _wait_all_replicas_serve(url: str, version: int | None, timeout: float = 10.0) -> None:
    """Until 20 answers in a row (spread over the replicas) come from ``version``."""
    deadline, streak = time.monotonic() + timeout, 0
    with httpx.Client(timeout=10) as client:
        while streak < 20:
            assert time.monotonic() < deadline, f"the gateway did not settle on v{version}"
            streak = streak + 1 if _predict(client, url).json().get("version") == version else 0


def test_tampered_version_refused_on_ray_old_version_serves(sqlite_app: Served) -> None:
    registry = sqlite_app.registry
    bad = registry.register_version("churn", numeric_classifier("logistic", seed=11), signature=SIGNATURE_NUMERIC)
    artifact = Path(bad.artifact_uri.replace("file://", ""))
    artifact.write_bytes(b"not the registered bytes")
    serving = registry.resolve_alias("churn", "production")
    _wait_all_replicas_serve(sqlite_app.url, serving)  # the previous test's cleanup rollback may be in flight
    with LoadLoop(sqlite_app.url, clients=4, max_s=10) as load:
        registry.promote("churn", bad.version, reason="tampered")
        deadline = time.monotonic() + 5
        while not any(e.action == "load_refused" and e.to_version == bad.version for e in registry.history("churn")):
            assert time.monotonic() < deadline, "no load_refused event"
            time.sleep(0.1)
        time.sleep(0.5)
    assert not load.failures
    assert {version for _, version, _ in load.answers} == {serving}
    status = httpx.get(sqlite_app.url + "/v1/admin/status").json()  # the detail; the open probe says ready only
    assert f"churn:{bad.version}" in status["refused"]
    registry.rollback("churn", reason="test cleanup")


# -- PostgreSQL --------------------------------------------------------------------------------------------------


def _set_reachable(pg_url: str, reachable: bool) -> None:
    """Refuse (or allow) new connections to the test database and cut the current ones: the registry is down."""
    import psycopg

    base, database = pg_url.replace("postgresql+psycopg://", "postgresql://", 1).rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {"true" if reachable else "false"}')
        if not reachable:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                         "AND pid <> pg_backend_pid()", (database,))


def test_postgres_registry_outage_keeps_serving_and_recovers(serve_port: int, pg_url: str,
                                                             tmp_path: Path) -> None:
    from ray import serve

    from gateway.deployment import Gateway
    from registry import Registry

    registry = Registry.from_url(pg_url, str(tmp_path / "artifacts"))
    v1, v2 = (registry.register_version("pgchurn", numeric_classifier("logistic", seed=s),
                                        signature=SIGNATURE_NUMERIC).version for s in (0, 3))
    registry.promote("pgchurn", v1)
    app = Gateway.options(name="gw-pg", ray_actor_options=ACTOR_OPTIONS).bind(
        _config(registry, tmp_path, models=["pgchurn"]))
    serve.run(app, name="esteira-pg", route_prefix="/pg")
    url = f"http://127.0.0.1:{serve_port}/pg"
    try:
        with httpx.Client(timeout=10) as client:
            _wait_ready(client, url)
            first = _predict(client, url, "/v1/models/pgchurn/predict")
            assert first.status_code == 200, (first.text, client.get(url + "/v2/health/ready").text)
            assert first.json()["version"] == v1
            _set_reachable(pg_url, False)
            deadline = time.monotonic() + 10
            while client.get(url + "/v2/health/ready").json()["status"] != "degraded":
                assert time.monotonic() < deadline, "never reported degraded"
                time.sleep(0.2)
            ready = client.get(url + "/v2/health/ready")
            assert ready.status_code == 200 and client.get(url + "/v1/admin/status").json()["registry"]["ok"] is False
            for _ in range(30):
                response = _predict(client, url, "/v1/models/pgchurn/predict")
                assert response.status_code == 200 and response.json()["version"] == v1
            _set_reachable(pg_url, True)
            registry.read_engine.dispose()  # the test's own pool holds connections cut above
            registry.promote("pgchurn", v2, reason="after the outage")
            deadline = time.monotonic() + 10
            while _predict(client, url, "/v1/models/pgchurn/predict").json()["version"] != v2:
                assert time.monotonic() < deadline, "did not recover"
                time.sleep(0.1)
            assert client.get(url + "/v2/health/ready").json()["status"] == "ok"
    finally:
        _set_reachable(pg_url, True)
        serve.delete("esteira-pg")
        registry.close()

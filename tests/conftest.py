"""Shared fixtures: an isolated ESTEIRA_HOME per test, one local Ray and one temporary Prefect server per
session, fresh PostgreSQL databases, and Redis. Tests that need PostgreSQL or Redis skip with the reason when
the service is absent."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "1")
os.environ.setdefault("RAY_ACCEPT_CALLS_OUTSIDE_OF_RAY_AUTOSCALER", "1")

PG_ADMIN_URL = os.environ.get("ESTEIRA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
THRESHOLD_PLUGIN_DIR = Path(__file__).parent / "plugins" / "esteira-flavor-threshold"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def esteira_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh embedded data folder, with the settings cache cleared before and after."""
    from core.settings import get_settings
    from feature_repo.store import clear_store_cache

    home = tmp_path / "esteira-home"
    monkeypatch.setenv("ESTEIRA_HOME", str(home))
    for var in ("ESTEIRA_DATABASE_URL", "ESTEIRA_ARTIFACT_ROOT", "ESTEIRA_RAY_ADDRESS", "ESTEIRA_PROJECT",
                "ESTEIRA_FEAST_ONLINE_STORE", "ESTEIRA_FEAST_REGISTRY", "ESTEIRA_FEAST_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    clear_store_cache()
    yield home
    get_settings.cache_clear()
    clear_store_cache()


@pytest.fixture
def churn_project(tmp_path: Path, esteira_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the churn example as the current project (no data yet), in the test's own home."""
    from tests.projects import copy_example, use_project

    root = copy_example("churn", tmp_path / "churn")
    use_project(root, monkeypatch)
    return root


@pytest.fixture
def registry(esteira_home: Path):
    """A registry on SQLite in the test's own home folder."""
    from registry import Registry

    reg = Registry.from_url()
    yield reg
    reg.close()


def _pg_admin():
    import psycopg

    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A brand-new PostgreSQL database (dropped afterwards), as a SQLAlchemy URL."""
    if not _port_open("127.0.0.1", 5432):
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    name = f"esteira_test_{uuid.uuid4().hex[:10]}"
    try:
        with _pg_admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # noqa: BLE001 - any failure here means "no usable PostgreSQL"
        pytest.skip(f"PostgreSQL at {PG_ADMIN_URL} refused CREATE DATABASE: {exc}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> str:
    if not _port_open(REDIS_HOST, REDIS_PORT):
        pytest.skip(f"Redis is not reachable on {REDIS_HOST}:{REDIS_PORT}")
    return f"{REDIS_HOST}:{REDIS_PORT}"


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One local Ray for the whole session (2 CPUs, like CI), shared by training and serving tests."""
    import ray

    from core.ray_runtime import skip_uv_worker_env

    if not ray.is_initialized():
        skip_uv_worker_env()  # as esteira's own ray.init calls do (test_cold_start.py checks they do)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"WHYLOGS_NO_ANALYTICS": "1"}})
    yield
    try:
        from ray import serve

        serve.shutdown()
    except Exception:  # noqa: BLE001 - serve may never have started
        pass
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One temporary Prefect server on SQLite for the whole session, started by the first test that asks for
    it (through :func:`prefect_harness`); its API URL.

    The server ``prefect.testing.utilities.prefect_test_harness`` starts, without the harness itself: for as
    long as it runs, the harness also points process-wide state at its server (Prefect's global settings
    context, PrefectHQ/prefect#15818, and the default ephemeral server, #21544), which for a whole session
    would reach every later test, the ones that start a real stack or check what happens with no server
    included. Starting it (mostly migrating a fresh database) took 7-15 s per module on 2 cores
    (``pytest tests/test_monitor.py --durations=0``, the harness fixture's setup line).
    """
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL, temporary_settings

    from tests.prefect_stack import free_port

    database = tmp_path_factory.mktemp("prefect-server") / "prefect.db"
    server = SubprocessASGIServer(port=free_port())
    database_url = {PREFECT_SERVER_DATABASE_CONNECTION_URL: f"sqlite+aiosqlite:///{database}"}
    try:
        with temporary_settings(updates=database_url):  # the server starts with this process's settings
            server.start(timeout=90)  # a migration waiting for a busy CPU, not a hung server
        yield server.api_url
    finally:
        server.stop()  # also a server that did not answer in time


@pytest.fixture
def prefect_harness(prefect_server: str) -> Iterator[str]:
    """Prefect pointed at the session's temporary server for this test only; the server's API URL.

    The database is shared by every test that uses it: look runs and artifacts up by the run the test made,
    never by totals. Prefect's log and event workers are process-wide and keyed without the API URL, so they
    are drained on the way in and out (as the harness does when it stops): a worker made by another test keeps
    sending to the server that test saw.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    APILogWorker.drain_all()
    EventsWorker.drain_all()
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        yield prefect_server
        APILogWorker.drain_all()
        EventsWorker.drain_all()


@pytest.fixture(scope="session")
def threshold_plugin() -> Iterator[None]:
    """The tiny third-party flavor package (``tests/plugins/esteira-flavor-threshold``) installed into this
    venv for the session: a real install, entry point and all, found by this process and by Ray's workers."""
    import importlib
    from importlib.metadata import PackageNotFoundError, distribution

    from registry.flavors.base import _flavor_classes

    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is needed to install the plugin package")
    try:
        distribution("esteira-flavor-threshold")
        installed_before = True
    except PackageNotFoundError:
        installed_before = False
    # Not editable: an editable install is a .pth entry, read only by interpreters started after it, and
    # Ray may hand the replica a worker process started before this fixture ran. Reinstalled: uv reuses a
    # local package's cached wheel until its pyproject.toml changes, whatever its code became.
    subprocess.run([uv, "pip", "install", "--quiet", "--python", sys.executable, "--reinstall-package",
                    "esteira-flavor-threshold", str(THRESHOLD_PLUGIN_DIR)], check=True)
    importlib.invalidate_caches()  # the import system's directory listings predate the install
    _flavor_classes.cache_clear()
    yield
    if not installed_before:  # another run on this venv installed it: it is that run's to remove
        subprocess.run([uv, "pip", "uninstall", "--quiet", "--python", sys.executable, "esteira-flavor-threshold"],
                       check=False)
        importlib.invalidate_caches()
        _flavor_classes.cache_clear()

"""Shared fixtures: an isolated ESTEIRA_HOME per test, one local Ray per session, fresh PostgreSQL
databases, and Redis. Tests that need PostgreSQL or Redis skip with the reason when the service is absent."""

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

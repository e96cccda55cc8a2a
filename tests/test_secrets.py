"""Database passwords stay out of what esteira prints and of what Prefect stores: error lines, ``esteira status
--env``, and the parameters of a ``--flow`` run (Prefect keeps them and shows them in the UI)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.settings import redact_urls
from esteira.cli import app
from tests.prefect_stack import free_port

runner = CliRunner()
PASSWORD = "S3cret-pw"


@pytest.mark.parametrize(("text", "shown"), [
    (f"postgresql+psycopg://alice:{PASSWORD}@db:5432/reg", "postgresql+psycopg://alice:***@db:5432/reg"),
    (f"postgresql://alice:p@{PASSWORD}@db/reg", "postgresql://alice:***@db/reg"),  # '@' left unencoded
    (f"redis://:{PASSWORD}@cache:6379/0", "redis://:***@cache:6379/0"),
    (f"postgresql://db/reg?user=alice&password={PASSWORD}&sslmode=require",
     "postgresql://db/reg?user=alice&password=***&sslmode=require"),
    (f"could not parse 'postgresql://alice:{PASSWORD}@db:x/reg'", "could not parse 'postgresql://alice:***@db:x/reg'"),
    ("sqlite:////srv/esteira/registry.db", "sqlite:////srv/esteira/registry.db"),
])
def test_urls_are_shown_without_their_password(text: str, shown: str) -> None:
    assert redact_urls(text) == shown


def test_a_bad_database_url_is_reported_without_its_password(esteira_home: Path) -> None:
    result = runner.invoke(app, ["models", "list", "--database-url", f"postgresql+nosuch://alice:{PASSWORD}@db/reg"],
                           catch_exceptions=False)
    assert result.exit_code == 1 and "alice:***@db/reg" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_status_env_does_not_print_the_prefect_database_password(esteira_home: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import get_settings

    monkeypatch.setenv("ESTEIRA_PREFECT_DATABASE_URL", f"postgresql+asyncpg://prefect:{PASSWORD}@db/prefect")
    get_settings.cache_clear()
    result = runner.invoke(app, ["status", "--env"], catch_exceptions=False)
    assert result.exit_code == 0 and "export PREFECT_API_URL=" in result.stdout
    assert PASSWORD not in result.stdout and "export PREFECT_API_DATABASE_CONNECTION_URL" not in result.stdout
    assert "# PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://prefect:***@db/prefect" in result.stdout


@pytest.mark.slow
def test_a_flow_run_gets_the_registry_from_the_environment_not_from_its_parameters(
    prefect_harness: str, esteira_home: Path
) -> None:
    """``--flow --database-url``: the run reads the URL (here a PostgreSQL nobody listens on), fails on it, and
    neither the error line nor the run's stored parameters show the password."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    ref = f"churn-{uuid.uuid4().hex[:8]}:1"  # the server is the session's: this run is the one with this ref
    url = f"postgresql+psycopg://alice:{PASSWORD}@127.0.0.1:{free_port()}/reg?connect_timeout=2"
    result = runner.invoke(app, ["train", "reproduce", ref, "--flow", "--database-url", url],
                           catch_exceptions=False)
    assert result.exit_code == 1 and "registry database unreachable" in result.stderr
    assert "alice:***@127.0.0.1" in result.stderr and PASSWORD not in result.stdout + result.stderr
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["reproduce"])))
    (run,) = [r for r in runs if r.parameters.get("ref") == ref]
    assert run.parameters.get("database_url") is None
    assert run.state is not None and run.state.is_failed() and PASSWORD not in str(run.state.message)

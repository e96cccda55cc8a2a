"""Alembic migrations must build exactly the schema the SQLModel classes describe, on both databases."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlmodel import SQLModel

import registry.models  # noqa: F401
from registry import Registry
from registry.db import current_revision, head_revision, normalise_url, upgrade


def schema_diff(url: str) -> list:
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}),
                                    SQLModel.metadata)
    finally:
        engine.dispose()


def test_sqlite_migrations_match_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    upgrade(url)
    assert schema_diff(url) == []
    engine = create_engine(url)
    assert current_revision(engine) == head_revision()
    assert {"registered_model", "model_version", "model_alias", "training_run", "trial", "audit_event",
            "monitoring_report"} <= set(inspect(engine).get_table_names())


def test_postgresql_migrations_match_models(pg_url: str) -> None:
    upgrade(pg_url)
    assert schema_diff(pg_url) == []


def test_opening_a_registry_migrates_once_and_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    Registry.from_url(url, str(tmp_path)).close()
    Registry.from_url(url, str(tmp_path)).close()  # second open: already at head, no error
    assert schema_diff(url) == []


def test_upgrading_marks_versions_that_were_ever_promoted_servable(tmp_path: Path) -> None:
    """A registry from before ``servable`` keeps serving its promoted versions by number after the upgrade."""
    from alembic import command
    from sqlalchemy import text

    from registry.db import alembic_config

    url = f"sqlite:///{tmp_path / 'reg.db'}"
    command.upgrade(alembic_config(url), "0001")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO registered_model (id, name, description, tags, created_at) "
                                "VALUES (1, 'm', '', '{}', '2026-01-01')"))
        for version in (1, 2, 3, 4):
            connection.execute(text(
                "INSERT INTO model_version (id, model_id, model_name, version, status, flavor, artifact_uri, "
                "artifact_sha256, artifact_size, signature, params, metrics, tags, package_versions, description, "
                "created_at) VALUES (:v, 1, 'm', :v, 'ready', 'sklearn', 'x', 'y', 0, '{}', '{}', '{}', '{}', "
                "'{}', '', '2026-01-01')"), {"v": version})
        connection.execute(text("INSERT INTO model_alias (model_id, alias, version_id, version, updated_at) "
                                "VALUES (1, 'production', 3, 3, '2026-01-01')"))
        for action, version in (("promote", 1), ("rollback", 2)):  # v1 and v2 held an alias once
            connection.execute(text(
                "INSERT INTO audit_event (model_name, action, alias, to_version, actor, reason, details, created_at) "
                "VALUES ('m', :action, 'production', :v, 'test', '', '{}', '2026-01-01')"),
                {"action": action, "v": version})
    upgrade(url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT version, servable FROM model_version ORDER BY version")).all()
    engine.dispose()
    assert [(version, bool(servable)) for version, servable in rows] == [(1, True), (2, True), (3, True),
                                                                         (4, False)]
    assert schema_diff(url) == []

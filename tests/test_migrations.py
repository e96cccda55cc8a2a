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

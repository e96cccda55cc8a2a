"""Materialize flow: sync the project's Feast definitions, then load the online store.

The logic lives in plain functions (:func:`run_materialize` and the steps it calls) so it can be called and
tested without Prefect; :func:`materialize_flow` runs the same steps as tasks, with retries on the steps
whose faults can be transient (registry file or SQL registry busy, Redis unreachable for a moment).
Materializing an interval is idempotent, so a retry is safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from core.project import Project, current_project
from feature_repo.materialize import materialize
from feature_repo.store import open_store
from feature_repo.sync import sync
from flows.spec import parse_time


def _time(value: datetime | str | None) -> datetime | None:
    """A datetime, an ISO string or a relative ``-2d`` / ``-6h`` (from the CLI or the Prefect UI)."""
    if value is None or isinstance(value, datetime):
        return value
    return parse_time(value)


def apply_features(project: Project | str | None = None) -> dict[str, Any]:
    """Sync the project's definitions into Feast's registry (adds, changes, removes); what changed."""
    resolved = current_project(project)
    return sync(open_store(resolved), resolved).to_dict()


def materialize_features(project: Project | str | None = None, *, views: Sequence[str] | None = None,
                         start: datetime | str | None = None, end: datetime | str | None = None) -> dict[str, Any]:
    """Load ``views`` (default: every online view) up to ``end`` (default now); ``start`` forces a backfill
    from that moment, else each view continues where it stopped (or starts at its source's beginning)."""
    return materialize(open_store(current_project(project)), _time(end), start=_time(start),
                       feature_views=list(views) if views else None)


def report_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per feature view, for the Prefect artifact and logs."""
    return [
        {
            "feature_view": name,
            "mode": view.get("mode"),
            "start": view.get("start", ""),
            "end": view.get("end", ""),
            "rows_written": view.get("rows_written"),
            "source_rows": view.get("source_rows"),
            "seconds": view.get("seconds"),
            "source_rows_per_s": view.get("rows_per_second"),
        }
        for name, view in report["views"].items()
    ]


def report_markdown(report: dict[str, Any]) -> str:
    """A short markdown summary of a materialization and of the definitions applied before it."""
    lines = ["# Feast materialization", ""]
    applied = report.get("applied") or {}
    if applied.get("applied"):
        lines += [f"Definitions applied first: {applied.get('add', 0)} added, {applied.get('change', 0)} changed, "
                  f"{applied.get('remove', 0)} removed.", ""]
    rps = report.get("rows_per_second")
    lines += [
        f"Up to `{report['end']}`: **{report['rows_written']:,} online rows written** from "
        f"{report['source_rows']:,} source rows in {report['seconds']:.2f} s"
        + (f" ({rps:,.0f} source rows/s)." if rps else "."),
        "",
        "| feature view | mode | rows written | source rows | seconds | source rows/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in report_rows(report):
        lines.append(
            f"| {row['feature_view']} | {row['mode']} | {row['rows_written']} | {row['source_rows']} | "
            f"{row['seconds']} | {row['source_rows_per_s']} |"
        )
    return "\n".join(lines)


def run_materialize(project: Project | str | None = None, *, views: Sequence[str] | None = None,
                    start: datetime | str | None = None, end: datetime | str | None = None,
                    apply: bool = True) -> dict[str, Any]:
    """The whole step without Prefect: sync the definitions (unless ``apply=False``), then materialize."""
    resolved = current_project(project)
    applied = apply_features(resolved) if apply else None
    report = materialize_features(resolved, views=views, start=start, end=end)
    report["applied"] = applied
    return report


# -- Prefect wrappers ----------------------------------------------------------------------------


@task(name="apply-feature-definitions", retries=3, retry_delay_seconds=[2, 5, 10], cache_policy=NO_CACHE)
def apply_task(project: Project) -> dict[str, Any]:
    return apply_features(project)


@task(name="materialize-online-store", retries=3, retry_delay_seconds=[2, 5, 10], cache_policy=NO_CACHE)
def materialize_task(project: Project, views: list[str] | None, start: datetime | str | None,
                     end: datetime | str | None) -> dict[str, Any]:
    return materialize_features(project, views=views, start=start, end=end)


@flow(name="materialize", log_prints=False)
def materialize_flow(project: str | None = None, views: list[str] | None = None, start: str | None = None,
                     end: str | None = None, apply: bool = True) -> dict[str, Any]:
    """Sync the project's Feast definitions, then materialize ``views`` (default all) up to ``end``.

    ``start`` / ``end``: ISO datetimes or relative to now (``-2d``); without ``start`` each view continues
    incrementally. Artifacts: ``feast-materialize`` (table) and ``feast-materialize-summary``.
    """
    logger = get_run_logger()
    resolved = current_project(project)
    applied = apply_task(resolved) if apply else None
    report = materialize_task(resolved, views, start, end)
    report["applied"] = applied
    logger.info(
        "materialized %s online rows from %s source rows in %.2fs (%s source rows/s)",
        report["rows_written"],
        report["source_rows"],
        report["seconds"],
        report["rows_per_second"],
    )
    create_table_artifact(
        key="feast-materialize",
        table=report_rows(report),
        description=f"Feast materialization up to {report['end']}",
    )
    create_markdown_artifact(key="feast-materialize-summary", markdown=report_markdown(report))
    return report

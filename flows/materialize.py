"""Materialize flow: (optionally generate a batch,) apply the Feast definitions, load the online store.

The logic lives in plain functions (:func:`run_materialize` and the steps it calls) so it can be
called and tested without Prefect; :func:`materialize_flow` wraps the same steps as tasks, with
retries on the steps whose faults can be transient (registry file or SQL registry busy, Redis
unreachable for a moment). Materialization of an interval is idempotent, so a retry is safe.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from feature_repo.generator import Batch, BatchInfo, generate_batch
from feature_repo.store import apply_definitions, data_dir, materialize, open_store


def generate_data(
    *, batch: Batch = "history", drift: bool = False, n_customers: int = 5_000, seed: int = 42
) -> BatchInfo:
    """Write one generated batch under ``<home>/data`` (see :mod:`feature_repo.generator`)."""
    return generate_batch(data_dir(), batch=batch, drift=drift, n_customers=n_customers, seed=seed)


def apply_features() -> bool:
    """Apply the feature definitions if the registry differs; True when something was applied."""
    store = open_store(apply=False)
    return apply_definitions(store, data_dir())


def materialize_features(end: datetime | None = None, start: datetime | None = None) -> dict[str, Any]:
    """Incremental materialization up to ``end`` (default now); ``start`` forces a backfill."""
    return materialize(open_store(apply=False), end, start=start)


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


def report_markdown(report: dict[str, Any], batch: BatchInfo | None = None) -> str:
    """A short markdown summary of a materialization (and of the batch generated first, if any)."""
    lines = ["# Feast materialization", ""]
    if batch is not None:
        lines += [
            f"Generated batch **{batch.batch}** (drift: {batch.drift}): {batch.activity_rows:,} activity rows, "
            f"{batch.label_rows:,} labels, {batch.start:%Y-%m-%d} to {batch.end:%Y-%m-%d}, in {batch.seconds:.2f} s.",
            "",
        ]
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


def run_materialize(
    *,
    generate: bool = False,
    batch: Batch = "history",
    drift: bool = False,
    n_customers: int = 5_000,
    seed: int = 42,
    end: datetime | None = None,
) -> dict[str, Any]:
    """The whole step without Prefect: generate (optional), apply, materialize.

    After generating a batch, materialization starts at the batch's start even if an earlier run
    already went past it: generated batches lie in the past, and an incremental run alone would
    skip them.
    """
    info = generate_data(batch=batch, drift=drift, n_customers=n_customers, seed=seed) if generate else None
    applied = apply_features()
    report = materialize_features(end, start=info.start if info else None)
    report["applied"] = applied
    report["batch"] = info.to_json() if info else None
    return report


# -- Prefect wrappers ----------------------------------------------------------------------------


@task(name="generate-data", cache_policy=NO_CACHE)
def generate_task(batch: Batch, drift: bool, n_customers: int, seed: int) -> BatchInfo:
    return generate_data(batch=batch, drift=drift, n_customers=n_customers, seed=seed)


@task(name="apply-feature-definitions", retries=3, retry_delay_seconds=[2, 5, 10], cache_policy=NO_CACHE)
def apply_task() -> bool:
    return apply_features()


@task(name="materialize-online-store", retries=3, retry_delay_seconds=[2, 5, 10], cache_policy=NO_CACHE)
def materialize_task(end: datetime | None, start: datetime | None) -> dict[str, Any]:
    return materialize_features(end, start=start)


@flow(name="materialize", log_prints=False)
def materialize_flow(
    generate: bool = False,
    batch: Batch = "history",
    drift: bool = False,
    n_customers: int = 5_000,
    seed: int = 42,
    end: datetime | None = None,
) -> dict[str, Any]:
    """Prefect flow: optionally generate a batch, apply definitions, materialize incrementally.

    Publishes a table artifact (``feast-materialize``) and a markdown summary with rows written
    and rows/s. Returns the same report as :func:`run_materialize`.
    """
    logger = get_run_logger()
    info = generate_task(batch, drift, n_customers, seed) if generate else None
    if info is not None:
        logger.info("generated %s batch: %d activity rows, %d labels", info.batch, info.activity_rows, info.label_rows)
    applied = apply_task()
    report = materialize_task(end, info.start if info else None)
    report["applied"] = applied
    report["batch"] = info.to_json() if info else None
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
    create_markdown_artifact(key="feast-materialize-summary", markdown=report_markdown(report, info))
    return report


if __name__ == "__main__":
    materialize_flow(generate=True)

"""Generate flow: write a batch of the example churn domain (normal or with drift) under ``<home>/data``.

Used to seed a fresh installation (``batch="history"``) and to simulate what comes later
(``batch="recent"``, ``drift=True`` for a shifted world) so the monitor and retraining can be
shown end to end. Deterministic for a given seed and day; see :mod:`feature_repo.generator`.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from feature_repo.generator import Batch, generate_batch
from feature_repo.store import data_dir


@task(name="generate-batch", cache_policy=NO_CACHE)
def generate_batch_task(
    batch: Batch, drift: bool, n_customers: int, history_days: int, recent_days: int, seed: int
) -> dict[str, Any]:
    info = generate_batch(
        data_dir(),
        batch=batch,
        drift=drift,
        n_customers=n_customers,
        history_days=history_days,
        recent_days=recent_days,
        seed=seed,
    )
    return info.to_json()


@flow(name="generate-data")
def generate_flow(
    batch: Batch = "history",
    drift: bool = False,
    n_customers: int = 5_000,
    history_days: int = 30,
    recent_days: int = 7,
    seed: int = 42,
) -> dict[str, Any]:
    """Generate one batch and publish a summary artifact (``generated-data``)."""
    info = generate_batch_task(batch, drift, n_customers, history_days, recent_days, seed)
    get_run_logger().info("generated %s", info)
    create_markdown_artifact(
        key="generated-data",
        markdown=(
            f"# Generated batch `{info['batch']}` (drift: {info['drift']})\n\n"
            f"| start | end | customers | activity rows | labels | churn rate | seconds |\n"
            f"|---|---|---:|---:|---:|---:|---:|\n"
            f"| {info['start']} | {info['end']} | {info['n_customers']:,} | {info['activity_rows']:,} | "
            f"{info['label_rows']:,} | {info['positive_rate']:.3f} | {info['seconds']} |\n"
        ),
    )
    return info


if __name__ == "__main__":
    generate_flow()

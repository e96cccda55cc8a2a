"""Batch scoring: the model behind an alias scores a set of entities; predictions go to parquet.

Features come from the same feature service the model was trained on (``mv.feature_service``),
offline (point-in-time at each row's timestamp, the default: scoring a past or current list) or
online (latest values, as the gateway sees them). The model is loaded through the registry
(hash-verified) and predicts through the same predictor class the gateway uses. Every output row
names the model and version that produced it.

Two engines run the same per-frame step (:func:`flows.scoring.score_frame`):

* ``local``: one process, the whole frame in memory, one parquet file. Fastest for small inputs: no Ray
  to start, no actors to warm.
* ``ray`` (:mod:`flows.batch_ray`): Ray Data streams the entities through a pool of scoring actors across
  the cluster (``ESTEIRA_RAY_ADDRESS``) and writes a folder of parquet files, with bounded memory.

``engine="auto"`` picks ``ray`` from :data:`RAY_MIN_ROWS` entity rows up when a Ray cluster is configured, and
from :data:`LOCAL_MAX_ROWS` up when there is none (rows counted from parquet metadata, without reading them);
those constants give the measured reasons.
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow

from core.project import Project, optional_project
from flows.errors import TrainingInputError
from flows.features import FeastFetcher, FeatureFetcher, read_rows
from flows.scoring import Mode, ScoringPlan, score_frame
from flows.tasks import task_of
from registry import ModelRef, Registry

Engine = Literal["auto", "local", "ray"]
ENGINES = ("auto", "local", "ray")
log = logging.getLogger("esteira.flows.batch_score")

RAY_MIN_ROWS = 2_000_000
"""With a Ray cluster configured (``ESTEIRA_RAY_ADDRESS`` / ``RAY_ADDRESS``), ``engine="auto"`` scores on Ray Data
from this many entity rows up. Measured with ``bench/bench_batch_score.py`` on 2 cores (offline mode, an
example project's feature service, a hist-gradient-boosting model), 1M then 10M rows: the local engine took
13.4 s then 81.6 s (about 6 s fixed, then 132k rows/s); Ray Data with one actor 24.2 s then 88.6 s (about 17 s
fixed: actors load the model and open the feature store, files are listed; then 140k rows/s per actor). With
k actors Ray Data is ahead once rows/132k + 6 > 17 + rows/(k x 140k): from about 2.7M rows with 2 actors,
1.9M with 4, 1.6M with 8."""

LOCAL_MAX_ROWS = 10_000_000
"""With no cluster configured, ``engine="auto"`` stays in this process up to this many rows. On one machine Ray
Data runs a single scoring actor (a CPU stays free for reading and writing), so it is no faster: 88.6 s against
81.6 s at 10M rows on the bench. But the local engine holds the whole frame, 1.2 GB at 1M rows and 7.5 GB at
10M (about 0.7 KB per row), where Ray Data peaked at 0.6 GB in the driver, 1.1 GB in its largest worker and
2.3 GB over all of Ray's processes: past 10M rows the memory, not the speed, decides."""

DEFAULT_BATCH_ROWS = 200_000
"""Entity rows per Ray Data batch: one point-in-time join and one predict per batch. A join has a fixed cost
(the offline sources are scanned on each call): at 1M rows on the bench, 200k-row batches ran in 21.6 s where
50k-row batches took 29.9 s, for 794 MB instead of 682 MB at the largest worker (1.1 GB at 10M rows)."""


@dataclass(frozen=True)
class ScoreResult:
    path: str
    model_name: str
    version: int
    rows: int
    rows_with_missing_features: int
    seconds: float
    engine: str = "local"
    rows_per_node: dict[str, int] = field(default_factory=dict)
    """Ray engine: rows scored on each Ray node (node id -> rows); empty for the local engine."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_output(model_name: str, version: int, settings: Any = None) -> str:
    """``<home>/predictions/<model>/v<version>-<UTC timestamp>.parquet``."""
    if settings is None:
        from core.settings import get_settings

        settings = get_settings()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return str(Path(settings.home) / "predictions" / model_name / f"v{version}-{stamp}.parquet")


def write_parquet(frame: pd.DataFrame, uri: str) -> str:
    """Write to a local path or any fsspec URI (``s3://``, ``memory://``), creating folders."""
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
    fs, path = fsspec.core.url_to_fs(uri)
    parent = path.rsplit("/", 1)[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return uri


def choose_engine(engine: str, rows: int, *, cluster: bool, ray_min_rows: int = RAY_MIN_ROWS,
                  local_max_rows: int = LOCAL_MAX_ROWS) -> Literal["local", "ray"]:
    """``auto``: Ray Data from ``ray_min_rows`` rows up when a cluster is configured, from ``local_max_rows`` up
    when Ray would only start on this machine (:data:`RAY_MIN_ROWS` and :data:`LOCAL_MAX_ROWS` say why)."""
    if engine not in ENGINES:
        raise TrainingInputError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "auto":
        return "ray" if rows >= (ray_min_rows if cluster else local_max_rows) else "local"
    return engine  # type: ignore[return-value]


def _cluster_configured() -> bool:
    """Whether Ray work would go to a cluster (an address is set, or this process already joined one)."""
    import sys

    from core.ray_runtime import is_local_address, ray_address

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            return len(ray.nodes()) > 1 or not is_local_address(ray.get_runtime_context().gcs_address)
    return ray_address() is not None


def batch_score(model: str, entities: pd.DataFrame | str, *, output: str | None = None, mode: Mode = "offline",
                timestamp: str = "event_timestamp", project: Project | str | None = None,
                registry: Registry | None = None, fetcher: FeatureFetcher | None = None,
                engine: Engine = "auto", batch_rows: int = DEFAULT_BATCH_ROWS, actors: int | None = None
                ) -> ScoreResult:
    """Score ``entities`` with ``model`` (``name@alias`` or ``name:version``); returns where the predictions
    were written and counts.

    ``entities``: a DataFrame, or a parquet/CSV path (relative to the project) or fsspec URI, holding the
    feature service's join keys, the request fields and request features the model needs, and (offline
    mode) ``timestamp``, the moment to read features as of (default: the run's start). Output rows keep the
    keys and timestamp and add the model's outputs (``label`` and ``probability``/``probabilities``, or
    ``prediction``), the model name and version.

    ``engine``: ``local`` (one process, one parquet file, rows in input order), ``ray`` (Ray Data across the
    cluster, a folder of parquet files, rows in no particular order; ``batch_rows`` rows per batch,
    ``actors`` scoring actors, default one per CPU of the cluster but one) or ``auto`` (``ray`` from
    :data:`RAY_MIN_ROWS` rows up on a configured cluster, from :data:`LOCAL_MAX_ROWS` without one).
    ``pandas.read_parquet`` reads either output.
    """
    started = datetime.now(UTC)
    if engine not in ENGINES:
        raise TrainingInputError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if mode not in ("offline", "online"):
        raise TrainingInputError(f"mode must be offline or online, not {mode!r}")
    registry = registry or Registry.from_url()
    resolved = optional_project(project)
    fetcher = fetcher or FeastFetcher(resolved)
    mv = registry.get(ModelRef.parse(model))
    plan = ScoringPlan.of(mv, fetcher, mode, timestamp, started)
    source: Any
    if isinstance(entities, str):
        from flows.batch_ray import inspect_entities

        location = resolved.resolve(entities) if resolved is not None else entities
        source = inspect_entities(location, what="entities")
        rows, columns = source.rows, source.columns
    else:
        source, rows, columns = entities, len(entities), tuple(entities.columns)
    if rows == 0:
        raise TrainingInputError("no entities to score")
    plan.check_columns(columns)
    target = output or default_output(mv.model_name, mv.version)
    chosen = choose_engine(engine, rows, cluster=_cluster_configured())
    if chosen == "ray":
        from flows.batch_ray import score_on_ray

        run = score_on_ray(plan, source, target, project=resolved, fetcher=fetcher, batch_rows=batch_rows,
                           actors=actors)
        scored, missing_rows, per_node = run.rows, run.rows_with_missing_features, run.rows_per_node
    else:
        frame = source if isinstance(source, pd.DataFrame) else read_rows(source.location, fmt=source.fmt,
                                                                        timestamp=timestamp, what="entities")
        predictor = registry.load_predictor(mv)
        result, missing_rows = score_frame(frame, plan, predictor, fetcher)
        write_parquet(result, target)
        scored, per_node = len(result), {}
    log.info("batch scored %d rows with %s (%s) on %s", scored, mv.ref, task_of(mv.signature), chosen)
    return ScoreResult(path=target, model_name=mv.model_name, version=mv.version, rows=scored,
                       rows_with_missing_features=missing_rows,
                       seconds=round((datetime.now(UTC) - started).total_seconds(), 3), engine=chosen,
                       rows_per_node=per_node)


def scoring_plan(registry: Registry, project: Project, model: str | None, entities: str | None,
                 timestamp: str | None) -> list[tuple[str, str, str]]:
    """(model ref, entities, timestamp column) to score: the one asked for, or each model of the project with a
    production version, on its spec's label source (the rows the project labels are the rows it scores)."""
    from flows.spec import models_with_alias, resolve_spec

    if model and entities:
        return [(model, entities, timestamp or "event_timestamp")]
    names = [ModelRef.parse(model).name] if model else models_with_alias(registry, project)
    out = []
    for name in names:
        spec = resolve_spec(name, project)
        out.append((model or f"{spec.name}@production", entities or spec.labels.source,
                    timestamp or spec.labels.timestamp_column))
    return out


@flow(name="batch-score", log_prints=True)
def batch_score_flow(model: str | None = None, entities: str | None = None, output: str | None = None,
                     mode: str = "offline", timestamp: str | None = None, project: str | None = None,
                     engine: str = "auto") -> dict[str, Any]:
    """Score a parquet/CSV of entities (path relative to the project, or a URI) with a registered model
    (``name@alias`` or ``name:version``); writes parquet and a ``batch-score`` artifact. Without a model, every
    model of the project that has a production version scores its spec's label source (the daily deployment).
    ``engine``: ``auto`` (Ray Data for large inputs: :func:`choose_engine`), ``local`` or ``ray``.
    """
    from prefect.artifacts import create_markdown_artifact

    registry = Registry.from_url()  # the settings' registry: a URL with a password is never a parameter
    results: dict[str, Any] = {}
    try:
        resolved = optional_project(project)
        plan = scoring_plan(registry, resolved, model, entities, timestamp) if resolved is not None else [
            (model or "", entities or "", timestamp or "event_timestamp")]
        for ref, rows, ts in plan:
            result = batch_score(ref, rows, output=output if model else None, mode=mode,  # type: ignore[arg-type]
                                 timestamp=ts, project=resolved, registry=registry,
                                 engine=engine)  # type: ignore[arg-type]
            results[ref] = result.to_dict()
            create_markdown_artifact(
                key="batch-score",
                markdown=(f"# Batch score: {result.model_name} v{result.version}\n\n{result.rows} rows -> "
                          f"`{result.path}` ({result.engine} engine); {result.rows_with_missing_features} with "
                          "missing features."),
            )
    finally:
        registry.close()
    return results[model] if model and model in results else results

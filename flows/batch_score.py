"""Batch scoring: the model behind an alias scores a set of entities; predictions go to parquet.

Features come from the same feature service the model was trained on (``mv.feature_service``),
offline (point-in-time at each row's timestamp, the default: scoring a past or current list) or
online (latest values, as the gateway sees them). The model is loaded through the registry
(hash-verified) and predicts through the same predictor class the gateway uses. Every output row
names the model and version that produced it.
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow

from core.project import Project, optional_project
from flows.errors import TrainingInputError
from flows.evaluate import columns_of
from flows.features import FeastFetcher, FeatureFetcher, read_rows
from flows.tasks import task_of
from flows.validation import coerce_features
from registry import ModelRef, Registry

Mode = Literal["offline", "online"]
log = logging.getLogger("esteira.flows.batch_score")


@dataclass(frozen=True)
class ScoreResult:
    path: str
    model_name: str
    version: int
    rows: int
    rows_with_missing_features: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_output(model_name: str, version: int, settings: Any = None) -> str:
    """``<home>/predictions/<model>/v<version>-<UTC timestamp>.parquet``."""
    if settings is None:
        from core.settings import get_settings

        settings = get_settings()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return str(Path(settings.home) / "predictions" / model_name / f"v{version}-{stamp}.parquet")


def _features(fetcher: FeatureFetcher, feature_service: str, entities: pd.DataFrame, mode: Mode,
              timestamp: str) -> pd.DataFrame:
    """Entities joined with their features; the fetcher picks the keys and request fields it needs."""
    if mode == "offline":
        if timestamp not in entities.columns:
            entities = entities.assign(**{timestamp: pd.Timestamp.now(tz=UTC)})
        return fetcher.historical(feature_service, entities, timestamp)
    online = fetcher.online(feature_service, entities.to_dict(orient="records"))
    return pd.concat([entities.reset_index(drop=True),
                      online.drop(columns=[c for c in online.columns if c in entities.columns])], axis=1)


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


def batch_score(model: str, entities: pd.DataFrame | str, *, output: str | None = None, mode: Mode = "offline",
                timestamp: str = "event_timestamp", project: Project | str | None = None,
                registry: Registry | None = None, fetcher: FeatureFetcher | None = None) -> ScoreResult:
    """Score ``entities`` with ``model`` (``name@alias`` or ``name:version``); returns where the predictions
    were written and counts.

    ``entities``: a DataFrame, or a parquet/CSV path (relative to the project) or fsspec URI, holding the
    feature service's join keys, the request fields and request features the model needs, and (offline
    mode) ``timestamp``, the moment to read features as of (default: now). Output rows keep the keys and
    timestamp and add the model's outputs (``label`` and ``probability``/``probabilities``, or
    ``prediction``), the model name and version.
    """
    started = datetime.now(UTC)
    registry = registry or Registry.from_url()
    resolved = optional_project(project)
    fetcher = fetcher or FeastFetcher(resolved)
    mv = registry.get(ModelRef.parse(model))
    if not mv.feature_service:
        raise TrainingInputError(f"{mv.ref} records no feature service: cannot fetch its features")
    if isinstance(entities, str):
        location = resolved.resolve(entities) if resolved is not None else entities
        frame = read_rows(location, timestamp=timestamp, what="entities")
    else:
        frame = entities
    if frame.empty:
        raise TrainingInputError("no entities to score")
    keys = [k["name"] for k in mv.signature.get("entity_keys", [])] or list(fetcher.service(mv.feature_service).keys)
    needed = [*keys, *(f["name"] for f in mv.signature.get("request_fields", [])),
              *mv.signature.get("request_features", [])]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise TrainingInputError(f"entities lack column(s) {missing} that {mv.ref} needs (join keys {keys}, "
                                 "request fields and request features)")
    inputs = [c["name"] for c in mv.signature.get("inputs", [])]
    schema = {c["name"]: c.get("dtype", "float64") for c in mv.signature.get("inputs", [])}
    request_features = set(mv.signature.get("request_features", []))
    base = frame.drop(columns=[c for c in frame.columns if c in schema and c not in request_features])
    joined = coerce_features(_features(fetcher, mv.feature_service, base, mode, timestamp), schema)
    predictor = registry.load_predictor(mv)
    out = predictor.predict(columns_of(joined, inputs))
    keep = [c for c in (*keys, timestamp) if c in joined.columns]
    result = joined[keep].copy()
    task = task_of(mv.signature)
    for name, values in out.items():
        values = np.asarray(values)
        result[name] = list(values) if values.ndim > 1 else values
    result["model_name"] = mv.model_name
    result["model_version"] = mv.version
    result["scored_at"] = started
    missing_rows = int(joined[inputs].isna().any(axis=1).sum())
    path = write_parquet(result, output or default_output(mv.model_name, mv.version))
    log.info("batch scored %d rows with %s (%s)", len(result), mv.ref, task)
    return ScoreResult(path=path, model_name=mv.model_name, version=mv.version, rows=len(result),
                       rows_with_missing_features=missing_rows,
                       seconds=round((datetime.now(UTC) - started).total_seconds(), 3))


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
                     mode: str = "offline", timestamp: str | None = None, project: str | None = None
                     ) -> dict[str, Any]:
    """Score a parquet/CSV of entities (path relative to the project, or a URI) with a registered model
    (``name@alias`` or ``name:version``); writes parquet and a ``batch-score`` artifact. Without a model, every
    model of the project that has a production version scores its spec's label source (the daily deployment).
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
                                 timestamp=ts, project=resolved, registry=registry)
            results[ref] = result.to_dict()
            create_markdown_artifact(
                key="batch-score",
                markdown=(f"# Batch score: {result.model_name} v{result.version}\n\n{result.rows} rows -> "
                          f"`{result.path}`; {result.rows_with_missing_features} with missing features."),
            )
    finally:
        registry.close()
    return results[model] if model and model in results else results

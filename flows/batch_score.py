"""Batch scoring: the model behind an alias scores a set of entities; predictions go to parquet.

Features come from the same feature service the model was trained on (``mv.feature_service``),
offline (point-in-time at each row's timestamp, the default: scoring a past or current list) or
online (latest values, as the gateway sees them). The model is loaded through the registry
(hash-verified) and predicts through the same predictor class the gateway uses. Every output row
names the model and version that produced it.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow

from flows.errors import TrainingInputError
from flows.evaluate import columns_of
from flows.features import FeastFetcher, FeatureFetcher, read_entities
from flows.validation import coerce_features
from registry import ModelRef, Registry

Mode = Literal["offline", "online"]


@dataclass(frozen=True)
class ScoreResult:
    path: str
    model_name: str
    version: int
    rows: int
    rows_with_missing_features: int
    positives: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_output(model_name: str, version: int, settings: Any = None) -> str:
    """``<home>/predictions/<model>/v<version>-<UTC timestamp>.parquet``."""
    if settings is None:
        from esteira.settings import get_settings

        settings = get_settings()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return str(Path(settings.home) / "predictions" / model_name / f"v{version}-{stamp}.parquet")


def _features(fetcher: FeatureFetcher, feature_service: str, entities: pd.DataFrame, mode: Mode) -> pd.DataFrame:
    """Entities joined with their features; the fetcher picks the keys and request fields it needs."""
    if mode == "offline":
        if "event_timestamp" not in entities.columns:
            entities = entities.assign(event_timestamp=pd.Timestamp.now(tz=UTC))
        return fetcher.historical(feature_service, entities)
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


def batch_score(model: str = "churn@production", entities: pd.DataFrame | str = "labels", *,
                output: str | None = None, mode: Mode = "offline", registry: Registry | None = None,
                fetcher: FeatureFetcher | None = None) -> ScoreResult:
    """Score ``entities`` (a DataFrame, a parquet path/URI, or ``labels``) with ``model`` (``name@alias``
    or ``name:version``); returns where the predictions were written and counts."""
    started = datetime.now(UTC)
    registry = registry or Registry.from_url()
    fetcher = fetcher or FeastFetcher()
    mv = registry.get(ModelRef.parse(model))
    if not mv.feature_service:
        raise TrainingInputError(f"{mv.ref} records no feature service: cannot fetch its features")
    frame = read_entities(entities) if isinstance(entities, str) else entities
    entity_key = mv.signature.get("entity_key", "customer_id")
    if entity_key not in frame.columns:
        raise TrainingInputError(f"entities lack the entity key {entity_key!r} of {mv.ref}")
    if frame.empty:
        raise TrainingInputError("no entities to score")
    inputs = [c["name"] for c in mv.signature.get("inputs", [])]
    schema = {c["name"]: c.get("dtype", "float64") for c in mv.signature.get("inputs", [])}
    feature_cols = [c for c in frame.columns if c in schema]
    base = frame.drop(columns=feature_cols)
    joined = coerce_features(_features(fetcher, mv.feature_service, base, mode), schema)
    predictor = registry.load_predictor(mv)
    out = predictor.predict(columns_of(joined, inputs))
    keep = [c for c in (entity_key, "event_timestamp") if c in joined.columns]
    result = joined[keep].copy()
    result["label"] = out["label"]
    if "probability" in out:
        result["probability"] = out["probability"]
    result["model_name"] = mv.model_name
    result["model_version"] = mv.version
    result["scored_at"] = started
    missing = int(joined[inputs].isna().any(axis=1).sum())
    path = write_parquet(result, output or default_output(mv.model_name, mv.version))
    return ScoreResult(path=path, model_name=mv.model_name, version=mv.version, rows=len(result),
                       rows_with_missing_features=missing, positives=int((result["label"] == 1).sum()),
                       seconds=round((datetime.now(UTC) - started).total_seconds(), 3))


@flow(name="batch-score", log_prints=True)
def batch_score_flow(model: str = "churn@production", entities: str = "labels", output: str | None = None,
                     mode: str = "offline", database_url: str | None = None) -> dict[str, Any]:
    """Score a parquet of entities (or the label source) with a registered model; writes parquet."""
    from prefect.artifacts import create_markdown_artifact

    registry = Registry.from_url(database_url)
    try:
        result = batch_score(model, entities, output=output, mode=mode, registry=registry)  # type: ignore[arg-type]
    finally:
        registry.close()
    create_markdown_artifact(
        key="batch-score",
        markdown=(f"# Batch score: {result.model_name} v{result.version}\n\n{result.rows} rows -> `{result.path}`; "
                  f"{result.positives} predicted positive; {result.rows_with_missing_features} with missing features."),
    )
    return result.to_dict()

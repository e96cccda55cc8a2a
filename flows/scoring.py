"""One scoring step: a frame of entities joined with its features, predicted, labelled with the version.

Batch scoring's two engines run this same step, the local one on the whole frame and the Ray Data one on
each batch inside its actors (:mod:`flows.batch_ray`), so their outputs agree row for row. The module stays
free of Prefect and the registry's database layer: every Ray actor imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

from flows.errors import TrainingInputError
from flows.evaluate import columns_of
from flows.features import FeatureFetcher
from flows.validation import coerce_features

Mode = Literal["offline", "online"]


@dataclass(frozen=True)
class ScoringPlan:
    """Everything one scoring step needs, resolved once from the model version: plain data, so it travels
    to Ray actors without a registry connection (the artifact is read by URI and checked by sha256)."""

    ref: str
    model_name: str
    version: int
    flavor: str
    artifact_uri: str
    artifact_sha256: str
    signature: dict[str, Any]
    feature_service: str
    keys: tuple[str, ...]
    needed: tuple[str, ...]
    inputs: tuple[str, ...]
    schema: dict[str, str]
    request_features: frozenset[str]
    mode: Mode
    timestamp: str
    scored_at: datetime

    @classmethod
    def of(cls, mv: Any, fetcher: FeatureFetcher, mode: Mode, timestamp: str, scored_at: datetime) -> ScoringPlan:
        if not mv.feature_service:
            raise TrainingInputError(f"{mv.ref} records no feature service: cannot fetch its features")
        signature = dict(mv.signature)
        keys = [k["name"] for k in signature.get("entity_keys", [])] or list(fetcher.service(mv.feature_service).keys)
        needed = [*keys, *(f["name"] for f in signature.get("request_fields", [])),
                  *signature.get("request_features", [])]
        return cls(ref=mv.ref, model_name=mv.model_name, version=mv.version, flavor=mv.flavor,
                   artifact_uri=mv.artifact_uri, artifact_sha256=mv.artifact_sha256, signature=signature,
                   feature_service=mv.feature_service, keys=tuple(keys), needed=tuple(dict.fromkeys(needed)),
                   inputs=tuple(c["name"] for c in signature.get("inputs", [])),
                   schema={c["name"]: c.get("dtype", "float64") for c in signature.get("inputs", [])},
                   request_features=frozenset(signature.get("request_features", [])), mode=mode,
                   timestamp=timestamp, scored_at=scored_at)

    def check_columns(self, columns: list[str] | tuple[str, ...]) -> None:
        """Fail before any feature is read when the entities cannot be scored."""
        missing = [c for c in self.needed if c not in columns]
        if missing:
            raise TrainingInputError(f"entities lack column(s) {missing} that {self.ref} needs (join keys "
                                     f"{list(self.keys)}, request fields and request features)")




def _features(fetcher: FeatureFetcher, feature_service: str, entities: pd.DataFrame, mode: Mode,
              timestamp: str, as_of: datetime) -> pd.DataFrame:
    """Entities joined with their features; the fetcher picks the keys and request fields it needs.

    Offline rows without a timestamp are read as of ``as_of`` (the run's start), the same moment for every
    batch of a run."""
    if mode == "offline":
        if timestamp not in entities.columns:
            entities = entities.assign(**{timestamp: pd.Timestamp(as_of)})
        return fetcher.historical(feature_service, entities, timestamp)
    online = fetcher.online(feature_service, entities.to_dict(orient="records"))
    return pd.concat([entities.reset_index(drop=True),
                      online.drop(columns=[c for c in online.columns if c in entities.columns])], axis=1)


def utc_timestamps(frame: pd.DataFrame, timestamp: str, what: str = "entities") -> pd.DataFrame:
    """The timestamp column as UTC datetimes (what :func:`flows.features.read_rows` does for a whole file)."""
    if timestamp not in frame.columns or isinstance(frame[timestamp].dtype, pd.DatetimeTZDtype):
        return frame
    try:
        return frame.assign(**{timestamp: pd.to_datetime(frame[timestamp], utc=True)})
    except (ValueError, TypeError) as exc:
        raise TrainingInputError(f"{what}: column {timestamp!r} is not a timestamp: {exc}") from None


def score_frame(frame: pd.DataFrame, plan: ScoringPlan, predictor: Any, fetcher: FeatureFetcher
                ) -> tuple[pd.DataFrame, int]:
    """Score one frame of entities: (output rows, rows whose model inputs had a missing value).

    Both engines call this, the Ray engine once per batch, so their outputs agree row for row. Output rows keep
    the keys and timestamp and add the model's outputs (``label`` and ``probability``/``probabilities``, or
    ``prediction``), the model name and version, and the run's ``scored_at``.
    """
    inputs = list(plan.inputs)
    base = frame.drop(columns=[c for c in frame.columns if c in plan.schema and c not in plan.request_features])
    joined = coerce_features(_features(fetcher, plan.feature_service, base, plan.mode, plan.timestamp,
                                       plan.scored_at), plan.schema)
    out = predictor.predict(columns_of(joined, inputs))
    keep = [c for c in (*plan.keys, plan.timestamp) if c in joined.columns]
    result = joined[keep].copy()
    for name, values in out.items():
        values = np.asarray(values)
        result[name] = list(values) if values.ndim > 1 else values
    result["model_name"] = plan.model_name
    result["model_version"] = plan.version
    result["scored_at"] = plan.scored_at
    return result, int(joined[inputs].isna().any(axis=1).sum())



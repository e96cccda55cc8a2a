"""Where the flows get entities and features: one small adapter over ``feature_repo.store``.

Training, batch scoring and reproduction ask a :class:`FeatureFetcher` for a feature service's
schema and frames; the default one is Feast (``feature_repo.store``, the same module the gateway
uses online). The protocol exists so a test or a user without Feast can pass another fetcher, not
to build a second feature path: every fetcher must return the service's features by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from flows.errors import TrainingInputError

if TYPE_CHECKING:
    from esteira.settings import Settings
    from flows.spec import EntityQuery

TIMESTAMP = "event_timestamp"


class UnknownFeatureService(TrainingInputError, LookupError):
    """The spec names a feature service the feature store does not have."""


class FeatureFetcher(Protocol):
    def schema(self, feature_service: str) -> dict[str, str]:
        """``{feature: "float64" | "int64" | "string"}`` in the service's order; UnknownFeatureService."""
        ...

    def historical(self, feature_service: str, entity_df: pd.DataFrame) -> pd.DataFrame:
        """Point-in-time features for each row of ``entity_df`` (its columns pass through)."""
        ...

    def online(self, feature_service: str, entity_rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        """Latest features per entity row from the online store."""
        ...


def _signature_dtype(feast_dtype: str) -> str:
    name = feast_dtype.lower()
    if "string" in name or "bytes" in name:
        return "string"
    if "int" in name or "bool" in name:
        return "int64"
    return "float64"


class FeastFetcher:
    """The default fetcher: Feast through ``feature_repo.store`` (one FeatureStore per process)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings
        self._store: Any = None

    @property
    def store(self) -> Any:
        if self._store is None:
            from feature_repo.store import open_store

            self._store = open_store(self._settings)
        return self._store

    def schema(self, feature_service: str) -> dict[str, str]:
        from feature_repo.store import FeatureServiceNotFound, feature_schema

        try:
            specs = feature_schema(self.store, feature_service)
        except FeatureServiceNotFound as exc:
            raise UnknownFeatureService(str(exc)) from exc
        return {s.name: _signature_dtype(s.dtype) for s in specs}

    def historical(self, feature_service: str, entity_df: pd.DataFrame) -> pd.DataFrame:
        from feature_repo.store import training_frame

        return training_frame(self.store, feature_service, entity_df)

    def online(self, feature_service: str, entity_rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        from feature_repo.store import online_features

        return pd.DataFrame(online_features(self.store, feature_service, entity_rows))


def read_entities(source: str, settings: Settings | None = None) -> pd.DataFrame:
    """The entity/label rows named by an entity query's ``source``.

    ``labels``: the domain's label source under ``<home>/data`` (every batch present). Anything
    else: a parquet file or folder, local or any fsspec URI.
    """
    if source == "labels":
        from feature_repo.generator import load_labels
        from feature_repo.store import data_dir

        try:
            return load_labels(data_dir(settings))
        except FileNotFoundError as exc:
            raise TrainingInputError(f"entity source 'labels': {exc}") from exc
    try:
        return pd.read_parquet(source)
    except FileNotFoundError as exc:
        raise TrainingInputError(f"entity source {source!r} does not exist") from exc


def select_entities(entities: pd.DataFrame, query: EntityQuery, *, entity_key: str, label: str,
                    now: datetime | None = None) -> pd.DataFrame:
    """Rows of ``entities`` inside the query's time window, sorted by time; clear errors otherwise.

    An empty result names the window asked for and the range the data covers, which is the usual
    mistake (a window outside the data), rather than failing later inside Feast or scikit-learn.
    """
    ts = query.timestamp_column
    for column, what in ((entity_key, "entity key"), (ts, "timestamp column"), (label, "label column")):
        if column not in entities.columns:
            raise TrainingInputError(
                f"{what} {column!r} is not in the entity source (columns: {', '.join(map(str, entities.columns))})"
            )
    if entities.empty:
        raise TrainingInputError("the entity source has no rows: empty training set")
    frame = entities.copy()
    frame[ts] = pd.to_datetime(frame[ts], utc=True)
    start, end = query.window(now)
    mask = pd.Series(True, index=frame.index)
    if start is not None:
        mask &= frame[ts] >= start
    if end is not None:
        mask &= frame[ts] < end
    selected = frame[mask]
    if selected.empty:
        raise TrainingInputError(
            f"entity query [{start or '-inf'}, {end or '+inf'}) selects no rows: the data covers "
            f"{frame[ts].min()} .. {frame[ts].max()} ({len(frame)} rows)"
        )
    if selected[label].isna().all():
        raise TrainingInputError(f"label column {label!r} has no values in the selected rows")
    selected = selected[selected[label].notna()]
    return selected.sort_values([ts, entity_key], kind="stable").reset_index(drop=True)

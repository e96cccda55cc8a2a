"""Where the flows get labelled rows and features: the label source, and one adapter over ``feature_repo``.

Training, batch scoring, the monitor and reproduction ask a :class:`FeatureFetcher` for a feature service's
schema, keys and frames; the default one is Feast through ``feature_repo`` (the same library the gateway
reads online with). The protocol exists so a test or a user without Feast can pass another fetcher, not to
build a second feature path: every fetcher must return the service's features by name.

The label source is named in the model spec: a path relative to the project or any fsspec URI, parquet
(a file or a folder of files) or CSV.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from core.project import Project
from flows.errors import TrainingInputError

if TYPE_CHECKING:
    from core.settings import Settings
    from flows.spec import LabelSource, ModelSpec


class UnknownFeatureService(TrainingInputError, LookupError):
    """The spec names a feature service the feature store does not have."""


@dataclass(frozen=True)
class ServiceInfo:
    """What a model's rows must carry for its feature service: join keys and request fields, with dtypes."""

    keys: dict[str, str]
    request: dict[str, str]


class FeatureFetcher(Protocol):
    def schema(self, feature_service: str) -> dict[str, str]:
        """``{feature: "float64" | "int64" | "string"}`` in the service's order; UnknownFeatureService."""
        ...

    def service(self, feature_service: str) -> ServiceInfo:
        """Join keys and request fields of the service, with signature dtypes."""
        ...

    def historical(self, feature_service: str, entity_df: pd.DataFrame, timestamp: str) -> pd.DataFrame:
        """Point-in-time features for each row of ``entity_df`` (its columns pass through)."""
        ...

    def online(self, feature_service: str, entity_rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        """Latest features per entity row from the online store."""
        ...


def signature_dtype(feast_dtype: str) -> str:
    """A Feast type name (``Int64``, ``Float32``, ``String``...) as a signature dtype."""
    name = feast_dtype.lower()
    if "string" in name or "bytes" in name:
        return "string"
    if "int" in name or "bool" in name:
        return "int64"
    return "float64"


def column_dtype(series: pd.Series) -> str:
    """A data column's signature dtype (request features not declared in any request source)."""
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_integer_dtype(series):
        return "int64"
    if pd.api.types.is_numeric_dtype(series):
        return "float64"
    return "string"


class FeastFetcher:
    """The default fetcher: Feast through ``feature_repo`` (one FeatureStore per process and project).

    ``apply=True`` (training) first syncs the project's definitions into Feast's registry, so a model is
    trained on what the project defines now; readers (batch scoring, the monitor) use what was applied.
    """

    def __init__(self, project: Project | None = None, settings: Settings | None = None, *,
                 apply: bool = False) -> None:
        self._project = project
        self._settings = settings
        self._apply = apply
        self._store: Any = None
        self.applied: Any = None

    @property
    def store(self) -> Any:
        if self._store is None:
            from core.project import current_project
            from feature_repo.store import open_store

            project = current_project(self._project, self._settings)
            store = open_store(project, self._settings)
            if self._apply:
                from feature_repo.sync import sync

                self.applied = sync(store, project)
            self._store = store
        return self._store

    def schema(self, feature_service: str) -> dict[str, str]:
        from feature_repo.services import FeatureServiceNotFound, feature_schema

        try:
            specs = feature_schema(self.store, feature_service)
        except FeatureServiceNotFound as exc:
            raise UnknownFeatureService(str(exc)) from exc
        return {s.name: signature_dtype(s.dtype) for s in specs}

    def service(self, feature_service: str) -> ServiceInfo:
        from feature_repo.services import FeatureServiceNotFound, service_plan

        try:
            plan = service_plan(self.store, feature_service)
        except FeatureServiceNotFound as exc:
            raise UnknownFeatureService(str(exc)) from exc
        return ServiceInfo({k: signature_dtype(t) for k, t in plan.key_types},
                           {k: signature_dtype(t) for k, t in plan.request})

    def historical(self, feature_service: str, entity_df: pd.DataFrame, timestamp: str) -> pd.DataFrame:
        from feature_repo.offline import training_frame

        return training_frame(self.store, feature_service, entity_df, timestamp=timestamp)

    def online(self, feature_service: str, entity_rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        from feature_repo.online import online_features

        return pd.DataFrame(online_features(self.store, feature_service, entity_rows))


def file_format(location: str) -> str:
    """``csv`` for ``.csv``/``.csv.gz`` names, else ``parquet``: how rows are read when no format is named."""
    return "csv" if location.lower().endswith((".csv", ".csv.gz")) else "parquet"


def read_rows(location: str, *, fmt: str = "auto", timestamp: str | None = None,
              what: str = "label source") -> pd.DataFrame:
    """A parquet file or folder, or a CSV file, local or any fsspec URI; the timestamp column as UTC."""
    kind = fmt if fmt != "auto" else file_format(location)
    try:
        frame = pd.read_csv(location) if kind == "csv" else pd.read_parquet(location)
    except FileNotFoundError:
        raise TrainingInputError(f"{what} {location} does not exist") from None
    except Exception as exc:  # unreadable: a parquet reader on CSV, a corrupt file, no permission
        raise TrainingInputError(f"{what} {location} cannot be read as {kind}: {type(exc).__name__}: {exc}") from None
    if timestamp is not None and timestamp in frame.columns:
        try:
            frame[timestamp] = pd.to_datetime(frame[timestamp], utc=True)
        except (ValueError, TypeError) as exc:
            raise TrainingInputError(f"{what} {location}: column {timestamp!r} is not a timestamp: {exc}") from None
    return frame


def read_labels(labels: LabelSource, project: Project) -> pd.DataFrame:
    """The rows of a spec's label source (every row; :func:`select_rows` applies the window)."""
    location = project.resolve(labels.source)
    return read_rows(location, fmt=labels.resolved_format(location), timestamp=labels.timestamp_column)


def required_columns(spec: ModelSpec, info: ServiceInfo) -> list[str]:
    """Columns every labelled row needs: join keys, timestamp, request fields and features, label."""
    return list(dict.fromkeys([*info.keys, spec.labels.timestamp_column, *info.request, *spec.request_features,
                               spec.label]))


def select_rows(rows: pd.DataFrame, spec: ModelSpec, info: ServiceInfo, *, now: datetime | None = None
                ) -> pd.DataFrame:
    """The labelled rows inside the spec's window, with only the columns training needs, sorted by time.

    An empty result names the window asked for and the range the data covers, which is the usual
    mistake (a window outside the data), rather than failing later inside Feast or scikit-learn.
    """
    ts = spec.labels.timestamp_column
    wanted = required_columns(spec, info)
    missing = [c for c in wanted if c not in rows.columns]
    if missing:
        raise TrainingInputError(
            f"the label source lacks column(s) {', '.join(map(repr, missing))} (it has: "
            f"{', '.join(map(str, rows.columns))}); it needs the join keys {list(info.keys)}, the timestamp "
            f"{ts!r}, request fields {list(info.request)}, request features {spec.request_features} and the label "
            f"{spec.label!r}")
    if rows.empty:
        raise TrainingInputError("the label source has no rows: empty training set")
    frame = rows[wanted].copy()
    frame[ts] = pd.to_datetime(frame[ts], utc=True)
    start, end = spec.labels.window(now)
    mask = pd.Series(True, index=frame.index)
    if start is not None:
        mask &= frame[ts] >= start
    if end is not None:
        mask &= frame[ts] < end
    selected = frame[mask]
    if selected.empty:
        raise TrainingInputError(
            f"the label window [{start or '-inf'}, {end or '+inf'}) selects no rows: the data covers "
            f"{frame[ts].min()} .. {frame[ts].max()} ({len(frame)} rows)"
        )
    if selected[spec.label].isna().all():
        raise TrainingInputError(f"label column {spec.label!r} has no values in the selected rows")
    selected = selected[selected[spec.label].notna()]
    return selected.sort_values([ts, *info.keys], kind="stable").reset_index(drop=True)


def input_schema(spec: ModelSpec, features: Mapping[str, str], info: ServiceInfo, rows: pd.DataFrame
                 ) -> dict[str, str]:
    """The model's inputs: the service's features, then the request features (typed by the request source
    that declares them, else by their column in the label source)."""
    clash = [c for c in spec.request_features if c in features]
    if clash:
        raise TrainingInputError(f"request feature(s) {clash} are also features of {spec.feature_service!r}: "
                                 "a model input comes from the store or from the request, not both")
    schema = dict(features)
    for name in spec.request_features:
        schema[name] = info.request.get(name) or column_dtype(rows[name])
    return schema

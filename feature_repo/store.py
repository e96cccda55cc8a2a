"""THE feature access point of esteira: one module for training (offline) and serving (online).

Why one module: training/serving skew comes from two code paths computing "the same" features.
Here both paths ask Feast for the same feature service, and on-demand features are computed by
the same registered function on both. Training calls :func:`training_frame`, the gateway calls
:func:`online_features`, and both build their input signature from :func:`feature_schema`.

The Feast ``RepoConfig`` is built in Python from :class:`esteira.settings.Settings`, so the
registry, the SQLite online store and the data live under ``settings.home`` and nothing is
hard-coded. ``feature_store.yaml`` next to this file describes the same store for the ``feast``
CLI. One ``FeatureStore`` is created per process and configuration (:func:`open_store` caches it):
creating one per request costs registry loads and connections.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:  # feast is heavy; imported lazily where used
    import pandas as pd
    from feast import FeatureService, FeatureStore
    from feast.repo_config import RepoConfig

    from esteira.settings import Settings

from feature_repo.definitions import ENTITY_KEY, TIMESTAMP, build_definitions

log = logging.getLogger(__name__)

FeatureKind = Literal["numeric", "categorical"]

_STORES: dict[tuple[str, ...], FeatureStore] = {}
_LOCK = threading.Lock()


class FeatureServiceNotFound(ValueError):
    """Raised when a feature service name is not in the registry; names the known ones."""

    def __init__(self, name: str, known: Sequence[str]):
        self.name = name
        self.known = list(known)
        super().__init__(
            f"feature service {name!r} not found in the Feast registry; known services: "
            f"{', '.join(sorted(self.known)) or '(none: was open_store(apply=True) ever run?)'}"
        )


@dataclass(frozen=True)
class FeatureSpec:
    """One feature of a service, as training and the gateway must both see it."""

    name: str
    view: str
    dtype: str  # Feast type name: Int64, Float64, String, Bool, ...
    kind: FeatureKind


# -- configuration -------------------------------------------------------------------------------


def _settings(settings: Settings | None) -> Settings:
    if settings is not None:
        return settings
    from esteira.settings import get_settings

    return get_settings()


def feast_dir(settings: Settings | None = None) -> Path:
    """``<home>/feast``: registry file and SQLite online store."""
    return Path(_settings(settings).home) / "feast"


def data_dir(settings: Settings | None = None) -> Path:
    """``<home>/data``: the source files the feature views read."""
    return Path(_settings(settings).home) / "data"


def redis_connection_string(url: str) -> str:
    """Translate ``redis://[:password@]host:port[/db]`` (or ``rediss://``) to Feast's format.

    Feast wants ``host:port,db=N,password=...,ssl=true``; a string already in that form is
    returned unchanged, so both spellings work in ``ESTEIRA_FEAST_ONLINE_STORE``.
    """
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a redis URL: {url!r}")
    out = [f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"]
    db = parts.path.strip("/")
    if db:
        out.append(f"db={int(db)}")
    if parts.password:
        out.append(f"password={unquote(parts.password)}")
    if parts.username and parts.username != "default":
        out.append(f"username={unquote(parts.username)}")
    if parts.scheme == "rediss":
        out.append("ssl=true")
    return ",".join(out)


def repo_config(settings: Settings | None = None) -> RepoConfig:
    """Build the Feast ``RepoConfig`` from settings (no file is read or written).

    * online store: ``feast_online_store == "sqlite"`` gives ``<home>/feast/online.db``; anything
      else is taken as a Redis connection (``redis://host:6379/0`` or ``host:6379,db=0``);
    * registry: a file under ``<home>/feast`` unless ``feast_registry`` is a SQL URL (use
      PostgreSQL: Feast's SQL registry on SQLite is broken, feast-dev/feast 5565);
    * offline store: Feast's file (Dask) store over the parquet folders under ``<home>/data``.
    """
    from feast.repo_config import RegistryConfig, RepoConfig

    s = _settings(settings)
    fdir = feast_dir(s)
    online: dict[str, Any]
    if s.feast_online_store.strip().lower() == "sqlite":
        online = {"type": "sqlite", "path": str(fdir / "online.db")}
    else:
        online = {"type": "redis", "connection_string": redis_connection_string(s.feast_online_store.strip())}
    if s.feast_registry and "://" in s.feast_registry:
        if s.feast_registry.startswith("sqlite"):
            raise ValueError("Feast's SQL registry on SQLite is broken (feast-dev/feast 5565): use the file registry")
        registry = RegistryConfig(registry_type="sql", path=s.feast_registry, cache_ttl_seconds=60)
    else:
        registry = RegistryConfig(
            registry_type="file", path=str(s.feast_registry or fdir / "registry.db"), cache_ttl_seconds=60
        )
    return RepoConfig(
        project=s.feast_project,
        provider="local",
        registry=registry,
        online_store=online,
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=Path(s.feature_repo),
    )


def _cache_key(s: Settings) -> tuple[str, ...]:
    return (str(s.home), s.feast_project, s.feast_online_store, str(s.feast_registry), str(s.feature_repo))


def open_store(settings: Settings | None = None, *, apply: bool = True) -> FeatureStore:
    """The process-wide ``FeatureStore`` for these settings, created on first use.

    With ``apply=True`` the domain's definitions are applied when the registry differs from them
    (idempotent; nothing is written when they match). Serving processes may pass ``apply=False``
    to only read what a flow applied.
    """
    from feast import FeatureStore

    s = _settings(settings)
    key = _cache_key(s)
    with _LOCK:
        store = _STORES.get(key)
        if store is None:
            feast_dir(s).mkdir(parents=True, exist_ok=True)
            store = FeatureStore(config=repo_config(s))
            _STORES[key] = store
        if apply:
            apply_definitions(store, data_dir(s))
    return store


def clear_store_cache() -> None:
    """Forget cached stores (tests switch ``ESTEIRA_HOME`` between cases)."""
    with _LOCK:
        _STORES.clear()
        _PLANS.clear()


def _registered(store: FeatureStore, obj: Any) -> Any | None:
    """The registry's copy of ``obj`` (None when absent). Reads the cached registry."""
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource
    from feast.on_demand_feature_view import OnDemandFeatureView

    getters = [
        (Entity, store.get_entity),
        (OnDemandFeatureView, store.get_on_demand_feature_view),
        (FeatureView, store.get_feature_view),
        (FeatureService, store.get_feature_service),
        (DataSource, store.get_data_source),
    ]
    for cls, getter in getters:
        if isinstance(obj, cls):
            try:
                return getter(obj.name)
            except Exception:  # Feast raises a different *NotFoundException per kind
                return None
    return None


def apply_definitions(store: FeatureStore, data: Path | str, objects: Iterable[Any] | None = None) -> bool:
    """Apply the domain's Feast objects (or ``objects``) if the registry differs; True if applied.

    Comparing first keeps concurrent readers (gateway replicas) from rewriting the file registry
    on every start, and keeps apply idempotent.
    """
    objs = list(objects) if objects is not None else build_definitions(data).objects
    if all(_same(_registered(store, o), o) for o in objs):
        return False
    log.info("applying %d Feast objects to project %s", len(objs), store.project)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="On demand feature view", category=RuntimeWarning)
        store.apply(objs)
    _PLANS.clear()
    return True


def _same(registered: Any | None, wanted: Any) -> bool:
    """Equal definitions, ignoring what ``apply``/``materialize`` add (timestamps, intervals, dill bytes).

    Feast's own ``__eq__`` sees inferred entity columns and materialization intervals as
    differences, so the specs are compared instead, with the UDF compared by source text (Feast
    0.67 rehydrates UDFs from source, so the source is what runs).
    """
    if registered is None:
        return False
    try:
        a, b = _spec(registered), _spec(wanted)
        return a is not None and a == b if a is not None or b is not None else bool(registered == wanted)
    except Exception:  # a comparison failure means "apply to be sure"
        return False


_VOLATILE_FIELDS = frozenset({"created_timestamp", "last_updated_timestamp", "body"})


def _scrub(message: Any) -> None:
    """Clear, recursively, the proto fields ``apply`` rewrites (timestamps, dill UDF bytes)."""
    for field_desc, value in list(message.ListFields()):
        if field_desc.name in _VOLATILE_FIELDS:
            message.ClearField(field_desc.name)
        elif field_desc.message_type is not None:
            if field_desc.is_repeated:
                if field_desc.message_type.GetOptions().map_entry:
                    value_desc = field_desc.message_type.fields_by_name["value"]
                    if value_desc.message_type is not None:
                        for item in value.values():
                            _scrub(item)
                    continue
                for item in value:
                    _scrub(item)
            else:
                _scrub(value)


def _spec(obj: Any) -> bytes | None:
    proto = obj.to_proto()
    if not hasattr(proto, "spec"):
        return None
    spec = type(proto.spec)()
    spec.CopyFrom(proto.spec)
    _scrub(spec)
    if type(obj).__name__ == "OnDemandFeatureView" and hasattr(spec, "entity_columns"):
        spec.ClearField("entity_columns")  # inferred at apply (a "__dummy_id" column), not declared
    return spec.SerializeToString(deterministic=True)


# -- feature services ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _ServicePlan:
    """What a feature service needs, resolved once: registry lookups cost milliseconds each."""

    service: Any
    keys: tuple[str, ...]
    request: tuple[str, ...]
    schema: tuple[FeatureSpec, ...]
    loaded: float


_PLAN_TTL_SECONDS = 60.0  # same as the registry cache TTL in repo_config: a re-apply shows within a minute
_PLANS: dict[tuple[int, str], _ServicePlan] = {}


def _plan(store: FeatureStore, feature_service: str) -> _ServicePlan:
    key = (id(store), feature_service)
    plan = _PLANS.get(key)
    now = time.monotonic()
    if plan is not None and now - plan.loaded < _PLAN_TTL_SECONDS:
        return plan
    fs = get_feature_service(store, feature_service)
    keys: list[str] = []
    request: list[str] = []
    schema: list[FeatureSpec] = []
    for projection in fs.feature_view_projections:
        view = _view(store, projection.name)
        for col in getattr(view, "entity_columns", []) or []:
            if col.name not in keys and not col.name.startswith("__dummy"):
                keys.append(col.name)
        for source in getattr(view, "source_request_sources", {}).values():
            request.extend(f.name for f in source.schema if f.name not in request)
        schema.extend(
            FeatureSpec(name=f.name, view=projection.name, dtype=str(f.dtype), kind=_kind(f.dtype))
            for f in projection.features
        )
    plan = _ServicePlan(fs, tuple(keys or [ENTITY_KEY]), tuple(request), tuple(schema), now)
    _PLANS[key] = plan
    return plan


def get_feature_service(store: FeatureStore, feature_service: str) -> FeatureService:
    """Look up a feature service, raising :class:`FeatureServiceNotFound` with the known names."""
    try:
        return store.get_feature_service(feature_service)
    except Exception as exc:
        known = [fs.name for fs in store.list_feature_services()]
        if feature_service in known:  # some other failure: do not hide it
            raise
        raise FeatureServiceNotFound(feature_service, known) from exc


def _kind(dtype: Any) -> FeatureKind:
    name = str(dtype)
    return "categorical" if ("String" in name or "Bytes" in name) else "numeric"


def feature_schema(store: FeatureStore, feature_service: str) -> list[FeatureSpec]:
    """Features of a service in a stable order, with type and numeric/categorical kind.

    The order is the service's own (view by view, field by field): training builds its input
    matrix in this order and the gateway builds its request signature from the same list.
    """
    return list(_plan(store, feature_service).schema)

def feature_names(store: FeatureStore, feature_service: str) -> list[str]:
    """Feature column names of a service, in the order of :func:`feature_schema`."""
    return [s.name for s in feature_schema(store, feature_service)]


def feature_kinds(store: FeatureStore, feature_service: str) -> dict[str, FeatureKind]:
    """``{feature name: "numeric" | "categorical"}`` for building preprocessors and signatures."""
    return {s.name: s.kind for s in feature_schema(store, feature_service)}


def entity_keys(store: FeatureStore, feature_service: str) -> list[str]:
    """Join keys the service needs (``["customer_id"]`` for the churn domain)."""
    return list(_plan(store, feature_service).keys)


def request_fields(store: FeatureStore, feature_service: str) -> list[str]:
    """Request-data fields the service's on-demand views need (``["days_until_renewal"]``)."""
    return list(_plan(store, feature_service).request)


def _view(store: FeatureStore, name: str) -> Any:
    try:
        return store.get_feature_view(name)
    except Exception:
        return store.get_on_demand_feature_view(name)


# -- offline (training) --------------------------------------------------------------------------


def training_frame(store: FeatureStore, feature_service: str, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time correct training frame for ``entity_df``: one output row per input row.

    ``entity_df`` holds the entity keys, ``event_timestamp`` (the moment each label refers to),
    the request fields of the service's on-demand views and any other columns (the label): they
    pass through. For each row and view, the latest feature row at or before the timestamp and
    within the view's TTL is joined, never a later one; when there is none the features are null.

    Rows come back in the input order and columns as the input's then :func:`feature_names`, with
    numeric features as float64 and categorical ones as object (None when missing), whatever the
    data: the schema of a training snapshot does not depend on whether it happens to hold nulls.

    Why not a single ``get_historical_features`` call with the service: Feast 0.67's file (Dask)
    offline store silently drops an entity row when any one view has no row in its TTL window for
    it (``_filter_ttl`` filters the per-key cross join), and collapses rows that share a key and
    timestamp (feast-dev/feast 6787). So each view is joined on its own, over the distinct
    (keys, timestamp) pairs, and the on-demand views are then computed with Feast's own
    ``transform_arrow`` (the offline path Feast itself uses) on the joined input columns.
    """
    import pandas as pd
    import pyarrow as pa

    plan = _plan(store, feature_service)
    fs, keys, req = plan.service, list(plan.keys), list(plan.request)
    missing = [c for c in [*keys, TIMESTAMP, *req] if c not in entity_df.columns]
    if missing:
        raise ValueError(f"entity_df lacks columns {missing} needed by feature service {feature_service!r}")
    schema = feature_schema(store, feature_service)
    names = [f.name for f in schema]
    clash = [c for c in entity_df.columns if c in names or c.startswith("__esteira")]
    if clash:
        raise ValueError(f"entity_df columns {clash} clash with feature names of {feature_service!r}")

    row_id, kt_id = "__esteira_row", "__esteira_kt"
    edf = entity_df.copy()
    edf[TIMESTAMP] = pd.to_datetime(edf[TIMESTAMP], utc=True)
    edf[row_id] = edf.groupby([*keys, TIMESTAMP, *req], sort=False, dropna=False).ngroup()
    edf[kt_id] = edf.groupby([*keys, TIMESTAMP], sort=False, dropna=False).ngroup()
    base = edf.drop_duplicates(row_id)[[row_id, kt_id, *keys, TIMESTAMP, *req]].reset_index(drop=True)
    pairs = base.drop_duplicates(kt_id)[[kt_id, *keys, TIMESTAMP]].reset_index(drop=True)

    odfvs = []
    with warnings.catch_warnings():
        # "On demand feature view is an experimental feature": known, said once in the README.
        warnings.filterwarnings("ignore", message="On demand feature view", category=RuntimeWarning)
        for projection in fs.feature_view_projections:
            view = _view(store, projection.name)
            if type(view).__name__ == "OnDemandFeatureView":
                odfvs.append(view)
                continue
            refs = [f"{projection.name_to_use()}:{f.name}" for f in projection.features]
            part = store.get_historical_features(entity_df=pairs, features=refs).to_df()
            cols = [f.name for f in projection.features]
            base = base.merge(part.drop_duplicates(kt_id)[[kt_id, *cols]], on=kt_id, how="left")
        for view in odfvs:
            # Only the view's inputs: a "python" mode view turns its whole table into lists.
            inputs = [*keys, *(f.name for p in view.source_feature_view_projections.values() for f in p.features),
                      *(f.name for s in view.source_request_sources.values() for f in s.schema)]
            table = pa.Table.from_pandas(base[list(dict.fromkeys(inputs))], preserve_index=False)
            transformed = view.transform_arrow(table, False)
            for f in view.features:
                base[f.name] = transformed.column(f.name).to_pandas()

    for f in schema:
        if f.kind == "numeric":
            base[f.name] = pd.to_numeric(base[f.name], errors="coerce").astype("float64")
        else:
            base[f.name] = base[f.name].astype(object).where(base[f.name].notna(), None)
    out = edf.merge(base[[row_id, *names]], on=row_id, how="left", sort=False)
    return out[[*entity_df.columns, *names]].reset_index(drop=True)


# -- online (serving) ----------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """NaN and numpy scalars to plain Python, so a missing entity reads as None."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (list, dict, str, bytes)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def online_features(
    store: FeatureStore,
    feature_service: str,
    entity_rows: Sequence[Mapping[str, Any]],
    request_data: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Latest feature values for each entity row, from the online store, one dict per row.

    ``request_data`` feeds the on-demand views: one mapping for every row, or one per row; it may
    also already be inside ``entity_rows``. Unknown entities give None for stored features (not an
    error). Each result holds the entity keys and every feature of the service, in order.
    """
    if not entity_rows:
        return []
    plan = _plan(store, feature_service)
    keys, req = plan.keys, plan.request
    if request_data is None:
        per_row: list[Mapping[str, Any]] = [{} for _ in entity_rows]
    elif isinstance(request_data, Mapping):
        per_row = [request_data] * len(entity_rows)
    else:
        per_row = list(request_data)
        if len(per_row) != len(entity_rows):
            raise ValueError("request_data must be one mapping or one per entity row")
    rows: list[dict[str, Any]] = []
    for i, (row, extra) in enumerate(zip(entity_rows, per_row, strict=True)):
        merged = {**row, **extra}
        absent = [k for k in [*keys, *req] if merged.get(k) is None]
        if absent:
            raise ValueError(f"entity row {i} lacks {absent} needed by feature service {feature_service!r}")
        rows.append({k: merged[k] for k in [*keys, *req]})
    result = store.get_online_features(features=plan.service, entity_rows=rows).to_dict()
    names = [f.name for f in plan.schema]
    return [{c: _clean(result[c][i]) for c in [*keys, *names]} for i in range(len(rows))]


# -- materialization -----------------------------------------------------------------------------


def _source_counts(source: Any, key_cols: list[str], start: datetime, end: datetime) -> tuple[int, int] | None:
    """(source rows, distinct entities) with ``start <= ts <= end`` for a file source, else None.

    Feast writes the latest row per entity of the interval (its file store filters inclusively),
    so distinct entities is the number of online rows written.
    """
    from feast import FileSource

    if not isinstance(source, FileSource):
        return None
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    path = Path(source.path)
    if not path.exists():
        return (0, 0)
    ts = source.timestamp_field
    dataset = ds.dataset(str(path), format="parquet")
    flt = (ds.field(ts) >= start) & (ds.field(ts) <= end)
    table = dataset.to_table(columns=key_cols, filter=flt)
    if table.num_rows == 0:
        return (0, 0)
    if len(key_cols) == 1:
        distinct = len(pc.unique(table.column(key_cols[0])))
    else:
        distinct = table.group_by(key_cols).aggregate([]).num_rows
    return (table.num_rows, distinct)


def _earliest(source: Any) -> datetime | None:
    from feast import FileSource

    if not isinstance(source, FileSource) or not Path(source.path).exists():
        return None
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    col = ds.dataset(source.path, format="parquet").to_table(columns=[source.timestamp_field]).column(0)
    if len(col) == 0:
        return None
    value = pc.min(col).as_py()
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def materialize(
    store: FeatureStore,
    end: datetime | None = None,
    *,
    start: datetime | None = None,
    feature_views: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Load the online store from the offline store, incrementally; returns figures.

    Per view: from ``start`` if given (a backfill, e.g. after a late batch), else from where the
    last materialization ended, else (never materialized) from the earliest timestamp in the
    source. That last case is Feast's pitfall: ``materialize_incremental`` on a fresh view
    starts at ``now - ttl`` and silently skips older rows.

    Returns ``{"views": {name: {...}}, "rows_written", "source_rows", "seconds",
    "rows_per_second"}``: ``rows_written`` counts online rows (Feast keeps the latest row per
    entity of the interval), ``source_rows`` the offline rows read, and ``rows_per_second`` is
    source rows per second of materialization (the figure that grows with history). Counts are
    exact for file sources and None for other source types.
    """
    end = (end or datetime.now(UTC)).astimezone(UTC)
    views = [v for v in store.list_feature_views() if v.online]
    if feature_views is not None:
        views = [v for v in views if v.name in set(feature_views)]
    report: dict[str, Any] = {"end": end.isoformat(), "views": {}}
    total_rows = total_source = 0
    total_seconds = 0.0
    for view in views:
        if start is not None:
            begin, mode = start.astimezone(UTC), "explicit"
        elif view.most_recent_end_time is not None:
            begin, mode = view.most_recent_end_time.astimezone(UTC), "incremental"
        else:
            begin = _earliest(view.batch_source) or end - (view.ttl or timedelta(0))
            mode = "backfill"
        if begin >= end:
            report["views"][view.name] = {"mode": "up-to-date", "rows_written": 0, "seconds": 0.0}
            continue
        keys = [c.name for c in view.entity_columns]
        counts = _source_counts(view.batch_source, keys, begin, end)
        t0 = time.perf_counter()
        # Feast prints coloured progress to stdout; keep it out of flow logs and benchmarks.
        with contextlib.redirect_stdout(io.StringIO()):
            store.materialize(start_date=begin, end_date=end, feature_views=[view.name])
        seconds = time.perf_counter() - t0
        source_rows, written = counts if counts is not None else (None, None)
        report["views"][view.name] = {
            "mode": mode,
            "start": begin.isoformat(),
            "end": end.isoformat(),
            "rows_written": written,
            "source_rows": source_rows,
            "seconds": round(seconds, 4),
            "rows_per_second": round(source_rows / seconds, 1) if source_rows and seconds > 0 else None,
            "written_per_second": round(written / seconds, 1) if written and seconds > 0 else None,
        }
        total_rows += written or 0
        total_source += source_rows or 0
        total_seconds += seconds
        log.info("materialized %s (%s) %s..%s: %s rows in %.2fs", view.name, mode, begin, end, written, seconds)
    report["rows_written"] = total_rows
    report["source_rows"] = total_source
    report["seconds"] = round(total_seconds, 4)
    report["rows_per_second"] = round(total_source / total_seconds, 1) if total_seconds > 0 else None
    report["written_per_second"] = round(total_rows / total_seconds, 1) if total_seconds > 0 else None
    return report

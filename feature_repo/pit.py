"""Point-in-time joins over a feature service's file sources with polars ``join_asof``.

Why not Feast's own offline stores for file sources: both join each entity row with *every* source row of
its key before filtering by time. The file (Dask) store merges the entity rows with the whole source on the
join keys, then filters by TTL, sorts and drops duplicates (``feast/infra/offline_stores/dask.py``:
``_merge``, ``_filter_ttl``, ``_drop_duplicates``); the DuckDB store (through ibis) does the same as an
inequality join with a ``row_number()`` window (``feast/infra/offline_stores/ibis.py``,
``point_in_time_join``). The work and memory are (label rows) x (source rows per key): fine for many keys
with short histories, explosive for few keys with long ones. Measured with ``bench/bench_pit.py`` (three keys,
hourly history over two years): 1,000 label rows took 23 s and 3.7 GB through the file store (Dask spends
most of it hashing the persisted cross product); 20,000 rows were killed at 23 GB. The DuckDB store
(``feast[duckdb]``, not installed by esteira) joined 200,000 such rows at 9,000 rows/s, and 1M rows of many
keys with short histories at 80,000 rows/s; this module's join, 10M rows of either shape at 400,000 rows/s
or more in under 3 GB.

An as-of join is the same rule without the cross product: both sides sorted by time, each label row takes
the last source row of its key at or before its timestamp. Per view:

* rows are read with polars (projection and the time-range filter pushed into the parquet scan), renamed by
  the source's ``field_mapping`` then the projection's ``join_key_map`` (Feast's order), timestamps made
  UTC (naive ones read as UTC, as Feast does);
* source rows sort by (event timestamp, created timestamp) with nulls first, in file order otherwise, so the
  as-of match (the last row at or before the label's time, polars' documented "backward" rule) is the one
  with the latest created timestamp among equal event timestamps: Feast's tie rule;
* a match older than ``timestamp - ttl`` is not taken (the join's tolerance: the bound is inclusive, a TTL
  of 0 or None unbounded, as in Feast).

Rows equal on both timestamps leave Feast's stores free to pick either; here the last in file order wins, so a
training set is the same on every run.

Rows with a null event timestamp in a source are never matched (Feast's DuckDB store drops them in its join;
its Dask store can return them, an artefact of filtering a left join). Entity rows with a null key or
timestamp get null features.

:func:`unsupported` says when a service cannot take this path (a non-file source, an offline store that does
not read files, a type that does not line up); the caller then uses Feast's own retrieval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from core.project import is_uri

if TYPE_CHECKING:
    import polars as pl
    from feast import FeatureStore

FILE_OFFLINE_STORES = frozenset({"file", "dask", "duckdb"})
"""Offline store types whose retrieval reads ``FileSource`` files itself: reading them directly is the same
data. Any other store (PostgreSQL, Spark, a remote server...) is asked through Feast."""

TS = "__esteira_ts"  # the entity row's timestamp (UTC, ns), and each source's event timestamp once read
ROW = "__esteira_row"  # the entity row's position in the input
CREATED = "__esteira_created"


class Unsupported(Exception):
    """This service (or these entity rows) cannot be joined here; the message says why."""


@dataclass(frozen=True)
class ViewJoin:
    """One stored feature view as a service projects it: what to read and how to join it."""

    name: str  # the projection's name (alias if any), for messages
    view: Any  # feast.FeatureView
    keys: tuple[str, ...]  # entity-frame columns (after the projection's join-key map)
    source_keys: tuple[str, ...]  # the view's entity columns, as the source names them after field mapping
    features: tuple[str, ...]
    ttl: timedelta | None = None
    hidden: tuple[str, ...] = field(default=())  # features read only as on-demand inputs, dropped afterwards

    @property
    def source(self) -> Any:
        return self.view.batch_source


def _ttl(view: Any) -> timedelta | None:
    ttl = getattr(view, "ttl", None)
    return ttl if ttl and ttl.total_seconds() > 0 else None


def view_join(view: Any, projection: Any, features: Sequence[str], hidden: Sequence[str] = ()) -> ViewJoin:
    """A projection of ``view`` resolved: its entity-frame keys honour the projection's join-key map."""
    source_keys = tuple(c.name for c in view.entity_columns if not c.name.startswith("__dummy"))
    mapping = dict(getattr(projection, "join_key_map", None) or {})
    return ViewJoin(name=projection.name_to_use(), view=view,
                    keys=tuple(mapping.get(k, k) for k in source_keys), source_keys=source_keys,
                    features=tuple(features), ttl=_ttl(view), hidden=tuple(hidden))


def unsupported(store: FeatureStore, joins: Sequence[ViewJoin]) -> str | None:
    """Why these views cannot be joined from their files here (None when they can)."""
    from feast import FileSource
    from feast.data_format import ParquetFormat

    store_type = getattr(store.config.offline_store, "type", None)
    if store_type not in FILE_OFFLINE_STORES:
        return f"offline store {store_type!r} is not a file store"
    for join in joins:
        source = join.source
        if not isinstance(source, FileSource):
            return f"view {join.name!r} reads a {type(source).__name__}, not a FileSource"
        if source.file_format is not None and not isinstance(source.file_format, ParquetFormat):
            return f"view {join.name!r} reads {type(source.file_format).__name__} files, not parquet"
        if not join.source_keys:
            return f"view {join.name!r} has no entity (Feast joins it to every row)"
    return None


# -- reading a source ---------------------------------------------------------------------------------------


def _location(store: FeatureStore, source: Any) -> str:
    from feast.infra.offline_stores.file_source import FileSource

    return FileSource.get_uri_for_file_path(store.config.repo_path, source.file_options.uri)


def _storage_options(source: Any) -> dict[str, Any]:
    """fsspec options as Feast's Dask store builds them (``dask.py`` ``_read_datasource``)."""
    options: dict[str, Any] = {}
    creds = source.resolve_credentials() or {}
    if creds:
        options = {"key": creds.get("AWS_ACCESS_KEY_ID", ""),
                   "secret": creds.get("AWS_SECRET_ACCESS_KEY", "")}
        if creds.get("AWS_SESSION_TOKEN"):
            options["token"] = creds["AWS_SESSION_TOKEN"]
    endpoint = source.file_options.s3_endpoint_override
    if endpoint:
        options["client_kwargs"] = {"endpoint_url": endpoint}
    return options


def scan_source(store: FeatureStore, source: Any) -> pl.LazyFrame | None:
    """A lazy scan of a file source's parquet data (None when it holds no file).

    Local paths are scanned by polars itself over the files pyarrow's dataset discovery lists (the same
    files Feast's ``dd.read_parquet`` reads: names starting with ``_`` or ``.`` are skipped). URIs go through
    fsspec, as in Feast, with the source's credentials and endpoint; a protocol fsspec cannot open is
    :class:`Unsupported` (Feast's own store needs the same fsspec implementation).
    """
    import polars as pl
    import pyarrow.dataset as ds

    location = _location(store, source)
    pattern = any(c in location for c in "*?[")  # a glob, as dd.read_parquet and DuckDB accept
    if is_uri(location):
        from fsspec.core import url_to_fs

        try:
            fs, path = url_to_fs(location, **_storage_options(source))
        except (ImportError, ValueError) as exc:
            raise Unsupported(f"cannot open {location!r} with fsspec: {exc}") from exc
        dataset = ds.dataset(sorted(fs.glob(path)) if pattern else path, format="parquet", filesystem=fs)
        return pl.scan_pyarrow_dataset(dataset) if dataset.files else None
    if pattern:
        import glob

        files = sorted(glob.glob(location, recursive=True))
    else:
        files = ds.dataset(location, format="parquet").files
    # Files of one source may differ in columns (a pipeline that added one): read each for what it has.
    return pl.scan_parquet(files, missing_columns="insert", extra_columns="ignore") if files else None


def _utc(expr: pl.Expr, dtype: Any, what: str) -> pl.Expr:
    """A datetime column as UTC nanoseconds: naive values read as UTC (Feast's rule), aware ones converted."""
    import polars as pl

    if not isinstance(dtype, pl.Datetime):
        raise Unsupported(f"{what} is {dtype}, not a datetime")
    expr = expr.dt.replace_time_zone("UTC") if dtype.time_zone is None else expr.dt.convert_time_zone("UTC")
    return expr.cast(pl.Datetime("ns", "UTC"))


def _key_type(left: Any, right: Any, what: str) -> Any:
    """The dtype both sides of a join key are cast to, or :class:`Unsupported` when they do not line up."""
    import polars as pl

    def kind(dtype: Any) -> str:
        if dtype.is_integer():
            return "int"
        if dtype.is_float():
            return "float"
        if dtype in (pl.String, pl.Categorical) or isinstance(dtype, (pl.Categorical, pl.Enum)):
            return "str"
        return str(dtype)

    if left == pl.Null:  # an empty or all-null key column: nothing to match, any type will do
        return right
    if left == right and not left.is_nested():
        return left
    kinds = {kind(left), kind(right)}
    if kinds == {"int"}:
        return pl.Int64
    if kinds <= {"int", "float"}:
        return pl.Float64
    if kinds == {"str"}:
        return pl.String
    raise Unsupported(f"{what}: entity rows hold {left}, the source holds {right}")


@dataclass
class _Prepared:
    join: ViewJoin
    frame: pl.LazyFrame | None  # None: the source holds no file
    casts: dict[str, Any]


def _prepare(store: FeatureStore, join: ViewJoin, left_schema: dict[str, Any], lo: Any, hi: Any) -> _Prepared:
    """The view's source as a lazy frame of (keys, event timestamp, features), checked against the entity
    rows' key types, filtered to the time range the entity rows can match."""
    import polars as pl

    source = join.source
    scan = scan_source(store, source)
    if scan is None:
        return _Prepared(join, None, {})
    schema = scan.collect_schema()
    # Feast's order: the source's field mapping, then the projection's join-key map (dask.py _field_mapping).
    mapping = source.field_mapping or {}
    key_map = dict(zip(join.source_keys, join.keys, strict=True))
    origin: dict[str, list[str]] = {}
    for column in schema:
        named = mapping.get(column, column)
        origin.setdefault(key_map.get(named, named), []).append(column)
    created = source.created_timestamp_column or None
    wanted = list(dict.fromkeys([*join.keys, source.timestamp_field, *([created] if created else []),
                                 *join.features, *join.hidden]))
    absent = [c for c in wanted if c not in origin]
    if absent:
        raise ValueError(f"feature view {join.name!r}: its source {_location(store, source)} has no column "
                         f"{absent} (columns after field mapping: {list(origin)})")
    ambiguous = [c for c in wanted if len(origin[c]) > 1]
    if ambiguous:
        raise Unsupported(f"view {join.name!r}: several source columns are named {ambiguous} after mapping")
    col = {c: pl.col(origin[c][0]) for c in wanted}
    types = {c: schema[origin[c][0]] for c in wanted}
    casts = {k: _key_type(left_schema[k], types[k], f"join key {k!r} of view {join.name!r}")
             for k in join.keys}
    columns = [col[k].cast(casts[k]).alias(k) for k in join.keys]
    columns.append(_utc(col[source.timestamp_field], types[source.timestamp_field],
                        f"the event timestamp {source.timestamp_field!r} of view {join.name!r}").alias(TS))
    if created:
        columns.append(_utc(col[created], types[created], f"the created timestamp of view {join.name!r}")
                       .alias(CREATED))
    columns.extend(col[f].alias(f) for f in dict.fromkeys([*join.features, *join.hidden]))
    frame = scan.select(columns).filter(pl.col(TS).is_not_null() & (pl.col(TS) <= hi))
    if join.ttl is not None:
        frame = frame.filter(pl.col(TS) >= lo - join.ttl)
    return _Prepared(join, frame, casts)


# -- the join -----------------------------------------------------------------------------------------------


def join_views(store: FeatureStore, joins: Sequence[ViewJoin], left: pl.DataFrame) -> pl.DataFrame:
    """``left`` with every view's features joined point-in-time, in ``left``'s order.

    ``left`` holds the entity keys, :data:`TS` (UTC, ns) and any carried columns, and must be sorted by
    :data:`TS` (nulls last): an as-of join needs it, and sorting here would hold a second copy while the
    caller still has the first. Every view is checked (source, columns, key types) before any is read, so
    :class:`Unsupported` comes before any work; then views are read and joined one at a time, so the peak
    holds one source, not all.
    """
    import polars as pl

    stamps = left.get_column(TS).drop_nulls()
    lo, hi = (None, None) if stamps.is_empty() else (stamps.min(), stamps.max())
    del stamps
    bound = pl.Datetime("ns", "UTC")
    prepared = [_prepare(store, j, dict(left.schema), pl.lit(lo, bound), pl.lit(hi, bound)) for j in joins]
    for item in prepared:
        join = item.join
        cols = list(dict.fromkeys([*join.features, *join.hidden]))
        if item.frame is None or lo is None:
            left = left.with_columns(pl.lit(None).alias(c) for c in cols)
            continue
        clash = [c for c in cols if c in left.columns]
        if clash:
            raise ValueError(f"feature view {join.name!r} has features {clash} named like entity-row columns "
                             "or another view's features")
        try:
            right = item.frame.collect()
        except (pl.exceptions.SchemaError, pl.exceptions.ColumnNotFoundError,
                pl.exceptions.ComputeError) as exc:
            raise Unsupported(f"view {join.name!r}: its files do not read as one table ({exc})") from exc
        # Lexicographic (event, created) order with file order last, by stable sorts (one column each: a
        # third of the CPU of one stable multi-column sort here): the as-of match is the last row at or
        # before the label's time, so the latest created timestamp wins a tie on the event timestamp.
        if CREATED in right.columns:
            right = right.sort(CREATED, nulls_last=False, maintain_order=True).drop(CREATED)
        right = right.sort(TS, maintain_order=True)
        casts = {k: t for k, t in item.casts.items() if left.schema[k] != t}
        original = {k: left.schema[k] for k in casts}
        if casts:
            left = left.with_columns(pl.col(k).cast(t) for k, t in casts.items())
        # ``tolerance`` is inclusive (checked by tests/test_pit.py at the exact TTL boundary): Feast keeps a
        # row whose event timestamp is exactly ``timestamp - ttl``.
        left = left.join_asof(right, on=TS, by=list(join.keys), strategy="backward", tolerance=join.ttl,
                              check_sortedness=False)
        del right
        if casts:
            left = left.with_columns(pl.col(k).cast(t) for k, t in original.items())
    return left

"""Point-in-time correct training sets from the offline store: the training half of the one fetcher.

:func:`training_frame` and :func:`feature_repo.online.online_features` answer for the same feature service,
with on-demand features computed by the same registered function, so training and serving cannot skew.

Two engines build the same frame from the same feature service (its views, projections and join-key maps,
sources with their paths, timestamp and created-timestamp columns and field mappings, TTLs, features and
on-demand views):

* ``polars`` (:mod:`feature_repo.pit`): an as-of join per view straight from the parquet files of file
  sources. Chosen whenever every view reads a parquet ``FileSource`` and the offline store is a file store.
* ``feast``: Feast's own ``get_historical_features``, one view at a time. Used for every other source
  (PostgreSQL, warehouses...), and for anything the polars engine does not line up (it says why in the log).

Measured with ``bench/bench_pit.py`` on 2 cores (figures in the README): the polars engine builds 1M and 10M
row training sets at hundreds of thousands of rows per second in a few GB, where Feast's file store managed
about 25,000 rows/s with many keys and 44 rows/s with three keys and hourly history.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from feature_repo import pit
from feature_repo.services import FeatureSpec, feature_schema, service_plan, view_of

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl
    import pyarrow as pa
    from feast import FeatureStore

log = logging.getLogger(__name__)

TIMESTAMP = "event_timestamp"
"""The entity frame's timestamp column as Feast names it."""

Engine = Literal["auto", "polars", "feast"]

ON_DEMAND_CHUNK = 250_000
"""Rows per call of an on-demand view's function: a "python" mode view turns its input into Python lists,
so 10M rows at once would hold tens of millions of Python objects; a chunk holds a few hundred thousand."""


def training_frame(store: FeatureStore, feature_service: str, entity_df: pd.DataFrame, *,
                   timestamp: str = TIMESTAMP, engine: Engine = "auto") -> pd.DataFrame:
    """Point-in-time correct training frame for ``entity_df``: one output row per input row.

    ``entity_df`` holds the service's join keys, the ``timestamp`` column (the moment each label refers
    to), the request fields of the service's on-demand views and any other columns (the label, request
    features): they pass through. For each row and view, the latest feature row at or before the timestamp
    and within the view's TTL is joined, never a later one (ties on the event timestamp go to the latest
    created timestamp when the source has one); when there is none the features are null.

    Rows come back in the input order (duplicates kept) and columns as the input's then the service's
    features, the timestamp column as UTC, with numeric features as float64 and categorical ones as object
    (None when missing), whatever the data: the schema of a training snapshot does not depend on whether it
    happens to hold nulls.

    ``engine``: ``"auto"`` joins file sources with polars and anything else through Feast; ``"polars"``
    refuses (``ValueError``) what it cannot join; ``"feast"`` always asks Feast (the reference).

    Why the Feast path never makes a single ``get_historical_features`` call with the service: Feast 0.67's
    file (Dask) offline store silently drops an entity row when any one view has no row in its TTL window
    for it (``_filter_ttl`` filters the per-key cross join), and collapses rows that share a key and
    timestamp (feast-dev/feast 6787). So each view is joined on its own, over the distinct (keys, timestamp)
    pairs of its own keys, and the on-demand views are then computed with Feast's own ``transform_arrow``
    (the offline path Feast itself uses) on the joined input columns.
    """
    if engine not in ("auto", "polars", "feast"):
        raise ValueError(f"engine must be 'auto', 'polars' or 'feast', not {engine!r}")
    plan = service_plan(store, feature_service)
    schema = feature_schema(store, feature_service)
    with _quiet_on_demand():
        joins, odfvs = _resolve(store, plan.service)
    keys = list(dict.fromkeys(k for j in joins for k in j.keys))
    req = plan.request_names
    missing = [c for c in [*keys, timestamp, *req] if c not in entity_df.columns]
    if missing:
        raise ValueError(f"the entity rows lack columns {missing} needed by feature service "
                         f"{feature_service!r}")
    names = [f.name for f in schema]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"feature service {feature_service!r} has features {twice} from more than one view; "
                         "alias one projection's features so every column has its own name")
    if entity_df.columns.duplicated().any():
        twice = sorted({str(c) for c in entity_df.columns[entity_df.columns.duplicated()]})
        raise ValueError(f"the entity rows have duplicate columns {twice}")
    clash = [c for c in entity_df.columns if c in names or str(c).startswith("__esteira")]
    if clash:
        raise ValueError(f"entity rows have columns {clash} that are also features of {feature_service!r}; "
                         "rename them (a feature is read from the store, not taken from the rows)")
    if timestamp != TIMESTAMP and TIMESTAMP in entity_df.columns:
        raise ValueError(f"the entity rows have both {timestamp!r} and {TIMESTAMP!r}: keep one timestamp")

    reason = "engine='feast' was asked for" if engine == "feast" else pit.unsupported(store, joins)
    started = time.perf_counter()
    if reason is None:
        try:
            frame = _polars_frame(store, joins, odfvs, schema, entity_df, timestamp, keys, req)
        except pit.Unsupported as exc:
            reason = str(exc)
            if engine == "auto":  # file sources that did not line up: worth a look, the fallback is slower
                log.warning("training set for %s: the polars engine cannot join it (%s); asking Feast",
                            feature_service, reason)
        else:
            log.info("training set of %d rows for %s joined with polars in %.2f s", len(frame),
                     feature_service, time.perf_counter() - started)
            return frame
    if engine == "polars":
        raise ValueError(f"feature service {feature_service!r} cannot be joined with polars: {reason}")
    log.info("training set for %s through Feast's get_historical_features: %s", feature_service, reason)
    frame = _feast_frame(store, joins, odfvs, schema, entity_df, timestamp, keys, req)
    log.info("training set of %d rows for %s joined through Feast in %.2f s", len(frame), feature_service,
             time.perf_counter() - started)
    return frame


# -- what the service joins ---------------------------------------------------------------------------------


@contextmanager
def _quiet_on_demand() -> Iterator[None]:
    with warnings.catch_warnings():
        # "On demand feature view is an experimental feature": known, said once in the README.
        warnings.filterwarnings("ignore", message="On demand feature view", category=RuntimeWarning)
        yield


def _resolve(store: FeatureStore, service: Any) -> tuple[list[pit.ViewJoin], list[tuple[Any, Any]]]:
    """The service's stored views as :class:`pit.ViewJoin` (in service order), and its on-demand views with
    their projections. An on-demand input that the service does not itself list is joined as a hidden
    column of its view (read, fed to the function, not returned), as Feast's retrieval does."""
    joins: list[pit.ViewJoin] = []
    odfvs: list[tuple[Any, Any]] = []
    for projection in service.feature_view_projections:
        view = view_of(store, projection.name)
        if type(view).__name__ == "OnDemandFeatureView":
            odfvs.append((view, projection))
        else:
            joins.append(pit.view_join(view, projection, [f.name for f in projection.features]))
    for view, _ in odfvs:
        for source in view.source_feature_view_projections.values():
            wanted = [f.name for f in source.features]
            index = next((i for i, j in enumerate(joins) if j.view.name == source.name), None)
            if index is None:
                joins.append(pit.view_join(view_of(store, source.name), source, [], wanted))
                continue
            join = joins[index]
            extra = [f for f in wanted if f not in join.features and f not in join.hidden]
            if extra:
                joins[index] = dataclasses.replace(join, hidden=(*join.hidden, *extra))
    return joins, odfvs


def _odfv_inputs(view: Any, keys: Sequence[str]) -> list[str]:
    """An on-demand view's input columns, and only those: a "python" mode view turns its whole table into
    Python lists."""
    return list(dict.fromkeys([*keys, *(f.name for p in view.source_feature_view_projections.values()
                                        for f in p.features),
                               *(f.name for s in view.source_request_sources.values() for f in s.schema)]))


def _transform(view: Any, projection: Any, table: pa.Table) -> pa.Table:
    """Feast's own offline transformation of an on-demand view, returning the projection's features."""
    out = view.transform_arrow(table, False)
    if out.num_rows != table.num_rows:
        raise ValueError(f"on-demand view {view.name!r} returned {out.num_rows} rows for {table.num_rows}: "
                         "its function must return one row per input row")
    return out.select([f.name for f in projection.features])


# -- polars -------------------------------------------------------------------------------------------------


def _polars_frame(store: FeatureStore, joins: list[pit.ViewJoin], odfvs: list[tuple[Any, Any]],
                  schema: list[FeatureSpec], entity_df: pd.DataFrame, timestamp: str, keys: list[str],
                  req: list[str]) -> pd.DataFrame:
    """The training frame through :mod:`feature_repo.pit`: the entity rows' keys (and request fields, for
    on-demand views) sorted by time once, every view joined as of each row's time, on-demand views computed
    in chunks, then every column put back in the input order."""
    import numpy as np
    import pandas as pd
    import polars as pl

    stamps = pd.to_datetime(entity_df[timestamp], utc=True)
    carried = list(dict.fromkeys([*keys, *(req if odfvs else [])]))
    left = pl.DataFrame([_to_polars(entity_df[c]) for c in carried])
    ts = pl.Series(pit.TS, stamps.reset_index(drop=True)).cast(pl.Datetime("ns", "UTC"))
    left = left.with_columns(ts).with_row_index(pit.ROW)
    del ts
    left = left.sort(pit.TS, nulls_last=True)
    frame = pit.join_views(store, joins, left)
    del left
    for view, projection in odfvs:
        # In time order, chunk by chunk: an on-demand function is row by row (the gateway calls it on one row),
        # so neither changes its answers.
        inputs = _odfv_inputs(view, keys)
        parts = [pl.DataFrame(_transform(view, projection, frame.slice(start, ON_DEMAND_CHUNK).select(inputs)
                                         .to_arrow()))
                 for start in range(0, frame.height, ON_DEMAND_CHUNK)]
        if parts:
            frame = frame.hstack(pl.concat(parts, how="vertical_relaxed").get_columns())
        else:
            frame = frame.with_columns(pl.lit(None).alias(f.name) for f in projection.features)

    # Back to the input order, one column at a time: the peak holds the joined frame plus one column.
    order = frame.get_column(pit.ROW).arg_sort()
    frame = frame.select([f.name for f in schema])
    columns: dict[str, Any] = {}
    for c in entity_df.columns:
        # A copy: the frame must not share memory with the caller's rows. numpy-backed columns go in as
        # ndarrays (as a NumpyExtensionArray, pandas would scan an object column for nulls: 1 s per 10M).
        series = stamps if c == timestamp else entity_df[c]
        columns[c] = series.to_numpy(copy=True) if isinstance(series.dtype, np.dtype) else series.array.copy()
    for spec in schema:
        column = frame.get_column(spec.name).gather(order)
        frame = frame.drop(spec.name)
        columns[spec.name] = _pandas_column(column, spec)
        del column
    return pd.DataFrame(columns, index=pd.RangeIndex(len(entity_df)), copy=False)


def _to_polars(series: pd.Series) -> pl.Series:
    """An entity-frame column as polars, or :class:`pit.Unsupported` (mixed Python objects in a key...).

    Object columns go through ``pyarrow.array`` directly: polars' ``from_pandas`` first scans them for nulls
    with pandas (2 s for 10M strings here, against 0.7 s)."""
    import numpy as np
    import polars as pl
    import pyarrow as pa

    try:
        if series.dtype == np.dtype(object):
            return pl.Series(series.name, pa.array(series.to_numpy(), from_pandas=True))
        return pl.Series(series.name, series.reset_index(drop=True))
    except (TypeError, ValueError, pa.ArrowException, pl.exceptions.PolarsError) as exc:
        raise pit.Unsupported(f"the entity rows' {series.name!r} does not convert to Arrow: {exc}") from exc


def _pandas_column(column: pl.Series, spec: FeatureSpec) -> Any:
    """A feature column in the contract's representation: float64 for numbers, object with None otherwise."""
    import numpy as np
    import polars as pl

    if spec.kind == "numeric":
        return column.cast(pl.Float64, strict=False).to_numpy(writable=True)
    if column.dtype == pl.Null:
        return np.full(len(column), None, dtype=object)
    # Arrow's conversion shares one Python object per distinct value (deduplicate_objects): a 10M-row column
    # of a few categories costs its pointers, not 10M strings.
    values = column.to_arrow().to_pandas().to_numpy(dtype=object)
    if column.dtype != pl.String and column.null_count():
        values[column.is_null().to_numpy()] = None
    return values


# -- Feast ------------------------------------------------------------------------------------------------


def _feast_frame(store: FeatureStore, joins: list[pit.ViewJoin], odfvs: list[tuple[Any, Any]],
                 schema: list[FeatureSpec], entity_df: pd.DataFrame, timestamp: str, keys: list[str],
                 req: list[str]) -> pd.DataFrame:
    """The training frame through Feast's ``get_historical_features``, one view at a time (see
    :func:`training_frame` for why), over distinct rows, then back to every input row."""
    import pandas as pd
    import pyarrow as pa

    names = [f.name for f in schema]
    row_id, pair_id = "__esteira_row", "__esteira_pair"
    edf = entity_df.copy()
    if timestamp != TIMESTAMP:
        edf = edf.rename(columns={timestamp: TIMESTAMP})
    edf[TIMESTAMP] = pd.to_datetime(edf[TIMESTAMP], utc=True)
    edf[row_id] = edf.groupby([*keys, TIMESTAMP, *req], sort=False, dropna=False).ngroup()
    base = edf.drop_duplicates(row_id)[[row_id, *keys, TIMESTAMP, *req]].reset_index(drop=True)

    with _quiet_on_demand():
        for join in joins:
            # Distinct (this view's keys, timestamp) pairs, numbered so Feast's answer joins back by number.
            # Feast is asked for the registered view, which knows its own key names: a projection's join-key
            # map is applied here, by renaming the pairs' columns.
            base[pair_id] = base.groupby([*join.keys, TIMESTAMP], sort=False, dropna=False).ngroup()
            pairs = base.drop_duplicates(pair_id)[[pair_id, *join.keys, TIMESTAMP]].reset_index(drop=True)
            pairs = pairs.rename(columns={k: s for k, s in zip(join.keys, join.source_keys, strict=True)})
            cols = list(dict.fromkeys([*join.features, *join.hidden]))
            refs = [f"{join.view.name}:{f}" for f in cols]
            part = store.get_historical_features(entity_df=pairs, features=refs).to_df()
            base = base.merge(part.drop_duplicates(pair_id)[[pair_id, *cols]], on=pair_id, how="left")
        for view, projection in odfvs:
            table = pa.Table.from_pandas(base[_odfv_inputs(view, keys)], preserve_index=False)
            transformed = _transform(view, projection, table)
            for f in projection.features:
                base[f.name] = transformed.column(f.name).to_pandas()

    for f in schema:
        if f.kind == "numeric":
            base[f.name] = pd.to_numeric(base[f.name], errors="coerce").astype("float64")
        else:
            base[f.name] = base[f.name].astype(object).where(base[f.name].notna(), None)
    out = edf.merge(base[[row_id, *names]], on=row_id, how="left", sort=False)
    if timestamp != TIMESTAMP:
        out = out.rename(columns={TIMESTAMP: timestamp})
    return out[[*entity_df.columns, *names]].reset_index(drop=True)

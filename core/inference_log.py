"""The inference log's format: what the gateway writes and the monitor reads.

A neutral home for a shared format: the gateway's writer (:mod:`gateway.inference_log`) and the
monitor flow (:mod:`flows.monitoring.target`) both import this module, so neither part imports the
other. Layout under a root (a folder or any fsspec URI)::

    <root>/<model>/predictions/date=YYYY-MM-DD/<unix-ms>-<uuid>.parquet   one row per scored row
    <root>/<model>/requests/date=YYYY-MM-DD/<unix-ms>-<uuid>.parquet      one row per request: latency, status
    <root>/<model>/feedback/date=YYYY-MM-DD/<unix-ms>-<uuid>.parquet      ground truth by request id
    <root>/<model>/feedback-quarantine/date=YYYY-MM-DD/<unix-ms>-<uuid>.jsonl   labels that could not be stored
    <root>/<model>/profiles/<window-start unix s>/<uuid>.bin              whylogs profiles per time window

``date=`` is the UTC day the file was written and ``<unix-ms>`` the time it was written, so a file
holds nothing newer than its name says (a record is written after it is made).

Compacted files (:func:`compact_log`) sit beside the others in the same day folder::

    <root>/<model>/<kind>/date=YYYY-MM-DD/<unix-ms>-compacted-<hour unix s>-<run>.parquet

holding, in order, every row of the files written in that hour; ``<unix-ms>`` is the hour's last
millisecond, so the rule above still holds. The file's parquet metadata names the files it replaces
(:data:`MANIFEST_KEY`); a reader skips those if it still sees them (:func:`log_partitions`).

Prediction columns: :data:`META_COLUMNS`, one column per input feature under its own name, and one
column per output named ``output.<name>``. Feedback columns: :data:`FEEDBACK_COLUMNS`; ``label`` is the
model's class as its signature stores it (a float for a regression), ``sender`` says who sent it.
Request columns: :data:`REQUEST_COLUMNS` (:func:`request_schema`): one record per request whose version
was chosen, answered or not, with its ``latency_ms`` (from the start of handling to the answer built,
feature lookup and scoring included), its HTTP ``status`` (200, the refusal's status, 500 for a predictor
that failed) and the ``rows`` answered (0 for a failure); :func:`read_requests` reads them.

A prediction's or request's ``role`` says which part of the traffic it belongs to (:data:`ROLES`):
``production`` (a request that named no version, answered by the serving alias), ``canary`` (such a
request sent to the model's canary by its traffic share), ``shadow`` (the challenger's outputs for a request
production or the canary answered; never returned, no request record) and ``pinned`` (a request to a
``/versions/{v}/`` route, whichever version it names: its caller chose the version, so its rows are no
random sample and stay out of the comparison of production and canary).

Labels are accepted only within a horizon after the answer they label (``feedback_horizon_s``, see
:mod:`gateway.answered`), so the labels of a window of predictions are all in the feedback files written
between the window's start and its end plus that horizon: :func:`read_window` reads only those.

Reading: polars reads the files of a window in one multi-threaded scan and does the feedback join and the
sort; the result is the pandas frame the pandas reader built (same rows, order and dtypes: the feedback
columns are filled the way a pandas left merge fills them). Files of several schemas (a version that changed
the features, labels of two types) are read one schema at a time and concatenated by pandas, as before.
Measured with ``python bench/bench_monitor_read.py`` (2 busy shared cores, each reader in its own process):
the last hour of a log of 1 s flushes from 2 replicas at 200 requests/s (both readers given the same 29,991
prediction and feedback files, 649,463 rows kept) took 6.6 s against 92.5 s with one ``pandas.read_parquet``
per file, peak RSS 836 MB against 1,017 MB; 4,000,000 predictions of a day in hourly files, 5.6 s against
51.8 s. Only files written from an hour before the window starts are read, where the pandas reader also
read every file of the day before the window's.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:  # polars is imported where it is used: the gateway imports this module and never reads
    import polars as pl

log = logging.getLogger(__name__)

META_COLUMNS = ("request_id", "row", "timestamp", "model", "model_version", "role")
REQUEST_COLUMNS = ("request_id", "timestamp", "model", "model_version", "role", "latency_ms", "status", "rows")
"""Columns of the ``requests`` records (:func:`request_schema`, :func:`read_requests`)."""
ROLE_PRODUCTION = "production"
ROLE_CANARY = "canary"
ROLE_SHADOW = "shadow"
ROLE_PINNED = "pinned"
ROLES = (ROLE_PRODUCTION, ROLE_CANARY, ROLE_SHADOW, ROLE_PINNED)
"""What a prediction's or request's ``role`` can be (see the module's docstring)."""
OUTPUT_PREFIX = "output."
LABEL_COLUMN = "label"
"""Column of :func:`read_window`'s result holding the feedback (ground truth)."""
FEEDBACK_COLUMNS = ("request_id", "row", LABEL_COLUMN, "feedback_timestamp", "sender")
JOIN_KEYS = ("request_id", "row")
WRITE_LAG = timedelta(hours=1)
"""Room for the time between accepting a record and writing its file (one flush interval, normally a
second or a few) and for clocks that differ between replicas, when a day is computed from a record's time."""
COMPACT_SPAN = timedelta(hours=1)
"""What one compacted file covers: the files written in one UTC hour. Its name gives the hour's last
millisecond as its write time, so whoever keeps time by file names (the gateway's horizon for labels,
:mod:`gateway.answered`) may count an answer as up to this much younger than it is."""
COMPACT_MIN_AGE = 2 * WRITE_LAG
"""An hour is compacted once it ended this long ago: every file written in it has appeared by then (a file
written within :data:`WRITE_LAG` of the hour's end, visible within another)."""
MANIFEST_KEY = b"esteira.compacted_from"
"""Parquet metadata key of a compacted file: the JSON list of the names of the files it holds."""
_COMPACTED = re.compile(r"^(\d+)-compacted-(\d+)-(\d+)\.parquet$")
_READ_ATTEMPTS = 3


def filesystem(root: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) of a log root: a folder or any fsspec URI."""
    from fsspec.core import url_to_fs

    return url_to_fs(root)


def _default_root() -> str:
    from core.settings import get_settings

    return get_settings().resolved_inference_log_uri


def _default_horizon() -> timedelta:
    from core.settings import get_settings

    return timedelta(seconds=get_settings().feedback_horizon_s)


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


# -- labels ------------------------------------------------------------------------------------------------------


def label_key(label: Any) -> str:
    """Labels compare by value across JSON types: ``1``, ``1.0``, ``"1"`` and ``true`` are the same class."""
    if hasattr(label, "item"):  # numpy scalars, as a parquet column hands them back
        label = label.item()
    if isinstance(label, bool):
        label = int(label)
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    return str(label)


def canonical_label(label: Any, classes: Sequence[Any] | None, task: str | None) -> Any:
    """``label`` as the model's own class value (as its signature stores it), a float for a regression.

    Raises :class:`ValueError` naming the label when it is not a class of the model (or not a number
    for a regression). Without known classes the label is kept as given. Storing the class itself, not
    what the client typed, keeps one type per model in the log, so ``1``, ``"1"`` and ``true`` from three
    clients land in one column and mean one class.
    """
    if hasattr(label, "item"):
        label = label.item()
    if task == "regression":
        if isinstance(label, bool) or not isinstance(label, (int, float)):
            raise ValueError(f"label {label!r} is not a number (a regression's label)")
        return float(label)
    if not classes:
        return label
    by_key = {label_key(c): c for c in classes}
    try:
        return by_key[label_key(label)]
    except KeyError:
        raise ValueError(f"label {label!r} is not one of the classes {', '.join(repr(c) for c in classes)}"
                         ) from None


def canonical_labels(values: Iterable[Any], classes: Sequence[Any] | None, task: str | None, *,
                     strict: bool = False) -> pd.Series:
    """A label column as the model's class type (nullable integers for integer classes, so missing labels
    stay missing without turning the classes into floats; floats for a regression).

    ``strict=False`` (reading the log): a value that is not a class of ``classes`` (written for a version
    with other classes) is kept as it is. ``strict=True`` (scoring): such a value raises the
    :class:`ValueError` of :func:`canonical_label`, which names it. One rule for the gateway (which refuses
    such a label), the log reader and the monitor's performance: ``1``, ``1.0``, ``"1"`` and ``true`` are
    class 1 everywhere, and ``1.5`` or ``"1.0"`` is not.
    """
    out: list[Any] = []
    seen: dict[tuple[type, Any], Any] = {}  # a column holds few distinct labels: match each once
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out.append(None)
            continue
        key = (type(value), value)
        try:
            out.append(seen[key])
            continue
        except (KeyError, TypeError):  # TypeError: an unhashable value, matched each time
            pass
        try:
            canonical = canonical_label(value, classes, task)
        except ValueError:
            if strict:
                raise
            canonical = value
        try:
            seen[key] = canonical
        except TypeError:
            pass
        out.append(canonical)
    present = [v for v in out if v is not None]
    if task == "regression":
        return pd.Series(out, dtype="float64")
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pd.Series(out, dtype="Int64")
    return pd.Series(out, dtype=object)


# -- files ---------------------------------------------------------------------------------------------------------


def written_ms(path: str) -> int | None:
    """The write time (unix ms) a log file's name starts with, None for a name without one."""
    try:
        return int(path.rstrip("/").rsplit("/", 1)[-1].split("-", 1)[0])
    except ValueError:
        return None


def _day_of(day_dir: str) -> date | None:
    try:
        return datetime.strptime(day_dir.rstrip("/").rsplit("date=", 1)[-1], "%Y-%m-%d").date()
    except ValueError:
        return None


@lru_cache(maxsize=4096)
def _manifest(fs: Any, path: str) -> frozenset[str]:
    """Names of the files a compacted file holds. Cached: a compacted file's name fixes what it holds
    (it is rewritten only with the same rows, see :func:`compact_log`)."""
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as handle:
        metadata = pq.read_schema(handle).metadata or {}
    return frozenset(json.loads(metadata.get(MANIFEST_KEY, b"[]")))


def _visible(fs: Any, paths: Iterable[str]) -> list[str]:
    """``paths`` without the files a compacted file among them already holds, sorted."""
    paths = sorted(paths)
    held: set[str] = set()
    for path in paths:
        if _COMPACTED.match(path.rsplit("/", 1)[-1]):
            held |= _manifest(fs, path)
    return [path for path in paths if path.rsplit("/", 1)[-1] not in held] if held else paths


def log_partitions(root: str, model: str, kind: str, first_day: date | None = None,
                   last_day: date | None = None, *, since: datetime | None = None) -> dict[date, list[str]]:
    """The parquet files of one kind (``predictions``, ``feedback``) by UTC day, only the days in
    ``[first_day, last_day]`` (both optional): a day outside is never listed, let alone read.

    ``since``: only files written at or after it (by their name; a name without a time is kept). Each row
    appears in one listed file only: the files a compacted file holds are left out when it is listed.
    """
    fs, base = filesystem(root)
    folder = f"{base}/{model}/{kind}"
    if not fs.exists(folder):
        return {}
    since_ms = _as_utc(since).timestamp() * 1000 if since is not None else None
    out: dict[date, list[str]] = {}
    for day_dir in sorted(fs.ls(folder, detail=False)):
        day = _day_of(day_dir)
        if day is None or (first_day and day < first_day) or (last_day and day > last_day):
            continue
        if since is not None and day < _as_utc(since).date():  # written that day, so before ``since``
            continue
        paths = [path for path in fs.ls(day_dir, detail=False) if path.endswith(".parquet")]
        if since_ms is not None:
            paths = [path for path in paths if (written := written_ms(path)) is None or written >= since_ms]
        out[day] = _visible(fs, paths)
    return out


def read_log_file(root: str, path: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One file of the log (all columns, or only ``columns``)."""
    fs, _ = filesystem(root)
    with fs.open(path, "rb") as handle:
        return pd.read_parquet(io.BytesIO(handle.read()), columns=list(columns) if columns else None)


def _is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _schema_key(schema: Any) -> tuple[tuple[str, str], ...]:
    """Column names and arrow types, in any order: polars reads files with these equal as one table."""
    return tuple(sorted((field.name, str(field.type)) for field in schema))


def _schema_runs(items: Sequence[Any], schema_of: Callable[[Any], Any]) -> list[list[Any]]:
    """``items`` (files, in order) cut where the schema changes: runs of files polars reads as one table."""
    runs: list[list[Any]] = []
    previous = None
    for item in items:
        schema = schema_of(item)
        if previous is not None and (schema.equals(previous) or _schema_key(schema) == _schema_key(previous)):
            runs[-1].append(item)
        else:
            runs.append([item])
        previous = schema
    return runs


Prepare = Callable[["pl.LazyFrame"], "pl.LazyFrame"]
"""What to do with the rows of a read while polars reads them (filter, join, sort), when it reads them."""


def _read_files(fs: Any, paths: list[str], prepare: Prepare | None = None) -> pl.DataFrame | pd.DataFrame:
    """The rows of ``paths`` in order. When every file has the same columns and types: a polars frame, with
    ``prepare`` applied as polars reads them. Else: a pandas frame of every row (``prepare`` not applied).

    Why every file's schema is checked (pyarrow reads its footer, about 0.1 ms a file, while polars reads
    the rows): polars reads a column that a file stores as arrow's null type (an object column that was all
    None in one flush) as the other files' type, where pandas makes the column ``object``; and it refuses
    files that disagree otherwise. Files of several schemas are read one run of equal schemas at a time and
    joined by ``pandas.concat``, which is what the pandas reader did file by file.
    """
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    if _is_local(fs):
        lazy = pl.scan_parquet(paths, glob=False, hive_partitioning=False)
        # the footers are read in a thread while polars reads the rows (it does not hold the GIL meanwhile);
        # not with polars' own background collect, which can abort the process when a query it runs is
        # cancelled (pola-rs/polars 22515). The in-memory engine: on this read polars' default (streaming)
        # one took about as long and kept a higher peak RSS, above the pandas reader's
        with ThreadPoolExecutor(max_workers=1) as pool:
            schemas = pool.submit(_schema_runs, paths, pq.read_schema)
            try:
                frame = (prepare(lazy) if prepare is not None else lazy).collect(engine="in-memory")
            except pl.exceptions.SchemaError:  # files that disagree: the runs say where
                frame = None
            runs = schemas.result()
        if len(runs) == 1 and frame is not None:
            return frame
        parts = [pl.scan_parquet(run, glob=False, hive_partitioning=False).collect() for run in runs]
    else:  # any fsspec store: each file fetched once, read from memory
        blobs = [fs.cat_file(path) for path in paths]
        runs = _schema_runs(blobs, lambda blob: pq.read_schema(pa.BufferReader(blob)))
        parts = [pl.concat([pl.read_parquet(io.BytesIO(blob), hive_partitioning=False) for blob in run],
                           how="diagonal")  # the same columns, maybe in another order
                 for run in runs]
        if len(parts) == 1:
            return prepare(parts[0].lazy()).collect() if prepare is not None else parts[0]
    return pd.concat([part.to_pandas() for part in parts], ignore_index=True)


def _read_kind(root: str, model: str, kind: str, first_day: date | None, last_day: date | None,
               since: datetime | None, prepare: Prepare | None = None) -> pl.DataFrame | pd.DataFrame | None:
    """The files of one kind in the days and since the time given (:func:`_read_files`); None if none.

    A file can disappear between the listing and the read when :func:`compact_log` has just replaced it:
    the files are then listed again (the compacted file holds those rows) and read again.
    """
    fs, _ = filesystem(root)
    for attempt in range(1, _READ_ATTEMPTS + 1):
        partitions = log_partitions(root, model, kind, first_day, last_day, since=since)
        paths = [path for day in sorted(partitions) for path in partitions[day]]
        if not paths:
            return None
        try:
            return _read_files(fs, paths, prepare)
        except FileNotFoundError:
            if attempt == _READ_ATTEMPTS:
                raise
            log.info("a %s file of %s was replaced by compaction while being read; listing again", kind, model)
    return None  # not reached


def feedback_days(start: datetime | None, end: datetime | None, horizon: timedelta) -> tuple[date | None, date | None]:
    """The days whose feedback files can hold labels for predictions made in ``[start, end)``: a label
    is accepted at or after its answer and at most ``horizon`` later (plus :data:`COMPACT_SPAN` when the
    answer was compacted), and written soon after that."""
    first = (_as_utc(start) - WRITE_LAG).date() if start else None
    last = (_as_utc(end) + horizon + WRITE_LAG + COMPACT_SPAN).date() if end else None
    return first, last


def _latest_feedback(model: str, start: datetime | None, end: datetime | None, root: str,
                     horizon: timedelta | None) -> pl.DataFrame | pd.DataFrame | None:
    """The latest label per (request id, row) for predictions made in ``[start, end)``, as polars or pandas
    (:func:`_read_files`); None when there is no feedback file. Ties in time keep the last one read."""
    import polars as pl

    def latest(lazy: pl.LazyFrame) -> pl.LazyFrame:
        return (lazy.sort("feedback_timestamp", maintain_order=True, nulls_last=True)
                .filter(pl.struct(*JOIN_KEYS).is_last_distinct()))

    first, last = feedback_days(start, end, horizon if horizon is not None else _default_horizon())
    since = _as_utc(start) - WRITE_LAG if start else None
    frame = _read_kind(root, model, "feedback", first, last, since, latest)
    if frame is None or isinstance(frame, pl.DataFrame):
        return frame
    return (frame.sort_values("feedback_timestamp", kind="stable")
            .drop_duplicates(list(JOIN_KEYS), keep="last").reset_index(drop=True))


def _feedback_frame(feedback: pl.DataFrame | pd.DataFrame, classes: Sequence[Any] | None,
                    task: str | None) -> pd.DataFrame:
    import polars as pl

    frame = feedback.to_pandas() if isinstance(feedback, pl.DataFrame) else feedback
    if classes or task:
        frame[LABEL_COLUMN] = canonical_labels(frame[LABEL_COLUMN], classes, task)
    return frame


def read_feedback(model: str, start: datetime | None = None, end: datetime | None = None, *,
                  root: str | None = None, horizon: timedelta | None = None,
                  classes: Sequence[Any] | None = None, task: str | None = None) -> pd.DataFrame:
    """The latest label per (request id, row) for predictions made in ``[start, end)``.

    Reads only the feedback files written from an hour before ``start`` to the day of ``end + horizon``
    (the settings' ``feedback_horizon_s`` by default). With ``classes`` or ``task`` the labels come back as
    the model's class type (:func:`canonical_labels`), whatever JSON type each client sent.
    """
    feedback = _latest_feedback(model, start, end, root or _default_root(), horizon)
    if feedback is None or len(feedback) == 0:
        return pd.DataFrame(columns=list(FEEDBACK_COLUMNS))
    return _feedback_frame(feedback, classes, task)


def _window_filter(start: datetime | None, end: datetime | None, role: str | None) -> pl.Expr | None:
    import polars as pl

    conditions = []
    if start is not None:
        conditions.append(pl.col("timestamp") >= start)
    if end is not None:
        conditions.append(pl.col("timestamp") < end)
    if role is not None:
        conditions.append(pl.col("role") == role)
    return pl.all_horizontal(conditions) if conditions else None


_POSITION = "__esteira_feedback_row"
_ORDER = ["timestamp", "request_id", "row"]


def read_window(model: str, start: datetime | None = None, end: datetime | None = None, *,
                root: str | None = None, role: str | None = "production", horizon: timedelta | None = None,
                classes: Sequence[Any] | None = None, task: str | None = None) -> pd.DataFrame:
    """Predictions of ``model`` with ``start <= timestamp < end``, joined with feedback.

    Adds ``label`` (the latest feedback for that request id and row, NaN/None where none came),
    ``feedback_timestamp`` and ``sender``. ``role`` keeps one part of the traffic (:data:`ROLES`;
    production's answers by default); ``role=None`` keeps every role (canary, shadow and pinned predictions
    too). Feedback is read as :func:`read_feedback` does (only the files that can hold this window's labels;
    labels as the model's class type when ``classes`` or ``task`` is given). Rows are sorted by time, request
    id, row.

    With polars, the window's filter, the join (on the keys only) and the sort run while the files are
    read; the feedback columns are then taken from the pandas feedback frame by position, so a prediction
    without feedback gets what a pandas left merge gives it (NaN, NaT, ``<NA>``; integer labels become
    floats only when some are missing).
    """
    import polars as pl

    root = root or _default_root()
    start = _as_utc(start) if start else None
    end = _as_utc(end) if end else None
    first_day = (start - timedelta(days=1)).date() if start else None
    last_day = (end + timedelta(days=1)).date() if end else None
    feedback = _latest_feedback(model, start, end, root, horizon)
    labels = _feedback_frame(feedback, classes, task) if feedback is not None and len(feedback) else None
    added = [c for c in labels.columns if c not in JOIN_KEYS] if labels is not None else []
    where = _window_filter(start, end, role)

    def prepare(lazy: pl.LazyFrame) -> pl.LazyFrame:
        lazy = lazy.filter(where) if where is not None else lazy
        if isinstance(feedback, pl.DataFrame) and added and not set(added) & set(lazy.collect_schema().names()):
            keyed = feedback.lazy().select(*JOIN_KEYS).with_row_index(_POSITION)
            lazy = lazy.join(keyed, on=list(JOIN_KEYS), how="left", maintain_order="left")
        return lazy.sort(_ORDER, maintain_order=True, nulls_last=True)

    frame = _read_kind(root, model, "predictions", first_day, last_day, start - WRITE_LAG if start else None,
                       prepare)
    if frame is None:
        return pd.DataFrame(columns=[*META_COLUMNS, *FEEDBACK_COLUMNS[2:]])
    if isinstance(frame, pl.DataFrame):  # filtered and sorted; joined unless the feedback is pandas
        positions = frame.get_column(_POSITION).cast(pl.Int64).fill_null(-1).to_numpy() \
            if _POSITION in frame.columns else None
        rows = frame.drop(_POSITION, strict=False).to_pandas()
        del frame  # the polars copy, before the label columns are built
        if labels is None:
            return rows.assign(label=None, feedback_timestamp=pd.NaT, sender=None)
        if positions is not None:
            taken = labels[added].reindex(positions).reset_index(drop=True)  # -1: none, filled like a merge
            for column in added:
                rows[column] = taken[column]
            return rows
    else:
        rows = _filter_pandas(frame, start, end, role)
        if labels is None:
            rows = rows.assign(label=None, feedback_timestamp=pd.NaT, sender=None)
            return rows.sort_values(_ORDER).reset_index(drop=True)
    rows = rows.merge(labels, on=list(JOIN_KEYS), how="left")
    return rows.sort_values(_ORDER).reset_index(drop=True)


def _filter_pandas(frame: pd.DataFrame, start: datetime | None, end: datetime | None, role: str | None
                   ) -> pd.DataFrame:
    if start is not None:
        frame = frame[frame["timestamp"] >= pd.Timestamp(start)]
    if end is not None:
        frame = frame[frame["timestamp"] < pd.Timestamp(end)]
    if role is not None:
        frame = frame[frame["role"] == role]
    return frame


# -- requests ------------------------------------------------------------------------------------------------------


def request_schema() -> Any:
    """The ``requests`` files' arrow schema: :data:`REQUEST_COLUMNS` with their types."""
    import pyarrow as pa

    return pa.schema([("request_id", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC")),
                      ("model", pa.string()), ("model_version", pa.int64()), ("role", pa.string()),
                      ("latency_ms", pa.float64()), ("status", pa.int64()), ("rows", pa.int64())])


def read_requests(model: str, start: datetime | None = None, end: datetime | None = None, *,
                  root: str | None = None) -> pd.DataFrame:
    """The request records of ``model`` with ``start <= timestamp < end``, sorted by time: exactly
    :data:`REQUEST_COLUMNS` (an empty frame with those columns and types when there are none).

    One row per request whose version was chosen (``role``, ``model_version``), answered or failed
    (``status``), with its ``latency_ms``: what error-rate and latency comparisons of two versions read.
    Only files written from an hour before ``start`` (:data:`WRITE_LAG`) are read, as :func:`read_window`.
    """
    import polars as pl

    root = root or _default_root()
    start = _as_utc(start) if start else None
    end = _as_utc(end) if end else None
    first_day = (start - timedelta(days=1)).date() if start else None
    last_day = (end + timedelta(days=1)).date() if end else None
    where = _window_filter(start, end, None)
    order = ["timestamp", "request_id"]

    def prepare(lazy: pl.LazyFrame) -> pl.LazyFrame:
        lazy = lazy.filter(where) if where is not None else lazy
        return lazy.sort(order, maintain_order=True, nulls_last=True).select(REQUEST_COLUMNS)

    frame = _read_kind(root, model, "requests", first_day, last_day, start - WRITE_LAG if start else None, prepare)
    if frame is None:
        return request_schema().empty_table().to_pandas()
    if isinstance(frame, pl.DataFrame):
        return frame.to_pandas()
    rows = _filter_pandas(frame, start, end, None)
    return rows.sort_values(order, kind="stable")[list(REQUEST_COLUMNS)].reset_index(drop=True)


# -- compaction ----------------------------------------------------------------------------------------------------


@dataclass
class Compaction:
    """What one :func:`compact_log` pass did."""

    hours: int = 0
    files_in: int = 0
    files_out: int = 0
    rows: int = 0
    removed_leftovers: int = 0
    late_files: int = 0
    seconds: float = 0.0
    finished: bool = True


def _modified(info: dict[str, Any]) -> float | None:
    """A listing entry's modification time (unix s), from the keys fsspec's stores use; None if unknown."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return _as_utc(value).timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return _as_utc(datetime.fromisoformat(value.replace("Z", "+00:00"))).timestamp()
            except ValueError:
                continue
    return None


def _write_atomic(fs: Any, path: str, data: bytes) -> None:
    tmp = f"{path}.partial-{uuid.uuid4().hex[:8]}"
    with fs.open(tmp, "wb") as handle:
        handle.write(data)
    fs.mv(tmp, path)  # a reader sees the whole file or none of it


def _compact_hour(fs: Any, day_dir: str, hour_s: int, sources: list[str]) -> tuple[int, int]:
    """Rewrite ``sources`` (one hour's files, in name order) as compacted files, one per run of files with
    the same schema; then delete the sources. Returns (files written, rows)."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas, counts = {}, {}
    for path in sources:
        with fs.open(path, "rb") as handle:
            footer = pq.ParquetFile(handle)
            schemas[path], counts[path] = footer.schema_arrow, footer.metadata.num_rows
    last_ms = (hour_s + int(COMPACT_SPAN.total_seconds())) * 1000 - 1
    runs = _schema_runs(sources, schemas.__getitem__)
    rows = 0
    for number, paths in enumerate(runs):
        if _is_local(fs):
            frame = pl.scan_parquet(paths, glob=False, hive_partitioning=False).collect()
        else:
            frame = pl.concat([pl.read_parquet(io.BytesIO(fs.cat_file(p)), hive_partitioning=False) for p in paths],
                              how="diagonal")
        expected = sum(counts[path] for path in paths)
        schema = schemas[paths[0]]
        table = frame.to_arrow().select(schema.names).cast(schema.remove_metadata())
        held = json.dumps([p.rsplit("/", 1)[-1] for p in paths]).encode()
        table = table.replace_schema_metadata({**(schema.metadata or {}), MANIFEST_KEY: held})
        if table.num_rows != expected:
            raise RuntimeError(f"compaction read {table.num_rows} rows from files holding {expected}")
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer, row_group_size=128 * 1024)
        name = f"{last_ms}-compacted-{hour_s}-{number:04d}.parquet"  # the same for any pass over this hour
        _write_atomic(fs, f"{day_dir}/{name}", buffer.getvalue().to_pybytes())
        rows += table.num_rows
    for path in sources:  # only now: until here every row is in its small file
        try:
            fs.rm(path)
        except FileNotFoundError:  # another compaction of the same hour got there first
            pass
    return len(runs), rows


def compact_log(model: str, *, root: str | None = None,
                kinds: Sequence[str] = ("predictions", "requests", "feedback"),
                now: float | None = None, min_age: timedelta = COMPACT_MIN_AGE, budget_s: float | None = None,
                clock: Callable[[], float] = time.time) -> Compaction:
    """Merge the files written in each closed hour into one file (one per schema), newest hour first.

    Why: at one flush a second, each replica writes 3,600 files an hour per kind, and every reader pays per
    file (the monitor for a window, the gateway for the request ids it knows). An hour is closed once it
    ended ``min_age`` ago. What is safe about it:

    * nothing is lost: the compacted file is written whole (to a temporary name, then renamed) and checked
      to hold as many rows as its sources before any source is deleted;
    * a reader never counts a row twice: a compacted file names the files it holds, and
      :func:`log_partitions` leaves those out while they still exist;
    * a reader never misses one: sources are deleted only after their compacted file exists, and a reader
      that listed a source just deleted lists again (:func:`_read_kind`);
    * two compactions at once agree: the files of a closed hour do not change, so both write the same rows
      under the same name. A file that appeared later than :data:`WRITE_LAG` after its hour (a clock far
      off) is never compacted, and an hour already compacted is only cleaned up (its leftover sources
      deleted), never compacted again;
    * stores without modification times in their listings are left alone.

    ``budget_s``: stop starting new hours after that long (the rest is done on the next pass).

    Cost (``python bench/bench_monitor_read.py``): the 29,991 files of 2 h 5 min of 1 s flushes from 2 replicas at
    200 requests/s, predictions and feedback, became 6 files in 22.4 s; the last hour then read in 0.79 s
    instead of 6.6 s.
    """
    fs, base = filesystem(root or _default_root())
    started = clock()
    now = clock() if now is None else now
    result = Compaction()
    span = int(COMPACT_SPAN.total_seconds())
    for kind in kinds:
        folder = f"{base}/{model}/{kind}"
        if not fs.exists(folder):
            continue
        for day_dir in sorted(fs.ls(folder, detail=False), reverse=True):
            if _day_of(day_dir) is None:
                continue
            hours: dict[int, list[dict[str, Any]]] = {}
            compacted: dict[int, list[str]] = {}
            for info in fs.ls(day_dir, detail=True):
                name = info["name"].rsplit("/", 1)[-1]
                if not name.endswith(".parquet"):
                    continue
                if match := _COMPACTED.match(name):
                    compacted.setdefault(int(match.group(2)), []).append(info["name"])
                elif (ms := written_ms(name)) is not None:
                    hours.setdefault(ms // 1000 // span * span, []).append(info)
            for hour_s in sorted(set(hours) | set(compacted), reverse=True):
                if hour_s + span + min_age.total_seconds() > now:
                    continue
                if budget_s is not None and clock() - started > budget_s:
                    result.finished = False
                    result.seconds = clock() - started
                    return result
                files = hours.get(hour_s, [])
                if hour_s in compacted:  # done before: delete what a pass that stopped midway left behind
                    held = set().union(*(_manifest(fs, path) for path in compacted[hour_s]))
                    for info in files:
                        if info["name"].rsplit("/", 1)[-1] in held:
                            fs.rm(info["name"])
                            result.removed_leftovers += 1
                    continue
                deadline = hour_s + span + WRITE_LAG.total_seconds()
                sources = sorted(info["name"] for info in files
                                 if (modified := _modified(info)) is not None and modified <= deadline)
                result.late_files += len(files) - len(sources)
                if len(sources) < 2:
                    continue
                try:
                    written, rows = _compact_hour(fs, day_dir, hour_s, sources)
                except FileNotFoundError:  # another compaction finished this hour meanwhile
                    continue
                result.hours += 1
                result.files_in += len(sources)
                result.files_out += written
                result.rows += rows
    result.seconds = clock() - started
    return result


def read_profile(model: str, start: datetime | None = None, end: datetime | None = None, *,
                 root: str | None = None) -> bytes | None:
    """One whylogs profile merging every window that starts in ``[start, end)``; None if there is none."""
    from core.profiles import merge_profiles

    fs, base = filesystem(root or _default_root())
    folder = f"{base}/{model}/profiles"
    if not fs.exists(folder):
        return None
    lo = _as_utc(start).timestamp() if start else float("-inf")
    hi = _as_utc(end).timestamp() if end else float("inf")
    blobs = []
    for window_dir in fs.ls(folder, detail=False):
        try:
            window = int(window_dir.rstrip("/").rsplit("/", 1)[-1])
        except ValueError:
            continue
        if lo <= window < hi:
            for path in fs.ls(window_dir, detail=False):
                if path.endswith(".bin"):
                    with fs.open(path, "rb") as handle:
                        blobs.append(handle.read())
    return merge_profiles(blobs)

"""The inference log's format: what the gateway writes and the monitor reads.

A neutral home for a shared format: the gateway's writer (:mod:`gateway.inference_log`) and the
monitor flow (:mod:`flows.monitoring.target`) both import this module, so neither part imports the
other. Layout under a root (a folder or any fsspec URI)::

    <root>/<model>/predictions/date=YYYY-MM-DD/<unix-ms>-<uuid>.parquet   one row per scored row
    <root>/<model>/feedback/date=YYYY-MM-DD/<unix-ms>-<uuid>.parquet      ground truth by request id
    <root>/<model>/feedback-quarantine/date=YYYY-MM-DD/<unix-ms>-<uuid>.jsonl   labels that could not be stored
    <root>/<model>/profiles/<window-start unix s>/<uuid>.bin              whylogs profiles per time window

``date=`` is the UTC day the file was written and ``<unix-ms>`` the time it was written, so a file
holds nothing newer than its name says (a record is written after it is made).

Prediction columns: :data:`META_COLUMNS`, one column per input feature under its own name, and one
column per output named ``output.<name>``. Feedback columns: :data:`FEEDBACK_COLUMNS`; ``label`` is the
model's class as its signature stores it (a float for a regression), ``sender`` says who sent it.

Labels are accepted only within a horizon after the answer they label (``feedback_horizon_s``, see
:mod:`gateway.answered`), so the labels of a window of predictions are all in the feedback files written
between the window's start and its end plus that horizon: :func:`read_window` reads only those.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pandas as pd

META_COLUMNS = ("request_id", "row", "timestamp", "model", "model_version", "role")
OUTPUT_PREFIX = "output."
LABEL_COLUMN = "label"
"""Column of :func:`read_window`'s result holding the feedback (ground truth)."""
FEEDBACK_COLUMNS = ("request_id", "row", LABEL_COLUMN, "feedback_timestamp", "sender")
WRITE_LAG = timedelta(hours=1)
"""Room for the time between accepting a record and writing its file (one flush interval, normally a
second or a few) and for clocks that differ between replicas, when a day is computed from a record's time."""


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


def canonical_labels(values: Iterable[Any], classes: Sequence[Any] | None, task: str | None) -> pd.Series:
    """A label column read back as the model's class type (nullable integers for integer classes, so
    missing labels stay missing without turning the classes into floats). A value that is not a class
    of ``classes`` (written for a version with other classes) is kept as it is."""
    out = []
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out.append(None)
            continue
        try:
            out.append(canonical_label(value, classes, task))
        except ValueError:
            out.append(value)
    present = [v for v in out if v is not None]
    if task == "regression":
        return pd.Series(out, dtype="float64")
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pd.Series(out, dtype="Int64")
    return pd.Series(out, dtype=object)


# -- files ---------------------------------------------------------------------------------------------------------


def log_partitions(root: str, model: str, kind: str, first_day: date | None = None,
                   last_day: date | None = None) -> dict[date, list[str]]:
    """The parquet files of one kind (``predictions``, ``feedback``) by UTC day, only the days in
    ``[first_day, last_day]`` (both optional): a day outside is never listed, let alone read."""
    fs, base = filesystem(root)
    folder = f"{base}/{model}/{kind}"
    if not fs.exists(folder):
        return {}
    out: dict[date, list[str]] = {}
    for day_dir in sorted(fs.ls(folder, detail=False)):
        label = day_dir.rstrip("/").rsplit("date=", 1)[-1]
        try:
            day = datetime.strptime(label, "%Y-%m-%d").date()
        except ValueError:
            continue
        if (first_day and day < first_day) or (last_day and day > last_day):
            continue
        out[day] = sorted(path for path in fs.ls(day_dir, detail=False) if path.endswith(".parquet"))
    return out


def read_log_file(root: str, path: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One file of the log (all columns, or only ``columns``)."""
    fs, _ = filesystem(root)
    with fs.open(path, "rb") as handle:
        return pd.read_parquet(io.BytesIO(handle.read()), columns=list(columns) if columns else None)


def _read_files(root: str, model: str, kind: str, first_day: date | None, last_day: date | None) -> pd.DataFrame:
    frames = [read_log_file(root, path) for paths in log_partitions(root, model, kind, first_day, last_day).values()
              for path in paths]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def feedback_days(start: datetime | None, end: datetime | None, horizon: timedelta) -> tuple[date | None, date | None]:
    """The days whose feedback files can hold labels for predictions made in ``[start, end)``: a label
    is accepted at or after its answer and at most ``horizon`` later, and written soon after that."""
    first = (_as_utc(start) - WRITE_LAG).date() if start else None
    last = (_as_utc(end) + horizon + WRITE_LAG).date() if end else None
    return first, last


def read_feedback(model: str, start: datetime | None = None, end: datetime | None = None, *,
                  root: str | None = None, horizon: timedelta | None = None,
                  classes: Sequence[Any] | None = None, task: str | None = None) -> pd.DataFrame:
    """The latest label per (request id, row) for predictions made in ``[start, end)``.

    Reads only the feedback files written from ``start``'s day to the day of ``end + horizon`` (the
    settings' ``feedback_horizon_s`` by default). With ``classes`` or ``task`` the labels come back as the
    model's class type (:func:`canonical_labels`), whatever JSON type each client sent.
    """
    first, last = feedback_days(start, end, horizon if horizon is not None else _default_horizon())
    feedback = _read_files(root or _default_root(), model, "feedback", first, last)
    if feedback.empty:
        return pd.DataFrame(columns=list(FEEDBACK_COLUMNS))
    latest = (feedback.sort_values("feedback_timestamp", kind="stable")
              .drop_duplicates(["request_id", "row"], keep="last").reset_index(drop=True))
    if classes or task:
        latest[LABEL_COLUMN] = canonical_labels(latest[LABEL_COLUMN], classes, task)
    return latest


def read_window(model: str, start: datetime | None = None, end: datetime | None = None, *,
                root: str | None = None, role: str | None = "production", horizon: timedelta | None = None,
                classes: Sequence[Any] | None = None, task: str | None = None) -> pd.DataFrame:
    """Predictions of ``model`` with ``start <= timestamp < end``, joined with feedback.

    Adds ``label`` (the latest feedback for that request id and row, NaN/None where none came),
    ``feedback_timestamp`` and ``sender``. ``role=None`` includes shadow predictions too. Feedback is read
    as :func:`read_feedback` does (only the days that can hold this window's labels; labels as the
    model's class type when ``classes`` or ``task`` is given).
    """
    root = root or _default_root()
    start = _as_utc(start) if start else None
    end = _as_utc(end) if end else None
    first_day = (start - timedelta(days=1)).date() if start else None
    last_day = (end + timedelta(days=1)).date() if end else None
    frame = _read_files(root, model, "predictions", first_day, last_day)
    if frame.empty:
        return pd.DataFrame(columns=[*META_COLUMNS, *FEEDBACK_COLUMNS[2:]])
    if start is not None:
        frame = frame[frame["timestamp"] >= pd.Timestamp(start)]
    if end is not None:
        frame = frame[frame["timestamp"] < pd.Timestamp(end)]
    if role is not None:
        frame = frame[frame["role"] == role]
    feedback = read_feedback(model, start, end, root=root, horizon=horizon, classes=classes, task=task)
    if feedback.empty:
        frame = frame.assign(label=None, feedback_timestamp=pd.NaT, sender=None)
    else:
        frame = frame.merge(feedback, on=["request_id", "row"], how="left")
    return frame.sort_values(["timestamp", "request_id", "row"]).reset_index(drop=True)


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

"""The inference log's reading side as it was before polars: one ``pandas.read_parquet`` per file, every file
of every day the window can touch, ``pandas.concat``, then a pandas merge with the feedback.

Kept verbatim as the oracle the new reader (:mod:`core.inference_log`) is compared with, row for row and
dtype for dtype (``tests/test_monitor_read.py``), and as the baseline ``bench/bench_monitor_read.py``
measures it against. Not used by esteira itself.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd

from core.inference_log import (
    FEEDBACK_COLUMNS,
    LABEL_COLUMN,
    META_COLUMNS,
    WRITE_LAG,
    _as_utc,
    _default_horizon,
    _default_root,
    canonical_label,
    filesystem,
)


def canonical_labels(values: Iterable[Any], classes: Sequence[Any] | None, task: str | None) -> pd.Series:
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


def log_partitions(root: str, model: str, kind: str, first_day: date | None = None,
                   last_day: date | None = None) -> dict[date, list[str]]:
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
    first = (_as_utc(start) - WRITE_LAG).date() if start else None
    last = (_as_utc(end) + horizon + WRITE_LAG).date() if end else None
    return first, last


def read_feedback(model: str, start: datetime | None = None, end: datetime | None = None, *,
                  root: str | None = None, horizon: timedelta | None = None,
                  classes: Sequence[Any] | None = None, task: str | None = None) -> pd.DataFrame:
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

"""The inference log's format: what the gateway writes and the monitor reads.

A neutral home for a shared format: the gateway's writer (:mod:`gateway.inference_log`) and the
monitor flow (:mod:`flows.monitoring.target`) both import this module, so neither part imports the
other. Layout under a root (a folder or any fsspec URI)::

    <root>/<model>/predictions/date=YYYY-MM-DD/<unix-ms>-<uuid>.parquet   one row per scored row
    <root>/<model>/feedback/date=YYYY-MM-DD/<unix-ms>-<uuid>.parquet      ground truth by request id
    <root>/<model>/profiles/<window-start unix s>/<uuid>.bin              whylogs profiles per time window

Prediction columns: :data:`META_COLUMNS`, one column per input feature under its own name, and one
column per output named ``output.<name>``. Feedback columns: ``request_id``, ``row``, ``label``,
``feedback_timestamp``.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd

META_COLUMNS = ("request_id", "row", "timestamp", "model", "model_version", "role")
OUTPUT_PREFIX = "output."
LABEL_COLUMN = "label"
"""Column of :func:`read_window`'s result holding the feedback (ground truth)."""


def filesystem(root: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) of a log root: a folder or any fsspec URI."""
    from fsspec.core import url_to_fs

    return url_to_fs(root)



def _default_root() -> str:
    from core.settings import get_settings

    return get_settings().resolved_inference_log_uri


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _read_files(root: str, model: str, kind: str, start: datetime | None, end: datetime | None) -> pd.DataFrame:
    fs, base = filesystem(root)
    folder = f"{base}/{model}/{kind}"
    if not fs.exists(folder):
        return pd.DataFrame()
    frames = []
    first_day = (start - timedelta(days=1)).date() if start else None
    last_day = (end + timedelta(days=1)).date() if end else None
    for day_dir in sorted(fs.ls(folder, detail=False)):
        label = day_dir.rstrip("/").rsplit("date=", 1)[-1]
        try:
            day = datetime.strptime(label, "%Y-%m-%d").date()
        except ValueError:
            continue
        if (first_day and day < first_day) or (last_day and day > last_day):
            continue
        for path in sorted(fs.ls(day_dir, detail=False)):
            if path.endswith(".parquet"):
                with fs.open(path, "rb") as handle:
                    frames.append(pd.read_parquet(io.BytesIO(handle.read())))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def read_window(model: str, start: datetime | None = None, end: datetime | None = None, *,
                root: str | None = None, role: str | None = "production") -> pd.DataFrame:
    """Predictions of ``model`` with ``start <= timestamp < end``, joined with feedback.

    Adds ``label`` (the latest feedback for that request id and row, NaN/None where none came) and
    ``feedback_timestamp``. ``role=None`` includes shadow predictions too.
    """
    root = root or _default_root()
    start = _as_utc(start) if start else None
    end = _as_utc(end) if end else None
    frame = _read_files(root, model, "predictions", start, end)
    if frame.empty:
        return pd.DataFrame(columns=[*META_COLUMNS, "label", "feedback_timestamp"])
    if start is not None:
        frame = frame[frame["timestamp"] >= pd.Timestamp(start)]
    if end is not None:
        frame = frame[frame["timestamp"] < pd.Timestamp(end)]
    if role is not None:
        frame = frame[frame["role"] == role]
    feedback = _read_files(root, model, "feedback", None, None)
    if feedback.empty:
        frame = frame.assign(label=None, feedback_timestamp=pd.NaT)
    else:
        latest = (feedback.sort_values("feedback_timestamp")
                  .drop_duplicates(["request_id", "row"], keep="last"))
        frame = frame.merge(latest, on=["request_id", "row"], how="left")
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

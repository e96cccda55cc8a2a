"""The inference log: every prediction, request and piece of feedback, written off the request path.

Requests only append a small record to a bounded in-memory buffer (a deque append: no I/O, no lock
held across I/O, never an exception). A writer thread turns the buffer into rows every 0.5 s (small
pieces of work, so the event loop is never kept waiting for long) and writes them every
``flush_interval_s``, or at once when ``max_unflushed_records`` records wait, per model:

    <root>/<model>/predictions/date=YYYY-MM-DD/<unix-ms>-<uuid>.parquet   one row per scored row
    <root>/<model>/requests/date=YYYY-MM-DD/<unix-ms>-<uuid>.parquet      one row per request: latency, status
    <root>/<model>/feedback/date=YYYY-MM-DD/<unix-ms>-<uuid>.parquet      ground truth by request id
    <root>/<model>/feedback-quarantine/date=YYYY-MM-DD/<unix-ms>-<uuid>.jsonl   labels parquet refused
    <root>/<model>/profiles/<window-start unix s>/<uuid>.bin              whylogs profiles per time window

With ``profile_process=True`` (what the gateway uses) the profiles are computed by a child process
(:mod:`gateway.profiler`) from the parquet file just written, so whylogs never holds the replica's GIL;
without it they are computed in the writer thread (tests, small tools).

``root`` is a folder or any fsspec URI, so several replicas (each writing its own uniquely named files)
and the monitor flow can share object storage. A full buffer drops the record and counts the drop; a
failed write is logged and counted. Neither can fail or slow a prediction.

What a replica that is killed loses: the records it has not written yet, that is at most the last
``flush_interval_s`` of its traffic plus the write in progress, and no more than about
``max_unflushed_records`` records (reaching that many wakes the writer at once; records that arrive while
it writes come on top). The gateway's defaults are 1 s and 10,000 records. A replica that is stopped
(``stop``, Ray Serve's graceful shutdown) writes everything first and loses nothing. The price of a short
interval is more, smaller files (``bench/bench_log_flush.py --rate 500 --seconds 10 --hour``, 2 busy
shared cores): a flush of 1 s of 500 one-row requests/s took a median 17.8 ms (5 s: 355 ms), but the
monitor read one hour at 10 requests/s back in 24 s + 40 s (rows + profiles) from 3,600 files, against
5.8 s + 10.5 s from the 720 files of a 5 s interval.

Feedback is written per model with an explicit schema (:func:`feedback_tables`): labels of one type go in
one file, so labels the gateway has made the model's class type (:mod:`gateway.service`) always share one;
a label that still cannot be stored is set aside in ``feedback-quarantine`` (JSON lines, counted), never
taking the other labels of its flush with it.

Prediction columns: ``request_id``, ``row`` (index within the request), ``timestamp`` (UTC),
``model``, ``model_version``, ``role``, one column per input feature under its own name, and one column
per output named ``output.<name>``. ``role`` is ``production`` (a request that named no version, answered
by the serving alias), ``canary`` (such a request sent to the canary by its share), ``shadow`` (the
challenger's outputs, never returned) or ``pinned`` (a ``/versions/{v}/`` route). Request records
(:class:`RequestRecord`, one per request whose version was chosen, answered or failed) carry the request
id, time, model, version, role, latency in ms, HTTP status and rows answered, in an explicit schema
(:func:`core.inference_log.request_schema`). The layout and the reading side (the monitor's, the canary
flow's) are :mod:`core.inference_log`, so that the flows never import the gateway.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.inference_log import META_COLUMNS, OUTPUT_PREFIX, filesystem, request_schema
from gateway.profiler import ProfilerProcess, write_window_profiles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictionRecord:
    request_id: str
    timestamp: float
    model: str
    version: int
    role: str
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class RequestRecord:
    """One request whose version was chosen, answered or failed: what error-rate and latency guardrails read."""

    request_id: str
    timestamp: float
    model: str
    version: int
    role: str
    latency_ms: float
    """From the start of handling to the answer built (or the failure), feature lookup and scoring included."""
    status: int
    """HTTP status: 200, the refusal's status code, 500 for a predictor that raised."""
    rows: int
    """Rows answered (0 for a failure)."""


@dataclass(frozen=True)
class FeedbackRecord:
    request_id: str
    row: int
    label: Any
    timestamp: float
    model: str
    sender: str = ""
    """Who sent the label: the token scope that let it in, the client address, the caller's own source."""


LogItem = PredictionRecord | RequestRecord | FeedbackRecord | tuple[PredictionRecord, RequestRecord]
"""What one buffer slot holds: an answered request's prediction and request records share one."""


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


class InferenceLogger:
    """Buffered, batched writer of the inference log and its whylogs window profiles."""

    def __init__(self, root: str, *, buffer_size: int = 100_000, flush_interval_s: float = 1.0,
                 max_unflushed_records: int = 10_000, profile_window_s: int = 3600, profile: bool = True,
                 profile_process: bool = False, on_drop: Callable[[int], None] | None = None,
                 on_error: Callable[[], None] | None = None,
                 on_quarantine: Callable[[int], None] | None = None) -> None:
        self.root = root.rstrip("/")
        self._profiler = ProfilerProcess() if profile and profile_process else None
        self.buffer_size = buffer_size
        self.flush_interval_s = flush_interval_s
        self.max_unflushed_records = max_unflushed_records
        self.profile_window_s = profile_window_s
        self.profile = profile
        self.dropped = 0
        self.written_rows = 0
        self.quarantined = 0
        self._buffer: deque[LogItem] = deque()
        self._on_drop = on_drop
        self._on_error = on_error
        self._on_quarantine = on_quarantine
        self._wake = threading.Event()
        self._flush_due = threading.Event()
        self._pending_records = 0  # compacted, not yet written; changed by the writer under _flush_lock
        self._stopping = threading.Event()
        self._flush_lock = threading.Lock()
        self.compact_interval_s = min(0.5, flush_interval_s)
        self._pending_frames: dict[str, list[pd.DataFrame]] = {}
        self._pending_feedback: dict[str, list[FeedbackRecord]] = {}
        self._pending_requests: dict[str, list[pa.Table]] = {}
        self._thread: threading.Thread | None = None

    # -- request path: append only ---------------------------------------------------------------------------

    def _append(self, record: LogItem) -> bool:
        if len(self._buffer) >= self.buffer_size:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop(1)
            return False
        self._buffer.append(record)
        if len(self._buffer) + self._pending_records >= self.max_unflushed_records and not self._flush_due.is_set():
            self._flush_due.set()
            self._wake.set()
        return True

    def log_prediction(self, record: PredictionRecord, request: RequestRecord | None = None) -> bool:
        """Queue one request's rows, with its request record when given: one buffer slot, so a full buffer
        drops both or neither (the rows and the latency of a request are kept together). False if dropped."""
        return self._append(record if request is None else (record, request))

    def log_request(self, record: RequestRecord) -> bool:
        """Queue the record of a request that has no prediction (it failed after its version was chosen);
        False if the buffer was full and it was dropped."""
        return self._append(record)

    def log_feedback(self, record: FeedbackRecord) -> bool:
        return self._append(record)

    # -- writer thread ----------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="esteira-inference-log", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Flush what is buffered, stop the writer, and let the profiler process finish what it was sent."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.flush()
        if self._profiler is not None and self._profiler.close(timeout=max(timeout, 30.0)) is None:
            log.warning("profiler process did not finish in time; its last profiles are lost (the log rows are not)")

    def warm_up(self) -> None:
        """Import whylogs now (or start the profiler process, which imports it), not in the middle of
        traffic; without whylogs, profiles are turned off."""
        if not self.profile:
            return
        if self._profiler is not None:
            self._profiler.start()
            return
        try:
            from core import profiles

            profiles._why()
        except Exception:  # noqa: BLE001 - profiles are best effort
            log.exception("whylogs unavailable; inference profiles disabled")
            self.profile = False

    def _run(self) -> None:
        """Compact every ``compact_interval_s``; write when the interval is up or the appender says
        ``max_unflushed_records`` are waiting (the wait ends early for both)."""
        self.warm_up()  # a no-op when start-up already did it (lru_cache)
        last_write = time.monotonic()
        while not self._stopping.is_set():
            until_write = self.flush_interval_s - (time.monotonic() - last_write)
            if until_write > 0 and not self._flush_due.is_set():
                self._wake.wait(min(self.compact_interval_s, until_write))
                self._wake.clear()
            if self._flush_due.is_set() or time.monotonic() - last_write >= self.flush_interval_s:
                self._flush_due.clear()
                self.flush()
                last_write = time.monotonic()
            else:
                with self._flush_lock:
                    self._compact()

    def _compact(self) -> None:
        """Turn the buffered records into frame parts now (caller holds ``_flush_lock``).

        Why every ``compact_interval_s`` and not once per file: the writer shares the replica's GIL and
        CPU with the event loop, and C code (numpy, pandas, freeing thousands of records) does not hand
        the GIL back while it runs. Building 5 s of c=32 traffic (about 8,000 records) at once stopped
        the loop for 100-150 ms every flush (per-request latency against time), which was the p99;
        a tenth of it every half second is a few milliseconds at a time.
        """
        records: list[LogItem] = []
        while self._buffer:
            try:
                records.append(self._buffer.popleft())
            except IndexError:
                break
        if not records:
            return
        self._pending_records += len(records)
        predictions: dict[str, list[PredictionRecord]] = {}
        requests: dict[str, list[RequestRecord]] = {}
        for record in records:
            if isinstance(record, tuple):
                prediction, request = record
                predictions.setdefault(prediction.model, []).append(prediction)
                requests.setdefault(request.model, []).append(request)
            elif isinstance(record, PredictionRecord):
                predictions.setdefault(record.model, []).append(record)
            elif isinstance(record, RequestRecord):
                requests.setdefault(record.model, []).append(record)
            else:
                self._pending_feedback.setdefault(record.model, []).append(record)
        for model, batch in predictions.items():
            self._guarded(lambda: self._pending_frames.setdefault(model, []).append(  # noqa: B023
                predictions_frame(batch)))  # noqa: B023
        for model, items in requests.items():
            self._guarded(lambda: self._pending_requests.setdefault(model, []).append(  # noqa: B023
                requests_table(items)))  # noqa: B023

    def flush(self) -> int:
        """Write everything buffered now; returns the number of prediction rows written. Never raises."""
        with self._flush_lock:
            self._compact()
            frames, self._pending_frames = self._pending_frames, {}
            feedback, self._pending_feedback = self._pending_feedback, {}
            requests, self._pending_requests = self._pending_requests, {}
            self._pending_records = 0
            written = 0
            for model, parts in frames.items():
                written += self._guarded(lambda: self._write_predictions(model, parts))  # noqa: B023
            for model, tables in requests.items():
                self._guarded(lambda: self._write_parquet(pa.concat_tables(tables), model, "requests"))  # noqa: B023
            for model, labels in feedback.items():
                self._guarded(lambda: self._write_feedback(model, labels))  # noqa: B023
            self.written_rows += written
            return written

    def _guarded(self, action: Callable[[], int | None]) -> int:
        try:
            return action() or 0
        except Exception:  # noqa: BLE001 - logging never takes the gateway down
            log.exception("inference log write failed")
            if self._on_error is not None:
                self._on_error()
            return 0

    def _write_file(self, data: bytes, model: str, kind: str, suffix: str = "parquet") -> str:
        fs, root = filesystem(self.root)
        now = time.time()
        folder = f"{root}/{model}/{kind}/date={_utc(now):%Y-%m-%d}"
        fs.makedirs(folder, exist_ok=True)
        path = f"{folder}/{int(now * 1000)}-{uuid.uuid4().hex[:12]}.{suffix}"
        tmp = f"{path}.partial"
        with fs.open(tmp, "wb") as handle:
            handle.write(data)
        fs.mv(tmp, path)  # readers never see a half-written file
        return path

    def _write_parquet(self, frame: pd.DataFrame | pa.Table, model: str, kind: str) -> str:
        buffer = io.BytesIO()
        if isinstance(frame, pa.Table):
            pq.write_table(frame, buffer)
        else:
            frame.to_parquet(buffer, index=False)
        return self._write_file(buffer.getvalue(), model, kind)

    def _write_predictions(self, model: str, parts: list[pd.DataFrame]) -> int:
        frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
        path = self._write_parquet(frame, model, "predictions")
        if self.profile:
            if self._profiler is not None:
                job = {"root": self.root, "model": model, "path": path, "window_s": self.profile_window_s}
                self._guarded(lambda: self._profiler.submit(job))  # type: ignore[union-attr]
            else:
                self._guarded(lambda: write_window_profiles(frame, self.root, model, self.profile_window_s))
        return len(frame)

    def _write_feedback(self, model: str, items: Sequence[FeedbackRecord]) -> None:
        """One file per label type (one in all for labels the service made the model's class type); the
        labels that fit no table are written to ``feedback-quarantine`` and counted, the rest still land."""
        tables, bad = feedback_tables(items)
        for table in tables:
            self._guarded(lambda: self._write_parquet(table, model, "feedback"))  # noqa: B023
        if bad:
            self._guarded(lambda: self._quarantine(model, bad))

    def _quarantine(self, model: str, records: Sequence[FeedbackRecord]) -> None:
        lines = "".join(json.dumps({"request_id": r.request_id, "row": r.row, "label": r.label,
                                    "label_type": type(r.label).__name__, "timestamp": r.timestamp,
                                    "sender": r.sender}, default=repr) + "\n" for r in records)
        self._write_file(lines.encode("ascii"), model, "feedback-quarantine", suffix="jsonl")
        log.warning("%d feedback record(s) of %s could not be stored as parquet; set aside in feedback-quarantine",
                    len(records), model)
        self.quarantined += len(records)
        if self._on_quarantine is not None:
            self._on_quarantine(len(records))


def requests_table(records: Sequence[RequestRecord]) -> pa.Table:
    """Request records as one arrow table of :func:`core.inference_log.request_schema` (an explicit schema:
    every file of the kind reads as one table)."""
    return pa.Table.from_pydict({
        "request_id": [r.request_id for r in records],
        "timestamp": [round(r.timestamp * 1_000_000) for r in records],
        "model": [r.model for r in records],
        "model_version": [r.version for r in records],
        "role": [r.role for r in records],
        "latency_ms": [float(r.latency_ms) for r in records],
        "status": [r.status for r in records],
        "rows": [r.rows for r in records],
    }, schema=request_schema())


FEEDBACK_LABEL_TYPES: dict[type, pa.DataType] = {bool: pa.bool_(), int: pa.int64(), float: pa.float64(),
                                                 str: pa.string()}
"""Arrow type of the ``label`` column for each JSON scalar type a label can have."""


def feedback_schema(label_type: pa.DataType) -> pa.Schema:
    """The feedback files' schema, given the label column's type (:data:`core.inference_log.FEEDBACK_COLUMNS`)."""
    return pa.schema([("request_id", pa.string()), ("row", pa.int64()), ("label", label_type),
                      ("feedback_timestamp", pa.timestamp("us", tz="UTC")), ("sender", pa.string())])


def _feedback_table(records: Sequence[FeedbackRecord], label_type: pa.DataType) -> pa.Table:
    return pa.Table.from_pydict({
        "request_id": [r.request_id for r in records],
        "row": [r.row for r in records],
        "label": [_plain(r.label) for r in records],
        "feedback_timestamp": [round(r.timestamp * 1_000_000) for r in records],
        "sender": [r.sender for r in records],
    }, schema=feedback_schema(label_type))


def feedback_tables(records: Sequence[FeedbackRecord]) -> tuple[list[pa.Table], list[FeedbackRecord]]:
    """Feedback records as arrow tables, one per label type, and the records no table can hold.

    Why per type and with an explicit schema: pandas infers one column type from the first values, so a
    ``"0"`` after a ``1`` failed the whole file (``ArrowInvalid``) and every label of that flush was lost. A
    group that still fails (an integer beyond int64, a string that is not valid UTF-8) is retried one record
    at a time, so only the records at fault are set aside.
    """
    groups: dict[type, list[FeedbackRecord]] = {}
    for record in records:
        groups.setdefault(type(_plain(record.label)), []).append(record)
    tables: list[pa.Table] = []
    bad: list[FeedbackRecord] = []
    for kind, group in groups.items():
        label_type = FEEDBACK_LABEL_TYPES.get(kind)
        if label_type is None:
            bad.extend(group)
            continue
        table = _try_feedback_table(group, label_type)
        if table is None:  # find the records at fault: each alone
            good = []
            for record in group:
                (good if _try_feedback_table([record], label_type) is not None else bad).append(record)
            table = _try_feedback_table(good, label_type) if good else None
        if table is not None:
            tables.append(table)
    return tables, bad


def _plain(label: Any) -> Any:
    """numpy scalars (a label taken from a frame) as the Python scalar they hold."""
    return label.item() if isinstance(label, np.generic) else label


def _try_feedback_table(records: Sequence[FeedbackRecord], label_type: pa.DataType) -> pa.Table | None:
    try:
        return _feedback_table(records, label_type)
    except Exception:  # noqa: BLE001 - any conversion failure means these records cannot be stored as they are
        return None


def _column_values(arrays: list[np.ndarray]) -> np.ndarray:
    """One column from every request's part. Concatenated first: checking each part's shape beforehand
    cost more than the concatenation (26 of 75 ms for 8,000 one-row requests)."""
    try:
        values = np.concatenate(arrays)
    except ValueError:  # parts of different widths (a swap between multi-class versions)
        values = None
    if values is not None and values.ndim == 1:
        return values
    out = np.empty(sum(len(a) for a in arrays), dtype=object)  # multi-class probabilities: a list per row
    out[:] = [list(row) for a in arrays for row in np.asarray(a).tolist()]
    return out


def predictions_frame(items: Sequence[PredictionRecord]) -> pd.DataFrame:
    """Prediction records -> one row per scored row.

    Built column-wise once per micro-batch; records are grouped by their column set first, because a
    version swap inside one batch can change the features, and a frame per record would cost far more.
    """
    groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[PredictionRecord]] = {}
    for record in items:
        groups.setdefault((tuple(record.inputs), tuple(record.outputs)), []).append(record)
    frames = []
    for (input_names, output_names), records in groups.items():
        sizes = [len(next(iter(r.outputs.values()))) if r.outputs else 0 for r in records]
        columns: dict[str, Any] = {
            "request_id": np.repeat(np.array([r.request_id for r in records], dtype=object), sizes),
            "row": np.concatenate([np.arange(n, dtype=np.int64) for n in sizes]),
            "timestamp": pd.to_datetime(np.repeat(np.array([r.timestamp for r in records]), sizes), unit="s",
                                        utc=True),
            "model": np.repeat(np.array([r.model for r in records], dtype=object), sizes),
            "model_version": np.repeat(np.array([r.version for r in records], dtype=np.int64), sizes),
            "role": np.repeat(np.array([r.role for r in records], dtype=object), sizes),
        }
        for name in input_names:
            columns[name] = _column_values([r.inputs[name] for r in records])
        for name in output_names:
            columns[OUTPUT_PREFIX + name] = _column_values([r.outputs[name] for r in records])
        # one constructor call: inserting columns one by one costs a block-manager copy each
        frame = pd.DataFrame(columns)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=list(META_COLUMNS))
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

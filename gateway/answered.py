"""Which request ids the gateway has answered: labels are accepted for those only.

A label decides retraining, so a label for a request nobody answered (a typo, a guess, an id from
another system) is refused instead of being stored where the monitor would join it to nothing.

The gateway may run several replicas, and a label may reach a replica other than the one that
answered. So an id is looked for in two places:

* this replica's recent answers, in memory: the newest ``max_recent`` answers, none older than the
  horizon (about 185 bytes each besides the id itself, measured with ``tracemalloc`` on 100,000 entries);
* every replica's answers in the inference log's prediction files of the days inside the horizon. Only
  the ``request_id`` column is read, once per file, newest file first, and kept as sorted 64-bit hashes
  (8 bytes per answered request, plus each file's name).

The bounds, stated: an answer is known to every replica once the replica that gave it has written its
log (``log_flush_interval_s``, 1 s by default); until then only that replica knows it, and a label that
reaches another one first gets a 404 that says to retry after the flush interval. The listing of the log
is refreshed at most once per ``refresh_s`` per model, and one lookup reads files for at most
``read_budget_s`` (a replica that starts cold learns a week of files over several lookups, the most recent
first). An answer whose log record was dropped (full buffer) or lost (a replica killed before its write)
is known only while it stays in the memory of the replica that gave it. A logged answer counts as inside
the horizon by the time its file was written, so the horizon holds to within one flush.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd

from core.inference_log import WRITE_LAG, log_partitions, read_log_file
from gateway.errors import GatewayError

log = logging.getLogger(__name__)

class UnknownRequest(GatewayError):
    """Feedback for a request id the gateway has not answered within the feedback horizon (or not yet)."""

    status_code = 404


def id_hashes(request_ids: Sequence[str]) -> np.ndarray:
    """64-bit hashes of request ids (pandas' SipHash with its fixed key: the same in every process).
    An id that is not valid UTF-8 cannot be in a parquet file; it gets a hash no stored id has here."""
    values = np.asarray(request_ids, dtype=object)
    try:
        return pd.util.hash_array(values, categorize=False)
    except UnicodeEncodeError:
        return np.asarray([id_hashes([rid])[0] if _utf8(rid) else np.uint64(0) for rid in request_ids],
                          dtype=np.uint64)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _written_ms(path: str) -> int | None:
    """The write time a log file's name starts with (``<unix-ms>-<uuid>.parquet``)."""
    try:
        return int(path.rsplit("/", 1)[-1].split("-", 1)[0])
    except ValueError:
        return None


@dataclass
class _Day:
    """What is known of one day's prediction files: the names read, and their ids' hashes in chunks sorted
    by hash, each hash with the write time (ms) of the newest file that holds it, so the horizon is kept
    per file even after chunks are merged."""

    files: set[str] = field(default_factory=set)
    hashes: list[np.ndarray] = field(default_factory=list)
    written: list[np.ndarray] = field(default_factory=list)

    def add(self, path: str, hashes: np.ndarray, written_ms: int) -> None:
        self.files.add(path)
        if len(hashes):
            self.hashes.append(np.unique(hashes))
            self.written.append(np.full(len(self.hashes[-1]), written_ms, dtype=np.int64))
        if len(self.hashes) > 32:  # few, larger arrays: one search each per lookup
            self._merge()

    def _merge(self) -> None:
        hashes, written = np.concatenate(self.hashes), np.concatenate(self.written)
        order = np.lexsort((-written, hashes))  # by hash, the newest write first
        hashes, written = hashes[order], written[order]
        first = np.ones(len(hashes), dtype=bool)
        first[1:] = hashes[1:] != hashes[:-1]
        self.hashes, self.written = [hashes[first]], [written[first]]

    def contains(self, hashes: np.ndarray, since_ms: float) -> np.ndarray:
        found = np.zeros(len(hashes), dtype=bool)
        for chunk, written in zip(self.hashes, self.written, strict=True):
            index = np.minimum(np.searchsorted(chunk, hashes), len(chunk) - 1)
            found |= (chunk[index] == hashes) & (written[index] >= since_ms)
        return found


class LoggedAnswers:
    """Request ids in the inference log's prediction files inside the horizon, read lazily and cached."""

    def __init__(self, root: str, horizon_s: float, *, refresh_s: float = 1.0, read_budget_s: float = 2.0) -> None:
        self.root = root
        self.horizon_s = horizon_s
        self.refresh_s = refresh_s
        self.read_budget_s = read_budget_s
        self.files_read = 0
        self._days: dict[tuple[str, date], _Day] = {}
        self._next_refresh: dict[str, float] = {}
        self._lock = threading.Lock()

    def unknown(self, model: str, request_ids: Sequence[str], now: float) -> list[str]:
        """The ids of ``request_ids`` no prediction file of ``model`` inside the horizon holds. Blocking I/O:
        call it from a worker thread."""
        hashes = id_hashes(request_ids)
        since_ms = (now - self.horizon_s) * 1000
        with self._lock:
            found = self._found(model, hashes, since_ms)
            if not found.all() and time.monotonic() >= self._next_refresh.get(model, 0.0):
                if self._refresh(model, now, hashes, found):
                    self._next_refresh[model] = time.monotonic() + self.refresh_s
                found = self._found(model, hashes, since_ms)
        return [rid for rid, ok in zip(request_ids, found, strict=True) if not ok]

    def _found(self, model: str, hashes: np.ndarray, since_ms: float) -> np.ndarray:
        found = np.zeros(len(hashes), dtype=bool)
        for (day_model, _), day in self._days.items():
            if day_model == model:
                found |= day.contains(hashes, since_ms)
        return found

    def _refresh(self, model: str, now: float, hashes: np.ndarray, found: np.ndarray) -> bool:
        """Read the files not read yet, newest first, until every id is found or the budget is spent.
        True when every file inside the horizon has been read."""
        oldest = now - self.horizon_s
        first = datetime.fromtimestamp(oldest, tz=UTC).date()
        last = (datetime.fromtimestamp(now, tz=UTC) + WRITE_LAG).date()  # replicas' clocks differ
        for key in [k for k in self._days if k[0] == model and not first <= k[1] <= last]:
            del self._days[key]
        partitions = log_partitions(self.root, model, "predictions", first, last)
        deadline = time.monotonic() + self.read_budget_s
        wanted = ~found
        now_ms = round(now * 1000)
        for day_of_files in sorted(partitions, reverse=True):
            day = self._days.setdefault((model, day_of_files), _Day())
            fresh = [p for p in partitions[day_of_files] if p not in day.files]
            for path in sorted(fresh, key=lambda p: _written_ms(p) or now_ms, reverse=True):
                written = _written_ms(path) or now_ms  # a name without its write time: as of its first read
                if written < oldest * 1000:
                    day.add(path, np.empty(0, dtype=np.uint64), written)  # its answers are all past the horizon
                    continue
                try:
                    ids = read_log_file(self.root, path, ["request_id"])["request_id"].to_numpy(dtype=object)
                except Exception:  # noqa: BLE001 - one unreadable file must not refuse every label
                    log.warning("cannot read request ids from %s; its answers are not known", path, exc_info=True)
                    ids = np.empty(0, dtype=object)
                day.add(path, id_hashes(ids), written)
                self.files_read += 1
                wanted &= ~day.contains(hashes, oldest * 1000)
                if not wanted.any() or time.monotonic() > deadline:
                    return False
        return True


class AnsweredRequests:
    """Recent answers of this replica in memory, then the inference log: see the module docstring."""

    def __init__(self, horizon_s: float, *, max_recent: int = 100_000, log_root: str | None = None,
                 flush_interval_s: float = 1.0, read_budget_s: float = 2.0,
                 clock: Callable[[], float] = time.time) -> None:
        """``flush_interval_s``: how often replicas write their log, so how often a new answer can appear
        there; the log's listing is refreshed no more often than that."""
        self.horizon_s = horizon_s
        self.max_recent = max_recent
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self.logged = LoggedAnswers(log_root, horizon_s, refresh_s=flush_interval_s,
                                    read_budget_s=read_budget_s) if log_root else None
        self._recent: OrderedDict[tuple[str, str], float] = OrderedDict()

    def add(self, model: str, request_id: str, answered_at: float) -> None:
        """Remember one answer (on the event loop, once per answered request: a dict insert)."""
        if self.max_recent <= 0:
            return
        key = (model, request_id)
        recent = self._recent
        if key in recent:
            recent.move_to_end(key)
        recent[key] = answered_at
        if len(recent) > self.max_recent:
            recent.popitem(last=False)

    def unknown_recent(self, model: str, request_ids: Iterable[str]) -> list[str]:
        """The ids (each once) this replica has not answered within the horizon, from memory only."""
        recent = self._recent
        oldest = self.clock() - self.horizon_s
        while recent and next(iter(recent.values())) < oldest:
            recent.popitem(last=False)
        return [rid for rid in dict.fromkeys(request_ids) if (model, rid) not in recent]

    def unknown_logged(self, model: str, request_ids: Sequence[str]) -> list[str]:
        """Of ``request_ids``, those the inference log does not hold either (blocking: a worker thread)."""
        if self.logged is None or not request_ids:
            return list(request_ids)
        return self.logged.unknown(model, request_ids, self.clock())

    def not_known_message(self, model: str, request_id: str) -> str:
        horizon = _duration(self.horizon_s)
        return (f"request id {request_id!r} is not an answer of model {model!r} from the last {horizon} that this "
                f"gateway knows of; an answer from another replica is known once that replica has written its "
                f"inference log (every {self.flush_interval_s:g} s): retry after that")


def _duration(seconds: float) -> str:
    """``604800`` -> ``7 days``, ``5400`` -> ``90 minutes``: the horizon as a person says it."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} s"

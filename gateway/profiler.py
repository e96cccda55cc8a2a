"""Whylogs window profiles of the inference log, computed in a child process of the replica.

Why a process: profiling a few seconds of traffic is a few hundred milliseconds of Python (whylogs
costs about 75 ms per batch plus 8 µs per row and column, measured: 1,000 rows 100 ms, 8,000 rows
280 ms with 22 columns). In the replica it held the GIL while requests waited for it, which showed
as the gateway's p99 at concurrency 32. The replica now only writes the parquet file of each
micro-batch and sends its path here, one JSON line on stdin; this process reads the file back and
writes the window profiles beside it. It runs at a lower CPU priority, so on a small machine
requests win the cores.

Lifetime: started by the replica's log writer, it exits when its stdin closes (the replica stopped
or died), after finishing what it was sent. A crash loses only profiles, never log rows: the parquet
files are the record, and the parent starts a new child on its next batch.

    <root>/<model>/profiles/<window-start unix s>/<uuid>.bin
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from typing import IO, Any

import pandas as pd

from core.inference_log import META_COLUMNS, filesystem

log = logging.getLogger(__name__)

NICE_INCREMENT = 10


def write_window_profiles(frame: pd.DataFrame, root: str, model: str, window_s: int) -> int:
    """Profile the production rows of one log batch, one whylogs profile per time window; returns the count."""
    from core.profiles import profile_frame

    fs, base = filesystem(root)
    production = frame[frame["role"] == "production"]
    if production.empty:
        return 0
    seconds = production["timestamp"].astype("int64") // 10**9
    windows = (seconds // window_s) * window_s
    data_columns = [c for c in production.columns if c not in META_COLUMNS]
    written = 0
    for window, part in production.groupby(windows):
        folder = f"{base}/{model}/profiles/{int(window)}"
        fs.makedirs(folder, exist_ok=True)
        blob = profile_frame(part[data_columns].reset_index(drop=True))
        path = f"{folder}/{uuid.uuid4().hex}.bin"
        with fs.open(f"{path}.partial", "wb") as handle:
            handle.write(blob)
        fs.mv(f"{path}.partial", path)  # readers (the monitor) never see half a profile
        written += 1
    return written


def profile_file(job: dict[str, Any]) -> int:
    """One job: ``{"root", "model", "path", "window_s"}``, ``path`` a parquet file of the log under ``root``."""
    fs, _ = filesystem(job["root"])
    with fs.open(job["path"], "rb") as handle:
        frame = pd.read_parquet(handle)
    return write_window_profiles(frame, job["root"], job["model"], int(job["window_s"]))


def main(stream: IO[str] | None = None) -> None:
    """The child's loop: one job per line until end of input."""
    logging.basicConfig(level=logging.INFO, format="esteira-profiler %(levelname)s %(message)s")
    try:
        os.nice(NICE_INCREMENT)
    except OSError:  # not allowed here: run at the parent's priority
        pass
    from core import profiles

    profiles._why()  # import whylogs before the first job, not during it
    for line in stream or sys.stdin:
        if not line.strip():
            continue
        try:
            profile_file(json.loads(line))
        except Exception:  # noqa: BLE001 - one bad batch must not stop the profiles of the next
            log.exception("profile of %s failed", line.strip()[:300])


class ProfilerProcess:
    """The parent's handle: starts the child on first use, sends jobs, restarts it if it died."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._jobs = 0  # sent to the current child
        self.restarts = 0

    def _start(self) -> subprocess.Popen[str]:
        # The replica's import path (Ray's working_dir, the venv) is the child's too.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        return subprocess.Popen([sys.executable, "-m", "gateway.profiler"], stdin=subprocess.PIPE, text=True,
                                env=env, stdout=subprocess.DEVNULL)

    def start(self) -> None:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                if self._proc is not None:
                    self.restarts += 1
                    log.warning("profiler process exited with %s; starting a new one", self._proc.returncode)
                self._proc, self._jobs = self._start(), 0

    def submit(self, job: dict[str, Any]) -> None:
        """Send one job; raises ``OSError`` if the child cannot take it (the caller counts an error)."""
        self.start()
        with self._lock:
            assert self._proc is not None and self._proc.stdin is not None
            self._proc.stdin.write(json.dumps(job) + "\n")
            self._proc.stdin.flush()
            self._jobs += 1

    def close(self, timeout: float = 30.0) -> int | None:
        """No more jobs: let the child finish what it has, then return its exit status (None if killed).

        A child that was sent nothing has nothing to finish: it is stopped at once rather than waited for
        while it is still importing whylogs (seconds, for a replica that stops before its first window)."""
        with self._lock:
            proc, self._proc = self._proc, None
            idle = self._jobs == 0
        if proc is None:
            return 0
        if idle:
            proc.terminate()
            try:
                return proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                return None
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            return None


if __name__ == "__main__":
    main()

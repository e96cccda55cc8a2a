"""What the inference log's flush interval costs: the writer's flush time, and reading the files back.

A killed replica loses what its log writer has not written yet (at most ``log_flush_interval_s`` of
traffic). A shorter interval loses less and writes more, smaller files. Two measurements, each for a
1 s and a 5 s interval:

* **writer**: one-row prediction records appended at ``--rate`` requests/s from the main thread (the
  event loop's place) for ``--seconds`` while the writer thread runs (no profiles): time per flush and
  rows written per second of flush time;
* **read back** (``--hour``): one hour of flushes at ``--hour-rate`` requests/s written with their whylogs
  profiles, then the monitor's reads of that hour (``read_window``, ``read_profile``), and reading only
  the ``request_id`` column of one file (what a feedback check of an unknown request id costs per file).

    uv run python bench/bench_log_flush.py [--rate 500] [--seconds 10] [--hour] [--hour-rate 10]

Results: stdout and ``bench/results/log-flush-<UTC time>.json``. Everything is written to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from core.inference_log import read_profile, read_window
from gateway.inference_log import InferenceLogger, PredictionRecord

INTERVALS = (1.0, 5.0)


def _record(request_id: str, ts: float, rng: np.random.Generator) -> PredictionRecord:
    return PredictionRecord(request_id, ts, "bench", 1, "production",
                            {"x": rng.normal(size=1), "plan": np.array(["basic"], dtype=object)},
                            {"label": np.array([1]), "probability": rng.random(1)})


def writer(interval: float, rate: float, seconds: float) -> dict[str, Any]:
    """Records at ``rate``/s for ``seconds`` with the writer thread running; flush times as it ran them."""
    root = tempfile.mkdtemp(prefix="esteira-bench-log-")
    logger = InferenceLogger(root, flush_interval_s=interval, profile=False)
    durations: list[float] = []
    flush = logger.flush

    def timed_flush() -> int:
        started = time.perf_counter()
        rows = flush()
        if rows:
            durations.append(time.perf_counter() - started)
        return rows

    logger.flush = timed_flush  # type: ignore[method-assign]
    rng = np.random.default_rng(0)
    logger.start()
    sent, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        while sent < int(elapsed * rate):
            logger.log_prediction(_record(f"r{sent}", time.time(), rng))
            sent += 1
        time.sleep(0.001)
    logger.stop()
    files = list(Path(root).rglob("*.parquet"))
    rows = sum(pq.read_metadata(f).num_rows for f in files)
    return {"interval_s": interval, "records": sent, "rows_written": rows, "files": len(files),
            "flush_ms_median": round(float(np.median(durations)) * 1000, 1),
            "flush_ms_max": round(max(durations) * 1000, 1),
            "rows_per_s_of_flush_time": round(rows / sum(durations))}


def read_back(interval: float, rate: float) -> dict[str, Any]:
    """One hour of flushes (with profiles), then the monitor's reads of that hour."""
    root = tempfile.mkdtemp(prefix="esteira-bench-log-")
    logger = InferenceLogger(root, flush_interval_s=interval, profile=True, profile_window_s=3600)
    logger.warm_up()
    rng = np.random.default_rng(0)
    hour = time.time() // 3600 * 3600 - 3600
    per_flush = max(1, int(rate * interval))
    flush_s = []
    for k in range(int(3600 / interval)):
        for i in range(per_flush):
            logger.log_prediction(_record(f"r{k}-{i}", hour + k * interval, rng))
        started = time.perf_counter()
        logger.flush()
        flush_s.append(time.perf_counter() - started)
    start, end = datetime.fromtimestamp(hour, UTC), datetime.fromtimestamp(hour + 3600, UTC)
    started = time.perf_counter()
    rows = len(read_window("bench", start, end, root=root))
    window_s = time.perf_counter() - started
    started = time.perf_counter()
    read_profile("bench", start, end, root=root)
    profile_s = time.perf_counter() - started
    files = sorted(Path(root, "bench", "predictions").rglob("*.parquet"))
    started = time.perf_counter()
    for path in files:
        pq.read_table(path, columns=["request_id"])
    per_file_ms = (time.perf_counter() - started) / len(files) * 1000
    return {"interval_s": interval, "rate": rate, "files": len(files), "rows": rows,
            "flush_with_profile_ms_median": round(float(np.median(flush_s)) * 1000, 1),
            "read_window_s": round(window_s, 2), "read_profile_s": round(profile_s, 2),
            "request_id_column_ms_per_file": round(per_file_ms, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500, help="requests/s for the writer measurement")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--hour", action="store_true", help="also write and read back one hour (minutes)")
    parser.add_argument("--hour-rate", type=float, default=10, help="requests/s of the written hour")
    args = parser.parse_args()
    results: dict[str, Any] = {"writer": [writer(i, args.rate, args.seconds) for i in INTERVALS]}
    for row in results["writer"]:
        print(f"writer, flush every {row['interval_s']:g} s at {args.rate:g} req/s: {row['files']} files, "
              f"flush median {row['flush_ms_median']} ms (max {row['flush_ms_max']} ms), "
              f"{row['rows_per_s_of_flush_time']:,} rows/s of flush time")
    if args.hour:
        results["read_back"] = [read_back(i, args.hour_rate) for i in INTERVALS]
        for row in results["read_back"]:
            print(f"one hour at {row['rate']:g} req/s, flush every {row['interval_s']:g} s: {row['files']} files; "
                  f"flush with profile {row['flush_with_profile_ms_median']} ms; read_window {row['read_window_s']} s, "
                  f"read_profile {row['read_profile_s']} s; request_id column "
                  f"{row['request_id_column_ms_per_file']} ms/file")
    out = Path(__file__).parent / "results" / f"log-flush-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()

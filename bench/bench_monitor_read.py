"""The monitor's window read: today's pandas reader against the polars one, on logs of many small files.

Three measurements, each path in a fresh process (seconds, rows/s and that process's peak RSS):

* **small files**: ``--hours`` of 1 s flushes from ``--replicas`` replicas at ``--rate`` requests/s in all (the
  gateway's defaults), one row per request, 10 % shadow predictions, labels for 30 % of them (most within
  minutes, a fifth within hours, 2 % relabelled), written as the gateway writes them (its frame builder's
  dtypes, its feedback schema). The monitor reads the last complete hour, five minutes after it ended.
  With ``--hours 2`` (the default) both readers open the same files, so the figure is the reader alone;
  in production the pandas reader also opens every file of the day before (``files read`` says how many).
* **compacted**: the same log after :func:`core.inference_log.compact_log` (as a day later: every hour
  closed), the same window read again by both readers; and what compaction itself took.
* **large**: ``--large-rows`` predictions in one day, in the files compaction leaves (one an hour per kind),
  read as a one-day window;
* **profiles** (not changed here, for scale): ``--profiles`` one-second whylogs profiles of one window, as
  a replica's profiler writes them at 1 s flushes, merged by ``read_profile`` (the other half of the
  monitor's read of a window; whylogs, not polars).

Every new read is checked against the old one (row hashes and dtypes).

    python bench/bench_monitor_read.py [--hours 2] [--rate 200] [--replicas 2] [--large-rows 4000000]
                                       [--profiles 300]

Results: stdout and ``bench/results/monitor-read-<UTC time>.json``. Logs go to a temporary folder, removed at
the end (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

MODEL = "bench"
FEATURES = 8


# -- the log -----------------------------------------------------------------------------------------------------


def _ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Request ids like the gateway's (32 hex digits)."""
    raw = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64)
    return np.array([f"{a:016x}{b:016x}" for a, b in raw], dtype=object)


def _predictions(rng: np.random.Generator, ts: np.ndarray) -> pd.DataFrame:
    """Rows with the columns and dtypes of ``gateway.inference_log.predictions_frame``."""
    n = len(ts)
    return pd.DataFrame({
        "request_id": _ids(rng, n),
        "row": np.zeros(n, dtype=np.int64),
        "timestamp": pd.to_datetime(ts, unit="s", utc=True),
        "model": np.full(n, MODEL, dtype=object),
        "model_version": np.ones(n, dtype=np.int64),
        "role": np.where(rng.random(n) < 0.1, "shadow", "production").astype(object),
        **{f"f{i}": rng.normal(size=n) for i in range(FEATURES - 2)},
        "count": rng.poisson(2, n).astype(np.int64),
        "plan": rng.choice(np.array(["basic", "pro", "max"], dtype=object), n),
        "output.label": rng.integers(0, 2, n).astype(np.int64),
        "output.probability": rng.random(n),
    })


def _check_layout(frame: pd.DataFrame) -> None:
    """The generated files have the schema the gateway's own frame builder gives the same record."""
    from gateway.inference_log import PredictionRecord, predictions_frame

    row = frame.iloc[0]
    record = PredictionRecord(row["request_id"], row["timestamp"].timestamp(), MODEL, 1, "production",
                              {c: np.array([row[c]], dtype=frame[c].dtype) for c in frame.columns[6:-2]},
                              {"label": np.array([1]), "probability": np.array([0.5])})
    theirs = pa.Schema.from_pandas(predictions_frame([record]), preserve_index=False).remove_metadata()
    ours = pa.Schema.from_pandas(frame, preserve_index=False).remove_metadata()
    assert ours.equals(theirs), (ours, theirs)


def _write(root: Path, kind: str, written: float, table: pa.Table, name: str | None = None) -> None:
    folder = root / MODEL / kind / f"date={datetime.fromtimestamp(written, UTC):%Y-%m-%d}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"{int(written * 1000)}-{os.urandom(6).hex()}.parquet")
    pq.write_table(table, path)
    os.utime(path, (written, written))


def _feedback(rng: np.random.Generator, frame: pd.DataFrame, ts: np.ndarray, until: float) -> pd.DataFrame:
    """Labels for 30 % of the rows; 80 % within minutes, the rest within hours; 2 % relabelled 10 min later."""
    labelled = rng.random(len(frame)) < 0.3
    delay = np.where(rng.random(len(frame)) < 0.8, rng.exponential(120, len(frame)),
                     rng.exponential(3 * 3600, len(frame)))
    labels = pd.DataFrame({"request_id": frame["request_id"].to_numpy()[labelled], "row": 0,
                           "label": rng.integers(0, 2, int(labelled.sum())), "at": (ts + delay)[labelled]})
    again = labels.sample(frac=0.02, random_state=int(rng.integers(1 << 30)))
    labels = pd.concat([labels, again.assign(at=again["at"] + 600, label=1 - again["label"])])
    return labels[labels["at"] < until - 1].sort_values("at", kind="stable")


def _feedback_table(labels: pd.DataFrame) -> pa.Table:
    from gateway.inference_log import feedback_schema

    return pa.Table.from_pydict({
        "request_id": labels["request_id"].tolist(), "row": labels["row"].tolist(), "label": labels["label"].tolist(),
        "feedback_timestamp": (labels["at"] * 1e6).round().astype(np.int64).tolist(),
        "sender": ["feedback@10.0.0.7"] * len(labels)}, schema=feedback_schema(pa.int64()))


def small_files_log(root: Path, hours: float, rate: float, replicas: int, seed: int = 0) -> dict[str, Any]:
    """1 s flushes per replica from ``hours`` before the last full hour to 5 minutes past it."""
    rng = np.random.default_rng(seed)
    end = time.time() // 3600 * 3600
    now, first = end + 300, end - hours * 3600
    seconds = int(now - first)
    files = rows = 0
    for _ in range(replicas):
        counts = rng.poisson(rate / replicas, seconds)
        ts = np.sort(np.repeat(first + np.arange(seconds), counts) + rng.random(int(counts.sum())))
        frame = _predictions(rng, ts)
        _check_layout(frame)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for s in range(seconds):  # the rows of second s, written just after it
            if counts[s]:
                _write(root, "predictions", first + s + 1 + rng.random() * 0.05, table.slice(bounds[s], counts[s]))
                files += 1
        rows += len(frame)
        labels = _feedback(rng, frame, ts, now)
        table = _feedback_table(labels)
        second = (labels["at"].to_numpy() // 1).astype(np.int64)
        starts = np.searchsorted(second, np.arange(int(first), int(now)))
        stops = np.append(starts[1:], len(second))
        for k, s in enumerate(range(int(first), int(now))):
            if stops[k] > starts[k]:
                _write(root, "feedback", s + 1 + rng.random() * 0.05, table.slice(starts[k], stops[k] - starts[k]))
                files += 1
    return {"start": end - 3600, "end": end, "now": now, "files": files, "rows": rows}


def large_log(root: Path, rows: int, replicas: int, seed: int = 1) -> dict[str, Any]:
    """``rows`` predictions over one day, one file an hour per replica and kind (what compaction leaves)."""
    rng = np.random.default_rng(seed)
    end = time.time() // 86400 * 86400 - 86400
    start = end - 86400
    for replica in range(replicas):
        n = rows // replicas
        ts = np.sort(start + rng.random(n) * 86400)
        frame = _predictions(rng, ts)
        labels = _feedback(rng, frame, ts, end + 86400)
        for hour in range(24):
            lo, hi = np.searchsorted(ts, [start + hour * 3600, start + (hour + 1) * 3600])
            _write(root, "predictions", start + (hour + 1) * 3600 - 0.001,
                   pa.Table.from_pandas(frame.iloc[lo:hi], preserve_index=False))
        at = labels["at"].to_numpy()
        for hour in range(48):
            lo, hi = np.searchsorted(at, [start + hour * 3600, start + (hour + 1) * 3600])
            if hi > lo:
                _write(root, "feedback", start + (hour + 1) * 3600 - 0.001 + replica / 1000,
                       _feedback_table(labels.iloc[lo:hi]))
    return {"start": start, "end": end, "rows": rows}


# -- one measurement, in its own process ---------------------------------------------------------------------------


def _status_mb(field: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (now) of this process. Not ``getrusage``'s ``ru_maxrss``: Linux carries
    that over from the parent through fork and exec, so a child of a large parent reports the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Read one window with one reader; what it cost and a fingerprint of what it returned."""
    import importlib

    import polars  # noqa: F401 - imported by both, so the baseline RSS compares like with like

    reader: Any = importlib.import_module("tests.inference_log_reference" if spec["path"] == "pandas"
                                          else "core.inference_log")

    start, end = (datetime.fromtimestamp(spec[k], UTC) for k in ("start", "end"))
    horizon = timedelta(days=7)
    baseline = _status_mb("VmRSS")
    began = time.perf_counter()
    frame = reader.read_window(MODEL, start, end, root=spec["root"], horizon=horizon)
    seconds = time.perf_counter() - began
    peak = _status_mb("VmHWM")
    if spec["path"] == "pandas":
        listed = [reader.log_partitions(spec["root"], MODEL, "predictions", (start - timedelta(days=1)).date(),
                                        (end + timedelta(days=1)).date()),
                  reader.log_partitions(spec["root"], MODEL, "feedback",
                                        *reader.feedback_days(start, end, horizon))]
    else:
        since = start - reader.WRITE_LAG
        listed = [reader.log_partitions(spec["root"], MODEL, "predictions", (start - timedelta(days=1)).date(),
                                        (end + timedelta(days=1)).date(), since=since),
                  reader.log_partitions(spec["root"], MODEL, "feedback",
                                        *reader.feedback_days(start, end, horizon), since=since)]
    return {"path": spec["path"], "seconds": seconds, "rows": len(frame), "labelled": int(frame["label"].notna().sum()),
            "files": sum(len(paths) for kind in listed for paths in kind.values()),
            "peak_rss_mb": round(peak), "baseline_rss_mb": round(baseline),
            "fingerprint": [hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()
                                           ).hexdigest(), {c: str(t) for c, t in frame.dtypes.items()}]}


def measure(path: str, root: Path, window: dict[str, Any]) -> dict[str, Any]:
    spec = {"path": path, "root": str(root), "start": window["start"], "end": window["end"]}
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                         check=False, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    if out.returncode:
        raise RuntimeError(f"{path} read failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["rows_per_s"] = result["rows"] / result["seconds"]
    return result


def compare(title: str, root: Path, window: dict[str, Any]) -> dict[str, Any]:
    old, new = measure("pandas", root, window), measure("polars", root, window)
    if old["fingerprint"] != new["fingerprint"]:
        raise AssertionError(f"{title}: the polars read differs from the pandas read")
    print(f"\n{title}")
    print(f"  {'reader':<16}{'files read':>12}{'seconds':>10}{'rows':>11}{'rows/s':>12}{'peak RSS':>11}"
          f"{'after imports':>15}")
    for row in (old, new):
        name = "pandas (today)" if row["path"] == "pandas" else "polars (new)"
        print(f"  {name:<16}{row['files']:>12,}{row['seconds']:>10.2f}{row['rows']:>11,}{row['rows_per_s']:>12,.0f}"
              f"{row['peak_rss_mb']:>8,} MB{row['baseline_rss_mb']:>12,} MB")
    ratio = old["seconds"] / new["seconds"]
    print(f"  polars: {ratio:.1f}x faster, peak RSS x{new['peak_rss_mb'] / old['peak_rss_mb']:.2f}; "
          f"same {new['rows']:,} rows ({new['labelled']:,} labelled), same dtypes")
    return {"title": title, "pandas": old, "polars": new, "speedup": ratio}


def profiles(root: Path, count: int, rate: float, replicas: int) -> dict[str, Any]:
    """``count`` one-second profiles of one window (``rate`` rows each), written by the gateway's profiler
    function, then merged by the monitor's ``read_profile``."""
    from core.inference_log import read_profile
    from gateway.profiler import write_window_profiles

    rng = np.random.default_rng(2)
    hour = time.time() // 3600 * 3600 - 3600
    for k in range(count):
        write_window_profiles(_predictions(rng, hour + k + rng.random(int(rate))), str(root), MODEL, 3600)
    began = time.perf_counter()
    read_profile(MODEL, datetime.fromtimestamp(hour, UTC), datetime.fromtimestamp(hour + 3600, UTC), root=str(root))
    seconds = time.perf_counter() - began
    per_file = seconds / count
    hour_files = 3600 * replicas
    print(f"\nprofiles (whylogs, not changed): {count} one-second profiles of {rate:g} rows merged by read_profile in "
          f"{seconds:.2f} s, {per_file * 1000:.1f} ms a file; an hour of {replicas} replicas is {hour_files:,} files, "
          f"about {per_file * hour_files:.0f} s")
    return {"files": count, "seconds": seconds, "ms_per_file": per_file * 1000,
            "hour_estimate_s": per_file * hour_files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2, help="hours of 1 s flushes before the window's end")
    parser.add_argument("--rate", type=float, default=200, help="requests/s, all replicas together")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--large-rows", type=int, default=4_000_000)
    parser.add_argument("--profiles", type=int, default=300, help="one-second profiles to merge (0: skip)")
    parser.add_argument("--keep", action="store_true", help="keep the generated logs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    from core.inference_log import compact_log

    work = Path(tempfile.mkdtemp(prefix="esteira-bench-monitor-"))
    results: dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if k != "child"}, "cpus": os.cpu_count()}
    try:
        began = time.perf_counter()
        small = small_files_log(work / "small", args.hours, args.rate, args.replicas)
        print(f"small files: {args.hours:g} h + 5 min of 1 s flushes, {args.replicas} replicas, {args.rate:g} req/s: "
              f"{small['files']:,} files, {small['rows']:,} predictions "
              f"(written in {time.perf_counter() - began:.0f} s)")
        results["small"] = compare("the last hour, from 1 s files", work / "small", small)

        compaction = compact_log(MODEL, root=str(work / "small"), now=small["now"] + 86400)
        results["compaction"] = compaction.__dict__
        print(f"\ncompaction (as a day later, every hour closed): {compaction.files_in:,} files of "
              f"{compaction.hours} hours into {compaction.files_out}, {compaction.rows:,} rows, "
              f"{compaction.seconds:.1f} s ({compaction.seconds / max(compaction.hours, 1):.2f} s an hour of one kind)")
        results["compacted"] = compare("the same hour, after compaction", work / "small", small)

        began = time.perf_counter()
        large = large_log(work / "large", args.large_rows, args.replicas)
        print(f"\nlarge: {args.large_rows:,} predictions in one day, one file an hour per replica and kind "
              f"(written in {time.perf_counter() - began:.0f} s)")
        results["large"] = compare("one day of predictions", work / "large", large)
        if args.profiles:
            results["profiles"] = profiles(work / "profiles", args.profiles, args.rate / args.replicas,
                                           args.replicas)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}")
    out = Path(__file__).parent / "results" / f"monitor-read-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()

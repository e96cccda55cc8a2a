"""Benchmark of point-in-time training sets: ``feature_repo.offline.training_frame`` on two shapes of data.

Run: ``.venv/bin/python bench/bench_pit.py`` (1M and 10M label rows per shape with the polars engine, and
Feast's own path at a size it survives), or ``--quick`` (small sizes, under a minute). The shapes are made
here (``pit_shapes.py``: a tiny Feast project per shape and size in a temporary folder, parquet sources):

* ``sparse``: many keys, short history each (label rows / 10 keys, ~8 daily rows a key, ties on the event
  timestamp broken by a created timestamp, 5% of label keys unknown, an on-demand "python" view);
* ``dense``: three keys, hourly history over two years (weather by airport), a daily view beside it.

Every measurement runs in a fresh process (the project applied, the label rows read as a user reads them,
then ``training_frame`` timed alone), so its peak RSS (``ru_maxrss``) is that step's, input included: the
"input RSS" column is the peak before the step started. A watchdog samples the child's RSS and kills it
above ``--rss-cap-gb`` (Feast's file store grows as label rows x source rows per key: 20,000 dense label
rows reached 23 GB here). "vs Feast" is an engine's rows/s over Feast's file store's on the same shape.
"CPU s" is the step's processor time (user + system, both cores): well under "seconds", the step waited for
a core (the machine is shared) or for the disk.

With ``feast[duckdb]`` importable (``duckdb`` and ``ibis-framework``; not an esteira dependency), Feast's
DuckDB offline store is measured too, on the same data (a copy of the project whose sources are globs: that
store reads only paths ending in ``.parquet``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))

import pit_shapes

FULL_SIZES = [1_000_000, 10_000_000]
QUICK_SIZES = [20_000, 200_000]
# Feast's file store: ~25k rows/s on the sparse shape; on the dense one every label row meets every hour of
# its key's history (17,300 rows), 44 rows/s and 3.7 GB at 1,000 rows.
BASELINE = {"sparse": 100_000, "dense": 1_000}
QUICK_BASELINE = {"sparse": 20_000, "dense": 300}
# Feast's DuckDB offline store (through ibis: an inequality join and a row_number() window per view), when
# feast[duckdb] is importable: about 80k rows/s on the sparse shape at 1M rows, 9k rows/s on the dense one.
DUCKDB = {"sparse": 1_000_000, "dense": 100_000}
QUICK_DUCKDB = {"sparse": 20_000, "dense": 5_000}
TARGET_ROWS_PER_S = 250_000
TARGET_RSS_GB = 4.0


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def run_child(args: list[str], cap_gb: float, timeout_s: float) -> dict[str, Any]:
    """Run this script as a child with ``args``; returns its JSON line, or why it was stopped."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    started, sampled = time.monotonic(), 0
    while proc.poll() is None:
        sampled = max(sampled, _rss_kb(proc.pid))
        if sampled > cap_gb * 1024 * 1024 or time.monotonic() - started > timeout_s:
            proc.kill()
            proc.wait()
            what = f"RSS over {cap_gb:g} GB" if sampled > cap_gb * 1024 * 1024 else f"over {timeout_s:g} s"
            return {"error": f"stopped: {what}", "sampled_peak_gb": sampled / 1024 / 1024}
        time.sleep(0.05)
    out, err = proc.communicate()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: {err.strip().splitlines()[-1:] or out[-300:]}"}
    return json.loads(lines[-1])


def child_generate(shape: str, rows: int, root: str) -> None:
    started = time.perf_counter()
    pit_shapes.write_project(Path(root), shape, rows)
    print(json.dumps({"seconds": time.perf_counter() - started}))


def child_measure(shape: str, root: str, engine: str) -> None:
    """In a fresh process: apply the project with Feast, read the labels, time ``training_frame`` alone.

    ``engine`` is ``polars`` or ``feast`` (``training_frame``'s own engines), or ``duckdb``: the Feast path on
    a project configured with Feast's DuckDB offline store (``feast[duckdb]``, not an esteira dependency).
    """
    import io
    from contextlib import redirect_stdout

    from feast import FeatureStore

    from core.project import Project
    from feature_repo.definitions import load_definitions
    from feature_repo.offline import training_frame

    (Path(root) / ".state").mkdir(exist_ok=True)
    store = FeatureStore(repo_path=root)
    contents = load_definitions(Project(Path(root)), store.project)
    with redirect_stdout(io.StringIO()):
        store.apply([*contents.entities, *contents.data_sources, *contents.feature_views,
                     *contents.on_demand_feature_views, *contents.feature_services])
    labels = pit_shapes.read_labels(Path(root) if engine != "duckdb" else Path(root).with_name(
        Path(root).name.removesuffix("-duckdb")))
    before_kb = _rss_kb(os.getpid(), "VmHWM")
    cpu, started = os.times(), time.perf_counter()
    with redirect_stdout(io.StringIO()):  # Feast's Dask store prints which column it takes as the timestamp
        frame = training_frame(store, pit_shapes.SERVICE[shape], labels,
                               engine="polars" if engine == "polars" else "feast")
    seconds, done = time.perf_counter() - started, os.times()
    assert len(frame) == len(labels)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": len(frame), "seconds": seconds, "peak_gb": peak_kb / 1024 / 1024,
                      "cpu_s": done.user - cpu.user + done.system - cpu.system,
                      "input_gb": before_kb / 1024 / 1024, "columns": frame.shape[1]}))


def duckdb_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("duckdb", "ibis"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds), for development")
    parser.add_argument("--sizes", type=int, nargs="+", help="label rows for the polars engine")
    parser.add_argument("--shapes", nargs="+", default=list(pit_shapes.SHAPES), choices=pit_shapes.SHAPES)
    parser.add_argument("--no-baseline", action="store_true", help="skip Feast's own path")
    parser.add_argument("--no-duckdb", action="store_true", help="skip Feast's DuckDB offline store")
    parser.add_argument("--rss-cap-gb", type=float, default=10.0, help="kill a measurement above this RSS")
    parser.add_argument("--timeout", type=float, default=900.0, help="kill a measurement after this many s")
    parser.add_argument("--workdir", help="where the projects are written (default: a temporary folder)")
    args = parser.parse_args()
    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    baseline = QUICK_BASELINE if args.quick else BASELINE

    duck = {} if args.no_baseline or args.no_duckdb else (QUICK_DUCKDB if args.quick else DUCKDB)
    if duck and not duckdb_available():
        print("Feast's DuckDB offline store: skipped (duckdb and ibis-framework are not importable: feast[duckdb])")
        duck = {}
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-pit-", dir=args.workdir) as tmp:
        for shape in args.shapes:
            runs = [("polars", n) for n in sizes]
            if not args.no_baseline:
                runs.append(("feast", baseline[shape]))
            if shape in duck:
                runs.append(("duckdb", duck[shape]))
            for engine, rows in runs:
                root = Path(tmp) / f"{shape}-{rows}"
                if not root.exists():
                    made = run_child(["_generate", shape, str(rows), str(root)], 16.0, args.timeout)
                    if "error" in made:
                        raise SystemExit(f"generating {shape} {rows}: {made['error']}")
                if engine == "duckdb":  # the same data, read by Feast's DuckDB store
                    pit_shapes.write_definitions(root.with_name(root.name + "-duckdb"), shape, offline="duckdb",
                                                 data=root / "data")
                    root = root.with_name(root.name + "-duckdb")
                result = run_child(["_measure", shape, str(root), engine], args.rss_cap_gb, args.timeout)
                result.update(shape=shape, engine=engine, label_rows=rows)
                results.append(result)
                print(_line(result), flush=True)
    print()
    print(_table(results))
    out = BENCH_DIR / "results"
    out.mkdir(exist_ok=True)
    (out / "bench_pit.json").write_text(json.dumps(results, indent=2))


def _line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['shape']:<7} {r['engine']:<7} {r['label_rows']:>11,}  {r['error']}"
    return (f"{r['shape']:<7} {r['engine']:<7} {r['label_rows']:>11,}  {r['seconds']:8.2f} s  "
            f"(cpu {r['cpu_s']:.1f} s)  {r['rows'] / r['seconds']:>11,.0f} rows/s  peak {r['peak_gb']:5.2f} GB "
            f"(input {r['input_gb']:.2f} GB)")


def _table(results: list[dict[str, Any]]) -> str:
    """Markdown table; "vs Feast" is rows/s over the Feast file store's on the same shape."""
    head = ("| shape | engine | label rows | seconds | CPU s | rows/s | peak RSS GB | input RSS GB | vs Feast "
            "| target |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    lines = [head]
    names = {"polars": "polars (esteira)", "feast": "Feast file store", "duckdb": "Feast DuckDB store"}
    for r in results:
        name = names[r["engine"]]
        if "error" in r:
            lines.append(f"| {r['shape']} | {name} | {r['label_rows']:,} | {r['error']} | | | | | | |")
            continue
        rate = r["rows"] / r["seconds"]
        base = next((b for b in results if b["shape"] == r["shape"] and b["engine"] == "feast" and "error" not in b),
                    None)
        x = rate / (base["rows"] / base["seconds"]) if base and r["engine"] != "feast" else None
        ratio = "" if x is None else f"{x:,.1f}x" if x < 10 else f"{x:,.0f}x"
        target = ""
        if r["engine"] == "polars" and r["label_rows"] >= 1_000_000:
            ok = rate >= TARGET_ROWS_PER_S and (r["label_rows"] < 10_000_000 or r["peak_gb"] < TARGET_RSS_GB)
            target = "met" if ok else "MISSED"
        lines.append(f"| {r['shape']} | {name} | {r['label_rows']:,} | {r['seconds']:.2f} | {r['cpu_s']:.1f} "
                     f"| {rate:,.0f} | {r['peak_gb']:.2f} | {r['input_gb']:.2f} | {ratio} | {target} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_generate":
        child_generate(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == "_measure":
        child_measure(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()

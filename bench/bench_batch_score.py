"""Batch scoring: Ray Data across a Ray cluster against the single-process engine, rows/s and peak memory.

    uv run python bench/bench_batch_score.py                 # 1M and 10M entity rows (about 8 min here)
    uv run python bench/bench_batch_score.py --quick         # 20k and 200k rows, during development
    uv run python bench/bench_batch_score.py --ray-cpus 2,3  # also a local Ray with 3 logical CPUs (2 actors)

Same machine, same run, same model, same entity files for both engines. Set-up (not timed): the churn
example copied to a temporary folder, its generator's data (``--customers`` customers x 37 days of activity,
profile snapshots), the definitions applied, a small model (hist gradient boosting, 30 iterations) trained
and promoted by esteira's own train flow (in-process search), then entity files of each size: random
customers (1% unknown, so some rows miss features), a random second within the data's 30 days as the
point-in-time timestamp, a request field; folders of parquet files of at most 1M rows.

Each engine runs in a fresh subprocess, ``flows.batch_score.batch_score`` in offline mode (Feast's file offline
store, point-in-time join) writing parquet:

* ``local``: ``engine="local"``; rows/s over the whole call (read, join, predict, write);
* ``ray``: ``engine="ray"`` on a local Ray started by ``core.ray_runtime.ensure_ray`` with ``--ray-cpus``
  logical CPUs (default: the machine's); Ray's start is timed apart, rows/s is over the scoring call (actor
  start included: it is paid on every run, a cluster's start is not).

Memory, as printed: the driver's peak RSS is the kernel's high-water mark (``getrusage(RUSAGE_SELF).ru_maxrss``);
Ray's processes (raylet, GCS, workers, actors: every descendant of the driver) are sampled with psutil every
0.2 s: the largest single worker's peak RSS, and the peak of the summed PSS of all of them (PSS splits the
object store's shared pages between the processes that map them, so the sum does not count them twice;
sampled every 1 s). The local engine's memory grows with the input (the point-in-time join holds the whole
frame), so a size whose projected peak (per-row peak of the largest local run x rows, plus its baseline) is
over 80% of the memory available is not run: the bench says so and keeps the largest local run it made.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL = "bench_batch"
SPEC: dict[str, Any] = {
    "name": MODEL,
    "task": "binary",
    "feature_service": "churn_v1",
    "label": "churned",
    "labels": {"source": "data/churn_labels"},
    "candidates": [{"family": "hist_gradient_boosting", "params": {"max_iter": 30}}],
    "cv": {"folds": 2},
    "holdout": {"fraction": 0.25},
    "validation": {"min_rows": 200},
    "promotion": {"min_improvement": 0.0, "min_metric": 0.5},
}
FILE_ROWS = 1_000_000


# -- the child: one engine, one size, measured ---------------------------------------------------------------


class Sampler(threading.Thread):
    """Peak RSS of the largest descendant process and peak summed PSS of all descendants (Ray's processes)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        import psutil

        self.me = psutil.Process()
        self.stop = threading.Event()
        self.worker_rss = 0
        self.worker_name = ""
        self.total_pss = 0

    def run(self) -> None:
        import psutil

        tick = 0
        while not self.stop.wait(0.2):
            tick += 1
            total = 0
            for proc in self.me.children(recursive=True):
                try:
                    rss = proc.memory_info().rss
                    if rss > self.worker_rss:
                        self.worker_rss, self.worker_name = rss, " ".join(proc.cmdline()[:1])[:60]
                    if tick % 5 == 0:
                        total += proc.memory_full_info().pss
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
            self.total_pss = max(self.total_pss, total)


def child(args: argparse.Namespace) -> None:
    from flows.batch_score import batch_score

    result: dict[str, Any] = {"engine": args.child}
    sampler = Sampler()
    sampler.start()
    if args.child == "ray":
        from core.ray_runtime import ensure_ray

        started = time.perf_counter()
        resources = ensure_ray(num_cpus=int(args.ray_cpus) if args.ray_cpus else None)
        result["ray_start_s"] = round(time.perf_counter() - started, 1)
        result["cpus"] = resources.get("CPU")
    started = time.perf_counter()
    scored = batch_score(MODEL, args.entities, output=args.out, engine=args.child, batch_rows=args.batch_rows)
    seconds = time.perf_counter() - started
    sampler.stop.set()
    sampler.join()
    result.update(rows=scored.rows, missing=scored.rows_with_missing_features, seconds=round(seconds, 1),
                  rows_per_s=round(scored.rows / seconds), driver_peak_mb=resource.getrusage(
                      resource.RUSAGE_SELF).ru_maxrss // 1024, worker_peak_mb=sampler.worker_rss // 2**20,
                  ray_total_pss_mb=sampler.total_pss // 2**20, nodes=len(scored.rows_per_node))
    print("RESULT " + json.dumps(result), flush=True)
    if args.child == "ray":
        import ray

        ray.shutdown()


# -- the parent: data, model, runs, table ---------------------------------------------------------------------


def write_entities(folder: Path, rows: int, customers: int, seed: int = 0) -> None:
    """Random entity rows in files of at most 1M rows: known customers (1% unknown), a second within the data's
    30 days of history, a request field."""
    import numpy as np
    import pandas as pd

    from tests.projects import EXAMPLES, project_module

    generator = project_module(EXAMPLES / "churn", "generator")
    start, end = generator.batch_window("history")
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for part, first in enumerate(range(0, rows, FILE_ROWS)):
        n = min(FILE_ROWS, rows - first)
        ids = generator.FIRST_CUSTOMER_ID + rng.integers(0, customers, n)
        ids[rng.random(n) < 0.01] = 10**9  # unknown customers: rows with missing features
        seconds = rng.integers(int(start.timestamp()), int(end.timestamp()), n)
        pd.DataFrame({"customer_id": ids, "event_timestamp": pd.to_datetime(seconds, unit="s", utc=True),
                      "days_until_renewal": rng.integers(0, 365, n)}).to_parquet(folder / f"part-{part:03d}.parquet")


def prepare(tmp: Path, customers: int) -> dict[str, str]:
    """The project copy, its data and a trained model; returns the environment every run uses."""
    from baselines.common import churn_project

    root, generator = churn_project(tmp / "churn")
    env = {"ESTEIRA_PROJECT": str(root), "ESTEIRA_HOME": str(tmp / "home"),
           "ESTEIRA_DATABASE_URL": f"sqlite:///{tmp / 'registry.db'}", "ESTEIRA_ARTIFACT_ROOT": str(tmp / "artifacts"),
           "WHYLOGS_NO_ANALYTICS": "1", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    os.environ.update(env)
    os.environ.pop("ESTEIRA_RAY_ADDRESS", None)
    os.environ.pop("RAY_ADDRESS", None)
    generator.generate_batch(root / "data", n_customers=customers, labels_per_customer=1, seed=7)
    from flows.features import FeastFetcher
    from flows.spec import load_spec
    from flows.train import train
    from registry import Registry

    registry = Registry.from_url()
    trained = train(load_spec(SPEC), registry=registry, fetcher=FeastFetcher(apply=True), parallel=False)
    registry.close()
    print(f"model: {MODEL} v{trained.version} ({trained.best_family}, holdout roc_auc "
          f"{trained.metrics.get('holdout_roc_auc', float('nan')):.3f}), {customers:,} customers x 37 days of "
          "activity in the offline store", flush=True)
    return env


def run_child(engine: str, entities: Path, out: Path, args: argparse.Namespace, ray_cpus: int | None = None
              ) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", engine, "--entities", str(entities), "--out", str(out),
               "--batch-rows", str(args.batch_rows)]
    if ray_cpus:
        command += ["--ray-cpus", str(ray_cpus)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=args.timeout)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        tail = (done.stdout + done.stderr)[-2500:]
        return {"engine": engine, "error": f"exit {done.returncode}: {tail}"}
    return json.loads(line[7:])


def available_mb() -> int:
    import psutil

    return psutil.virtual_memory().available // 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="20k and 200k entity rows, 5,000 customers")
    parser.add_argument("--sizes", default="1000000,10000000", help="entity rows per run, comma-separated")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--batch-rows", type=int, default=None, help="Ray Data batch (default: the engine's)")
    parser.add_argument("--ray-cpus", default="", help="logical CPUs of the local Ray, comma-separated: one Ray "
                                                       "run per value (default: the machine's cores)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per run")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (data, model, outputs)")
    parser.add_argument("--child", choices=["local", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--entities", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch_rows is None:
        from flows.batch_score import DEFAULT_BATCH_ROWS

        args.batch_rows = DEFAULT_BATCH_ROWS
    if args.child:
        child(args)
        return
    ray_cpus = [int(x) for x in args.ray_cpus.split(",") if x] or [os.cpu_count() or 2]
    sizes = [20_000, 200_000] if args.quick else [int(x) for x in args.sizes.split(",")]
    customers = 5_000 if args.quick else args.customers
    tmp = Path(tempfile.mkdtemp(prefix="esteira-bench-batch-"))
    try:
        run_all(args, tmp, sizes, customers, ray_cpus)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)  # 10M rows of entities and two outputs: about 0.5 GB


def run_all(args: argparse.Namespace, tmp: Path, sizes: list[int], customers: int, ray_cpus: list[int]) -> None:
    print(f"machine: {os.cpu_count()} cores, {available_mb() / 1024:.1f} GiB available; load "
          f"{os.getloadavg()[0]:.1f}; batch {args.batch_rows:,} rows; work folder {tmp}", flush=True)
    prepare(tmp, customers)
    rows: list[dict[str, Any]] = []
    largest_local: dict[str, Any] | None = None
    for size in sizes:
        entities = tmp / f"entities-{size}"
        write_entities(entities, size, customers)
        skip = None
        if largest_local is not None:
            per_row = largest_local["driver_peak_mb"] / largest_local["rows"]
            projected = int(per_row * size)
            if projected > 0.8 * available_mb():
                skip = (f"not run: projected driver peak {projected:,} MB ({per_row * 1024:.1f} KB per row at "
                        f"{largest_local['rows']:,} rows) > 80% of {available_mb():,} MB available")
        if skip:
            rows.append({"size": size, "engine": "local", "skipped": skip})
        else:
            result = run_child("local", entities, tmp / f"out-local-{size}.parquet", args)
            rows.append({"size": size, **result})
            if "error" not in result:
                largest_local = result
        print(json.dumps(rows[-1]), flush=True)
        for cpus in ray_cpus:
            result = run_child("ray", entities, tmp / f"out-ray-{size}-{cpus}", args, ray_cpus=cpus)
            rows.append({"size": size, **result})
            print(json.dumps(rows[-1]), flush=True)

    print("\nsize        engine        rows/s   seconds  ray start  driver peak  largest worker  Ray total PSS")
    for row in rows:
        name = row["engine"] + (f" ({row['cpus']:.0f} CPU)" if row.get("cpus") else "")
        if "skipped" in row or "error" in row:
            print(f"{row['size']:>10,}  {name:<12}  {row.get('skipped') or row['error'][:300]}")
            continue
        start = f"{row['ray_start_s']:.1f} s" if "ray_start_s" in row else "-"
        worker = f"{row['worker_peak_mb']:,} MB" if row["engine"] == "ray" else "-"
        total = f"{row['ray_total_pss_mb']:,} MB" if row["engine"] == "ray" else "-"
        print(f"{row['size']:>10,}  {name:<12}  {row['rows_per_s']:>7,}  {row['seconds']:>7.1f}  {start:>9}  "
              f"{row['driver_peak_mb']:>8,} MB  {worker:>14}  {total:>13}")
    print("\nrows/s: rows scored / seconds of the batch_score call (actor start included, Ray start not); "
          "driver peak: getrusage ru_maxrss; largest worker: peak RSS of one Ray process, psutil every 0.2 s; "
          "Ray total: peak of the summed PSS of all Ray processes, psutil every 1 s.")
    print(f"rows with missing features (1% unknown customers): "
          f"{', '.join(str(r.get('missing')) for r in rows if 'missing' in r)}")


if __name__ == "__main__":
    main()

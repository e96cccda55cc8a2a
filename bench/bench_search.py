"""Parallel search on Ray vs the same trials one after another in one process.

    uv run python bench/bench_search.py [--customers 1500] [--spec churn] [--repeat 1]

Same machine, same run, same data and trials (the spec's, k-fold CV each). Prints:

* sequential wall time (fastest of ``--repeat`` alternating runs, as is Ray) (each trial single-threaded, as on Ray, so the comparison is about
  parallelism, not about BLAS/OpenMP threads);
* Ray wall time, warm (workers started) and the speed-up;
* overhead per trial on Ray: wall time beyond perfect parallelism, divided by trials per slot,
  measured with near-empty trials so the fit time does not hide it.

Data: the churn example project (``examples/churn``) copied into a temporary folder and pointed at with
``ESTEIRA_PROJECT``, its data made by the copy's own generator, the spec's label source joined through
Feast exactly as the train flow does (definitions applied first; the join is outside the timed part).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--customers", type=int, default=1500)
    parser.add_argument("--spec", default="churn")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repeat", type=int, default=3,
                        help="Alternate sequential and Ray runs this many times; report the fastest of each "
                             "(robust to other load on a shared machine).")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="esteira-bench-"))
    from baselines.common import churn_project

    root, generator = churn_project(tmp / "churn")  # never written in place: a copy of examples/churn
    os.environ["ESTEIRA_PROJECT"] = str(root)  # before any setting is read (its state: <copy>/.esteira)
    os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "1")

    import numpy as np
    import ray

    from core.project import Project
    from core.ray_runtime import ensure_ray
    from flows.features import FeastFetcher
    from flows.search import CVSettings, TrialConfig, run_on_ray, run_sequential, trial_configs
    from flows.spec import resolve_spec
    from flows.tasks import label_values
    from flows.train import fetch_training_set

    load0 = os.getloadavg()
    project = Project(root)
    spec = resolve_spec(args.spec, project)
    generator.generate_batch(root / "data", n_customers=args.customers, labels_per_customer=4, seed=1)
    data = fetch_training_set(spec, FeastFetcher(project, apply=True), project)
    X, y = data.frame[list(data.schema)], label_values(spec.task, data.frame[spec.label].to_numpy())
    configs = trial_configs(spec.trial_configs(), spec.seed, spec.task)
    settings = CVSettings(spec.task, spec.metric, spec.cv.folds, spec.cv.strategy, spec.seed, tuple(data.numeric),
                          tuple(data.categorical))
    print(f"data: {len(X)} rows x {X.shape[1]} features; {len(configs)} trials x {spec.cv.folds}-fold CV; "
          f"{args.cpus} CPUs")

    t0 = time.perf_counter()
    ensure_ray(num_cpus=args.cpus)
    slots = int(ray.cluster_resources().get("CPU", 1))
    t_init = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_on_ray(configs[:slots], X, y, settings)  # warm-up: start one worker per slot, import sklearn there
    t_warm = time.perf_counter() - t0

    seq_times, ray_times = [], []
    for _ in range(args.repeat):  # alternate, so a burst of outside load hits both sides alike
        t0 = time.perf_counter()
        sequential = run_sequential(configs, X, y, settings)
        seq_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        parallel = run_on_ray(configs, X, y, settings)
        ray_times.append(time.perf_counter() - t0)
    t_seq, t_ray = min(seq_times), min(ray_times)
    same = all(abs(a.score - b.score) < 1e-12 for a, b in zip(sequential, parallel, strict=True))

    # Overhead: many near-empty trials (logistic regression on 60 rows, 2 folds).
    tiny_X, tiny_y = X.iloc[:60], y[:60]
    if len(set(tiny_y)) < 2:
        tiny_y = np.arange(60) % 2
    tiny = [TrialConfig(i, "logistic_regression", {"C": 1.0, "max_iter": 50}) for i in range(40)]
    tiny_settings = CVSettings("binary", "roc_auc", 2, "stratified", 0, settings.numeric, settings.categorical)
    t0 = time.perf_counter()
    run_sequential(tiny, tiny_X, tiny_y, tiny_settings)
    t_tiny_seq = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_on_ray(tiny, tiny_X, tiny_y, tiny_settings)
    t_tiny_ray = time.perf_counter() - t0
    overhead = (t_tiny_ray - t_tiny_seq / slots) / (len(tiny) / slots)

    busy = sum(r.duration_s for r in parallel)
    print(f"load average before/after: {load0} / {os.getloadavg()}")
    print(f"sequential runs: {', '.join(f'{t:.2f}' for t in seq_times)} s; Ray runs: "
          f"{', '.join(f'{t:.2f}' for t in ray_times)} s")
    print(f"sequential (1 process, 1 thread per fit): {t_seq:7.2f} s")
    print(f"ray init {t_init:.2f} s; warm-up of {slots} workers {t_warm:.2f} s (not in the figure below)")
    print(f"ray, {slots} slots:                          {t_ray:7.2f} s  (trial CPU-seconds {busy:.2f})")
    print(f"speed-up: {t_seq / t_ray:.2f}x   (ideal {slots}x; same CV scores as sequential: {same})")
    print(f"overhead per trial on Ray: {overhead * 1000:.1f} ms "
          f"({len(tiny)} tiny trials: {t_tiny_seq:.2f} s sequential, {t_tiny_ray:.2f} s on Ray)")


if __name__ == "__main__":
    main()

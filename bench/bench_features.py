"""Benchmark of the feature store path: generation, materialization, point-in-time joins, online reads.

Run: ``uv run python bench/bench_features.py [--sizes 100000 1000000]``. Each size gets a fresh copy of
the churn example project (``examples/churn``) in a temporary folder, pointed at with
``ESTEIRA_PROJECT`` (its state in the copy's ``.esteira``); the data is made by the copy's own
generator. "rows" are activity rows (customers x 30 days), the entity frame is the label source (4
labels per customer). "open + apply" is opening the store and syncing the project's definitions into
Feast's registry. The ratio line shows how cost grows with size: a rows/s ratio near 1.0 means linear
cost.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines.common import churn_project

from core.project import Project
from core.settings import get_settings
from feature_repo.materialize import materialize
from feature_repo.offline import training_frame
from feature_repo.online import online_features
from feature_repo.store import clear_store_cache, open_store
from feature_repo.sync import sync

HISTORY_DAYS = 30
FEATURE_SERVICE = "churn_v1"  # the churn example's feature service (features/churn.py)
REQUEST = {"days_until_renewal": 5}  # its on-demand view's request field


def bench_size(rows: int, tmp: Path) -> dict[str, Any]:
    root, generator = churn_project(tmp / "churn")
    os.environ["ESTEIRA_PROJECT"] = str(root)  # settings are read once per process: re-read for this copy
    get_settings.cache_clear()
    clear_store_cache()
    project = Project(root)
    data_dir = root / "data"  # where the copy's feature sources point
    entity_key = generator.ENTITY_KEY
    n_customers = max(1, rows // HISTORY_DAYS)
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    info = generator.generate_batch(data_dir, n_customers=n_customers, history_days=HISTORY_DAYS, now=now)
    gen_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    store = open_store(project)
    sync(store, project)
    open_s = time.perf_counter() - t0

    report = materialize(store, now)

    labels = generator.load_labels(data_dir)
    t0 = time.perf_counter()
    frame = training_frame(store, FEATURE_SERVICE, labels, timestamp=generator.TIMESTAMP)
    pit_s = time.perf_counter() - t0
    assert len(frame) == len(labels)

    one, hundred = [], []
    ids = labels[entity_key].drop_duplicates().tolist()
    for i in range(200):
        t0 = time.perf_counter()
        online_features(store, FEATURE_SERVICE, [{entity_key: ids[i % len(ids)]}], REQUEST)
        one.append(time.perf_counter() - t0)
    batch = [{entity_key: c} for c in ids[:100]]
    for _ in range(20):
        t0 = time.perf_counter()
        online_features(store, FEATURE_SERVICE, batch, REQUEST)
        hundred.append(time.perf_counter() - t0)
    return {
        "activity_rows": info.activity_rows,
        "customers": n_customers,
        "generate_s": gen_s,
        "generate_rows_s": info.activity_rows / gen_s,
        "open_apply_s": open_s,
        "materialize_s": report["seconds"],
        "materialize_source_rows": report["source_rows"],
        "materialize_rows_s": report["rows_per_second"],
        "online_rows_written": report["rows_written"],
        "pit_entity_rows": len(labels),
        "pit_s": pit_s,
        "pit_rows_s": len(labels) / pit_s,
        "online_1_p50_ms": statistics.median(one) * 1e3,
        "online_100_p50_ms": statistics.median(hundred) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    results = []
    for rows in args.sizes:
        with tempfile.TemporaryDirectory(prefix="esteira-bench-") as tmp:
            r = bench_size(rows, Path(tmp))
            clear_store_cache()
            results.append(r)
            print(
                f"{r['activity_rows']:>9,} activity rows ({r['customers']:,} customers): "
                f"generate {r['generate_s']:.2f} s ({r['generate_rows_s']:,.0f} rows/s) | "
                f"materialize {r['materialize_s']:.2f} s, {r['materialize_rows_s']:,.0f} source rows/s "
                f"({r['online_rows_written']:,} online rows) | "
                f"point-in-time {r['pit_entity_rows']:,} entity rows in {r['pit_s']:.2f} s, "
                f"{r['pit_rows_s']:,.0f} rows/s | online p50 1 entity {r['online_1_p50_ms']:.2f} ms, "
                f"100 entities {r['online_100_p50_ms']:.1f} ms",
                flush=True,
            )
    if len(results) >= 2:
        a, b = results[0], results[-1]
        size_ratio = b["activity_rows"] / a["activity_rows"]
        print(
            f"\nx{size_ratio:.0f} rows: materialize time x{b['materialize_s'] / a['materialize_s']:.1f} "
            f"(rows/s ratio {b['materialize_rows_s'] / a['materialize_rows_s']:.2f}); "
            f"point-in-time time x{b['pit_s'] / a['pit_s']:.1f} "
            f"(rows/s ratio {b['pit_rows_s'] / a['pit_rows_s']:.2f}); "
            f"generate time x{b['generate_s'] / a['generate_s']:.1f}"
        )


if __name__ == "__main__":
    main()

"""Alias resolution, the query the gateway polls: p50/p99 with 10,000 versions registered.

Baselines measured in the same run: the same lookup as a raw sqlite3 query (the floor), and the
registry with only 10 versions (to show the cost does not grow with the table).

    uv run python bench/bench_registry.py [--versions 10000] [--calls 5000]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import skops.io as sio
from rich.console import Console
from rich.progress import track
from rich.table import Table

from registry import Registry


def timings_us(fn: Callable[[], object], calls: int) -> list[float]:
    for _ in range(min(200, calls)):
        fn()
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1e6)
    return out


def populated(folder: Path, versions: int) -> Registry:
    reg = Registry.from_url(f"sqlite:///{folder / 'registry.db'}", str(folder / "artifacts"))
    for i in track(range(versions), description=f"registering {versions} versions", transient=True):
        # tiny distinct skops artifacts: registration checks the bytes, so they must be real ones
        reg.register_artifact("churn", sio.dumps({"version": i}), flavor="sklearn", metrics={"roc_auc": i / versions})
    reg.promote("churn", versions // 2, reason="bench")
    for other in range(20):  # other models and aliases in the table too
        reg.register_artifact(f"model-{other}", sio.dumps({"model": other}), flavor="sklearn")
        reg.promote(f"model-{other}", 1, alias="production")
    return reg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=5_000)
    args = parser.parse_args()
    console = Console()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for versions in (10, args.versions):
            folder = Path(tmp) / str(versions)
            folder.mkdir()
            start = time.perf_counter()
            reg = populated(folder, versions)
            setup_s = time.perf_counter() - start
            rows.append((f"Registry.resolve_alias, {versions} versions",
                         timings_us(lambda: reg.resolve_alias("churn", "production"), args.calls), setup_s))
            if versions == args.versions:
                raw = sqlite3.connect(folder / "registry.db", check_same_thread=False)
                query = ("SELECT a.version FROM model_alias a JOIN registered_model m ON m.id = a.model_id "
                         "WHERE m.name = ? AND a.alias = ?")
                rows.append(("raw sqlite3, same query (floor)",
                             timings_us(lambda: raw.execute(query, ("churn", "production")).fetchone(), args.calls),
                             0.0))
                rows.append((f"Registry.get('churn@production'), {versions} versions",
                             timings_us(lambda: reg.get("churn@production"), args.calls // 5), 0.0))
            reg.close()
    floor = statistics.median(rows[2][1])
    table = Table(title=f"Alias resolution on SQLite ({args.calls} calls)")
    for column in ("what", "p50 µs", "p99 µs", "p50 / floor", "setup s"):
        table.add_column(column)
    for name, samples, setup_s in rows:
        ordered = sorted(samples)
        p50, p99 = statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]
        table.add_row(name, f"{p50:.0f}", f"{p99:.0f}", f"{p50 / floor:.1f}x", f"{setup_s:.1f}" if setup_s else "-")
    console.print(table)


if __name__ == "__main__":
    main()

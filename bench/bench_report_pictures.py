"""What the monitor's per-feature pictures cost: time to build them from two whylogs profiles, and their size.

    uv run --frozen python bench/bench_report_pictures.py [--rows 50000] [--numeric 16] [--categorical 4]

Baseline in the same run: the drift scores the monitor computes from the same two profiles anyway
(``core.profiles.drift_scores``), so the pictures' cost reads as a share of the monitor's own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import pandas as pd

from core import profiles


def frame(rows: int, numeric: int, categorical: int, shift: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = {f"n{i}": rng.normal(shift, 1, rows) for i in range(numeric)}
    data |= {f"c{i}": rng.choice([f"v{j}" for j in range(30)], rows) for i in range(categorical)}
    return pd.DataFrame(data)


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--numeric", type=int, default=16)
    parser.add_argument("--categorical", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    reference = profiles.profile_frame(frame(args.rows, args.numeric, args.categorical, 0.0, 0))
    window = profiles.profile_frame(frame(args.rows, args.numeric, args.categorical, 1.0, 1))
    columns = [f"n{i}" for i in range(args.numeric)] + [f"c{i}" for i in range(args.categorical)]
    pictures = profiles.feature_pictures(reference, window, columns)
    size = len(json.dumps(pictures))
    picture_s = timed(lambda: profiles.feature_pictures(reference, window, columns), args.repeat)
    drift_s = timed(lambda: profiles.drift_scores(reference, window, columns=columns), args.repeat)
    print(f"{len(columns)} features, profiles of {args.rows:,} rows, median of {args.repeat}")
    print(f"{'step':<22}{'ms':>10}")
    print(f"{'drift scores':<22}{drift_s * 1000:>10.1f}")
    print(f"{'pictures':<22}{picture_s * 1000:>10.1f}   ({picture_s / drift_s:.2f}x the drift scores)")
    print(f"JSON: {size:,} bytes in all, {size / len(pictures):,.0f} per feature")


if __name__ == "__main__":
    main()

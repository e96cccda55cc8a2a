"""Writes this project's sample data under data/, relative to today (run it again when it gets old).

    python sample_data.py

Replace it with your own data: parquet (or CSV) files with the entity key, an event timestamp and the
feature columns, and a label source with the key, the timestamp, the request features and the label.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parent / "data"


def write(items: int = 300, days: int = 28, labels: int = 2_000, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days)
    ids = np.arange(1, items + 1)
    category = rng.choice(["books", "games", "garden"], items)
    base_price = rng.gamma(3.0, 10.0, items)
    stats = pd.DataFrame({
        "item_id": np.repeat(ids, days),
        "views_7d": rng.poisson(np.repeat(rng.gamma(2.0, 20.0, items), days)),
        "price": np.round(np.repeat(base_price, days) * rng.normal(1.0, 0.05, items * days), 2),
        "category": np.repeat(category, days),
        "event_timestamp": np.tile(pd.date_range(start, periods=days, freq="D", tz="UTC"), items),
    })
    which = rng.integers(0, items, labels)
    day = rng.integers(1, days, labels)
    stamp = start + pd.to_timedelta(day, unit="D") + pd.to_timedelta(rng.integers(3600, 82_800, labels), unit="s")
    views = stats["views_7d"].to_numpy().reshape(items, days)[which, day]
    quantity = rng.integers(1, 5, labels)
    logit = 0.04 * views - 0.05 * base_price[which] - 0.4 * quantity + (category[which] == "games") * 0.8
    frame = pd.DataFrame({"item_id": ids[which], "event_timestamp": stamp, "quantity": quantity,
                          "bought": (rng.random(labels) < 1 / (1 + np.exp(-logit))).astype(int)})
    (DATA / "item_stats").mkdir(parents=True, exist_ok=True)
    stats.to_parquet(DATA / "item_stats" / "sample.parquet", index=False)
    frame.sort_values("event_timestamp").to_parquet(DATA / "labels.parquet", index=False)


if __name__ == "__main__":
    write()
    print(f"sample data written under {DATA}")

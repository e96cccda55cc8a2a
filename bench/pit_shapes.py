"""Two shapes of point-in-time training data, each a tiny Feast project written to a folder.

``bench_pit.py`` measures training sets on both; neither uses an example's generator (those are not made for
10 million rows). Data are seeded numpy, written as parquet with pyarrow, so generating 10M label rows takes
seconds and stays under 2 GB.

* **sparse** (many keys, short history each: the shape of a user or customer table): entity ``user``
  (``user_id``, int64), one label per 10 rows' worth of keys (``n_labels / 10`` keys, 5% of label keys with
  no history at all). View ``user_daily`` (TTL 30 days, ~8 rows a key over a year, with a
  ``created_timestamp`` column and 2% of rows re-issued at the same event time with a later created time,
  so ties are broken by it), view ``user_profile`` (TTL 0: unbounded; one snapshot per key, categorical
  features) and a "python" mode on-demand view over ``user_daily`` and the request field ``amount``.
* **dense** (few keys, long dense history: the shape of weather by airport): entity ``station``
  (``station``, string, 3 values). View ``station_hourly`` (TTL 3 hours, hourly over two years, 1% of
  hours missing, 1% of values null), view ``station_daily`` (TTL 7 days, daily, a categorical feature) and
  a pass-through request column ``carrier``.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SHAPES = ("sparse", "dense")
SERVICE = {"sparse": "sparse_v1", "dense": "dense_v1"}
LABELS = "labels.parquet"
START = pd.Timestamp("2024-01-01T00:00:00Z")
STATIONS = ["EWR", "JFK", "LGA"]

FEATURE_STORE_YAML = """\
project: {project}
provider: local
registry:
  registry_type: file
  path: .state/registry.db
  cache_ttl_seconds: 60
online_store:
  type: sqlite
  path: .state/online.db
offline_store:
  type: file
entity_key_serialization_version: 3
"""

SPARSE_DEFS = '''\
from datetime import timedelta
from typing import Any

import numpy as np
from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, String
from feast.value_type import ValueType

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
daily_source = FileSource(name="user_daily_source", path="data/user_daily", timestamp_field="event_timestamp",
                          created_timestamp_column="created_timestamp")
profile_source = FileSource(name="user_profile_source", path="data/user_profile",
                            timestamp_field="event_timestamp")
request = RequestSource(name="purchase", schema=[Field(name="amount", dtype=Float64)])

user_daily = FeatureView(
    name="user_daily", entities=[user], ttl=timedelta(days=30), source=daily_source,
    schema=[Field(name="user_id", dtype=Int64), Field(name="events_7d", dtype=Int64),
            Field(name="minutes_7d", dtype=Float64), Field(name="spend_30d", dtype=Float64),
            Field(name="tickets_30d", dtype=Int64), Field(name="last_device", dtype=String)])
user_profile = FeatureView(
    name="user_profile", entities=[user], ttl=timedelta(0), source=profile_source,
    schema=[Field(name="user_id", dtype=Int64), Field(name="plan", dtype=String),
            Field(name="region", dtype=String), Field(name="age_days", dtype=Int64)])


@on_demand_feature_view(sources=[user_daily, request], mode="python",
                        schema=[Field(name="minutes_per_event", dtype=Float64),
                                Field(name="amount_over_spend", dtype=Float64)])
def user_request(inputs: dict[str, list[Any]]) -> dict[str, list[Any]]:
    def column(name):
        return np.array([np.nan if v is None else v for v in inputs[name]], dtype="float64")

    minutes, events, spend, amount = (column(n) for n in ("minutes_7d", "events_7d", "spend_30d", "amount"))
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"minutes_per_event": (minutes / (events + 1.0)).tolist(),
                "amount_over_spend": (amount / (spend + 1.0)).tolist()}


sparse_v1 = FeatureService(name="sparse_v1", features=[user_daily, user_profile, user_request])
'''

DENSE_DEFS = '''\
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.types import Float64, Int64, String
from feast.value_type import ValueType

station = Entity(name="station", join_keys=["station"], value_type=ValueType.STRING)
hourly_source = FileSource(name="station_hourly_source", path="data/station_hourly",
                           timestamp_field="event_timestamp")
daily_source = FileSource(name="station_daily_source", path="data/station_daily",
                          timestamp_field="event_timestamp")

station_hourly = FeatureView(
    name="station_hourly", entities=[station], ttl=timedelta(hours=3), source=hourly_source,
    schema=[Field(name="station", dtype=String), Field(name="temp", dtype=Float64),
            Field(name="dewpoint", dtype=Float64), Field(name="humidity", dtype=Float64),
            Field(name="wind_dir", dtype=Float64), Field(name="wind_speed", dtype=Float64),
            Field(name="precip", dtype=Float64), Field(name="pressure", dtype=Float64),
            Field(name="visibility", dtype=Float64)])
station_daily = FeatureView(
    name="station_daily", entities=[station], ttl=timedelta(days=7), source=daily_source,
    schema=[Field(name="station", dtype=String), Field(name="departures", dtype=Int64),
            Field(name="mean_delay", dtype=Float64), Field(name="regime", dtype=String)])

dense_v1 = FeatureService(name="dense_v1", features=[station_hourly, station_daily])
'''


def _write(table: pd.DataFrame | pa.Table, path: Path, rows_per_file: int = 2_000_000) -> None:
    """Write a folder of parquet files (as a pipeline writing batches would), or one file for a ``.parquet``."""
    t = table if isinstance(table, pa.Table) else pa.Table.from_pandas(table, preserve_index=False)
    if path.suffix == ".parquet":
        pq.write_table(t, path)
        return
    path.mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, max(t.num_rows, 1), rows_per_file)):
        pq.write_table(t.slice(start, rows_per_file), path / f"part-{i:04d}.parquet")


def _ts(seconds: np.ndarray) -> pd.DatetimeIndex:
    return START + pd.to_timedelta(seconds, unit="s")


def write_sparse(root: Path, n_labels: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n_keys = max(10, n_labels // 10)
    year = 365 * 86_400
    data = root / "data"
    # user_daily: ~8 rows a key at random midnights, 2% re-issued later with the same event time
    per_key = 8
    keys = np.repeat(np.arange(n_keys, dtype=np.int64), per_key)
    days = rng.integers(0, 365, size=keys.size) * 86_400
    event = _ts(days)
    created = event + pd.to_timedelta(rng.integers(60, 3_600, size=keys.size), unit="s")
    daily = pd.DataFrame({
        "user_id": keys, "event_timestamp": event, "created_timestamp": created,
        "events_7d": rng.poisson(5, keys.size).astype(np.int64),
        "minutes_7d": rng.gamma(2.0, 30.0, keys.size),
        "spend_30d": rng.gamma(2.0, 20.0, keys.size),
        "tickets_30d": rng.poisson(0.3, keys.size).astype(np.int64),
        "last_device": pd.Categorical.from_codes(rng.integers(0, 3, keys.size), ["ios", "android", "web"])
        .astype(str),
    })
    again = daily.sample(frac=0.02, random_state=seed)
    again = again.assign(created_timestamp=again["created_timestamp"] + pd.Timedelta(hours=2),
                         spend_30d=again["spend_30d"] + 1.0)
    # in the order a daily pipeline appends them: by day, keys interleaved
    daily = pd.concat([daily, again], ignore_index=True).sort_values("created_timestamp", kind="stable")
    _write(daily, data / "user_daily")
    del daily, again
    profile = pd.DataFrame({
        "user_id": np.arange(n_keys, dtype=np.int64),
        "event_timestamp": START - pd.Timedelta(days=30),
        "plan": pd.Categorical.from_codes(rng.integers(0, 3, n_keys), ["basic", "plus", "pro"]).astype(str),
        "region": pd.Categorical.from_codes(rng.integers(0, 10, n_keys), [f"r{i}" for i in range(10)])
        .astype(str),
        "age_days": rng.integers(0, 3_000, n_keys).astype(np.int64),
    })
    _write(profile, data / "user_profile")
    del profile
    # labels: 5% of keys have no history; timestamps anywhere in the year (to the second)
    label_keys = rng.integers(0, n_keys, n_labels).astype(np.int64)
    unknown = rng.random(n_labels) < 0.05
    label_keys[unknown] += n_keys + 1_000_000
    labels = pa.table({
        "user_id": label_keys,
        "event_timestamp": pa.array(_ts(rng.integers(0, year, n_labels)), pa.timestamp("ns", "UTC")),
        "amount": rng.gamma(2.0, 10.0, n_labels),
        "churned": rng.integers(0, 2, n_labels).astype(np.int64),
    })
    _write(labels, root / LABELS)


def write_dense(root: Path, n_labels: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    hours = 2 * 365 * 24
    data = root / "data"
    parts = []
    for station in STATIONS:
        kept = np.flatnonzero(rng.random(hours) >= 0.01)  # 1% of hours never reported
        n = kept.size
        frame = pd.DataFrame({"station": station, "event_timestamp": _ts(kept * 3_600)})
        for i, name in enumerate(("temp", "dewpoint", "humidity", "wind_dir", "wind_speed", "precip",
                                  "pressure", "visibility")):
            values = rng.normal(10.0 * i, 5.0, n)
            values[rng.random(n) < 0.01] = np.nan
            frame[name] = values
        parts.append(frame)
    _write(pd.concat(parts, ignore_index=True), data / "station_hourly")
    days = np.arange(2 * 365)
    daily = pd.concat([pd.DataFrame({
        "station": station, "event_timestamp": _ts(days * 86_400),
        "departures": rng.poisson(300, days.size).astype(np.int64),
        "mean_delay": rng.gamma(2.0, 6.0, days.size),
        "regime": pd.Categorical.from_codes(rng.integers(0, 3, days.size), ["calm", "busy", "storm"]).astype(str),
    }) for station in STATIONS], ignore_index=True)
    _write(daily, data / "station_daily")
    # labels: a departure-like moment anywhere in the two years, a delay in minutes and a carrier
    station_codes = rng.integers(0, len(STATIONS), n_labels)
    labels = pa.table({
        "station": pa.DictionaryArray.from_arrays(pa.array(station_codes.astype(np.int32)),
                                                  pa.array(STATIONS)).cast(pa.string()),
        "event_timestamp": pa.array(_ts(rng.integers(0, hours * 3_600, n_labels)), pa.timestamp("ns", "UTC")),
        "carrier": pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, 12, n_labels).astype(np.int32)),
                                                  pa.array([f"C{i}" for i in range(12)])).cast(pa.string()),
        "delay": rng.gamma(1.5, 12.0, n_labels),
    })
    _write(labels, root / LABELS)


def write_definitions(root: Path, shape: str, *, offline: str = "file", data: Path | None = None) -> None:
    """``feature_store.yaml`` and ``definitions.py`` of a shape's project in ``root``.

    ``offline="duckdb"`` writes Feast's DuckDB offline store instead of the file (Dask) store, with every
    source an absolute glob into ``data`` (that store reads a ``FileSource`` path as it is, relative to the
    working directory, and only paths ending in ``.parquet``: a folder does not read).
    """
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, not {shape!r}")
    root.mkdir(parents=True, exist_ok=True)
    config = FEATURE_STORE_YAML.format(project=f"bench_{shape}")
    defs = textwrap.dedent(SPARSE_DEFS if shape == "sparse" else DENSE_DEFS)
    if offline == "duckdb":
        config = config.replace("offline_store:\n  type: file", "offline_store:\n  type: duckdb")
        defs = re.sub(r'path="data/(\w+)"', lambda m: f'path="{(data or root / "data") / m.group(1)}/*.parquet"',
                      defs)
    elif offline != "file":
        raise ValueError(f"offline must be 'file' or 'duckdb', not {offline!r}")
    (root / "feature_store.yaml").write_text(config)
    (root / "definitions.py").write_text(defs)
    (root / ".feastignore").write_text("data/\n.state/\n")


def write_project(root: Path, shape: str, n_labels: int, seed: int = 0) -> Path:
    """A Feast project of ``shape`` with ``n_labels`` label rows in ``root`` (``LABELS``); returns ``root``."""
    write_definitions(root, shape)
    (write_sparse if shape == "sparse" else write_dense)(root, n_labels, seed)
    return root


def read_labels(root: Path) -> pd.DataFrame:
    """The label rows as a user would load them (pandas, timestamps UTC)."""
    return pd.read_parquet(root / LABELS)

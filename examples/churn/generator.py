"""Deterministic, vectorised data generator for the churn domain.

Why it exists: the whole loop (materialize, train, serve, monitor, retrain) has to be shown and
tested end to end without anyone's private data. So it produces the three sources the feature
repository reads (profile snapshots, daily activity, labels) as parquet files, seeded, relative
to "now" (Feast's incremental materialization and TTLs assume recent data), and it can produce a
later batch with drift: shifted feature distributions AND a changed relation between the features
and the label, so that both data-drift detection and performance decay can be exercised.

Time layout (``anchor`` = ``now`` floored to the day, UTC)::

    |<------------ history (history_days) ------------>|<--- recent (recent_days) --->|
    anchor - history_days - recent_days        anchor - recent_days              anchor <= now

The ``history`` batch is the training data; the ``recent`` batch is "what came later", with or
without drift. Both lie entirely in the past, so a drift batch can be generated right after the
history without waiting for real time to pass. Generating the same batch again overwrites its
files: generation is idempotent.

Same seed, same ``now`` (to the day), same sizes: byte-identical data. The customer population
(ids, plans, latent engagement) depends on the seed only, so batches describe the same customers.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ENTITY_KEY = "customer_id"
TIMESTAMP = "event_timestamp"
LABEL = "churned"

# Sub-folders of the project's data folder, one per source (the paths in features/churn.py); each holds
# one parquet file per batch, and Feast's file offline store reads the whole folder.
PROFILE_DIR = "customer_profile"
ACTIVITY_DIR = "customer_activity"
LABELS_DIR = "churn_labels"

PLAN_TYPES = ("basic", "standard", "premium")
CONTRACT_TYPES = ("monthly", "annual", "two_year")
PAYMENT_METHODS = ("card", "bank_transfer", "paypal", "invoice")
REGIONS = ("north", "south", "east", "west", "central")
RENEWAL_SOON_DAYS = 7  # the 7 in features/churn.py's on-demand function

Batch = Literal["history", "recent"]
BATCHES: tuple[Batch, ...] = ("history", "recent")
FIRST_CUSTOMER_ID = 100_000
_DAY_NS = 86_400 * 10**9
_PLAN_PRICE = np.array([19.99, 39.99, 69.99])


@dataclass(frozen=True)
class BatchInfo:
    """What one generation wrote; also kept in ``<data_dir>/manifest.json``."""

    batch: str
    drift: bool
    seed: int
    n_customers: int
    days: int
    start: datetime
    end: datetime
    activity_rows: int
    profile_rows: int
    label_rows: int
    positive_rate: float
    seconds: float
    files: dict[str, str]

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        out["start"] = self.start.isoformat()
        out["end"] = self.end.isoformat()
        return out


PROJECT_DIR = Path(__file__).resolve().parent


def default_data_dir() -> Path:
    """``data/`` of this project: the folder the feature definitions' sources point at."""
    return PROJECT_DIR / "data"


def anchor_for(now: datetime | None = None) -> datetime:
    """``now`` floored to the UTC day: the end of the generated time range.

    Flooring makes generation reproducible within a day while staying relative to the clock.
    """
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    now = now.astimezone(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def batch_window(
    batch: Batch, *, now: datetime | None = None, history_days: int = 30, recent_days: int = 7
) -> tuple[datetime, datetime]:
    """``[start, end)`` of a batch's activity days, relative to ``now``."""
    anchor = anchor_for(now)
    if batch == "history":
        return anchor - timedelta(days=history_days + recent_days), anchor - timedelta(days=recent_days)
    if batch == "recent":
        return anchor - timedelta(days=recent_days), anchor
    raise ValueError(f"unknown batch {batch!r}; expected one of {BATCHES}")


def _population(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Customer attributes that do not depend on the batch (drawn from the seed alone)."""
    return {
        "customer_id": np.arange(FIRST_CUSTOMER_ID, FIRST_CUSTOMER_ID + n, dtype=np.int64),
        "region": rng.choice(len(REGIONS), size=n, p=[0.25, 0.2, 0.2, 0.2, 0.15]),
        "plan": rng.choice(len(PLAN_TYPES), size=n, p=[0.45, 0.35, 0.20]),
        "contract": rng.choice(len(CONTRACT_TYPES), size=n, p=[0.55, 0.30, 0.15]),
        "payment": rng.choice(len(PAYMENT_METHODS), size=n, p=[0.45, 0.25, 0.2, 0.1]),
        "tenure": np.clip(rng.gamma(1.6, 14.0, size=n), 1, 96).astype(np.int64),
        "engagement": rng.normal(0.0, 1.0, size=n),
        "price_noise": rng.normal(0.0, 2.0, size=n),
        "renewal_phase": rng.integers(0, 730, size=n),
    }


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _churn_logit(
    *,
    contract: np.ndarray,
    tenure: np.ndarray,
    charges: np.ndarray,
    logins: np.ndarray,
    tickets: np.ndarray,
    failures: np.ndarray,
    days_since_login: np.ndarray,
    days_until_renewal: np.ndarray,
    drift: bool,
) -> np.ndarray:
    """The ground-truth churn model. The drift regime changes the coefficients, not just inputs.

    Reference: disengagement, support trouble and payment failures drive churn, price matters a
    little. Drift (after a price increase and a competitor's launch): price dominates, support
    tickets stop predicting churn (tickets now mostly come from engaged users asking about the new
    prices) and engaged users leave too (the competitor takes heavy users).
    """
    monthly = (contract == 0).astype(np.float64)
    two_year = (contract == 2).astype(np.float64)
    soon = (days_until_renewal <= RENEWAL_SOON_DAYS).astype(np.float64)
    log_logins = np.log1p(logins)
    if not drift:
        return (
            -1.2
            + 1.0 * monthly
            - 0.9 * two_year
            - 0.025 * tenure
            + 0.015 * (charges - 40.0)
            - 0.55 * log_logins
            + 0.55 * tickets
            + 0.9 * failures
            + 0.04 * days_since_login
            + 1.1 * soon * monthly
        )
    return (
        -2.4
        + 0.2 * monthly
        - 0.2 * two_year
        + 0.0 * tenure
        + 0.08 * (charges - 40.0)
        + 0.6 * log_logins
        - 0.3 * tickets
        + 0.3 * failures
        + 0.0 * days_since_login
        + 0.4 * soon
    )


def _batch_seed(seed: int, batch: Batch, drift: bool) -> np.random.Generator:
    return np.random.default_rng([seed, BATCHES.index(batch) + 1, int(drift)])


def generate_frames(
    *,
    batch: Batch = "history",
    drift: bool = False,
    n_customers: int = 5_000,
    history_days: int = 30,
    recent_days: int = 7,
    labels_per_customer: int = 4,
    seed: int = 42,
    now: datetime | None = None,
) -> dict[str, pd.DataFrame]:
    """Generate one batch in memory: ``{"profile", "activity", "labels"}`` DataFrames.

    Activity rows = ``n_customers * days`` (``days`` = ``history_days`` or ``recent_days``), so
    e.g. 5,000 customers x 30 days = 150,000 rows. Everything is vectorised over a
    ``(customers, days)`` grid; 1,000,000 rows take about a second.
    """
    if n_customers < 1:
        raise ValueError("n_customers must be >= 1")
    start, end = batch_window(batch, now=now, history_days=history_days, recent_days=recent_days)
    days = (end - start).days
    if days < 1:
        raise ValueError("a batch needs at least one day")

    pop = _population(np.random.default_rng(seed), n_customers)
    rng = _batch_seed(seed, batch, drift)
    n = n_customers
    start_ns = pd.Timestamp(start).value

    # Profile snapshot, valid from the start of the batch. Drift: a price increase, and new
    # sign-ups skew to the cheap monthly plan.
    plan = pop["plan"].copy()
    contract = pop["contract"].copy()
    tenure = pop["tenure"] + (0 if batch == "history" else (history_days // 30))
    if drift:
        switch = rng.random(n) < 0.25
        plan = np.where(switch, 0, plan)
        contract = np.where(rng.random(n) < 0.3, 0, contract)
    charges = np.round(_PLAN_PRICE[plan] * (1.30 if drift else 1.0) + pop["price_noise"], 2)
    profile = pd.DataFrame(
        {
            ENTITY_KEY: pop["customer_id"],
            "plan_type": np.asarray(PLAN_TYPES, dtype=object)[plan],
            "contract_type": np.asarray(CONTRACT_TYPES, dtype=object)[contract],
            "payment_method": np.asarray(PAYMENT_METHODS, dtype=object)[pop["payment"]],
            "region": np.asarray(REGIONS, dtype=object)[pop["region"]],
            "tenure_months": tenure.astype(np.int64),
            "monthly_charges": charges.astype(np.float64),
            TIMESTAMP: pd.to_datetime(np.full(n, start_ns, dtype=np.int64), utc=True),
        }
    )

    # Daily activity on a (customer, day) grid. A slow per-customer trend plus daily noise.
    eng = pop["engagement"][:, None] - (0.6 if drift else 0.0)
    trend = rng.normal(0.0, 0.01, size=(n, 1)) * np.arange(days)[None, :]
    lam = np.exp(np.clip(1.7 + 0.55 * eng + trend + rng.normal(0.0, 0.15, size=(n, days)), -3.0, 4.0))
    logins = rng.poisson(lam).astype(np.int64)
    minutes = np.round(rng.gamma(2.0, 9.0 + 3.0 * np.clip(eng, -2, 2) + 6.0, size=(n, days)) * (logins + 0.2), 1)
    ticket_rate = 0.25 + 0.35 * (eng < -0.8) + (0.45 if drift else 0.0)
    tickets = rng.poisson(np.broadcast_to(ticket_rate, (n, days))).astype(np.int64)
    fail_rate = 0.08 + 0.25 * (pop["payment"] == 3)[:, None]
    failures = rng.poisson(np.broadcast_to(fail_rate, (n, days))).astype(np.int64)
    days_since = np.where(logins > 0, rng.integers(0, 3, size=(n, days)), rng.integers(3, 30, size=(n, days)))
    day_ns = start_ns + np.arange(days, dtype=np.int64) * _DAY_NS
    activity = pd.DataFrame(
        {
            ENTITY_KEY: np.repeat(pop["customer_id"], days),
            "logins_7d": logins.ravel(),
            "usage_minutes_7d": minutes.ravel(),
            "support_tickets_30d": tickets.ravel(),
            "payment_failures_90d": failures.ravel(),
            "days_since_last_login": days_since.astype(np.int64).ravel(),
            TIMESTAMP: pd.to_datetime(np.tile(day_ns, n), utc=True),
        }
    )

    # Labels: each customer is scored on a few random days, at a random moment after that day's
    # aggregates landed (midnight) and before the next ones, so point-in-time joins pick that
    # day's row. The label is drawn from the ground-truth model on exactly those values.
    k = max(1, labels_per_customer)
    cust = np.repeat(np.arange(n), k)
    day = rng.integers(0, days, size=n * k)
    # Whole seconds: online stores (Redis) keep second precision, and so do most warehouses.
    ts_ns = start_ns + day * _DAY_NS + rng.integers(3_600, 23 * 3_600, size=n * k) * 10**9
    cycle = np.array([30, 365, 730])[contract[cust]]
    days_until_renewal = ((pop["renewal_phase"][cust] - (ts_ns - start_ns) // _DAY_NS) % cycle).astype(np.int64)
    logit = _churn_logit(
        contract=contract[cust],
        tenure=tenure[cust],
        charges=charges[cust],
        logins=logins[cust, day],
        tickets=tickets[cust, day],
        failures=failures[cust, day],
        days_since_login=days_since[cust, day],
        days_until_renewal=days_until_renewal,
        drift=drift,
    )
    churned = (rng.random(n * k) < _sigmoid(logit)).astype(np.int64)
    labels = pd.DataFrame(
        {
            ENTITY_KEY: pop["customer_id"][cust],
            TIMESTAMP: pd.to_datetime(ts_ns, utc=True),
            "days_until_renewal": days_until_renewal,
            LABEL: churned,
        }
    )
    labels = labels.sort_values([TIMESTAMP, ENTITY_KEY], kind="stable").reset_index(drop=True)
    return {"profile": profile, "activity": activity, "labels": labels}


def _write(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp, compression="snappy")
    tmp.replace(path)  # atomic: a reader never sees half a file


def generate_batch(
    data_dir: Path | str | None = None,
    *,
    batch: Batch = "history",
    drift: bool = False,
    n_customers: int = 5_000,
    history_days: int = 30,
    recent_days: int = 7,
    labels_per_customer: int = 4,
    seed: int = 42,
    now: datetime | None = None,
) -> BatchInfo:
    """Generate one batch and write it as parquet under ``data_dir`` (default: this project's ``data/``).

    Files: ``customer_profile/<batch>.parquet``, ``customer_activity/<batch>.parquet``,
    ``churn_labels/<batch>.parquet``, plus an entry in ``manifest.json``.
    """
    t0 = time.perf_counter()
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    frames = generate_frames(
        batch=batch,
        drift=drift,
        n_customers=n_customers,
        history_days=history_days,
        recent_days=recent_days,
        labels_per_customer=labels_per_customer,
        seed=seed,
        now=now,
    )
    files = {
        "profile": root / PROFILE_DIR / f"{batch}.parquet",
        "activity": root / ACTIVITY_DIR / f"{batch}.parquet",
        "labels": root / LABELS_DIR / f"{batch}.parquet",
    }
    for key, path in files.items():
        _write(frames[key], path)
    start, end = batch_window(batch, now=now, history_days=history_days, recent_days=recent_days)
    info = BatchInfo(
        batch=batch,
        drift=drift,
        seed=seed,
        n_customers=n_customers,
        days=(end - start).days,
        start=start,
        end=end,
        activity_rows=len(frames["activity"]),
        profile_rows=len(frames["profile"]),
        label_rows=len(frames["labels"]),
        positive_rate=float(frames["labels"][LABEL].mean()),
        seconds=round(time.perf_counter() - t0, 3),
        files={k: str(v) for k, v in files.items()},
    )
    manifest_path = root / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest[batch] = info.to_json()
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return info


def load_labels(data_dir: Path | str | None = None, batch: Batch | None = None) -> pd.DataFrame:
    """The label source as an entity DataFrame for training.

    Columns: ``customer_id``, ``event_timestamp`` (UTC), ``days_until_renewal`` (request data for
    the on-demand features) and ``churned``. ``batch=None`` reads every batch present.
    """
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    folder = root / LABELS_DIR
    paths = [folder / f"{batch}.parquet"] if batch else sorted(folder.glob("*.parquet"))
    if not paths or not all(p.exists() for p in paths):
        raise FileNotFoundError(f"no label files under {folder} (batch={batch!r}); generate data first")
    df = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    df[TIMESTAMP] = pd.to_datetime(df[TIMESTAMP], utc=True)
    return df.sort_values([TIMESTAMP, ENTITY_KEY], kind="stable").reset_index(drop=True)


def main(argv: list[str] | None = None) -> None:
    """``python examples/churn/generator.py [--batch recent --drift] [--customers N]``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--batch", choices=BATCHES, default="history")
    parser.add_argument("--drift", action="store_true")
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--history-days", type=int, default=30)
    parser.add_argument("--recent-days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    info = generate_batch(
        args.data_dir,
        batch=args.batch,
        drift=args.drift,
        n_customers=args.customers,
        history_days=args.history_days,
        recent_days=args.recent_days,
        seed=args.seed,
    )
    print(json.dumps(info.to_json(), indent=2))


if __name__ == "__main__":
    main()

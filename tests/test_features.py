"""Tests of the Feast feature store part: generator, definitions, the access module, the flow.

Real Feast on a temporary ``ESTEIRA_HOME`` (file offline store, SQLite online store, file
registry), small generated data, and the Redis production variant against 127.0.0.1:6379 when it
is reachable.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from esteira.settings import Settings, get_settings
from feature_repo import store as st
from feature_repo.definitions import (
    ACTIVITY_DIR,
    ENTITY_KEY,
    FEATURE_SERVICE,
    LABEL,
    RENEWAL_SOON_DAYS,
    TIMESTAMP,
    churn_request_transform,
)
from feature_repo.generator import anchor_for, generate_batch, generate_frames, load_labels

N_CUSTOMERS = 300
NOW = datetime.now(UTC)


@dataclass
class Env:
    home: Path
    settings: Settings
    store: object  # feast.FeatureStore


def _make_env(home: Path, mp: pytest.MonkeyPatch, **env: str) -> Env:
    mp.setenv("ESTEIRA_HOME", str(home))
    for key, value in env.items():
        mp.setenv(key, value)
    get_settings.cache_clear()
    st.clear_store_cache()
    settings = get_settings()
    generate_batch(st.data_dir(settings), batch="history", n_customers=N_CUSTOMERS, seed=7, now=NOW)
    store = st.open_store(settings)
    return Env(home=home, settings=settings, store=store)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One materialized embedded store, shared by the read-only tests of this module."""
    with pytest.MonkeyPatch.context() as mp:
        e = _make_env(tmp_path_factory.mktemp("esteira"), mp)
        st.materialize(e.store, NOW)
        yield e
    get_settings.cache_clear()
    st.clear_store_cache()


@pytest.fixture
def fresh_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """A store of its own, for tests that change the data or the online store."""
    yield _make_env(tmp_path, monkeypatch)
    get_settings.cache_clear()
    st.clear_store_cache()


def _latest_entity_df(customers: list[int], when: datetime, renewal: list[int]) -> pd.DataFrame:
    return pd.DataFrame({ENTITY_KEY: customers, TIMESTAMP: [when] * len(customers), "days_until_renewal": renewal})


def _assert_rows_equal(offline: pd.DataFrame, online: list[dict], names: list[str]) -> None:
    assert len(offline) == len(online)
    for (_, off), on in zip(offline.iterrows(), online, strict=True):
        assert on[ENTITY_KEY] == off[ENTITY_KEY]
        for name in names:
            a, b = off[name], on[name]
            if isinstance(a, float) or isinstance(b, float):
                assert b == pytest.approx(float(a), rel=1e-9, abs=1e-9), (name, a, b)
            else:
                assert a == b, (name, a, b)


# -- generator -----------------------------------------------------------------------------------


def test_generator_is_deterministic_and_sized() -> None:
    a = generate_frames(n_customers=500, seed=11, now=NOW)
    b = generate_frames(n_customers=500, seed=11, now=NOW)
    for key in ("profile", "activity", "labels"):
        pd.testing.assert_frame_equal(a[key], b[key])
    assert len(a["activity"]) == 500 * 30
    assert len(a["labels"]) == 500 * 4
    c = generate_frames(n_customers=500, seed=12, now=NOW)
    assert not a["activity"]["logins_7d"].equals(c["activity"]["logins_7d"])
    # Relative to now, entirely in the past, label timestamps inside the batch window.
    assert a["activity"][TIMESTAMP].max() < pd.Timestamp(anchor_for(NOW))
    assert a["labels"][TIMESTAMP].max() < pd.Timestamp(NOW)
    assert set(a["labels"][LABEL].unique()) == {0, 1}


def test_generator_writes_parquet_and_labels(tmp_path: Path) -> None:
    info = generate_batch(tmp_path, n_customers=200, seed=3, now=NOW)
    again = generate_batch(tmp_path, n_customers=200, seed=3, now=NOW)  # idempotent overwrite
    assert info.activity_rows == again.activity_rows == 200 * 30
    assert (tmp_path / ACTIVITY_DIR / "history.parquet").exists()
    labels = load_labels(tmp_path)
    assert list(labels.columns) == [ENTITY_KEY, TIMESTAMP, "days_until_renewal", LABEL]
    assert str(labels[TIMESTAMP].dtype).startswith("datetime64") and labels[TIMESTAMP].dt.tz is not None
    with pytest.raises(FileNotFoundError):
        load_labels(tmp_path / "nowhere")


def _joined(frames: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.Series]:
    """Features at each label's day, straight from the generator (no Feast), one-hot encoded."""
    labels = frames["labels"].assign(day=frames["labels"][TIMESTAMP].dt.floor("D"))
    activity = frames["activity"].rename(columns={TIMESTAMP: "day"})
    m = labels.merge(activity, on=[ENTITY_KEY, "day"]).merge(
        frames["profile"].drop(columns=TIMESTAMP), on=ENTITY_KEY
    )
    x = pd.get_dummies(m[["contract_type", "plan_type"]]).astype(float)
    for col in ("tenure_months", "monthly_charges", "logins_7d", "support_tickets_30d", "payment_failures_90d",
                "days_since_last_login", "days_until_renewal"):
        x[col] = m[col]
    return x, m[LABEL]


def test_drift_shifts_distributions_and_label_relation() -> None:
    from scipy.stats import ks_2samp
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def logreg():  # scaled: converges in milliseconds instead of seconds
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))

    ref = generate_frames(n_customers=1500, seed=5, now=NOW)
    control = generate_frames(batch="recent", drift=False, n_customers=1500, seed=5, now=NOW)
    drift = generate_frames(batch="recent", drift=True, n_customers=1500, seed=5, now=NOW)

    # Distributions: a price increase, less usage, more monthly contracts; the control does not move.
    assert ks_2samp(ref["profile"]["monthly_charges"], drift["profile"]["monthly_charges"]).pvalue < 1e-6
    assert ks_2samp(ref["activity"]["logins_7d"], drift["activity"]["logins_7d"]).pvalue < 1e-6
    assert ks_2samp(ref["activity"]["logins_7d"], control["activity"]["logins_7d"]).pvalue > 1e-3
    monthly = lambda f: (f["profile"]["contract_type"] == "monthly").mean()  # noqa: E731
    assert monthly(drift) > monthly(ref) + 0.1

    # Relation: support tickets predicted churn, now they do not; a reference model decays on the
    # drifted batch while a model refit on it does better: the concept changed, not only inputs.
    xr, yr = _joined(ref)
    xc, yc = _joined(control)
    xd, yd = _joined(drift)
    xc, xd = xc.reindex(columns=xr.columns, fill_value=0.0), xd.reindex(columns=xr.columns, fill_value=0.0)
    assert np.corrcoef(xr["support_tickets_30d"], yr)[0, 1] > 0.08
    assert np.corrcoef(xd["support_tickets_30d"], yd)[0, 1] < 0.0
    model = logreg().fit(xr, yr)
    auc_control = roc_auc_score(yc, model.predict_proba(xc)[:, 1])
    auc_drift = roc_auc_score(yd, model.predict_proba(xd)[:, 1])
    assert auc_drift < auc_control - 0.08, (auc_control, auc_drift)
    half = len(xd) // 2
    refit = logreg().fit(xd[:half], yd[:half])
    assert roc_auc_score(yd[half:], refit.predict_proba(xd[half:])[:, 1]) > auc_drift + 0.03


def test_generator_is_fast() -> None:
    import time

    t0 = time.perf_counter()
    frames = generate_frames(n_customers=3_334, history_days=30, seed=1, now=NOW)
    assert len(frames["activity"]) >= 100_000
    assert time.perf_counter() - t0 < 3.0


# -- definitions ---------------------------------------------------------------------------------


def test_on_demand_function_is_self_contained_and_matches_constant() -> None:
    inputs = {"logins_7d": [0, 3, None, -1], "usage_minutes_7d": [10.0, 40.0, None, 5.0],
              "days_until_renewal": [RENEWAL_SOON_DAYS, RENEWAL_SOON_DAYS + 1, 0, -3]}
    out = churn_request_transform(inputs)
    assert out["renewal_within_7d"] == [1, 0, 1, 1]
    assert out["minutes_per_login"][1] == pytest.approx(10.0)
    assert np.isnan(out["minutes_per_login"][2])
    assert out["minutes_per_login"][3] == np.inf  # no exception on a zero divisor
    # The same numbers as the obvious pandas formulation (what the view ran before "python" mode).
    df = pd.DataFrame(inputs)
    logins, minutes = df["logins_7d"].astype("float64"), df["usage_minutes_7d"].astype("float64")
    renewal = df["days_until_renewal"].astype("float64")
    np.testing.assert_allclose(out["minutes_per_login"], minutes / (logins + 1.0))
    np.testing.assert_allclose(out["log_days_until_renewal"], np.log1p(renewal.clip(lower=0)))
    # Feast re-executes the source with only pd and np in scope: prove that works.
    import inspect

    namespace: dict = {"pd": pd, "np": np}
    exec(inspect.getsource(churn_request_transform), namespace)  # noqa: S102
    np.testing.assert_equal(namespace["churn_request_transform"](inputs), out)  # NaN equals NaN here


def test_on_demand_function_refuses_a_non_number() -> None:
    with pytest.raises(ValueError):
        churn_request_transform({"logins_7d": [1], "usage_minutes_7d": [1.0], "days_until_renewal": ["soon"]})


def test_schema_names_and_kinds(env: Env) -> None:
    schema = st.feature_schema(env.store, FEATURE_SERVICE)
    names = [s.name for s in schema]
    assert names == st.feature_names(env.store, FEATURE_SERVICE)
    assert len(names) == len(set(names)) >= 8
    kinds = st.feature_kinds(env.store, FEATURE_SERVICE)
    assert {n for n, k in kinds.items() if k == "categorical"} == {"plan_type", "contract_type", "payment_method",
                                                                   "region"}
    assert kinds["monthly_charges"] == kinds["minutes_per_login"] == "numeric"
    assert st.entity_keys(env.store, FEATURE_SERVICE) == [ENTITY_KEY]
    assert st.request_fields(env.store, FEATURE_SERVICE) == ["days_until_renewal"]


def test_apply_is_idempotent(env: Env) -> None:
    assert st.apply_definitions(env.store, st.data_dir(env.settings)) is False
    assert st.open_store(env.settings) is env.store  # one store per process and configuration


def test_unknown_feature_service_raises_clear_error(env: Env) -> None:
    with pytest.raises(st.FeatureServiceNotFound, match="churn_v9.*known services: churn_v1"):
        st.feature_names(env.store, "churn_v9")
    entity_df = _latest_entity_df([100_000], NOW, [3])
    with pytest.raises(ValueError, match="churn_v9"):
        st.training_frame(env.store, "churn_v9", entity_df)
    with pytest.raises(ValueError, match="churn_v9"):
        st.online_features(env.store, "churn_v9", [{ENTITY_KEY: 100_000}], {"days_until_renewal": 3})


def test_training_frame_requires_columns(env: Env) -> None:
    with pytest.raises(ValueError, match="days_until_renewal"):
        st.training_frame(env.store, FEATURE_SERVICE, pd.DataFrame({ENTITY_KEY: [1], TIMESTAMP: [NOW]}))
    with pytest.raises(ValueError, match="days_until_renewal"):
        st.online_features(env.store, FEATURE_SERVICE, [{ENTITY_KEY: 100_000}])


# -- offline: point-in-time ----------------------------------------------------------------------


def test_training_frame_is_point_in_time_correct(env: Env) -> None:
    labels = load_labels(st.data_dir(env.settings))
    frame = st.training_frame(env.store, FEATURE_SERVICE, labels)
    # Same rows, same order, label passed through, no missing features for known customers.
    pd.testing.assert_frame_equal(frame[labels.columns], labels)
    names = st.feature_names(env.store, FEATURE_SERVICE)
    assert frame[names].notna().all().all()

    # Reference join: latest activity at or before each label's timestamp, by plain pandas.
    activity = pd.read_parquet(st.data_dir(env.settings) / ACTIVITY_DIR)
    activity[TIMESTAMP] = pd.to_datetime(activity[TIMESTAMP], utc=True)
    expected = pd.merge_asof(
        labels.sort_values(TIMESTAMP), activity.sort_values(TIMESTAMP), on=TIMESTAMP, by=ENTITY_KEY,
        direction="backward",
    ).sort_values([TIMESTAMP, ENTITY_KEY], kind="stable").reset_index(drop=True)
    for col in ("logins_7d", "usage_minutes_7d", "support_tickets_30d"):
        np.testing.assert_allclose(frame[col].to_numpy(float), expected[col].to_numpy(float))

    # A value from later than the entity timestamp is never joined: ask just before a day's row
    # lands and just after, for one customer, and compare with the source rows.
    cust = int(labels[ENTITY_KEY].iloc[0])
    rows = activity[activity[ENTITY_KEY] == cust].sort_values(TIMESTAMP).reset_index(drop=True)
    day = rows[TIMESTAMP].iloc[10]
    probe = pd.DataFrame({
        ENTITY_KEY: [cust, cust, cust, cust, cust],
        TIMESTAMP: [day - timedelta(seconds=1), day, rows[TIMESTAMP].iloc[0] - timedelta(days=1),
                    rows[TIMESTAMP].iloc[-1] + timedelta(days=20), day],
        "days_until_renewal": [5, 5, 5, 5, 50],
        "row": [0, 1, 2, 3, 4],
    })
    got = st.training_frame(env.store, FEATURE_SERVICE, probe)
    assert got["row"].tolist() == [0, 1, 2, 3, 4]  # no row dropped or collapsed (Feast's Dask store would)
    assert got["usage_minutes_7d"].iloc[0] == rows["usage_minutes_7d"].iloc[9]
    assert got["usage_minutes_7d"].iloc[1] == rows["usage_minutes_7d"].iloc[10]
    assert pd.isna(got["usage_minutes_7d"].iloc[2])  # before any data: nothing, not a future value
    assert got["plan_type"].iloc[2] is None
    # Past the activity view's 14-day TTL: activity is null, the profile (TTL a year) still joins.
    assert pd.isna(got["logins_7d"].iloc[3]) and got["plan_type"].iloc[3] is not None
    # Same customer and timestamp, different request data: same stored features, own on-demand ones.
    assert got["usage_minutes_7d"].iloc[4] == got["usage_minutes_7d"].iloc[1]
    assert (got["renewal_within_7d"].iloc[1], got["renewal_within_7d"].iloc[4]) == (1.0, 0.0)
    kinds = st.feature_kinds(env.store, FEATURE_SERVICE)
    assert all(got[n].dtype == (np.float64 if k == "numeric" else object) for n, k in kinds.items())


# -- online --------------------------------------------------------------------------------------


def test_online_matches_offline_at_latest_timestamp_with_on_demand_parity(env: Env) -> None:
    customers = list(range(100_000, 100_000 + 60))
    renewal = [int(x) for x in np.random.default_rng(0).integers(0, 400, size=len(customers))]
    offline = st.training_frame(env.store, FEATURE_SERVICE, _latest_entity_df(customers, NOW, renewal))
    online = st.online_features(
        env.store, FEATURE_SERVICE, [{ENTITY_KEY: c} for c in customers],
        [{"days_until_renewal": r} for r in renewal],
    )
    names = st.feature_names(env.store, FEATURE_SERVICE)
    assert list(online[0]) == [ENTITY_KEY, *names]
    _assert_rows_equal(offline, online, names)
    assert {r["renewal_within_7d"] for r in online} == {0, 1}


def test_missing_entity_returns_none(env: Env) -> None:
    rows = st.online_features(env.store, FEATURE_SERVICE, [{ENTITY_KEY: 42}, {ENTITY_KEY: 100_001}],
                              {"days_until_renewal": 3})
    missing, known = rows
    assert missing[ENTITY_KEY] == 42
    assert missing["plan_type"] is None and missing["logins_7d"] is None and missing["minutes_per_login"] is None
    assert missing["renewal_within_7d"] == 1  # request-only feature still computed
    assert known["plan_type"] is not None


# -- materialization -----------------------------------------------------------------------------


def test_materialize_backfills_then_increments(fresh_env: Env) -> None:
    store = fresh_env.store
    first = st.materialize(store, NOW)
    # Never materialized: backfill from the earliest data, not now - ttl (Feast's pitfall).
    assert {v["mode"] for v in first["views"].values()} == {"backfill"}
    assert first["views"]["customer_profile"]["rows_written"] == N_CUSTOMERS
    assert first["views"]["customer_activity_daily"]["source_rows"] == N_CUSTOMERS * 30
    assert first["rows_per_second"] > 0
    again = st.materialize(store, NOW + timedelta(seconds=1))
    assert {v["mode"] for v in again["views"].values()} == {"incremental"}
    assert again["rows_written"] == 0

    # A later batch (recent window, in the past): an explicit start backfills it.
    info = generate_batch(st.data_dir(fresh_env.settings), batch="recent", drift=True, n_customers=N_CUSTOMERS,
                          seed=7, now=NOW)
    later = st.materialize(store, NOW + timedelta(seconds=2), start=info.start)
    assert later["views"]["customer_activity_daily"]["rows_written"] == N_CUSTOMERS
    online = st.online_features(store, FEATURE_SERVICE, [{ENTITY_KEY: 100_000}], {"days_until_renewal": 10})
    recent = pd.read_parquet(st.data_dir(fresh_env.settings) / ACTIVITY_DIR / "recent.parquet")
    last = recent[recent[ENTITY_KEY] == 100_000].sort_values(TIMESTAMP).iloc[-1]
    assert online[0]["usage_minutes_7d"] == pytest.approx(last["usage_minutes_7d"])


@pytest.mark.slow  # starts a temporary Prefect server (about 20 s here)
def test_materialize_flow_publishes_figures(fresh_env: Env) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from flows.materialize import materialize_flow, report_markdown, run_materialize

    plain = run_materialize(end=NOW)  # the logic without Prefect
    assert plain["rows_written"] == 2 * N_CUSTOMERS and plain["applied"] is False
    assert "online rows written" in report_markdown(plain)
    with prefect_test_harness(server_startup_timeout=60):
        report = materialize_flow(generate=True, batch="recent", drift=False, n_customers=N_CUSTOMERS, seed=7)
    assert report["batch"]["batch"] == "recent"
    assert report["views"]["customer_activity_daily"]["rows_written"] == N_CUSTOMERS
    assert report["rows_per_second"] > 0


# -- production variant: Redis -------------------------------------------------------------------


def _redis_up(host: str = "127.0.0.1", port: int = 6379) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def test_redis_connection_string() -> None:
    assert st.redis_connection_string("redis://127.0.0.1:6379/2") == "127.0.0.1:6379,db=2"
    assert st.redis_connection_string("rediss://:s3cret@cache:6380") == "cache:6380,password=s3cret,ssl=true"
    assert st.redis_connection_string("host:6379,db=1") == "host:6379,db=1"
    with pytest.raises(ValueError):
        st.redis_connection_string("http://x")


@pytest.mark.redis
def test_redis_online_store_variant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not _redis_up():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379 (start one to test the production variant)")
    project = f"esteira_test_{uuid.uuid4().hex[:10]}"  # namespaces the keys: tests never collide
    e = _make_env(tmp_path, monkeypatch, ESTEIRA_FEAST_ONLINE_STORE="redis://127.0.0.1:6379/0",
                  ESTEIRA_FEAST_PROJECT=project)
    try:
        assert e.store.config.online_store.type == "redis"
        report = st.materialize(e.store, NOW)
        assert report["rows_written"] == 2 * N_CUSTOMERS
        customers = [100_000, 100_007, 100_123]
        renewal = [1, 30, 200]
        offline = st.training_frame(e.store, FEATURE_SERVICE, _latest_entity_df(customers, NOW, renewal))
        online = st.online_features(e.store, FEATURE_SERVICE, [{ENTITY_KEY: c} for c in customers],
                                    [{"days_until_renewal": r} for r in renewal])
        _assert_rows_equal(offline, online, st.feature_names(e.store, FEATURE_SERVICE))
        missing = st.online_features(e.store, FEATURE_SERVICE, [{ENTITY_KEY: 7}], {"days_until_renewal": 1})
        assert missing[0]["logins_7d"] is None
    finally:
        e.store.teardown()  # deletes this project's keys
        get_settings.cache_clear()
        st.clear_store_cache()

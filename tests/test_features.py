"""esteira's library over Feast (``feature_repo``), on a copy of the churn example project.

Real Feast in a temporary folder (file offline store, SQLite online store, file registry, as the project's
feature_store.yaml says), small generated data, and the Redis production variant against 127.0.0.1:6379.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.project import Project
from core.settings import get_settings
from feature_repo.config import FeastConfigError, redis_connection_string
from feature_repo.definitions import DefinitionsError
from feature_repo.materialize import UnknownFeatureView, materialize
from feature_repo.offline import training_frame
from feature_repo.online import online_features, online_lookup
from feature_repo.services import (
    FeatureServiceNotFound,
    entity_keys,
    feature_kinds,
    feature_names,
    feature_schema,
    request_fields,
)
from feature_repo.sources import SourceMissing
from feature_repo.store import clear_store_cache, open_store
from feature_repo.sync import plan, sync
from tests.projects import EXAMPLES, copy_example, project_module, use_project

N_CUSTOMERS = 300
NOW = datetime.now(UTC)
SERVICE, KEY, TS = "churn_v1", "customer_id", "event_timestamp"
gen = project_module(EXAMPLES / "churn", "generator")


@dataclass
class Env:
    project: Project
    store: object  # feast.FeatureStore


def _make_env(root: Path, mp: pytest.MonkeyPatch, **env: str) -> Env:
    mp.setenv("ESTEIRA_HOME", str(root.parent / "home"))
    for key, value in env.items():
        mp.setenv(key, value)
    use_project(root, mp)
    gen.generate_batch(root / "data", batch="history", n_customers=N_CUSTOMERS, seed=7, now=NOW)
    project = Project(root)
    store = open_store(project)
    sync(store, project)
    return Env(project=project, store=store)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One applied and materialized project, shared by the read-only tests of this module."""
    with pytest.MonkeyPatch.context() as mp:
        e = _make_env(copy_example("churn", tmp_path_factory.mktemp("p") / "churn"), mp)
        materialize(e.store, NOW)
        yield e
    get_settings.cache_clear()
    clear_store_cache()


@pytest.fixture
def fresh_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """A project of its own, for tests that change definitions, data or the online store."""
    yield _make_env(copy_example("churn", tmp_path / "churn"), monkeypatch)
    get_settings.cache_clear()
    clear_store_cache()


def _latest_entity_df(customers: list[int], when: datetime, renewal: list[int]) -> pd.DataFrame:
    return pd.DataFrame({KEY: customers, TS: [when] * len(customers), "days_until_renewal": renewal})


def _assert_rows_equal(offline: pd.DataFrame, online: list[dict], names: list[str]) -> None:
    assert len(offline) == len(online)
    for (_, off), on in zip(offline.iterrows(), online, strict=True):
        assert on[KEY] == off[KEY]
        for name in names:
            a, b = off[name], on[name]
            if isinstance(a, float) or isinstance(b, float):
                assert b == pytest.approx(float(a), rel=1e-9, abs=1e-9), (name, a, b)
            else:
                assert a == b, (name, a, b)


# -- the project's definitions: plan and apply -----------------------------------------------------


def test_schema_names_and_kinds(env: Env) -> None:
    schema = feature_schema(env.store, SERVICE)
    names = [s.name for s in schema]
    assert names == feature_names(env.store, SERVICE)
    assert len(names) == len(set(names)) == 14
    kinds = feature_kinds(env.store, SERVICE)
    assert {n for n, k in kinds.items() if k == "categorical"} == {"plan_type", "contract_type", "payment_method",
                                                                   "region"}
    assert kinds["monthly_charges"] == kinds["minutes_per_login"] == "numeric"
    assert entity_keys(env.store, SERVICE) == [KEY]
    assert request_fields(env.store, SERVICE) == ["days_until_renewal"]
    assert {s.name for s in schema if not s.stored} == {"minutes_per_login", "renewal_within_7d",
                                                        "log_days_until_renewal"}


def test_apply_again_changes_nothing_and_store_is_shared(env: Env) -> None:
    assert not plan(env.store, env.project).has_changes
    assert sync(env.store, env.project).applied is False
    assert open_store(env.project) is env.store  # one store per process and project


def test_apply_is_a_sync_that_removes_what_the_definitions_dropped(fresh_env: Env) -> None:
    store, project = fresh_env.store, fresh_env.project
    extra = project.root / "features" / "extra.py"
    extra.write_text(
        "from datetime import timedelta\n"
        "from feast import FeatureService, FeatureView, Field, FileSource\n"
        "from feast.types import Float64, Int64\n"
        "from features.churn import customer\n"  # definition modules import each other, as with `feast apply`
        "extra_source = FileSource(name='extra_source', path='data/customer_activity', "
        "timestamp_field='event_timestamp')\n"
        "extra_view = FeatureView(name='extra_view', entities=[customer], ttl=timedelta(days=2), source=extra_source,"
        " schema=[Field(name='customer_id', dtype=Int64), Field(name='logins_7d', dtype=Int64)])\n"
        "extra_service = FeatureService(name='extra_v1', features=[extra_view])\n")
    added = plan(store, project)
    assert {(c.action, c.name) for c in added.changes} == {("add", "extra_source"), ("add", "extra_view"),
                                                           ("add", "extra_v1")}
    assert sync(store, project).applied
    assert feature_names(store, "extra_v1") == ["logins_7d"]
    materialize(store, NOW, feature_views=["extra_view"])

    # a changed TTL is a change; the view keeps its online table
    extra.write_text(extra.read_text().replace("timedelta(days=2)", "timedelta(days=3)"))
    changed = plan(store, project)
    assert [(c.action, c.name) for c in changed.changes] == [("change", "extra_view")]
    assert any("ttl" in d for d in changed.changes[0].details)
    sync(store, project)

    extra.unlink()
    removed = plan(store, project)
    assert {(c.action, c.name) for c in removed.changes} == {("remove", "extra_source"), ("remove", "extra_view"),
                                                             ("remove", "extra_v1")}
    assert "3 to remove" in removed.to_text()
    sync(store, project)
    assert "extra_v1" not in [s.name for s in store.list_feature_services()]
    assert "extra_view" not in [v.name for v in store.list_feature_views()]
    with pytest.raises(FeatureServiceNotFound, match="extra_v1.*known services: churn_v1"):
        feature_names(store, "extra_v1")
    assert not plan(store, project).has_changes


def test_a_missing_source_is_one_line_before_anything_is_written(fresh_env: Env) -> None:
    store, project = fresh_env.store, fresh_env.project
    definitions = project.root / "features" / "churn.py"
    definitions.write_text(definitions.read_text().replace('path="data/customer_activity"',
                                                           'path="data/nowhere"'))
    with pytest.raises(SourceMissing) as caught:
        sync(store, project)
    message = str(caught.value)
    assert "customer_activity_daily" in message and "data/nowhere" in message and "\n" not in message
    assert not sync.__module__.startswith("features")  # nothing of the project leaked into esteira's modules
    assert feature_names(store, SERVICE)  # the registry still holds the last applied definitions


def test_a_broken_definition_module_names_the_file(fresh_env: Env) -> None:
    (fresh_env.project.root / "features" / "broken.py").write_text("import no_such_module\n")
    with pytest.raises(DefinitionsError, match="failed to import.*no_such_module"):
        plan(fresh_env.store, fresh_env.project)


def test_feature_store_yaml_is_the_projects_own(fresh_env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    config = fresh_env.store.config
    assert config.repo_path == fresh_env.project.root and config.project == "churn"
    # relative paths in the file resolve against the project, as with the feast CLI
    assert (fresh_env.project.root / ".esteira" / "feast" / "registry.db").exists()
    (fresh_env.project.root / "feature_store.yaml").write_text("project: [unclosed\n")
    clear_store_cache()
    with pytest.raises(FeastConfigError, match="feature_store.yaml"):
        open_store(fresh_env.project)


def test_unknown_feature_service_raises_clear_error(env: Env) -> None:
    with pytest.raises(FeatureServiceNotFound, match="churn_v9.*known services: churn_v1"):
        feature_names(env.store, "churn_v9")
    entity_df = _latest_entity_df([100_000], NOW, [3])
    with pytest.raises(ValueError, match="churn_v9"):
        training_frame(env.store, "churn_v9", entity_df)
    with pytest.raises(ValueError, match="churn_v9"):
        online_features(env.store, "churn_v9", [{KEY: 100_000}], {"days_until_renewal": 3})


def test_training_frame_requires_columns(env: Env) -> None:
    with pytest.raises(ValueError, match="days_until_renewal"):
        training_frame(env.store, SERVICE, pd.DataFrame({KEY: [1], TS: [NOW]}))
    with pytest.raises(ValueError, match="days_until_renewal"):
        online_features(env.store, SERVICE, [{KEY: 100_000}])
    with pytest.raises(ValueError, match="also features"):
        training_frame(env.store, SERVICE, _latest_entity_df([100_000], NOW, [3]).assign(plan_type="basic"))


# -- offline: point-in-time ----------------------------------------------------------------------


def test_training_frame_is_point_in_time_correct(env: Env) -> None:
    labels = gen.load_labels(env.project.root / "data")
    frame = training_frame(env.store, SERVICE, labels)
    # Same rows, same order, label passed through, no missing features for known customers.
    pd.testing.assert_frame_equal(frame[labels.columns], labels)
    names = feature_names(env.store, SERVICE)
    assert frame[names].notna().all().all()

    # Reference join: latest activity at or before each label's timestamp, by plain pandas.
    activity = pd.read_parquet(env.project.root / "data" / gen.ACTIVITY_DIR)
    activity[TS] = pd.to_datetime(activity[TS], utc=True)
    expected = pd.merge_asof(
        labels.sort_values(TS), activity.sort_values(TS), on=TS, by=KEY, direction="backward",
    ).sort_values([TS, KEY], kind="stable").reset_index(drop=True)
    for col in ("logins_7d", "usage_minutes_7d", "support_tickets_30d"):
        np.testing.assert_allclose(frame[col].to_numpy(float), expected[col].to_numpy(float))

    # A value from later than the entity timestamp is never joined: ask just before a day's row
    # lands and just after, for one customer, and compare with the source rows.
    cust = int(labels[KEY].iloc[0])
    rows = activity[activity[KEY] == cust].sort_values(TS).reset_index(drop=True)
    day = rows[TS].iloc[10]
    probe = pd.DataFrame({
        KEY: [cust, cust, cust, cust, cust],
        TS: [day - timedelta(seconds=1), day, rows[TS].iloc[0] - timedelta(days=1),
             rows[TS].iloc[-1] + timedelta(days=20), day],
        "days_until_renewal": [5, 5, 5, 5, 50],
        "row": [0, 1, 2, 3, 4],
    })
    got = training_frame(env.store, SERVICE, probe)
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
    kinds = feature_kinds(env.store, SERVICE)
    assert all(got[n].dtype == (np.float64 if k == "numeric" else object) for n, k in kinds.items())


def test_training_frame_takes_any_timestamp_column_name(env: Env) -> None:
    entity_df = _latest_entity_df([100_000, 100_001], NOW, [3, 9]).rename(columns={TS: "scored_at"})
    frame = training_frame(env.store, SERVICE, entity_df, timestamp="scored_at")
    assert list(frame.columns[:3]) == [KEY, "scored_at", "days_until_renewal"]
    assert frame["plan_type"].notna().all()


# -- online --------------------------------------------------------------------------------------


def test_online_matches_offline_at_latest_timestamp_with_on_demand_parity(env: Env) -> None:
    customers = list(range(100_000, 100_000 + 60))
    renewal = [int(x) for x in np.random.default_rng(0).integers(0, 400, size=len(customers))]
    offline = training_frame(env.store, SERVICE, _latest_entity_df(customers, NOW, renewal))
    online = online_features(env.store, SERVICE, [{KEY: c} for c in customers],
                             [{"days_until_renewal": r} for r in renewal])
    names = feature_names(env.store, SERVICE)
    assert list(online[0]) == [KEY, *names]
    _assert_rows_equal(offline, online, names)
    assert {r["renewal_within_7d"] for r in online} == {0, 1}


def test_unknown_entity_reads_none_and_is_flagged_not_found(env: Env) -> None:
    result = online_lookup(env.store, SERVICE, [{KEY: 42}, {KEY: 100_001}], {"days_until_renewal": 3})
    missing, known = result.rows
    assert result.found == [False, True]
    assert missing[KEY] == 42
    assert missing["plan_type"] is None and missing["logins_7d"] is None and missing["minutes_per_login"] is None
    assert missing["renewal_within_7d"] == 1  # request-only feature still computed
    assert known["plan_type"] is not None


# -- materialization -----------------------------------------------------------------------------


def test_materialize_backfills_then_increments_per_view_and_range(fresh_env: Env) -> None:
    store, root = fresh_env.store, fresh_env.project.root
    only = materialize(store, NOW - timedelta(minutes=1), feature_views=["customer_profile"])
    assert list(only["views"]) == ["customer_profile"]
    with pytest.raises(UnknownFeatureView, match="no_view.*customer_activity_daily"):
        materialize(store, NOW, feature_views=["no_view"])
    with pytest.raises(ValueError, match="not before"):
        materialize(store, NOW, start=NOW + timedelta(days=1))
    first = materialize(store, NOW)
    # Never materialized: backfill from the earliest data, not now - ttl (Feast's pitfall).
    assert first["views"]["customer_activity_daily"]["mode"] == "backfill"
    assert first["views"]["customer_profile"]["mode"] == "incremental"
    assert first["views"]["customer_activity_daily"]["source_rows"] == N_CUSTOMERS * 30
    assert first["rows_per_second"] > 0
    again = materialize(store, NOW + timedelta(seconds=1))
    assert {v["mode"] for v in again["views"].values()} == {"incremental"}
    assert again["rows_written"] == 0

    # A later batch (recent window, in the past): an explicit start backfills it.
    info = gen.generate_batch(root / "data", batch="recent", drift=True, n_customers=N_CUSTOMERS, seed=7, now=NOW)
    later = materialize(store, NOW + timedelta(seconds=2), start=info.start)
    assert later["views"]["customer_activity_daily"]["rows_written"] == N_CUSTOMERS
    online = online_features(store, SERVICE, [{KEY: 100_000}], {"days_until_renewal": 10})
    recent = pd.read_parquet(root / "data" / gen.ACTIVITY_DIR / "recent.parquet")
    last = recent[recent[KEY] == 100_000].sort_values(TS).iloc[-1]
    assert online[0]["usage_minutes_7d"] == pytest.approx(last["usage_minutes_7d"])


@pytest.mark.slow  # runs on the session's temporary Prefect server (the first test to ask starts it)
def test_materialize_flow_publishes_figures(fresh_env: Env, prefect_harness: str) -> None:
    from flows.materialize import materialize_flow, report_markdown, run_materialize

    plain = run_materialize(end=NOW)  # the logic without Prefect
    assert plain["rows_written"] == 2 * N_CUSTOMERS and plain["applied"]["applied"] is False
    assert "online rows written" in report_markdown(plain)
    gen.generate_batch(fresh_env.project.root / "data", batch="recent", n_customers=N_CUSTOMERS, seed=7, now=NOW)
    report = materialize_flow(views=["customer_activity_daily"], start="-8d")
    assert list(report["views"]) == ["customer_activity_daily"]
    assert report["views"]["customer_activity_daily"]["rows_written"] == N_CUSTOMERS
    assert report["rows_per_second"] > 0


# -- production variant: Redis -------------------------------------------------------------------


def test_redis_connection_string() -> None:
    assert redis_connection_string("redis://127.0.0.1:6379/2") == "127.0.0.1:6379,db=2"
    assert redis_connection_string("rediss://:s3cret@cache:6380") == "cache:6380,password=s3cret,ssl=true"
    assert redis_connection_string("host:6379,db=1") == "host:6379,db=1"
    with pytest.raises(ValueError):
        redis_connection_string("http://x")


@pytest.mark.redis
def test_redis_online_store_variant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    project = f"esteira_test_{uuid.uuid4().hex[:10]}"  # namespaces the keys: tests never collide
    e = _make_env(copy_example("churn", tmp_path / "churn"), monkeypatch,
                  ESTEIRA_FEAST_ONLINE_STORE=f"redis://{redis_url}/0", ESTEIRA_FEAST_PROJECT=project)
    try:
        assert e.store.config.online_store.type == "redis" and e.store.project == project
        report = materialize(e.store, NOW)
        assert report["rows_written"] == 2 * N_CUSTOMERS
        customers = [100_000, 100_007, 100_123]
        renewal = [1, 30, 200]
        offline = training_frame(e.store, SERVICE, _latest_entity_df(customers, NOW, renewal))
        online = online_features(e.store, SERVICE, [{KEY: c} for c in customers],
                                 [{"days_until_renewal": r} for r in renewal])
        _assert_rows_equal(offline, online, feature_names(e.store, SERVICE))
        missing = online_lookup(e.store, SERVICE, [{KEY: 7}], {"days_until_renewal": 1})
        assert missing.rows[0]["logins_7d"] is None and missing.found == [False]
    finally:
        e.store.teardown()  # deletes this project's keys
        get_settings.cache_clear()
        clear_store_cache()

"""Point-in-time training sets: the polars engine (``feature_repo.pit``) against Feast's own retrieval.

Every comparison builds the same frame twice with ``training_frame``: ``engine="polars"`` (as-of joins over the
parquet files) and ``engine="feast"`` (Feast's ``get_historical_features``, one view at a time: the path used
for non-file stores, and the reference). Real Feast stores in temporary folders, real parquet files, a real
PostgreSQL offline store for the fallback; the example projects at small sizes.

One difference is deliberate and tested on its own: when a source holds several rows with the same key and
event timestamp, Feast's rule is that the latest created timestamp wins. Feast's file (Dask) store sorts with
an unstable sort and can pick any of them (feast-dev/feast 3360); its SQL stores (PostgreSQL here) and the
polars engine follow the rule, so tie rows are compared with the PostgreSQL store and with the rule itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, String
from feast.value_type import ValueType

from feature_repo import pit
from feature_repo.offline import training_frame
from feature_repo.services import entity_keys

pytestmark = pytest.mark.filterwarnings("ignore:On demand feature view:RuntimeWarning")  # Feast's, at apply

T0 = pd.Timestamp("2025-03-01T00:00:00Z")
DAY, HOUR, SECOND = pd.Timedelta(days=1), pd.Timedelta(hours=1), pd.Timedelta(seconds=1)
TS = "event_timestamp"
FEATURE_STORE_YAML = """\
project: {project}
provider: local
registry:
  registry_type: file
  path: {root}/registry.db
online_store:
  type: sqlite
  path: {root}/online.db
offline_store:
{offline}
entity_key_serialization_version: 3
"""
FILE_STORE = "  type: file"


def feature_store(root: Path, project: str, offline: str = FILE_STORE) -> FeatureStore:
    root.mkdir(parents=True, exist_ok=True)
    (root / "feature_store.yaml").write_text(FEATURE_STORE_YAML.format(project=project, root=root,
                                                                       offline=offline))
    return FeatureStore(repo_path=str(root))


def write(frame: pd.DataFrame, path: Path | str, filesystem: Any = None) -> None:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), str(path), filesystem=filesystem)


def polars_and_feast(store: FeatureStore, service: str, rows: pd.DataFrame, **kw: Any
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (training_frame(store, service, rows, engine="polars", **kw),
            training_frame(store, service, rows, engine="feast", **kw))


# -- the edge-case project ---------------------------------------------------------------------------------
#
# Entities user (int), merchant (string) and airport (string, projected as "origin" by a join-key map).
# activity:  created timestamps, ties, nulls, TTL 2 days, two parquet files in a folder;
# profile:   tz-naive timestamps (read as UTC), a field mapping (source column "seg" -> feature "segment"),
#            TTL 0 (unbounded);
# merchant:  timestamps stored in America/New_York, TTL 7 days;
# weather:   hourly by airport, TTL 3 hours, joined on the entity rows' "origin";
# on-demand: a "python" mode view over activity and the request field "amount".

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
merchant = Entity(name="merchant", join_keys=["merchant"], value_type=ValueType.STRING)
airport = Entity(name="airport", join_keys=["airport"], value_type=ValueType.STRING)
purchase = RequestSource(name="purchase", schema=[Field(name="amount", dtype=Float64)])


def edge_views(paths: dict[str, str]) -> dict[str, Any]:
    activity = FeatureView(
        name="activity", entities=[user], ttl=timedelta(days=2),
        source=FileSource(name="activity_source", path=paths["activity"], timestamp_field=TS,
                          created_timestamp_column="created"),
        schema=[Field(name="user_id", dtype=Int64), Field(name="clicks", dtype=Int64),
                Field(name="spend", dtype=Float64), Field(name="device", dtype=String)])
    profile = FeatureView(
        name="profile", entities=[user], ttl=timedelta(0),
        source=FileSource(name="profile_source", path=paths["profile"], timestamp_field="updated_at",
                          field_mapping={"seg": "segment"}),
        schema=[Field(name="user_id", dtype=Int64), Field(name="segment", dtype=String),
                Field(name="tenure", dtype=Int64)])
    merchant_stats = FeatureView(
        name="merchant_stats", entities=[merchant], ttl=timedelta(days=7),
        source=FileSource(name="merchant_source", path=paths["merchant"], timestamp_field=TS),
        schema=[Field(name="merchant", dtype=String), Field(name="risk", dtype=Float64),
                Field(name="tier", dtype=String)])
    weather = FeatureView(
        name="weather", entities=[airport], ttl=timedelta(hours=3),
        source=FileSource(name="weather_source", path=paths["weather"], timestamp_field=TS),
        schema=[Field(name="airport", dtype=String), Field(name="temp", dtype=Float64)])

    @on_demand_feature_view(sources=[activity, purchase], mode="python",
                            schema=[Field(name="spend_per_click", dtype=Float64),
                                    Field(name="big_purchase", dtype=Int64)])
    def purchase_features(inputs: dict[str, list[Any]]) -> dict[str, list[Any]]:
        spend = [None if s is None else float(s) for s in inputs["spend"]]
        clicks = [None if c is None else float(c) for c in inputs["clicks"]]
        return {"spend_per_click": [None if s is None or c is None else s / (c + 1.0)
                                    for s, c in zip(spend, clicks, strict=True)],
                "big_purchase": [int(a > 100.0) for a in inputs["amount"]]}

    return {"user": user, "merchant": merchant, "airport": airport, "purchase": purchase, "activity": activity,
            "profile": profile, "merchant_stats": merchant_stats, "weather": weather,
            "purchase_features": purchase_features}


def edge_data(seed: int = 5) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    rows = [  # (user, event, created offset, clicks, spend, device)
        (1, T0, HOUR, 10, 1.0, "ios"), (1, T0 + DAY, HOUR, 11, 2.0, "ios"), (1, T0 + 3 * DAY, HOUR, 13, 3.0, "web"),
        # user 2: three versions of one event, the latest created (clicks 22) in the middle of the file
        (2, T0 + DAY, HOUR, 20, 20.0, "a"), (2, T0 + DAY, 3 * HOUR, 22, 22.0, "c"), (2, T0 + DAY, 2 * HOUR, 21, 21.0, "b"),
        (3, T0 + DAY, HOUR, None, 7.5, None),  # nulls in features
        (5, T0 + 5 * DAY, HOUR, 50, 5.0, "web"),  # alone: for the TTL boundary
    ]
    for u in range(100, 160):  # many keys, a few rows each, to the second
        for s in np.unique(rng.integers(0, 20 * 86_400, 6)):
            rows.append((u, T0 + pd.Timedelta(seconds=int(s)), pd.Timedelta(minutes=5), int(rng.integers(0, 50)),
                         float(rng.gamma(2, 3)), str(rng.choice(["ios", "web", "android"]))))
    activity = pd.DataFrame(rows, columns=["user_id", TS, "created", "clicks", "spend", "device"])
    activity["created"] = activity[TS] + activity["created"]
    activity["clicks"] = activity["clicks"].astype("Int64")
    profile = pd.DataFrame({"user_id": [1, 2, 2, *range(100, 160)],
                            "updated_at": [T0 - 30 * DAY, T0 - 30 * DAY, T0 + 2 * DAY, *[T0 - 10 * DAY] * 60],
                            "seg": ["gold", "silver", "gold", *rng.choice(["gold", "silver", "bronze"], 60)],
                            "tenure": [12, 3, 4, *rng.integers(0, 40, 60)]})
    profile["updated_at"] = profile["updated_at"].dt.tz_localize(None)  # naive: Feast reads it as UTC
    days = pd.date_range(T0.tz_convert(None) - 5 * DAY, periods=30, freq="D").tz_localize("America/New_York")
    merchant = pd.DataFrame({"merchant": np.repeat(["m1", "m2"], len(days)), TS: np.tile(days, 2),
                             "risk": rng.random(2 * len(days)), "tier": rng.choice(["a", "b"], 2 * len(days))})
    hours = pd.date_range(T0 - DAY, T0 + 22 * DAY, freq="h")
    weather = pd.DataFrame({"airport": np.repeat(["EWR", "JFK"], len(hours)), TS: np.tile(hours, 2),
                            "temp": rng.normal(10, 5, 2 * len(hours))})
    weather = weather[~((weather["airport"] == "JFK") & weather[TS].between(T0 + 4 * DAY, T0 + 5 * DAY))]
    return {"activity": activity, "profile": profile, "merchant": merchant, "weather": weather}


def edge_rows(seed: int = 6) -> pd.DataFrame:
    """Entity rows: named edge cases first (``case``), then random ones; the label and ids pass through."""
    ny_midnight = pd.Timestamp("2025-03-04", tz="America/New_York").tz_convert("UTC")  # 05:00 UTC
    cases = [  # (case, user, merchant, origin, timestamp, amount)
        ("equal_ts", 1, "m1", "EWR", T0 + DAY, 50.0),
        ("just_before", 1, "m1", "EWR", T0 + DAY - SECOND, 50.0),
        ("ttl_exact", 5, "m1", "EWR", T0 + 7 * DAY, 50.0),
        ("ttl_past", 5, "m1", "EWR", T0 + 7 * DAY + pd.Timedelta(microseconds=1), 50.0),
        ("tie", 2, "m2", "JFK", T0 + DAY + 12 * HOUR, 150.0),
        ("nulls", 3, "m2", "JFK", T0 + DAY + HOUR, 150.0),
        ("no_history", 4, "m9", "LGA", T0 + 2 * DAY, 10.0),
        ("dup", 1, "m1", "EWR", T0 + DAY, 50.0),
        ("dup", 1, "m1", "EWR", T0 + DAY, 50.0),
        ("dup_other_amount", 1, "m1", "EWR", T0 + DAY, 500.0),
        ("before_any", 1, "m1", "EWR", T0 - DAY, 50.0),
        ("naive_update", 2, "m2", "JFK", T0 + 2 * DAY, 10.0),
        ("naive_before_update", 2, "m2", "JFK", T0 + 2 * DAY - SECOND, 10.0),
        ("ny_before_midnight", 1, "m1", "EWR", ny_midnight - SECOND, 10.0),
        ("ny_midnight", 1, "m1", "EWR", ny_midnight, 10.0),
        ("weather_gap", 1, "m1", "JFK", T0 + 4 * DAY + 5 * HOUR, 10.0),
    ]
    frame = pd.DataFrame(cases, columns=["case", "user_id", "merchant", "origin", TS, "amount"])
    rng = np.random.default_rng(seed)
    n = 400
    random = pd.DataFrame({"case": "random", "user_id": rng.integers(95, 160, n),
                           "merchant": rng.choice(["m1", "m2", "m3"], n), "origin": rng.choice(["EWR", "JFK"], n),
                           TS: T0 + pd.to_timedelta(rng.integers(-86_400, 22 * 86_400, n), unit="s"),
                           "amount": rng.gamma(2, 60, n)})
    frame = pd.concat([frame, random], ignore_index=True)
    frame["label"] = np.arange(len(frame)) % 2
    return frame


def apply_edges(store: FeatureStore, views: dict[str, Any]) -> None:
    service = FeatureService(name="edges_v1", features=[
        views["activity"], views["profile"], views["merchant_stats"],
        views["weather"].with_join_key_map({"airport": "origin"}), views["purchase_features"]])
    core = FeatureService(name="core_v1", features=[views["activity"], views["merchant_stats"]])
    # On-demand inputs the service does not list: a subset of their view, or not their view at all.
    subset = FeatureService(name="subset_v1", features=[views["activity"][["device"]], views["purchase_features"]])
    hidden = FeatureService(name="hidden_v1", features=[views["merchant_stats"], views["purchase_features"]])
    store.apply([*views.values(), service, core, subset, hidden])


@pytest.fixture(scope="module")
def edges(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeatureStore]:
    root = tmp_path_factory.mktemp("edges")
    data = edge_data()
    (root / "data" / "activity").mkdir(parents=True)
    half = len(data["activity"]) // 2  # two files in a folder, as a pipeline appends them
    write(data["activity"].iloc[:half], root / "data" / "activity" / "part-0.parquet")
    write(data["activity"].iloc[half:], root / "data" / "activity" / "part-1.parquet")
    for name in ("profile", "merchant", "weather"):
        write(data[name], root / "data" / f"{name}.parquet")
    store = feature_store(root, "edges")
    apply_edges(store, edge_views({"activity": "data/activity", "profile": "data/profile.parquet",
                                   "merchant": "data/merchant.parquet", "weather": "data/weather.parquet"}))
    yield store


def test_edge_cases_match_feast_and_feasts_rules(edges: FeatureStore, caplog: pytest.LogCaptureFixture) -> None:
    rows = edge_rows()
    with caplog.at_level(logging.INFO, logger="feature_repo.offline"):
        auto = training_frame(edges, "edges_v1", rows)
    assert "joined with polars" in caplog.text  # file sources: the polars engine by default
    fast, feast = polars_and_feast(edges, "edges_v1", rows)
    pd.testing.assert_frame_equal(auto, fast)

    # The contract: every input row in order (duplicates kept), input columns then the features, numbers as
    # float64, strings as object with None.
    features = ["clicks", "spend", "device", "segment", "tenure", "risk", "tier", "temp", "spend_per_click",
                "big_purchase"]
    assert list(fast.columns) == [*rows.columns, *features]
    assert isinstance(fast.index, pd.RangeIndex) and len(fast) == len(rows)
    pd.testing.assert_frame_equal(fast[rows.columns].drop(columns=TS), rows.drop(columns=TS))
    assert (fast[TS] == rows[TS]).all() and str(fast[TS].dtype) == "datetime64[ns, UTC]"
    assert {c: str(fast[c].dtype) for c in features} == {
        c: "object" if c in ("device", "segment", "tier") else "float64" for c in features}

    # Identical to Feast's own retrieval, except where Feast's file store breaks a tie at random (user 2).
    tie = (rows["user_id"] == 2).to_numpy()
    pd.testing.assert_frame_equal(fast[~tie].reset_index(drop=True), feast[~tie].reset_index(drop=True))

    by = {case: fast[rows["case"] == case] for case in rows["case"].unique()}
    one = {case: frame.iloc[0] for case, frame in by.items()}
    assert one["equal_ts"]["clicks"] == 11 and one["just_before"]["clicks"] == 10
    assert one["ttl_exact"]["clicks"] == 50 and np.isnan(one["ttl_past"]["clicks"])  # TTL bound inclusive
    assert one["tie"]["clicks"] == 22 and one["tie"]["device"] == "c"  # the latest created timestamp
    assert np.isnan(one["nulls"]["clicks"]) and one["nulls"]["device"] is None and one["nulls"]["spend"] == 7.5
    assert np.isnan(one["nulls"]["spend_per_click"])  # computed on a null input: null, not an error
    nothing = one["no_history"]
    assert nothing[["clicks", "spend", "tenure", "risk", "temp"]].isna().all()
    assert nothing["device"] is None and nothing["segment"] is None and nothing["tier"] is None
    assert nothing["big_purchase"] == 0.0  # request-only input: still computed
    assert len(by["dup"]) == 2 and by["dup"].drop(columns="label").duplicated(keep=False).all()
    assert one["dup_other_amount"]["big_purchase"] == 1.0 and one["dup"]["big_purchase"] == 0.0
    assert np.isnan(one["before_any"]["clicks"]) and one["before_any"]["segment"] == "gold"  # unbounded TTL
    assert one["naive_update"]["segment"] == "gold" and one["naive_before_update"]["segment"] == "silver"
    assert one["ny_midnight"]["risk"] != one["ny_before_midnight"]["risk"]
    assert np.isnan(one["weather_gap"]["temp"]) and not np.isnan(one["equal_ts"]["temp"])
    assert one["equal_ts"]["spend_per_click"] == pytest.approx(2.0 / 12.0)


def test_ties_follow_the_latest_created_timestamp_where_feasts_file_store_may_not(edges: FeatureStore) -> None:
    rows = edge_rows().query("case == 'tie'")
    rows = pd.concat([rows] * 3, ignore_index=True).assign(
        **{TS: lambda d: d[TS] + pd.to_timedelta(np.arange(len(d)), unit="min")})
    fast = training_frame(edges, "core_v1", rows, engine="polars")
    assert fast["clicks"].tolist() == [22.0] * 3 and fast["device"].tolist() == ["c"] * 3


@pytest.mark.parametrize("service", ["subset_v1", "hidden_v1"])
def test_on_demand_inputs_the_service_does_not_list_are_read_not_returned(edges: FeatureStore, service: str
                                                                        ) -> None:
    rows = edge_rows().query("user_id != 2").reset_index(drop=True)
    fast, feast = polars_and_feast(edges, service, rows)
    pd.testing.assert_frame_equal(fast, feast)
    returned = ["device"] if service == "subset_v1" else ["risk", "tier"]
    assert list(fast.columns) == [*rows.columns, *returned, "spend_per_click", "big_purchase"]
    full = training_frame(edges, "edges_v1", rows, engine="polars")
    pd.testing.assert_series_equal(fast["spend_per_click"], full["spend_per_click"])
    assert fast["spend_per_click"].notna().sum() > 50


def test_join_key_map_names_the_entity_column(edges: FeatureStore) -> None:
    assert entity_keys(edges, "edges_v1") == ["user_id", "merchant", "origin"]
    rows = edge_rows().drop(columns="origin")
    with pytest.raises(ValueError, match="origin"):
        training_frame(edges, "edges_v1", rows)


def test_null_keys_and_timestamps_get_null_features(edges: FeatureStore) -> None:
    rows = edge_rows().head(3)
    rows.loc[0, "merchant"] = None
    rows.loc[1, TS] = pd.NaT
    fast = training_frame(edges, "edges_v1", rows, engine="polars")
    assert np.isnan(fast.loc[0, "risk"]) and fast.loc[0, "tier"] is None and fast.loc[0, "clicks"] == 11
    assert fast.loc[1, ["clicks", "risk", "temp", "tenure"]].isna().all()
    assert fast.loc[2, ["clicks", "risk", "temp"]].notna().all()


def test_output_is_a_copy_and_empty_rows_give_an_empty_frame(edges: FeatureStore) -> None:
    rows = edge_rows().set_index(np.arange(1000, 1000 + len(edge_rows())))  # any index: positions count
    before = rows.copy()
    fast = training_frame(edges, "edges_v1", rows, engine="polars")
    fast["amount"] *= 2
    fast.loc[0, "spend"] = -1.0
    pd.testing.assert_frame_equal(rows, before)
    empty = training_frame(edges, "edges_v1", rows.iloc[:0], engine="polars")
    assert len(empty) == 0 and list(empty.columns) == list(fast.columns)
    assert str(empty["spend"].dtype) == "float64" and str(empty["device"].dtype) == "object"


def test_timestamp_column_may_have_any_name(edges: FeatureStore) -> None:
    rows = edge_rows().rename(columns={TS: "scored_at"})
    fast, feast = polars_and_feast(edges, "core_v1", rows, timestamp="scored_at")
    assert list(fast.columns[: len(rows.columns)]) == list(rows.columns)
    tie = (rows["user_id"] == 2).to_numpy()
    pd.testing.assert_frame_equal(fast[~tie].reset_index(drop=True), feast[~tie].reset_index(drop=True))


# -- the dense shape: few keys, long hourly history ------------------------------------------------------


def test_dense_hourly_history_of_three_keys_matches_feast(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    hours = pd.date_range(T0, T0 + 40 * DAY, freq="h")
    stations = ["EWR", "JFK", "LGA"]
    hourly = pd.concat([pd.DataFrame({"station": s, TS: hours[rng.random(len(hours)) > 0.02],
                                      }) for s in stations], ignore_index=True)
    hourly["temp"] = rng.normal(10, 5, len(hourly))
    hourly.loc[rng.random(len(hourly)) < 0.02, "temp"] = np.nan
    hourly["sky"] = rng.choice(["clear", "cloudy", None], len(hourly))
    (tmp_path / "data").mkdir()
    half = len(hourly) // 2  # two files, named by a glob
    write(hourly.iloc[:half], tmp_path / "data" / "hourly-0.parquet")
    write(hourly.iloc[half:], tmp_path / "data" / "hourly-1.parquet")
    store = feature_store(tmp_path / "repo", "dense")
    station = Entity(name="station", join_keys=["station"], value_type=ValueType.STRING)
    view = FeatureView(name="hourly", entities=[station], ttl=timedelta(hours=2),
                       source=FileSource(name="hourly_source", path=str(tmp_path / "data" / "hourly-*.parquet"),
                                         timestamp_field=TS),
                       schema=[Field(name="station", dtype=String), Field(name="temp", dtype=Float64),
                               Field(name="sky", dtype=String)])
    store.apply([station, view, FeatureService(name="dense_v1", features=[view])])
    n = 600
    rows = pd.DataFrame({"station": rng.choice(stations, n),
                         TS: T0 + pd.to_timedelta(rng.integers(0, 41 * 86_400, n), unit="s"),
                         "delay": rng.gamma(2, 10, n)})
    rows.loc[:50, TS] = rows.loc[:50, TS].dt.floor("h")  # on the hour: equal to a feature timestamp
    fast, feast = polars_and_feast(store, "dense_v1", rows)
    pd.testing.assert_frame_equal(fast, feast)
    assert fast["temp"].notna().mean() > 0.9


# -- remote sources, through fsspec ----------------------------------------------------------------------


def test_fsspec_uri_sources_are_read_like_feast_reads_them(tmp_path: Path) -> None:
    import uuid

    import fsspec

    memory = fsspec.filesystem("memory")
    bucket = f"pit-{uuid.uuid4().hex[:8]}"
    data = edge_data()
    memory.mkdirs(f"{bucket}/activity", exist_ok=True)
    write(data["activity"], f"{bucket}/activity/part-0.parquet", filesystem=memory)
    write(data["merchant"], f"{bucket}/merchant.parquet", filesystem=memory)
    try:
        store = feature_store(tmp_path, "remote")
        views = edge_views({"activity": f"memory://{bucket}/activity", "profile": "unused.parquet",
                            "merchant": f"memory://{bucket}/merchant.parquet", "weather": "unused.parquet"})
        service = FeatureService(name="core_v1", features=[views["activity"], views["merchant_stats"]])
        store.apply([views["user"], views["merchant"], views["activity"], views["merchant_stats"], service])
        rows = edge_rows().query("user_id != 2").reset_index(drop=True)  # no tie: Feast's file store
        fast, feast = polars_and_feast(store, "core_v1", rows)
        pd.testing.assert_frame_equal(fast, feast)
        assert fast["clicks"].notna().sum() > 100
    finally:
        memory.rm(bucket, recursive=True)


# -- a store the polars engine does not read: Feast's path, kept -------------------------------------------


@pytest.mark.postgres
def test_postgresql_offline_store_falls_back_to_feast_and_agrees(
        edges: FeatureStore, pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import sqlalchemy as sa
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource

    data = edge_data()
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        data["activity"].to_sql("activity", conn, index=False)
        data["merchant"].assign(**{TS: data["merchant"][TS].dt.tz_convert("UTC")}).to_sql("merchant", conn,
                                                                                         index=False)
    engine.dispose()
    url = sa.engine.make_url(pg_url)
    offline = (f"  type: postgres\n  host: {url.host}\n  port: {url.port}\n  database: {url.database}\n"
               f"  db_schema: public\n  user: {url.username}\n  password: ''\n  sslmode: disable")
    store = feature_store(tmp_path, "pg", offline)
    activity = FeatureView(
        name="activity", entities=[user], ttl=timedelta(days=2),
        source=PostgreSQLSource(name="activity_source", table="activity", timestamp_field=TS,
                                created_timestamp_column="created"),
        schema=[Field(name="user_id", dtype=Int64), Field(name="clicks", dtype=Int64),
                Field(name="spend", dtype=Float64), Field(name="device", dtype=String)])
    merchant_stats = FeatureView(
        name="merchant_stats", entities=[merchant], ttl=timedelta(days=7),
        source=PostgreSQLSource(name="merchant_source", table="merchant", timestamp_field=TS),
        schema=[Field(name="merchant", dtype=String), Field(name="risk", dtype=Float64),
                Field(name="tier", dtype=String)])
    store.apply([user, merchant, activity, merchant_stats,
                 FeatureService(name="core_v1", features=[activity, merchant_stats])])

    rows = edge_rows()
    with caplog.at_level(logging.INFO, logger="feature_repo.offline"):
        from_pg = training_frame(store, "core_v1", rows)
    assert "offline store 'postgres' is not a file store" in caplog.text
    with pytest.raises(ValueError, match="cannot be joined with polars"):
        training_frame(store, "core_v1", rows, engine="polars")
    # Feast's SQL store follows the created-timestamp rule on ties: equal on every row, ties included.
    fast = training_frame(edges, "core_v1", rows, engine="polars")
    pd.testing.assert_frame_equal(fast, from_pg)
    assert from_pg.loc[rows["case"] == "tie", "clicks"].tolist() == [22.0]


def test_a_store_that_is_not_a_file_store_is_never_read_behind_its_back(tmp_path: Path) -> None:
    # Feast's remote offline store (an Arrow Flight server) holds file sources too: the server decides.
    store = feature_store(tmp_path, "remote", "  type: remote\n  host: 127.0.0.1\n  port: 9")
    views = edge_views({"activity": "a.parquet", "profile": "p.parquet", "merchant": "m.parquet",
                        "weather": "w.parquet"})
    store.apply([views["user"], views["activity"], FeatureService(name="a_v1", features=[views["activity"]])])
    joins = [pit.view_join(views["activity"], views["activity"].projection, ["clicks"])]
    assert pit.unsupported(store, joins) == "offline store 'remote' is not a file store"
    with pytest.raises(ValueError, match="offline store 'remote' is not a file store"):
        training_frame(store, "a_v1", edge_rows(), engine="polars")


# -- the example projects ---------------------------------------------------------------------------------


def test_example_projects_match_feast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    from core.project import Project
    from feature_repo.store import open_store
    from feature_repo.sync import sync
    from tests.projects import copy_example, project_module, use_project

    monkeypatch.setenv("ESTEIRA_HOME", str(tmp_path / "home"))
    for var in ("ESTEIRA_FEAST_ONLINE_STORE", "ESTEIRA_FEAST_REGISTRY", "ESTEIRA_FEAST_PROJECT"):
        monkeypatch.delenv(var, raising=False)

    # churn: many keys (customers), daily history, an on-demand view with request data
    root = copy_example("churn", tmp_path / "churn")
    use_project(root, monkeypatch)
    generator = project_module(root, "generator")
    generator.generate_batch(root / "data", n_customers=150, seed=3, now=datetime(2026, 6, 1, tzinfo=UTC))
    project = Project(root)
    store = open_store(project)
    sync(store, project)
    labels = generator.load_labels(root / "data")
    fast, feast = polars_and_feast(store, "churn_v1", labels)
    pd.testing.assert_frame_equal(fast, feast)
    assert fast["logins_7d"].notna().all()

    # flights: three keys with hourly weather, a plane snapshot, a composite route key (a few days of it)
    root = copy_example("flights", tmp_path / "flights")
    use_project(root, monkeypatch)
    prepare = project_module(root, "prepare")
    prepare.prepare(root, "2013-11-20", start="2013-11-17", fraction=0.15,
                    anchor=prepare.anchor_for(datetime(2026, 6, 1, tzinfo=UTC)))
    project = Project(root)
    store = open_store(project)
    sync(store, project)
    labels = prepare.load_labels(root)
    with caplog.at_level(logging.INFO, logger="feature_repo.offline"):
        auto = training_frame(store, "flights_v1", labels)
    assert "joined with polars" in caplog.text
    feast = training_frame(store, "flights_v1", labels, engine="feast")
    pd.testing.assert_frame_equal(auto, feast)
    assert len(auto) > 300 and auto["temp_f"].notna().mean() > 0.9 and auto["seats"].notna().any()

"""The compiled online read (``feature_repo.online``) against Feast's own ``get_online_features``.

A small Feast project of its own in a temporary folder, applied with esteira's sync: two entities (an integer
shop key and a string item key), a view keyed by the shop, a view keyed by the pair (a composite key), an
on-demand view in python mode over the pair view and a request field, and one in pandas mode (which the plan
leaves to Feast). Rows are written with Feast's ``write_to_online_store``, so the store holds exactly what each
case needs: fresh rows, rows older than their view's TTL, null values, keys that were never written. Every
read is compared with ``FeatureStore.get_online_features`` on the same rows: values, nulls and found flags, on
SQLite and on Redis (127.0.0.1:6379, a project name of its own, torn down after).
"""

from __future__ import annotations

import contextlib
import math
import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from core.project import Project
from core.settings import get_settings
from feature_repo import services
from feature_repo.online import OnlineRows, feast_lookup, online_lookup, online_plan
from feature_repo.store import clear_store_cache, open_store
from feature_repo.sync import sync
from tests.projects import use_project

NOW = datetime.now(UTC).replace(microsecond=0)
SERVICE, PANDAS_SERVICE = "shop_v1", "shop_pandas"

FEATURE_STORE_YAML = """\
project: shops
provider: local
registry:
  registry_type: file
  path: .esteira/feast/registry.db
  cache_ttl_seconds: 60
online_store:
  type: sqlite
  path: .esteira/feast/online.db
offline_store:
  type: file
entity_key_serialization_version: 3
"""

DEFINITIONS = '''\
from datetime import timedelta
from typing import Any

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Bool, Float64, Int64, String
from feast.value_type import ValueType

shop = Entity(name="shop", join_keys=["shop_id"], value_type=ValueType.INT64)
item = Entity(name="item", join_keys=["item_sku"], value_type=ValueType.STRING)

shop_stats = FeatureView(
    name="shop_stats", entities=[shop], ttl=timedelta(days=1), online=True,
    schema=[Field(name="shop_id", dtype=Int64), Field(name="visits", dtype=Int64),
            Field(name="rating", dtype=Float64), Field(name="city", dtype=String)],
    source=FileSource(name="shop_stats_source", path="data/shop_stats.parquet", timestamp_field="event_timestamp"),
)
shop_item = FeatureView(
    name="shop_item", entities=[shop, item], ttl=timedelta(days=7), online=True,
    schema=[Field(name="shop_id", dtype=Int64), Field(name="item_sku", dtype=String),
            Field(name="stock", dtype=Int64), Field(name="price", dtype=Float64), Field(name="on_sale", dtype=Bool)],
    source=FileSource(name="shop_item_source", path="data/shop_item.parquet", timestamp_field="event_timestamp"),
)
basket = RequestSource(name="basket", schema=[Field(name="quantity", dtype=Int64)])


@on_demand_feature_view(
    sources=[shop_item, basket],
    schema=[Field(name="basket_total", dtype=Float64), Field(name="low_stock", dtype=Int64),
            Field(name="big_basket", dtype=Bool)],
    mode="python",
)
def basket_features(inputs: dict[str, list[Any]]) -> dict[str, list[Any]]:
    totals, low = [], []
    for price, stock, quantity in zip(inputs["price"], inputs["stock"], inputs["quantity"]):
        totals.append(None if price is None else price * quantity)
        low.append(None if stock is None else int(stock < quantity))
    return {"basket_total": totals, "low_stock": low, "big_basket": [q >= 10 for q in inputs["quantity"]]}


@on_demand_feature_view(
    sources=[shop_stats, basket],
    schema=[Field(name="visits_per_unit", dtype=Float64)],
    mode="pandas",
)
def visits_per_unit(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["visits_per_unit"] = inputs["visits"].astype("float64") / inputs["quantity"]
    return out


shop_v1 = FeatureService(name="shop_v1", features=[shop_stats, shop_item, basket_features])
shop_pandas = FeatureService(name="shop_pandas", features=[shop_stats, visits_per_unit])
'''


def _write_project(root: Path) -> Project:
    (root / "features").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "feature_store.yaml").write_text(FEATURE_STORE_YAML)
    (root / "features" / "__init__.py").write_text("")
    (root / "features" / "shops.py").write_text(textwrap.dedent(DEFINITIONS))
    # file sources must exist for an apply (esteira's sync checks them); the online rows are written below
    stamp = pd.Timestamp(NOW)
    pd.DataFrame({"shop_id": [1], "visits": [1], "rating": [1.0], "city": ["x"], "event_timestamp": [stamp]}
                 ).to_parquet(root / "data" / "shop_stats.parquet")
    pd.DataFrame({"shop_id": [1], "item_sku": ["a"], "stock": [1], "price": [1.0], "on_sale": [True],
                  "event_timestamp": [stamp]}).to_parquet(root / "data" / "shop_item.parquet")
    return Project(root)


def _fill(store: Any) -> None:
    """Fresh rows, rows past their view's TTL (shop_stats: 1 day, shop_item: 7 days), null values."""
    fresh, stale = NOW - timedelta(hours=1), NOW - timedelta(days=30)
    store.write_to_online_store("shop_stats", pd.DataFrame({
        "shop_id": [1, 2, 3, 4],
        "visits": [120, 45, None, 7],
        "rating": [4.5, float("nan"), 3.25, 1.0],
        "city": ["Lisboa", "Porto", None, "Faro"],
        "event_timestamp": [fresh, fresh, fresh, stale],  # shop 4: expired
    }))
    store.write_to_online_store("shop_item", pd.DataFrame({
        "shop_id": [1, 1, 2, 3, 4],
        "item_sku": ["apple", "pear", "apple", "fig", "apple"],
        "stock": [10, 0, None, 3, 5],
        "price": [0.5, 1.25, 0.75, None, 2.0],
        "on_sale": [True, False, None, True, False],
        "event_timestamp": [fresh, fresh, fresh, stale, fresh],  # (3, fig): expired
    }))


ROWS = [  # known, known twice, composite key half known, expired rows, null values, never written
    {"shop_id": 1, "item_sku": "apple"},
    {"shop_id": 1, "item_sku": "pear"},
    {"shop_id": 1, "item_sku": "apple"},
    {"shop_id": 2, "item_sku": "pear"},  # the shop is known, the pair is not
    {"shop_id": 3, "item_sku": "fig"},  # shop with nulls; the pair expired
    {"shop_id": 4, "item_sku": "apple"},  # the shop expired; the pair is fresh
    {"shop_id": 2, "item_sku": "apple"},  # the pair has a null stock and on_sale
    {"shop_id": 99, "item_sku": "kiwi"},  # never written
]
QUANTITIES = [{"quantity": q} for q in (3, 12, 3, 2, 5, 0, 40, 7)]


@contextlib.contextmanager
def _filled_project(root: Path, monkeypatch: pytest.MonkeyPatch, redis: str | None = None) -> Iterator[Any]:
    """The project applied and filled, on SQLite, or on Redis at ``redis`` (host:port) under a project name of
    its own whose keys are deleted after."""
    monkeypatch.setenv("ESTEIRA_HOME", str(root / "home"))
    if redis is not None:
        monkeypatch.setenv("ESTEIRA_FEAST_ONLINE_STORE", f"redis://{redis}/0")
        monkeypatch.setenv("ESTEIRA_FEAST_PROJECT", f"esteira_online_{uuid.uuid4().hex[:10]}")
    project = _write_project(root / "shops")
    use_project(project.root, monkeypatch)
    store = open_store(project)
    sync(store, project)
    try:
        assert store.config.online_store.type == ("redis" if redis else "sqlite")
        _fill(store)
        yield store
    finally:
        if redis is not None:
            store.teardown()
        get_settings.cache_clear()
        clear_store_cache()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The filled project on SQLite, then on Redis (skipped, saying why, when Redis is not reachable)."""
    redis = request.getfixturevalue("redis_url") if request.param == "redis" else None
    with _filled_project(tmp_path, monkeypatch, redis) as filled:
        yield filled


@pytest.fixture
def shops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The filled project on SQLite only."""
    with _filled_project(tmp_path, monkeypatch) as filled:
        yield filled


def _same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN and to None (both are a missing value for the caller)."""
    missing = lambda v: v is None or (isinstance(v, float) and math.isnan(v))  # noqa: E731
    return (missing(a) and missing(b)) or (type(a) is type(b) and a == b)


def _feast_columns(store: Any, service: str, rows: list[dict[str, Any]],
                   request_data: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """What Feast itself answers, through its public API."""
    entity_rows = [{**row, **extra} for row, extra in zip(rows, request_data, strict=True)]
    return store.get_online_features(features=store.get_feature_service(service), entity_rows=entity_rows).to_dict()


def _assert_matches_feast(store: Any, service: str, rows: list[dict[str, Any]],
                          request_data: list[dict[str, Any]]) -> OnlineRows:
    compiled = online_lookup(store, service, rows, request_data)
    reference = feast_lookup(store, service, rows, request_data)
    assert compiled.found == reference.found
    assert compiled.rows == reference.rows  # plain() made NaN None on both sides: exact equality
    columns = _feast_columns(store, service, rows, request_data)
    for i, row in enumerate(compiled.rows):
        assert list(row) == list(reference.rows[i])
        for name, value in row.items():
            assert _same(value, columns[name][i]), (i, name, value, columns[name][i])
    return compiled


def test_the_compiled_read_answers_what_get_online_features_answers(store: Any) -> None:
    assert online_plan(store, SERVICE) is not None  # the compiled path, not the fallback
    result = _assert_matches_feast(store, SERVICE, ROWS, QUANTITIES)
    by_case = dict(zip(["apple", "pear", "again", "half", "nulls", "expired", "null_pair", "unknown"],
                       zip(result.rows, result.found, strict=True), strict=True))

    row, found = by_case["apple"]
    assert found and row["visits"] == 120 and row["city"] == "Lisboa" and row["stock"] == 10
    assert row["on_sale"] is True and row["basket_total"] == 1.5 and row["low_stock"] == 0
    assert by_case["again"] == by_case["apple"]  # a key asked twice reads the same
    assert by_case["pear"][0]["big_basket"] is True and by_case["pear"][0]["low_stock"] == 1
    row, found = by_case["half"]
    assert found and row["visits"] == 45 and row["rating"] is None  # NaN stored: read as a missing value
    assert row["stock"] is None and row["basket_total"] is None  # no such pair: nulls, the udf sees None
    row, found = by_case["nulls"]
    assert found and row["visits"] is None and row["city"] is None and row["rating"] == 3.25
    assert row["stock"] == 3  # Feast 0.67 serves a row past its TTL as stored (feast-dev/feast 1802)
    assert by_case["expired"][1] and by_case["expired"][0]["visits"] == 7
    row, found = by_case["null_pair"]
    assert found and row["stock"] is None and row["on_sale"] is None and row["price"] == 0.75
    row, found = by_case["unknown"]
    assert not found and row["shop_id"] == 99 and row["item_sku"] == "kiwi"
    assert all(row[name] is None for name in ("visits", "rating", "city", "stock", "price", "on_sale"))
    assert row["big_basket"] is False  # request-only output still computed


def test_request_data_one_for_all_rows_or_inside_the_rows(store: Any) -> None:
    one = online_lookup(store, SERVICE, ROWS, {"quantity": 10})
    assert one == feast_lookup(store, SERVICE, ROWS, {"quantity": 10})
    inside = [{**row, "quantity": 10} for row in ROWS]
    assert online_lookup(store, SERVICE, inside) == one
    single = _assert_matches_feast(store, SERVICE, ROWS[:1], QUANTITIES[:1])
    assert single.found == [True]
    # Feast converts a column to its first value's type: 2.5 after an int is read as 2
    mixed = _assert_matches_feast(store, SERVICE, ROWS[:2], [{"quantity": 3}, {"quantity": 2.5}])
    assert mixed.rows[1]["basket_total"] == 1.25 * 2
    with pytest.raises(ValueError, match="lacks.*quantity"):
        online_lookup(store, SERVICE, ROWS[:1])
    with pytest.raises(ValueError, match="lacks.*item_sku"):
        online_lookup(store, SERVICE, [{"shop_id": 1}], {"quantity": 1})
    assert online_lookup(store, SERVICE, []) == OnlineRows([], [])


def test_an_on_demand_view_in_pandas_mode_is_left_to_feast(store: Any) -> None:
    assert online_plan(store, PANDAS_SERVICE) is None
    rows = [{"shop_id": s} for s in (1, 2, 4, 99)]
    result = _assert_matches_feast(store, PANDAS_SERVICE, rows, [{"quantity": 4}] * 4)
    assert result.found == [True, True, True, False]
    assert result.rows[0]["visits_per_unit"] == 30.0


def test_the_plan_follows_the_registry(shops: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-apply reaches the compiled read once the service is resolved again: after forget_plans (what
    esteira's sync calls) or after the plan TTL."""
    store = shops
    first = online_plan(store, SERVICE)
    assert first is not None and online_plan(store, SERVICE) is first  # compiled once
    project = Project(store.config.repo_path)
    definitions = project.root / "features" / "shops.py"
    definitions.write_text(definitions.read_text().replace(
        'shop_v1 = FeatureService(name="shop_v1", features=[shop_stats, shop_item, basket_features])',
        'shop_v1 = FeatureService(name="shop_v1", features=[shop_stats[["visits"]], shop_item, basket_features])'))
    sync(store, project)  # applies, and forgets the resolved services
    second = online_plan(store, SERVICE)
    assert second is not None and second is not first
    result = _assert_matches_feast(store, SERVICE, ROWS, QUANTITIES)
    assert "city" not in result.rows[0] and result.rows[0]["visits"] == 120

    monkeypatch.setattr(services, "PLAN_TTL_SECONDS", 0.0)  # every read resolves the service again
    assert online_plan(store, SERVICE) is not second
    _assert_matches_feast(store, SERVICE, ROWS, QUANTITIES)


# -- the gateway's lookups: concurrent requests share reads ---------------------------------------------------


def test_concurrent_gateway_lookups_share_one_read_and_each_gets_its_own_rows(store: Any) -> None:
    import asyncio

    from gateway.errors import InvalidInput
    from gateway.features import FeastLookup

    lookup = FeastLookup(project=str(store.config.repo_path), coalesce_max_rows=64)
    asked = [(ROWS[i:i + 2], QUANTITIES[i:i + 2]) for i in range(0, len(ROWS), 2)]

    async def together(*extra: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> list[Any]:
        return await asyncio.gather(*(lookup.lookup(SERVICE, rows, data) for rows, data in (*asked, *extra)),
                                    return_exceptions=True)

    answers = asyncio.run(together())
    assert lookup.shared_reads == 1
    for (rows, data), (features, found) in zip(asked, answers, strict=True):
        alone = online_lookup(store, SERVICE, rows, data)
        assert (features, found) == (alone.rows, alone.found)

    # a request the store refuses (no item_sku) gets the refusal; the others still get their own rows
    *answers, refused = asyncio.run(together(([{"shop_id": 1}], [{"quantity": 1}])))
    assert lookup.shared_reads == 2
    assert isinstance(refused, InvalidInput)
    for (rows, data), (features, found) in zip(asked, answers, strict=True):
        assert (features, found) == (online_lookup(store, SERVICE, rows, data).rows,
                                     online_lookup(store, SERVICE, rows, data).found)

    async def one() -> Any:
        return await lookup.lookup(SERVICE, ROWS[:1], QUANTITIES[:1])

    assert asyncio.run(one()) == (online_lookup(store, SERVICE, ROWS[:1], QUANTITIES[:1]).rows, [True])
    assert lookup.shared_reads == 2  # alone: no shared read

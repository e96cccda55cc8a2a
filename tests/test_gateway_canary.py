"""The gateway serves a canary: its share of callers, sticky by key, every answer and request in the log.

Through the real ``ModelService`` and its FastAPI app on a SQLite registry (no Ray). The registry is polled
only when a test says so (``/v1/admin/reload``) and the log is written only when it says so (``flush``), so
what a test sees after a registry change is what one poll makes of it. Request ids are fixed strings and
the bucket is a hash, so every count here is the same on every run; the binomial bounds say that the
hash spreads callers as a fair coin of the share would.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.inference_log import REQUEST_COLUMNS, read_requests, read_window
from gateway.app import build_app
from gateway.config import GatewayConfig
from gateway.schemas import PredictRequest
from gateway.service import ModelService, canary_bucket, entity_routing_key
from gateway.testing import SIGNATURE_NUMERIC, example_row, numeric_classifier

MODEL = "scorer"
ROW = example_row()
PREDICT = f"/v1/models/{MODEL}/predict"
INFER = f"/v2/models/{MODEL}/infer"


def within_binomial(count: int, n: int, share: float, sigmas: float = 5.0) -> bool:
    """``count`` of ``n`` callers is what a coin of probability ``share`` gives, to ``sigmas`` standard deviations."""
    return abs(count - n * share) <= sigmas * math.sqrt(n * share * (1 - share))


@pytest.fixture(scope="module")
def fitted() -> list[Any]:
    return [numeric_classifier("logistic", seed=seed) for seed in (0, 3, 7)]


@pytest.fixture
def versions(registry: Any, fitted: list[Any]) -> list[int]:
    """Three versions of ``scorer``; the first is production."""
    numbers = [registry.register_version(MODEL, model, signature=SIGNATURE_NUMERIC).version for model in fitted]
    registry.promote(MODEL, numbers[0], reason="first")
    return numbers


def make_service(registry: Any, log_root: Path, **overrides: Any) -> ModelService:
    config = {"database_url": registry.url, "artifact_root": registry.artifacts.root, "feast_lookup": False,
              "inference_log_uri": str(log_root), "poll_interval_s": 3600, "log_flush_interval_s": 3600,
              "profile_in_subprocess": False, **overrides}
    return ModelService.from_config(GatewayConfig(**config))


@pytest.fixture
def log_root(esteira_home: Path) -> Path:
    return esteira_home / "inference"


@pytest.fixture
def service(registry: Any, versions: list[int], log_root: Path) -> ModelService:
    return make_service(registry, log_root)


@pytest.fixture
def client(service: ModelService) -> Iterator[TestClient]:
    with TestClient(build_app(service)) as test_client:
        yield test_client


def reload(client: TestClient) -> dict[str, Any]:
    response = client.post("/v1/admin/reload")
    assert response.status_code == 200
    return response.json()


def v1_versions(client: TestClient, ids: list[str]) -> dict[str, int]:
    """The version that answered each request id on the v1 route (every answer must be a 200)."""
    out = {}
    for rid in ids:
        response = client.post(PREDICT, json={"inputs": ROW, "request_id": rid})
        assert response.status_code == 200, response.text
        out[rid] = response.json()["version"]
    return out


def served_versions(client: TestClient, service: ModelService, ids: list[str]) -> dict[str, int]:
    """The same as :func:`v1_versions` without HTTP: ``ModelService.predict`` on the app's own event loop
    (0.6 ms a request against 3.3 ms through the test client, 500 requests each way on 2 busy cores)."""
    async def run() -> dict[str, int]:
        return {rid: (await service.predict(MODEL, PredictRequest(inputs=ROW, request_id=rid)))["version"]
                for rid in ids}

    assert client.portal is not None
    return client.portal.call(run)


def v2_body(rid: str) -> dict[str, Any]:
    return {"id": rid, "inputs": [{"name": name, "shape": [1], "datatype": "FP64" if name == "monthly_charges"
                                   else "INT64", "data": [value]} for name, value in ROW.items()]}


def v2_versions(client: TestClient, ids: list[str]) -> dict[str, int]:
    out = {}
    for rid in ids:
        response = client.post(INFER, json=v2_body(rid))
        assert response.status_code == 200, response.text
        out[rid] = int(response.json()["model_version"])
    return out


# -- the bucket -------------------------------------------------------------------------------------------------


def test_the_bucket_is_stable_in_range_and_each_canary_version_draws_its_own_callers() -> None:
    keys = [f"caller-{i}" for i in range(4000)]
    buckets = {version: [canary_bucket(MODEL, version, key) for key in keys] for version in (2, 3)}
    assert all(0.0 <= b < 1.0 for values in buckets.values() for b in values)
    assert buckets[2] == [canary_bucket(MODEL, 2, key) for key in keys]  # same key, same bucket, every time
    first = {key for key, b in zip(keys, buckets[2], strict=True) if b < 0.3}
    second = {key for key, b in zip(keys, buckets[3], strict=True) if b < 0.3}
    assert within_binomial(len(first), len(keys), 0.3)
    # independent slices overlap on about 0.3 * 0.3 of callers, not on all 30%
    assert within_binomial(len(first & second), len(keys), 0.09)
    assert canary_bucket(MODEL, 2, "\ud800") < 1.0  # a lone surrogate from JSON still hashes


def test_an_entity_key_is_the_same_caller_whatever_the_order_or_json_type_of_its_keys() -> None:
    assert entity_routing_key({"a": 1, "b": "x"}) == entity_routing_key({"b": "x", "a": "1"})
    assert entity_routing_key([{"a": 1}, {"a": 2}]) == entity_routing_key({"a": 1})  # the first entity
    assert entity_routing_key({"a": 1}) != entity_routing_key({"a": 2})
    assert entity_routing_key(None) is None and entity_routing_key([]) is None


# -- routing ----------------------------------------------------------------------------------------------------


def test_a_canary_takes_its_share_of_distinct_request_ids_and_each_id_keeps_its_version(
        client: TestClient, service: ModelService, registry: Any, versions: list[int]) -> None:
    production, canary = versions[0], versions[1]
    registry.start_canary(MODEL, canary, share=0.3, reason="try v2")
    status = reload(client)
    assert status["models"][f"{MODEL}@canary"]["version"] == canary
    listed = client.get("/v1/models").json()["models"][MODEL]
    assert (listed["version"], listed["canary_version"], listed["canary_share"]) == (production, canary, 0.3)

    ids = [f"req-{i}" for i in range(2000)]
    answered = served_versions(client, service, ids)
    on_canary = [rid for rid, version in answered.items() if version == canary]
    assert set(answered.values()) == {production, canary}
    assert within_binomial(len(on_canary), len(ids), 0.3), len(on_canary)

    again = ids[:100] + on_canary[:100]  # and through HTTP, on both protocols
    assert v1_versions(client, again) == {rid: answered[rid] for rid in again}
    assert v2_versions(client, again) == {rid: answered[rid] for rid in again}  # v2's ``id`` is the same key


def test_a_share_changed_in_the_registry_is_picked_up_at_the_next_poll_and_keeps_earlier_callers(
        client: TestClient, service: ModelService, registry: Any, versions: list[int]) -> None:
    canary = versions[1]
    registry.start_canary(MODEL, canary, share=0.3)
    reload(client)
    ids = [f"caller-{i}" for i in range(1000)]
    before = {rid for rid, v in served_versions(client, service, ids).items() if v == canary}

    registry.set_canary_share(MODEL, 0.6, reason="widen", actor="test")
    assert {rid for rid, v in served_versions(client, service, ids).items() if v == canary} == before  # no poll yet
    reload(client)
    assert client.get("/v1/models").json()["models"][MODEL]["canary_share"] == 0.6
    after = {rid for rid, v in served_versions(client, service, ids).items() if v == canary}
    assert within_binomial(len(after), len(ids), 0.6), len(after)
    assert before < after  # a wider share keeps every caller the narrower one had


def test_entity_key_requests_are_sticky_by_key_and_an_error_after_routing_is_recorded_with_its_status(
        client: TestClient, service: ModelService, registry: Any, versions: list[int], log_root: Path) -> None:
    """Entity lookups are off here, so every entity request is refused (422) after its version was chosen:
    the request records say which version each key went to, and that it failed."""
    production, canary = versions[0], versions[1]
    registry.start_canary(MODEL, canary, share=0.5)
    reload(client)
    keys = list(range(120))
    for attempt in range(3):  # each key three times, under three request ids, its keys in either order
        for key in keys:
            entity = {"customer_id": key, "region": "north"} if attempt % 2 else {"region": "north",
                                                                                  "customer_id": key}
            response = client.post(PREDICT, json={"entities": entity, "request_id": f"{key}-{attempt}"})
            assert response.status_code == 422 and response.json()["field"] == "entities"
    service.inference_log.flush()  # type: ignore[union-attr]

    records = read_requests(MODEL, root=str(log_root))
    assert len(records) == 3 * len(keys)
    assert set(records["status"]) == {422} and set(records["rows"]) == {0}
    records["key"] = records["request_id"].str.split("-").str[0]
    per_key = records.groupby("key")["model_version"].nunique()
    assert (per_key == 1).all()  # the same entity, the same version, whatever the request id
    chosen = records.groupby("key")["model_version"].first()
    assert set(chosen) == {production, canary}
    assert within_binomial(int((chosen == canary).sum()), len(keys), 0.5)
    assert (records["role"] == records["model_version"].map({production: "production", canary: "canary"})).all()
    assert read_window(MODEL, root=str(log_root), role=None).empty  # nothing was scored


def test_pinned_routes_are_never_rerouted_and_are_logged_as_pinned(
        client: TestClient, service: ModelService, registry: Any, versions: list[int], log_root: Path) -> None:
    production, canary = versions[0], versions[1]
    registry.start_canary(MODEL, canary, share=1.0)
    reload(client)
    assert set(v1_versions(client, ["a", "b", "c"]).values()) == {canary}  # a share of 1: every caller
    for rid in ("a", "b", "c"):
        pinned = client.post(f"/v1/models/{MODEL}/versions/{production}/predict", json={"inputs": ROW,
                                                                                        "request_id": f"p-{rid}"})
        assert pinned.json()["version"] == production
    pinned_v2 = client.post(f"/v2/models/{MODEL}/versions/{production}/infer", json=v2_body("p-v2"))
    assert pinned_v2.json()["model_version"] == str(production)
    service.inference_log.flush()  # type: ignore[union-attr]

    rows = read_window(MODEL, root=str(log_root), role=None).set_index("request_id")
    assert rows.loc[["a", "b", "c"], "role"].eq("canary").all()
    assert rows.loc[["p-a", "p-b", "p-c", "p-v2"], "role"].eq("pinned").all()
    assert rows.loc[["p-a", "p-b", "p-c", "p-v2"], "model_version"].eq(production).all()
    assert read_window(MODEL, root=str(log_root)).empty  # production's own traffic: none here
    roles = read_requests(MODEL, root=str(log_root)).set_index("request_id")["role"]
    assert roles.loc["p-v2"] == "pinned" and roles.loc["a"] == "canary"


# -- a canary that fails, ends, or equals production ------------------------------------------------------------


def test_a_tampered_canary_is_refused_and_production_answers_every_request(
        client: TestClient, service: ModelService, registry: Any, versions: list[int], log_root: Path) -> None:
    """A healthy canary takes every caller; the canary then moves to a version whose artifact was changed:
    it is refused and audited, and production, not the old canary, answers everything, with no failure."""
    production, healthy, tampered = versions
    registry.start_canary(MODEL, healthy, share=1.0)
    reload(client)
    assert set(v1_versions(client, ["x", "y"]).values()) == {healthy}

    path = Path(registry.get_version(MODEL, tampered).artifact_uri.replace("file://", ""))
    path.write_bytes(path.read_bytes()[:-10] + b"tampered!!")
    registry.start_canary(MODEL, tampered, share=1.0, reason="a broken build")
    status = reload(client)
    assert f"{MODEL}:{tampered}" in status["refused"] and f"{MODEL}@canary" not in status["models"]
    assert any(e.action == "load_refused" and e.to_version == tampered for e in registry.history(MODEL))
    listed = client.get("/v1/models").json()["models"][MODEL]
    assert listed["canary_version"] is None and listed["canary_share"] is None

    answered = v1_versions(client, [f"after-{i}" for i in range(300)])  # each a 200 (checked there)
    assert set(answered.values()) == {production}
    service.inference_log.flush()  # type: ignore[union-attr]
    records = read_requests(MODEL, root=str(log_root))
    after = records[records["request_id"].str.startswith("after-")]
    assert len(after) == 300 and set(after["status"]) == {200} and set(after["role"]) == {"production"}


def test_ending_the_canary_sends_every_request_back_to_production(
        client: TestClient, registry: Any, versions: list[int]) -> None:
    production, canary = versions[0], versions[1]
    registry.start_canary(MODEL, canary, share=1.0)
    reload(client)
    ids = [f"r{i}" for i in range(50)]
    assert set(v1_versions(client, ids).values()) == {canary}
    registry.end_canary(MODEL, promote=False, reason="rolled back by hand")
    assert f"{MODEL}@canary" not in reload(client)["models"]
    assert set(v1_versions(client, ids).values()) == {production}
    assert client.get("/v1/models").json()["models"][MODEL]["canary_version"] is None


def test_a_canary_that_is_the_serving_version_is_ignored(client: TestClient, service: ModelService, registry: Any,
                                                         versions: list[int]) -> None:
    canary = versions[1]
    registry.start_canary(MODEL, canary, share=0.5)
    reload(client)
    registry.promote(MODEL, canary, reason="promoted past the canary flow")  # the canary alias stays on it
    status = reload(client)
    assert status["models"][f"{MODEL}@canary"]["version"] == canary  # held, not routed to
    listed = client.get("/v1/models").json()["models"][MODEL]
    assert (listed["version"], listed["canary_version"]) == (canary, None)
    assert set(v1_versions(client, [f"r{i}" for i in range(40)]).values()) == {canary}
    assert f"{MODEL}@canary" not in service.manager.replica_state()[0]


def test_canary_routing_turned_off_leaves_every_request_to_production(
        registry: Any, versions: list[int], log_root: Path) -> None:
    registry.start_canary(MODEL, versions[1], share=1.0)
    service = make_service(registry, log_root, canary_alias=None)
    with TestClient(build_app(service)) as client:
        assert set(v1_versions(client, [f"r{i}" for i in range(20)]).values()) == {versions[0]}
        assert service.manager.canary(MODEL) is None


# -- what the log and the metrics hold --------------------------------------------------------------------------


def test_the_log_holds_both_roles_predictions_and_request_records_with_latency_and_status(
        client: TestClient, service: ModelService, registry: Any, versions: list[int], log_root: Path) -> None:
    production, canary = versions[0], versions[1]
    assert read_requests(MODEL, root=str(log_root)).columns.tolist() == list(REQUEST_COLUMNS)  # none yet
    registry.start_canary(MODEL, canary, share=0.5)
    reload(client)
    started = datetime.now(UTC)
    answered = v1_versions(client, [f"q{i}" for i in range(200)])
    refused = client.post(PREDICT, json={"inputs": {**ROW, "support_calls": "many"}, "request_id": "bad"})
    assert refused.status_code == 422
    service.inference_log.flush()  # type: ignore[union-attr]

    roles = {production: "production", canary: "canary"}
    rows = read_window(MODEL, root=str(log_root), role=None)
    assert set(rows["role"]) == {"production", "canary"}
    assert (rows["role"] == rows["model_version"].map(roles)).all()
    assert dict(zip(rows["request_id"], rows["model_version"], strict=True)) == answered

    records = read_requests(MODEL, started - timedelta(seconds=1), datetime.now(UTC) + timedelta(seconds=1),
                            root=str(log_root))
    assert records.columns.tolist() == list(REQUEST_COLUMNS) and len(records) == 201
    assert records["timestamp"].is_monotonic_increasing
    ok = records[records["request_id"] != "bad"]
    assert set(ok["status"]) == {200} and set(ok["rows"]) == {1} and (ok["latency_ms"] > 0).all()
    assert (ok["role"] == ok["model_version"].map(roles)).all()
    bad = records[records["request_id"] == "bad"].iloc[0]
    assert (bad["status"], bad["rows"], bad["role"]) == (422, 0, roles[int(bad["model_version"])])
    assert read_requests(MODEL, datetime.now(UTC) + timedelta(minutes=1), root=str(log_root)).empty

    metrics = client.get("/metrics").text
    assert f'esteira_gateway_rows_scored_total{{model="{MODEL}",role="canary",version="{canary}"}}' in metrics
    assert f'esteira_gateway_rows_scored_total{{model="{MODEL}",role="production",version="{production}"}}' in metrics


def test_a_slower_canary_shows_its_latency_in_the_request_records(
        threshold_plugin: None, registry: Any, log_root: Path) -> None:
    """The test flavor's ``delay_ms`` makes one version 40 ms slower per call: the request records show it
    on that version's side only (latency is measured around scoring), and ``probability`` is the logistic."""
    signature = {"inputs": [{"name": "x", "dtype": "float64"}],
                 "outputs": [{"name": "label"}, {"name": "margin"}, {"name": "probability"}]}
    fast = registry.register_version("rule", {"feature": "x", "threshold": 0.0}, flavor="threshold",
                                     signature=signature).version
    slow = registry.register_version("rule", {"feature": "x", "threshold": 0.0, "scale": 2.0, "delay_ms": 40},
                                     flavor="threshold", signature=signature).version
    registry.promote("rule", fast)
    registry.start_canary("rule", slow, share=0.5)
    service = make_service(registry, log_root, batch_max_rows=0)
    with TestClient(build_app(service)) as client:
        answers = [client.post("/v1/models/rule/predict", json={"inputs": {"x": 1.0}, "request_id": f"s{i}"}).json()
                   for i in range(40)]
    probability = {a["version"]: a["predictions"][0]["probability"] for a in answers}
    assert probability[fast] == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert probability[slow] == pytest.approx(1 / (1 + math.exp(-0.5)))
    latency = read_requests("rule", root=str(log_root)).groupby("role")["latency_ms"]
    assert latency.min()["canary"] >= 40 > latency.max()["production"]


def test_a_canary_that_crashes_is_a_500_recorded_under_its_role_for_the_guardrail(
        service: ModelService, registry: Any, versions: list[int], log_root: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that raises (not bad input: the model itself) answers 500, and the request record keeps the
    status and the canary's role: the error-rate guardrail counts exactly these."""
    canary = versions[1]
    registry.start_canary(MODEL, canary, share=1.0)
    with TestClient(build_app(service), raise_server_exceptions=False) as test_client:
        reload(test_client)
        (loaded, _share) = service.manager.canary(MODEL)  # type: ignore[misc]

        def crash(columns: Any) -> Any:
            raise RuntimeError("the model's own bug")

        monkeypatch.setattr(loaded.predictor, "predict", crash)
        response = test_client.post(PREDICT, json={"inputs": ROW, "request_id": "boom"})
        assert response.status_code == 500 and "the model's own bug" not in response.text
    service.inference_log.flush()  # type: ignore[union-attr]
    record = read_requests(MODEL, root=str(log_root)).set_index("request_id").loc["boom"]
    assert (record["status"], record["rows"], record["role"], int(record["model_version"])) == (
        500, 0, "canary", canary)

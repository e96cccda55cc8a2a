"""Bad input never gives a 500 and never makes the gateway read more than it should; probes say only ready or not.

The app runs in-process on a real SQLite registry with two tiny models (all-numeric ``churn``, ``mixed`` with
a string feature). Tests that are about what the gateway *reads* call the app the way an ASGI server does,
with a ``receive`` that counts the body bytes the app pulls, so "nothing was read" is measured, not assumed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway.app import build_app
from gateway.config import GatewayConfig
from gateway.service import ModelService
from gateway.testing import (
    SIGNATURE_MIXED,
    SIGNATURE_NUMERIC,
    example_row,
    mixed_classifier,
    numeric_classifier,
)

ROW = example_row()
PREDICT_TOKEN, ADMIN_TOKEN = "p-secret", "a-secret"
BODY_ROUTES = ["/v1/models/churn/predict", "/v1/models/churn/versions/1/predict", "/v2/models/churn/infer",
               "/v2/models/churn/versions/1/infer", "/v1/models/churn/feedback"]
V2_BODY = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [12, 70.5, 2]}]}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``churn`` v1 and ``mixed`` v1 in production; ``churn`` v2 promoted, then its artifact changed on disk."""
    from registry import Registry

    home = tmp_path_factory.mktemp("hardening")
    reg = Registry.from_url(f"sqlite:///{home}/registry.db", str(home / "artifacts"))
    reg.register_version("churn", numeric_classifier(), signature=SIGNATURE_NUMERIC)
    reg.promote("churn", 1)
    reg.register_version("mixed", mixed_classifier(), signature=SIGNATURE_MIXED)
    reg.promote("mixed", 1)
    tampered = reg.register_version("churn", numeric_classifier(seed=3), signature=SIGNATURE_NUMERIC)
    reg.promote("churn", tampered.version, alias="challenger")
    path = Path(tampered.artifact_uri.replace("file://", ""))
    path.write_bytes(path.read_bytes()[:-10] + b"tampered!!")
    yield reg
    reg.close()


def make_app(registry: Any, tmp_path: Path, **overrides: Any) -> FastAPI:
    config = GatewayConfig(**{"database_url": registry.url, "artifact_root": registry.artifacts.root,
                              "log_inference": False, "feast_lookup": False, "project": str(tmp_path),
                              **overrides})
    return build_app(ModelService.from_config(config))


@pytest.fixture
def client(registry: Any, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(make_app(registry, tmp_path, max_string_chars=64)) as test_client:
        yield test_client


def call_asgi(app: FastAPI, path: str, chunks: Iterable[bytes], headers: dict[str, str]) -> tuple[int, Any, int]:
    """POST ``chunks`` through the app's ASGI interface, as a server does; the status, the decoded answer and
    how many body bytes the app pulled from ``receive``."""
    pending = iter(chunks)
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        chunk = next(pending, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), pulled


def assert_error_shape(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    if field is not None:
        assert body.get("field") == field, body
    return body


# -- bodies that cannot be decoded -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_a_deeply_nested_body_is_a_422_on_every_body_route(client: TestClient, path: str) -> None:
    for raw in (b"[" * 20_000, b'{"inputs":' * 20_000):
        response = client.post(path, content=raw, headers={"content-type": "application/json"})
        assert_error_shape(response, 422, "body")


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_bytes_that_are_not_utf8_are_a_422_naming_the_body(client: TestClient, path: str) -> None:
    response = client.post(path, content=b'{"inputs": {"tenure_months": "\xe9"}}',
                           headers={"content-type": "application/json"})
    assert_error_shape(response, 422, "body")


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_json_that_is_not_an_object_is_a_4xx_in_the_error_shape(client: TestClient, path: str) -> None:
    for raw in (b"5" + b" " * 100, b'"' + b"x" * 100 + b'"', b"null", b"NaN", b"1" * 5000, b"[]"):
        response = client.post(path, content=raw)
        assert 400 <= response.status_code < 500 and response.json()["error"], (raw[:20], response.text)


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", None, "text/plain"])
def test_json_is_read_whatever_content_type_the_client_declares(client: TestClient, content_type: str | None) -> None:
    """``curl -d`` declares a form, tritonclient declares nothing: the body is JSON all the same."""
    headers = {"content-type": content_type} if content_type else {}
    answer = client.post("/v1/models/churn/predict", content=json.dumps({"inputs": ROW}), headers=headers)
    assert answer.status_code == 200, answer.text
    assert client.post("/v2/models/churn/infer", content=json.dumps(V2_BODY), headers=headers).status_code == 200
    label = {"request_id": answer.json()["request_id"], "label": 1}
    feedback = client.post("/v1/models/churn/feedback", content=json.dumps(label), headers=headers)
    assert feedback.status_code == 202, feedback.text


# -- auth first, then at most max_body_bytes -------------------------------------------------------------------


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_the_token_is_checked_before_any_of_the_body_is_read(registry: Any, tmp_path: Path, path: str) -> None:
    app = make_app(registry, tmp_path, predict_token=PREDICT_TOKEN, admin_token=ADMIN_TOKEN)
    status, body, pulled = call_asgi(app, path, [b"[" * 20_000], {"content-type": "application/json",
                                                                  "content-length": "20000"})
    assert (status, body["field"], pulled) == (401, "authorization", 0)


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_a_body_larger_than_the_cap_is_refused_before_it_is_read(registry: Any, tmp_path: Path, path: str) -> None:
    app = make_app(registry, tmp_path, max_body_bytes=4096)
    status, body, pulled = call_asgi(app, path, [b" " * 5000], {"content-length": "5000"})
    assert (status, body["field"], pulled) == (413, "body", 0)
    assert "4096" in body["error"]


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_a_chunked_body_is_read_only_up_to_the_cap(registry: Any, tmp_path: Path, path: str) -> None:
    """No Content-Length: the gateway reads until the body passes the cap, then stops and refuses."""
    app = make_app(registry, tmp_path, max_body_bytes=4096)
    status, body, pulled = call_asgi(app, path, [b" " * 1024] * 64, {"transfer-encoding": "chunked"})
    assert (status, body["field"]) == (413, "body")
    assert pulled <= 4096 + 1024


def test_a_body_within_the_cap_is_served(registry: Any, tmp_path: Path) -> None:
    app = make_app(registry, tmp_path, max_body_bytes=4096)
    raw = json.dumps({"inputs": [ROW] * 10}).encode()
    with TestClient(app) as client:
        assert client.post("/v1/models/churn/predict", content=raw).status_code == 200
        chunked = client.post("/v1/models/churn/predict", content=iter([raw[:100], raw[100:]]))
        assert chunked.status_code == 200, chunked.text


# -- caps before any array is built ----------------------------------------------------------------------------


def test_strings_longer_than_the_cap_are_refused_naming_the_field(client: TestClient) -> None:
    long = "x" * 65
    mixed = example_row(mixed=True)
    assert client.post("/v1/models/mixed/predict", json={"inputs": {**mixed, "plan": "x" * 64}}).status_code == 200
    assert_error_shape(client.post("/v1/models/mixed/predict", json={"inputs": {**mixed, "plan": long}}),
                       422, "inputs.plan")
    assert_error_shape(client.post("/v1/models/mixed/predict", json={"inputs": [mixed, {**mixed, "plan": long}]}),
                       422, "inputs[1].plan")
    assert_error_shape(client.post("/v1/models/mixed/predict", json={"inputs": {**mixed, long: 1}}), 422, "inputs")
    tensors = [{"name": name, "shape": [1], "datatype": "BYTES" if name == "plan" else "FP64",
                "data": [long if name == "plan" else value]} for name, value in mixed.items()]
    assert_error_shape(client.post("/v2/models/mixed/infer", json={"inputs": tensors}), 422, "inputs[3].data[0]")
    assert_error_shape(client.post("/v1/models/churn/feedback", json={"request_id": "r", "label": long}),
                       422, "label")


# -- every refusal in the error shape --------------------------------------------------------------------------


def test_unknown_routes_and_methods_answer_in_the_error_shape(client: TestClient) -> None:
    assert_error_shape(client.get("/v3/nothing"), 404, "path")
    assert_error_shape(client.get("/v1/models/churn/predict"), 405, "method")
    assert_error_shape(client.get("/v2/models/nope/ready"), 404, "name")


@pytest.mark.parametrize("path", ["/v1/models/-churn/predict", "/v1/models/a%20b/versions/1/predict",
                                  "/v1/models/churn%0A/predict", "/v2/models/a%2Ab/infer"])
def test_names_the_registry_could_never_hold_are_refused_before_any_lookup(client: TestClient, path: str) -> None:
    assert_error_shape(client.post(path, json={"inputs": ROW}), 422, "path.name")


# -- what the public is told -----------------------------------------------------------------------------------


def test_the_public_readiness_probe_says_only_ready_and_status(registry: Any, tmp_path: Path) -> None:
    app = make_app(registry, tmp_path, predict_token=PREDICT_TOKEN, admin_token=ADMIN_TOKEN)
    with TestClient(app) as client:
        for headers in ({}, {"Authorization": f"Bearer {PREDICT_TOKEN}"}, {"Authorization": "Bearer wrong"}):
            response = client.get("/v2/health/ready", headers=headers)
            assert (response.status_code, response.json()) == (200, {"ready": True, "status": "ok"})
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        detail = client.get("/v2/health/ready", headers=admin).json()
        assert detail == client.get("/v1/admin/status", headers=admin).json()
        assert "churn:2" in detail["refused"] and detail["project"] == str(tmp_path)


def test_refusals_and_outages_do_not_echo_backend_errors(registry: Any, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A refused version (409) and a feature store that cannot be opened (503): the client is told what
    failed; the paths, hashes and exception text go to the gateway's log only."""
    signature = {**SIGNATURE_NUMERIC, "entity_keys": [{"name": "customer_id", "dtype": "int64"}]}
    mv = registry.register_version("keyed", numeric_classifier(), signature=signature, feature_service="keyed_v1")
    registry.promote("keyed", mv.version)
    no_project = tmp_path / "no-feature-store"
    no_project.mkdir()
    app = make_app(registry, tmp_path, feast_lookup=True, project=str(no_project))
    with TestClient(app) as client:
        refused = assert_error_shape(client.post("/v1/models/churn/versions/2/predict", json={"inputs": ROW}),
                                     409, "version")
        outage = assert_error_shape(client.post("/v1/models/keyed/predict",
                                                json={"entities": {"customer_id": 1}}), 503)
    sha = registry.get_version("churn", 2).artifact_sha256
    for answer in (refused, outage):
        text = json.dumps(answer)
        assert str(tmp_path) not in text and sha[:12] not in text and "Error" not in text, text
    assert str(no_project) in caplog.text  # the operator still has the cause


# -- what a body at the cap costs ------------------------------------------------------------------------------


@pytest.mark.slow  # about 20 s: tracemalloc slows the decode of two 8 MiB bodies
@pytest.mark.parametrize(("shape", "unit", "bound"), [("rows of the churn example's 14 features", None, 16),
                                                       ("empty objects", b"{}", 37)])
def test_decoding_a_body_at_the_cap_holds_at_most_a_known_multiple_of_it(shape: str, unit: bytes | None,
                                                                          bound: int) -> None:
    """The memory ``max_body_bytes`` bounds: the decode's peak (tracemalloc), rows of features and the worst
    shape found (one small object per two bytes). Run with ``-s`` to see the figures."""
    import tracemalloc

    from gateway.app import check_strings, decode_json

    config = GatewayConfig()
    row = {"plan_type": "basic", "contract_type": "monthly", "payment_method": "card", "region": "north",
           "tenure_months": 3, "monthly_charges": 79.5, "logins_7d": 1, "usage_minutes_7d": 40.0,
           "support_tickets_30d": 2, "payment_failures_90d": 1, "days_since_last_login": 9,
           "minutes_per_login": 40.0, "renewal_within_7d": 1, "log_days_until_renewal": 1.6}
    item = unit or json.dumps(row, separators=(",", ":")).encode()
    raw = b'{"inputs":[' + b",".join([item] * ((config.max_body_bytes - 13) // (len(item) + 1))) + b"]}"
    assert config.max_body_bytes - len(raw) < len(item) + 1
    tracemalloc.start()
    try:
        check_strings(decode_json(raw), config.max_string_chars)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"\n{shape}: a {len(raw) / 2**20:.2f} MiB body decodes at a peak of {peak / 2**20:.0f} MiB "
          f"({peak / len(raw):.1f}x)")
    assert peak < bound * len(raw)

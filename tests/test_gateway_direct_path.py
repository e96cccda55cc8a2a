"""The predict routes' direct path answers exactly what FastAPI's own handling of the same routes answers.

The gateway app answers ``POST /v1/models/{name}[/versions/{v}]/predict`` without FastAPI's routing and
dependency solving when FastAPI would accept the path and headers as they are (``gateway.app.GatewayAPI``).
Every request here is sent twice to the same app, once with the direct path and once with it switched off,
and the two answers must be the same: status, error body, headers, predictions. The cases cover the plain
request, tokens, names and versions FastAPI refuses or reads differently, the request-id header, bodies that
are too large, not JSON or not the envelope, and routes next to the predict routes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.app import build_app
from gateway.config import GatewayConfig
from gateway.service import ModelService
from gateway.testing import SIGNATURE_NUMERIC, example_row, numeric_classifier

TOKEN = "s3cret-predict"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROW = example_row()


@pytest.fixture
def service(registry: Any, esteira_home: Path) -> Iterator[ModelService]:
    """``churn`` v1 in production, v2 servable by number; a predict token; small body and string caps. Started
    (models loaded) through one app's lifespan; the apps of the tests share it."""
    v1 = registry.register_version("churn", numeric_classifier("logistic", seed=0), signature=SIGNATURE_NUMERIC)
    v2 = registry.register_version("churn", numeric_classifier("logistic", seed=3), signature=SIGNATURE_NUMERIC)
    registry.promote("churn", v1.version)
    registry.promote("churn", v2.version, alias="staging")
    started = ModelService.from_config(GatewayConfig(
        database_url=registry.url, artifact_root=registry.artifacts.root, inference_log_uri=str(esteira_home / "log"),
        feast_lookup=False, shadow_alias=None, predict_token=TOKEN, max_body_bytes=2048, max_string_chars=64,
        profile_in_subprocess=False))
    with TestClient(build_app(started)):
        yield started


@pytest.fixture
def app(service: ModelService) -> Any:
    return build_app(service)


def _answer(app: Any, direct: bool, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
    """One request, through the direct path or through FastAPI only; the parts a client sees."""
    saved = app.direct
    taken: list[bool] = []

    async def recording(scope: Any, receive: Any, send: Any) -> bool:
        answered = await saved(scope, receive, send)
        taken.append(answered)
        return answered

    app.direct = recording if direct else None
    try:
        response = TestClient(app, raise_server_exceptions=False).request(method, path, follow_redirects=False,
                                                                           **kwargs)
    finally:
        app.direct = saved
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else \
        response.text
    headers = {k: v for k, v in response.headers.items() if k in ("content-type", "retry-after", "location")}
    return response.status_code, headers, {"body": body, "direct": any(taken)} if direct else {"body": body}


CASES: list[tuple[str, str, dict[str, Any], bool]] = [
    # (method, path, request arguments, whether the direct path answers it)
    ("POST", "/v1/models/churn/predict", {"json": {"inputs": ROW}, "headers": {**AUTH, "x-request-id": "r-1"}}, True),
    ("POST", "/v1/models/churn/predict", {"json": {"inputs": [ROW, ROW], "request_id": "r-2"}, "headers": AUTH}, True),
    ("POST", "/v1/models/churn/versions/2/predict", {"json": {"inputs": ROW, "request_id": "r"}, "headers": AUTH}, True),
    ("POST", "/v1/models/churn/versions/1/predict", {"json": {"inputs": ROW, "request_id": "r"}, "headers": AUTH}, True),
    ("POST", "/v1/models/churn/versions/99/predict", {"json": {"inputs": ROW}, "headers": AUTH}, True),
    ("POST", "/v1/models/nope/predict", {"json": {"inputs": ROW}, "headers": AUTH}, True),
    ("POST", "/v1/models/churn/predict", {"json": {"inputs": {"tenure_months": 1}}, "headers": AUTH}, True),
    ("POST", "/v1/models/churn/predict", {"json": {"inputz": ROW}, "headers": AUTH}, True),
    ("POST", "/v1/models/churn/predict", {"json": {"entities": {"id": 1}}, "headers": AUTH}, True),
    ("POST", "/v1/models/churn/predict", {"content": b"{not json", "headers": AUTH}, True),
    ("POST", "/v1/models/churn/predict", {"content": json.dumps({"inputs": [ROW] * 40}), "headers": AUTH}, True),
    ("POST", "/v1/models/churn/predict", {"json": {"inputs": {**ROW, "support_calls": "x" * 100}}, "headers": AUTH},
     True),
    ("POST", "/v1/models/churn/predict", {"json": {"inputs": ROW}, "headers": {**AUTH, "x-request-id": ""}}, True),
    ("POST", "/v1/models/churn/predict", {"json": {"inputs": ROW}, "headers": {**AUTH, "x-request-id": "i" * 128}},
     True),
    ("POST", "/v1/models/churn/predict", {"json": {"inputs": ROW}}, True),  # no token: refused by the same check
    ("POST", "/v1/models/churn/predict", {"json": {"inputs": ROW}, "headers": {"Authorization": "Bearer nope"}}, True),
    ("POST", "/v1/models/churn/predict", {"json": {"inputs": ROW}, "headers": {"Authorization": "Basic eDp5"}}, True),
    # FastAPI answers these itself: the direct path steps aside before reading anything
    ("POST", "/v1/models/churn/predict", {"json": {"inputs": ROW}, "headers": {**AUTH, "x-request-id": "i" * 129}},
     False),
    ("POST", "/v1/models/churn/versions/007/predict", {"json": {"inputs": ROW, "request_id": "r"}, "headers": AUTH},
     False),
    ("POST", "/v1/models/churn/versions/0/predict", {"json": {"inputs": ROW}, "headers": AUTH}, False),
    ("POST", "/v1/models/churn/versions/-1/predict", {"json": {"inputs": ROW}, "headers": AUTH}, False),
    ("POST", "/v1/models/churn/versions/2147483648/predict", {"json": {"inputs": ROW}, "headers": AUTH}, False),
    ("POST", "/v1/models/churn/versions/x/predict", {"json": {"inputs": ROW}, "headers": AUTH}, False),
    ("POST", "/v1/models/-churn/predict", {"json": {"inputs": ROW}, "headers": AUTH}, False),
    ("POST", f"/v1/models/{'c' * 129}/predict", {"json": {"inputs": ROW}, "headers": AUTH}, False),
    ("POST", "/v1/models/churn/predict/", {"json": {"inputs": ROW}, "headers": AUTH}, False),
    ("GET", "/v1/models/churn/predict", {"headers": AUTH}, False),
    ("POST", "/v1/models/churn/feedback", {"json": {"request_id": "r-1", "label": 1}, "headers": AUTH}, False),
    ("POST", "/v2/models/churn/infer", {"json": {"inputs": []}, "headers": AUTH}, False),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "direct"), CASES,
                         ids=[f"{m} {p[:48]} {json.dumps(k, default=str)[:60]}" for m, p, k, _ in CASES])
def test_direct_and_fastapi_answers_are_the_same(app: Any, method: str, path: str, kwargs: dict[str, Any],
                                                 direct: bool) -> None:
    status, headers, fast = _answer(app, True, method, path, **kwargs)
    assert fast.pop("direct") is direct
    slow = _answer(app, False, method, path, **kwargs)
    given = kwargs.get("headers", {}).get("x-request-id") or (kwargs.get("json") or {}).get("request_id")
    if status == 200 and not given:  # a generated id: one of its own each time
        for answer in (fast["body"], slow[2]["body"]):
            assert len(answer.pop("request_id")) == 32
    assert (status, headers, fast) == slow


def test_the_cases_cover_answers_and_refusals(app: Any) -> None:
    statuses = {_answer(app, True, method, path, **kwargs)[0] for method, path, kwargs, _ in CASES}
    assert {200, 401, 404, 405, 413, 422} <= statuses


def test_the_direct_path_steps_aside_for_user_middleware(app: Any) -> None:
    """Middleware added to the app must see predictions too: the direct path steps aside for them."""
    seen: list[str] = []

    @app.middleware("http")
    async def count(request: Any, call_next: Any) -> Any:
        seen.append(request.url.path)
        return await call_next(request)

    answer = TestClient(app).post("/v1/models/churn/predict", json={"inputs": ROW}, headers=AUTH)
    assert answer.status_code == 200 and seen == ["/v1/models/churn/predict"]

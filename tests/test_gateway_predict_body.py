"""The predict routes read their body by hand (orjson + envelope checks): same answers as FastAPI's body model.

Every body the hand check accepts must be what pydantic would have built; everything else goes the
pydantic way, so errors keep FastAPI's locations and messages. The body is JSON whatever content type
the client declares.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient

from gateway.app import _PREDICT_ADAPTER, _fast_predict_body, _validate_predict_body, build_app, decode_json
from gateway.config import GatewayConfig
from gateway.errors import InvalidInput
from gateway.models import ModelManager
from gateway.service import ModelService

ROW = {"a": 1.0, "b": "x"}
BODIES: list[Any] = [
    {"inputs": ROW}, {"inputs": [ROW, ROW]}, {"inputs": []}, {"inputs": None}, {"entities": {"id": 1}},
    {"entities": [{"id": 1}], "request_data": {"d": 2}}, {"inputs": ROW, "request_id": "r1"},
    {"inputs": ROW, "request_id": "é" * 128}, {"inputs": ROW, "request_id": "x" * 129}, {"inputs": ROW, "request_id": ""},
    {"inputs": ROW, "request_id": 5}, {"inputs": 5}, {"inputs": "x"}, {"inputs": [1]}, {"inputs": [ROW, [1]]},
    {"inputz": ROW}, {}, [], 5, "s", True, {"inputs": True}, {"request_data": [1]}, {"inputs": ROW, "x": 1},
]


@pytest.mark.parametrize("body", BODIES, ids=lambda b: json.dumps(b)[:40])
def test_fast_envelope_check_agrees_with_pydantic(body: Any) -> None:
    fast = _fast_predict_body(body)
    try:
        expected = _PREDICT_ADAPTER.validate_python(body, from_attributes=True)
    except Exception:  # noqa: BLE001 - pydantic refuses: the hand check must hand over
        assert fast is None
        return
    if fast is not None:
        assert fast.model_dump() == expected.model_dump()


def test_slow_path_reports_fastapi_errors() -> None:
    extra = _validate_predict_body(decode_json(b'{"inputz": {}}'))
    assert isinstance(extra, RequestValidationError) and extra.errors()[0]["loc"] == ("body", "inputz")
    wrong = _validate_predict_body(decode_json(b'{"inputs": 5}'))
    assert isinstance(wrong, RequestValidationError) and wrong.errors()[0]["loc"][:2] == ("body", "inputs")


@pytest.mark.parametrize("raw", [b"", b"{", b"[" * 20_000, b'{"inputs": "\xe9"}'])
def test_a_body_that_is_not_json_is_refused_naming_the_body(raw: bytes) -> None:
    with pytest.raises(InvalidInput) as info:
        decode_json(raw)
    assert info.value.field == "body"


def test_json_that_only_the_standard_library_reads_is_still_accepted() -> None:
    assert decode_json(b'{"inputs": {"a": NaN, "b": 123456789012345678901234567890}}')["inputs"]["b"] == \
        123456789012345678901234567890


def test_openapi_still_documents_the_predict_body() -> None:
    service = ModelService(GatewayConfig(), ModelManager(GatewayConfig(), lambda: None))  # type: ignore[arg-type]
    doc = TestClient(build_app(service)).get("/openapi.json").json()
    for path in ("/v1/models/{name}/predict", "/v1/models/{name}/versions/{version}/predict"):
        body = doc["paths"][path]["post"]["requestBody"]
        assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/PredictRequest"}
    assert set(doc["components"]["schemas"]["PredictRequest"]["properties"]) == {
        "inputs", "entities", "request_data", "request_id"}

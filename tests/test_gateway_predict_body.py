"""The predict routes read their body by hand (orjson + envelope checks): same answers as FastAPI's body model.

Every body the hand check accepts must be what pydantic would have built; everything else goes the
pydantic way, so errors keep FastAPI's locations and messages.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient

from gateway.app import _PREDICT_ADAPTER, _fast_predict_body, _slow_predict_body, build_app
from gateway.config import GatewayConfig
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
    with pytest.raises(RequestValidationError) as info:
        _slow_predict_body(b"{", "application/json")
    assert info.value.errors()[0]["loc"] == ("body", 1)
    missing = _slow_predict_body(b"", "application/json")
    assert isinstance(missing, RequestValidationError) and missing.errors()[0]["msg"] == "Field required"
    extra = _slow_predict_body(b'{"inputz": {}}', "application/json")
    assert isinstance(extra, RequestValidationError) and extra.errors()[0]["loc"] == ("body", "inputz")
    assert isinstance(_slow_predict_body(b'{"inputs": {}}', "text/plain"), RequestValidationError)


def test_openapi_still_documents_the_predict_body() -> None:
    service = ModelService(GatewayConfig(), ModelManager(GatewayConfig(), lambda: None))  # type: ignore[arg-type]
    doc = TestClient(build_app(service)).get("/openapi.json").json()
    for path in ("/v1/models/{name}/predict", "/v1/models/{name}/versions/{version}/predict"):
        body = doc["paths"][path]["post"]["requestBody"]
        assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/PredictRequest"}
    assert set(doc["components"]["schemas"]["PredictRequest"]["properties"]) == {
        "inputs", "entities", "request_data", "request_id"}

"""The gateway's OpenAPI document is true: what it answers is what ``/openapi.json`` says it answers.

The gateway runs under uvicorn on 127.0.0.1 with a prediction and an admin token, two served models (one
numeric, one with a string feature; their per-model paths are in the document) on a real SQLite registry.
A fast test checks chosen answers (every status a route documents, the error shape, the 202 of feedback)
against the document; a slow one runs ``schemathesis run --checks all`` over every operation and expects no
server error and no conformance failure.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis

from gateway.app import build_app
from gateway.config import GatewayConfig
from gateway.service import ModelService
from gateway.testing import (
    example_row,
    serve_example_models,
)

TOKEN = "schemathesis-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ANSWERED = "answered-before-the-tests"


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_example_models(tmp_path_factory.mktemp("schemathesis"), "churn", "mixed",
                              predict_token=TOKEN, admin_token=TOKEN) as url:
        answered = httpx.post(f"{url}/v1/models/churn/predict", headers=AUTH,
                              json={"inputs": example_row(), "request_id": ANSWERED})  # feedback refers to it
        answered.raise_for_status()
        yield url


def infer_body(row: dict[str, Any]) -> dict[str, Any]:
    datatypes = {int: "INT64", float: "FP64", str: "BYTES"}
    return {"inputs": [{"name": k, "shape": [1], "datatype": datatypes[type(v)], "data": [v]} for k, v in row.items()]}


def binary_body_past_its_end(row: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(infer_body(row)).encode()
    return header, {**AUTH, "Inference-Header-Content-Length": str(len(header) + 10)}


# (method, documented path, concrete path, request keyword arguments, expected status)
ANSWERS: list[tuple[str, str, str, dict[str, Any], int]] = [
    ("GET", "/v2", "/v2", {}, 200),
    ("GET", "/v2/health/live", "/v2/health/live", {}, 200),
    ("GET", "/v2/health/ready", "/v2/health/ready", {}, 200),
    ("GET", "/v2/health/ready", "/v2/health/ready", {"headers": AUTH}, 200),
    ("GET", "/v2/models/{name}/ready", "/v2/models/churn/ready", {}, 200),
    ("GET", "/v2/models/{name}/ready", "/v2/models/nope/ready", {}, 404),
    ("GET", "/v2/models/{name}/versions/{version}/ready", "/v2/models/churn/versions/9/ready", {}, 404),
    ("GET", "/v2/models/{name}", "/v2/models/churn", {"headers": AUTH}, 200),
    ("GET", "/v2/models/{name}", "/v2/models/churn", {}, 401),
    ("POST", "/v2/models/{name}/infer", "/v2/models/mixed/infer",
     {"json": infer_body(example_row(mixed=True)), "headers": AUTH}, 200),
    ("POST", "/v2/models/{name}/infer", "/v2/models/mixed/infer",
     dict(zip(("content", "headers"), binary_body_past_its_end(example_row(mixed=True)), strict=True)), 400),
    ("POST", "/v2/models/{name}/versions/{version}/infer", "/v2/models/churn/versions/7/infer",
     {"json": infer_body(example_row()), "headers": AUTH}, 404),
    ("POST", "/v1/models/{name}/predict", "/v1/models/churn/predict",
     {"json": {"inputs": example_row()}, "headers": AUTH}, 200),
    ("POST", "/v1/models/mixed/predict", "/v1/models/mixed/predict",
     {"json": {"inputs": example_row(mixed=True), "request_id": None}, "headers": AUTH}, 200),
    ("POST", "/v1/models/{name}/feedback", "/v1/models/churn/feedback",
     {"json": {"request_id": ANSWERED, "label": 1}, "headers": AUTH}, 202),
    ("GET", "/v1/models", "/v1/models", {"headers": AUTH}, 200),
    ("GET", "/v1/admin/status", "/v1/admin/status", {"headers": AUTH}, 200),
    ("GET", "/v1/admin/status", "/v1/admin/status", {}, 401),
    ("POST", "/v1/admin/reload", "/v1/admin/reload", {"headers": AUTH}, 200),
    ("GET", "/metrics", "/metrics", {}, 401),
]


@pytest.fixture(scope="module")
def document(gateway_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{gateway_url}/openapi.json")


@pytest.mark.parametrize(("method", "documented", "path", "kwargs", "status"), ANSWERS,
                         ids=[f"{m} {p} {s}{' with token' if 'headers' in k else ''}" for m, _, p, k, s in ANSWERS])
def test_each_answer_is_one_the_document_describes(gateway_url: str, document: Any, method: str, documented: str,
                                                   path: str, kwargs: dict[str, Any], status: int) -> None:
    response = httpx.request(method, f"{gateway_url}{path}", timeout=30, **kwargs)
    assert response.status_code == status, response.text
    operation = document[documented][method]
    assert str(status) in operation.definition.raw["responses"], f"{status} is not documented"
    operation.validate_response(response)  # the body against the documented schema; raises, naming the mismatch
    if status >= 400:
        assert set(response.json()) >= {"error", "field"}, response.text


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_conformance_failure(gateway_url: str, tmp_path: Path) -> None:
    """Every operation, every check, a bounded run: at most 10 examples per operation and phase, 75 s in all.

    Run from ``tmp_path``: schemathesis keeps the failures it found under ``.schemathesis/`` in the working
    directory and replays them first on the next run.
    """
    executable = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    command = [executable, "--no-color", "run", f"{gateway_url}/openapi.json", "--checks", "all",
               "--header", f"Authorization: Bearer {TOKEN}", "--max-examples", "10", "--max-time", "40",
               "--seed", "1", "--workers", "1", "--request-timeout", "10", "--output-truncate", "false"]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]


def test_a_gateway_without_tokens_documents_no_bearer(registry: Any, esteira_home: Path) -> None:
    """No token configured: every route is open, and the document says so (no security, no 401)."""
    service = ModelService.from_config(GatewayConfig(
        database_url=registry.url, artifact_root=registry.artifacts.root, feast_lookup=False,
        inference_log_uri=str(esteira_home / "log"), predict_token=None, admin_token=None))
    operations = [op for ops in build_app(service).openapi()["paths"].values() for op in ops.values()]
    assert len(operations) >= 15
    assert not [op["operationId"] for op in operations if "security" in op or "401" in op["responses"]]

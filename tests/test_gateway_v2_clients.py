"""Standard Open Inference Protocol v2 clients against the gateway, over real HTTP.

Each client is driven only by what the gateway publishes (``GET /v2/models/{name}``), as a client that knows
nothing of esteira would be: tritonclient's HTTP client (the binary tensor data extension on and off, binary
and JSON outputs) and the protocol's own generated client (``open-inference-openapi``). Their predictions must
equal the plain ``/v1`` route's for the same rows, for a numeric model and one with a string (BYTES) input.
The gateway runs under uvicorn on 127.0.0.1 with a prediction token, on a real SQLite registry; no Ray.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from open_inference.openapi import InferenceRequest, RequestInput
from open_inference.openapi.client import OpenInferenceClient
from tritonclient.utils import triton_to_np_dtype

from gateway.testing import (
    SIGNATURE_MIXED,
    SIGNATURE_NUMERIC,
    serve_example_models,
    training_frame,
)

TOKEN = "v2-clients-token"
SIGNATURES = {"churn": SIGNATURE_NUMERIC, "mixed": SIGNATURE_MIXED}
MODELS = tuple(SIGNATURES)


def auth() -> dict[str, str]:
    """A fresh header dict per call: tritonclient writes its own headers into the dict it is given."""
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_example_models(tmp_path_factory.mktemp("v2-clients"), "churn", "mixed", predict_token=TOKEN) as url:
        yield url


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    frame, _ = training_frame(n=7, seed=11)
    return frame.to_dict("records")


def v1_predictions(url: str, model: str, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The plain JSON route's answer for the same rows (the model's own features of them), as columns."""
    features = [item["name"] for item in SIGNATURES[model]["inputs"]]
    inline = [{name: row[name] for name in features} for row in rows]
    response = httpx.post(f"{url}/v1/models/{model}/predict", json={"inputs": inline}, headers=auth())
    response.raise_for_status()
    predictions = response.json()["predictions"]
    return {key: np.array([p[key] for p in predictions]) for key in predictions[0]}


def triton_predictions(url: str, model: str, rows: list[dict[str, Any]], *, binary_inputs: bool,
                       binary_outputs: bool | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """tritonclient built from the metadata alone; ``binary_outputs=None`` names no outputs (the client then
    asks for all of them as binary data). Returns the outputs and the response's JSON part."""
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    try:
        metadata = client.get_model_metadata(model, headers=auth())
        inputs = []
        for tensor in metadata["inputs"]:
            infer_input = triton.InferInput(tensor["name"], [len(rows)], tensor["datatype"])
            values = np.array([row[tensor["name"]] for row in rows], dtype=triton_to_np_dtype(tensor["datatype"]))
            infer_input.set_data_from_numpy(values, binary_data=binary_inputs)
            inputs.append(infer_input)
        outputs = None if binary_outputs is None else [
            triton.InferRequestedOutput(tensor["name"], binary_data=binary_outputs) for tensor in metadata["outputs"]]
        result = client.infer(model, inputs, outputs=outputs, headers=auth())
        return {t["name"]: result.as_numpy(t["name"]) for t in metadata["outputs"]}, result.get_response()
    finally:
        client.close()


def open_inference_predictions(url: str, model: str, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The Open Inference Protocol's generated client, built from the metadata alone."""
    with httpx.Client(headers=auth(), timeout=30) as http:
        client = OpenInferenceClient(base_url=url, httpx_client=http)
        metadata = client.read_model_metadata(model)
        request = InferenceRequest(inputs=[
            RequestInput(name=t.name, shape=[len(rows)], datatype=t.datatype, data=[row[t.name] for row in rows])
            for t in metadata.inputs or []])
        response = client.model_infer(model, request=request)
    return {output.name: np.array(output.data.__root__) for output in response.outputs}


def assert_same_predictions(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(got) == set(expected)
    np.testing.assert_array_equal(got["label"].reshape(-1), expected["label"])
    np.testing.assert_allclose(got["probability"].reshape(-1), expected["probability"], rtol=1e-12)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("binary_inputs", "binary_outputs"),
                         [(True, None), (True, True), (True, False), (False, True), (False, False)],
                         ids=["client-defaults", "binary-both-ways", "binary-in-json-out", "json-in-binary-out",
                              "json-both-ways"])
def test_tritonclient_from_metadata_predicts_like_v1(gateway_url: str, rows: list[dict[str, Any]], model: str,
                                                       binary_inputs: bool, binary_outputs: bool | None) -> None:
    got, response = triton_predictions(gateway_url, model, rows, binary_inputs=binary_inputs,
                                       binary_outputs=binary_outputs)
    assert_same_predictions(got, v1_predictions(gateway_url, model, rows))
    for output in response["outputs"]:  # the answer took the form the client asked for
        if binary_outputs is False:
            assert "data" in output and "binary_data_size" not in (output.get("parameters") or {})
        else:
            assert "data" not in output and output["parameters"]["binary_data_size"] > 0


@pytest.mark.parametrize("model", MODELS)
def test_open_inference_client_from_metadata_predicts_like_v1(gateway_url: str, rows: list[dict[str, Any]],
                                                               model: str) -> None:
    assert_same_predictions(open_inference_predictions(gateway_url, model, rows),
                            v1_predictions(gateway_url, model, rows))


def test_server_metadata_declares_the_binary_extension(gateway_url: str) -> None:
    with httpx.Client(timeout=30) as http:
        metadata = OpenInferenceClient(base_url=gateway_url, httpx_client=http).read_server_metadata()
    assert "binary_tensor_data" in metadata.extensions
    client = triton.InferenceServerClient(gateway_url.removeprefix("http://"))
    try:
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    finally:
        client.close()


# -- malformed binary bodies: a 400 or 422 naming the part at fault, never a 500 ----------------------------------


def int64s(*values: int) -> bytes:
    return np.array(values, dtype="<i8").tobytes()


def fp64s(*values: float) -> bytes:
    return np.array(values, dtype="<f8").tobytes()


def strings(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def binary_request(tensors: list[tuple[str, str, list[int], bytes]], *, header_length: int | str | None = None,
                   sizes: list[Any] | None = None, extra: dict[str, Any] | None = None,
                   trailing: bytes = b"") -> tuple[bytes, dict[str, str]]:
    """A binary-extension body: ``(name, datatype, shape, raw)`` per input. ``sizes`` overrides the declared
    ``binary_data_size`` of each, ``header_length`` the header, ``extra`` adds keys to the inputs,
    ``trailing`` adds bytes after the last tensor."""
    inputs = [{"name": name, "datatype": datatype, "shape": shape,
               "parameters": {"binary_data_size": len(raw) if sizes is None else sizes[i]}, **(extra or {})}
              for i, (name, datatype, shape, raw) in enumerate(tensors)]
    header = json.dumps({"inputs": inputs}).encode()
    body = header + b"".join(raw for *_, raw in tensors) + trailing
    return body, {**auth(), "Inference-Header-Content-Length": str(len(header) if header_length is None
                                                                    else header_length)}


def mixed_tensors(plan: bytes = strings(b"basic", b"premium"), rows: int = 2,
                  tenure: bytes = int64s(3, 40)) -> list[tuple[str, str, list[int], bytes]]:
    return [("tenure_months", "INT64", [rows], tenure), ("monthly_charges", "FP64", [rows], fp64s(70.5, 20.0)),
            ("support_calls", "INT64", [rows], int64s(1, 0)), ("plan", "BYTES", [rows], plan)]


def test_a_hand_built_binary_request_is_answered(gateway_url: str) -> None:
    body, headers = binary_request(mixed_tensors())
    response = httpx.post(f"{gateway_url}/v2/models/mixed/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert [o["shape"] for o in response.json()["outputs"]] == [[2], [2]]


@pytest.mark.parametrize(("request_parts", "status", "field"), [
    (lambda: binary_request(mixed_tensors(), header_length=10**6), 400, "inference-header-content-length"),
    (lambda: binary_request(mixed_tensors(), header_length="twelve"), 400, "inference-header-content-length"),
    (lambda: binary_request(mixed_tensors(), trailing=bytes(8)), 400, "inference-header-content-length"),
    (lambda: binary_request(mixed_tensors(), sizes=[16, 16, 16, 400]), 400, "inputs[3].parameters.binary_data_size"),
    (lambda: binary_request(mixed_tensors(tenure=int64s(3, 40, 5))), 400, "inputs[0].parameters.binary_data_size"),
    (lambda: binary_request(mixed_tensors(tenure=int64s(3, 40)[:-1])), 400,
     "inputs[0].parameters.binary_data_size"),
    (lambda: binary_request(mixed_tensors(plan=strings(b"basic") + struct.pack("<I", 50) + b"x")), 400,
     "inputs[3].parameters.binary_data_size"),
    (lambda: binary_request(mixed_tensors(plan=strings(b"basic", b"\xff\xfe"))), 422, "inputs[3].data"),
    (lambda: binary_request(mixed_tensors(), sizes=[16, 16, 16, "20"]), 400, "inputs[3].parameters.binary_data_size"),
    (lambda: binary_request(mixed_tensors(), extra={"data": [1, 2]}), 400, "inputs[0].data"),
], ids=["header-length-past-the-body", "header-length-not-a-number", "sizes-leave-bytes-over",
        "sizes-run-past-the-body", "more-values-than-the-shape", "not-a-whole-number-of-values",
        "bytes-element-cut-short", "bytes-not-utf8", "size-not-an-integer", "data-and-binary-both"])
def test_malformed_binary_bodies_are_refused_naming_the_part(gateway_url: str, request_parts: Any, status: int,
                                                             field: str) -> None:
    body, headers = request_parts()
    response = httpx.post(f"{gateway_url}/v2/models/mixed/infer", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field and response.json()["error"]


def test_extensions_the_gateway_does_not_implement_are_refused(gateway_url: str) -> None:
    body = {"inputs": [{"name": "tenure_months", "datatype": "INT64", "shape": [1], "data": [3],
                        "parameters": {"shared_memory_region": "region0"}}]}
    response = httpx.post(f"{gateway_url}/v2/models/churn/infer", json=body, headers=auth())
    assert response.status_code == 400
    assert response.json()["field"] == "inputs[0].parameters.shared_memory_region"

"""Gateway request handling without Ray: the ModelService and its FastAPI app on a real SQLite registry.

Fast tier: every test here runs in-process in well under a second (after the module's models are
trained), through ``fastapi.testclient`` with the app's lifespan, so the poll loop and log writer are
the real ones.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from core.inference_log import read_window
from gateway.app import build_app
from gateway.config import GatewayConfig
from gateway.inference_log import InferenceLogger, PredictionRecord
from gateway.service import ModelService
from gateway.testing import (
    SIGNATURE_MIXED,
    SIGNATURE_NUMERIC,
    example_row,
    mixed_classifier,
    numeric_classifier,
)

ROW = example_row()


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    """Fitted once per module: training is the slow part."""
    return {"v1": numeric_classifier("logistic", seed=0), "v2": numeric_classifier("logistic", seed=3),
            "mixed": mixed_classifier()}


def make_service(registry: Any, home: Path, **overrides: Any) -> ModelService:
    settings: dict[str, Any] = {"database_url": registry.url, "artifact_root": registry.artifacts.root,
                                "inference_log_uri": str(home / "inference"), "feast_lookup": False,
                                "poll_interval_s": 0.05, "log_flush_interval_s": 0.05}
    config = GatewayConfig(**{**settings, **overrides})
    return ModelService.from_config(config)


@pytest.fixture
def churn(registry: Any, models: dict[str, Any]) -> Any:
    """``churn`` v1 (production) and v2 (staging: servable by number, not served by the production alias)."""
    v1 = registry.register_version("churn", models["v1"], signature=SIGNATURE_NUMERIC)
    v2 = registry.register_version("churn", models["v2"], signature=SIGNATURE_NUMERIC)
    registry.promote("churn", v1.version, reason="first")
    registry.promote("churn", v2.version, alias="staging", reason="to try by number")
    return registry


@pytest.fixture
def client(churn: Any, esteira_home: Path) -> Iterator[TestClient]:
    with TestClient(build_app(make_service(churn, esteira_home))) as test_client:
        yield test_client


def predict(client: TestClient, body: Any, path: str = "/v1/models/churn/predict", **kw: Any) -> Any:
    return client.post(path, json=body, **kw)


def wait_for(condition: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


# -- plain JSON -------------------------------------------------------------------------------------------------


def test_predict_names_model_and_version(client: TestClient, models: dict[str, Any]) -> None:
    response = predict(client, {"inputs": ROW})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"]) == ("churn", 1)
    expected = models["v1"].predict_proba(pd.DataFrame([ROW]))[0, 1]
    assert body["predictions"][0]["probability"] == pytest.approx(expected, abs=1e-9)
    assert body["predictions"][0]["label"] in (0, 1)


def test_predict_many_rows_and_pinned_version(client: TestClient) -> None:
    body = predict(client, {"inputs": [ROW, {**ROW, "support_calls": 9}]},
                   "/v1/models/churn/versions/2/predict").json()
    assert body["version"] == 2 and len(body["predictions"]) == 2


@pytest.mark.parametrize(("body", "field", "status"), [
    ({"inputs": {k: v for k, v in ROW.items() if k != "support_calls"}}, "inputs.support_calls", 422),
    ({"inputs": {**ROW, "colour": "red"}}, "inputs.colour", 422),
    ({"inputs": {**ROW, "tenure_months": "twelve"}}, "inputs.tenure_months", 422),
    ({"inputs": {**ROW, "tenure_months": 1.5}}, "inputs.tenure_months", 422),
    ({"inputs": {**ROW, "monthly_charges": True}}, "inputs.monthly_charges", 422),
    ({"inputs": [ROW, {**ROW, "monthly_charges": [1]}]}, "inputs[1].monthly_charges", 422),
    ({"inputs": []}, "inputs", 422),
    ({"inputz": ROW}, "inputz", 422),
    ({}, "inputs", 422),
    ({"inputs": ROW, "entities": {"customer_id": 1}}, "entities", 422),
])
def test_malformed_requests_name_the_field(client: TestClient, body: Any, field: str, status: int) -> None:
    response = predict(client, body)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field
    assert field.rsplit(".", 1)[-1].split("[")[0] in response.json()["error"]


def test_not_json_unknown_model_and_version(client: TestClient) -> None:
    response = client.post("/v1/models/churn/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "error" in response.json()
    response = predict(client, {"inputs": ROW}, "/v1/models/nope/predict")
    assert response.status_code == 404 and response.json()["field"] == "name"
    response = predict(client, {"inputs": ROW}, "/v1/models/churn/versions/99/predict")
    assert response.status_code == 404 and response.json()["field"] == "version"
    response = predict(client, {"inputs": ROW}, "/v1/models/churn/versions/x/predict")
    assert response.status_code == 422 and response.json()["field"] == "path.version"


# -- Open Inference Protocol v2 ---------------------------------------------------------------------------------


def test_v2_health_metadata_and_infer(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
    assert client.get("/v2/models/churn/ready").status_code == 200
    assert client.get("/v2/models/nope/ready").status_code == 404
    meta = client.get("/v2/models/churn").json()
    assert meta["name"] == "churn" and meta["versions"] == ["1"]
    assert [i["name"] for i in meta["inputs"]] == ["tenure_months", "monthly_charges", "support_calls"]
    assert meta["inputs"][0]["datatype"] == "INT64"

    per_feature = {"id": "req-1", "inputs": [
        {"name": "tenure_months", "shape": [2], "datatype": "INT64", "data": [12, 3]},
        {"name": "monthly_charges", "shape": [2, 1], "datatype": "FP64", "data": [[70.5], [20.0]]},
        {"name": "support_calls", "shape": [2], "datatype": "INT32", "data": [2, 0]}]}
    body = client.post("/v2/models/churn/infer", json=per_feature).json()
    assert body["model_name"] == "churn" and body["model_version"] == "1" and body["id"] == "req-1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["probability"]["shape"] == [2] and outputs["probability"]["datatype"] == "FP64"

    matrix = {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [12, 70.5, 2]}],
              "outputs": [{"name": "probability"}]}
    body = client.post("/v2/models/churn/infer", json=matrix).json()
    assert [o["name"] for o in body["outputs"]] == ["probability"]
    assert body["outputs"][0]["data"][0] == pytest.approx(outputs["probability"]["data"][0])
    pinned = client.post("/v2/models/churn/versions/2/infer", json=matrix).json()
    assert pinned["model_version"] == "2"


@pytest.mark.parametrize(("change", "field"), [
    ({"datatype": "BYTES", "data": ["a", "b"]}, "inputs[0].datatype"),
    ({"shape": [3]}, "inputs[0].shape"),
    ({"name": "tenure"}, "inputs[0].name"),
    ({"data": [12, "x"]}, "inputs[0].data"),
])
def test_v2_errors_name_the_field(client: TestClient, change: dict[str, Any], field: str) -> None:
    inputs = [{"name": "tenure_months", "shape": [2], "datatype": "INT64", "data": [12, 3]},
              {"name": "monthly_charges", "shape": [2], "datatype": "FP64", "data": [70.5, 20.0]},
              {"name": "support_calls", "shape": [2], "datatype": "INT64", "data": [2, 0]}]
    inputs[0] = {**inputs[0], **change}
    response = client.post("/v2/models/churn/infer", json={"inputs": inputs})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field and response.json()["error"]


def test_v2_missing_input_and_unknown_output(client: TestClient) -> None:
    inputs = [{"name": "tenure_months", "shape": [1], "datatype": "INT64", "data": [12]}]
    response = client.post("/v2/models/churn/infer", json={"inputs": inputs})
    assert response.status_code == 422 and response.json()["field"] == "inputs.monthly_charges"
    matrix = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}],
              "outputs": [{"name": "nope"}]}
    response = client.post("/v2/models/churn/infer", json=matrix)
    assert response.status_code == 422 and response.json()["field"] == "outputs[0].name"


# -- hot swap, refusal, registry outage -------------------------------------------------------------------------


def test_promotion_and_rollback_swap_without_restart(client: TestClient, churn: Any) -> None:
    churn.promote("churn", 2, reason="better")
    wait_for(lambda: predict(client, {"inputs": ROW}).json()["version"] == 2)
    churn.rollback("churn", reason="regression")
    wait_for(lambda: predict(client, {"inputs": ROW}).json()["version"] == 1)


def test_tampered_artifact_is_refused_and_audited(client: TestClient, churn: Any, models: dict[str, Any]) -> None:
    v3 = churn.register_version("churn", models["v2"], signature=SIGNATURE_MIXED)  # distinct bytes
    path = Path(v3.artifact_uri.replace("file://", ""))
    path.write_bytes(path.read_bytes()[:-10] + b"tampered!!")
    churn.promote("churn", v3.version, reason="should be refused")
    wait_for(lambda: any(e.action == "load_refused" for e in churn.history("churn")))
    event = [e for e in churn.history("churn") if e.action == "load_refused"][-1]
    assert event.to_version == v3.version and "IntegrityError" in event.reason
    assert predict(client, {"inputs": ROW}).json()["version"] == 1  # the old version keeps serving
    status = client.get("/v1/admin/status").json()  # the refusal's detail is for the admin token only
    assert f"churn:{v3.version}" in status["refused"]
    pinned = predict(client, {"inputs": ROW}, f"/v1/models/churn/versions/{v3.version}/predict")
    assert pinned.status_code == 409 and pinned.json()["field"] == "version"
    assert 'esteira_gateway_load_refused_total{model="churn"}' in client.get("/metrics").text


def test_untrusted_artifact_is_refused(client: TestClient, churn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import skops.io as sio

    from core.settings import get_settings
    from registry.flavors.base import get_flavor

    untrusted = sio.dumps({"payload": Path("/etc/passwd")})  # a type outside the trusted list
    monkeypatch.setenv("ESTEIRA_TRUSTED_TYPES", "pathlib.PosixPath")  # trusted when registered, not when loaded
    get_settings.cache_clear()
    mv = churn.register_artifact("churn", untrusted, flavor="sklearn", file_name=get_flavor("sklearn").file_name,
                                 signature=SIGNATURE_NUMERIC)
    monkeypatch.delenv("ESTEIRA_TRUSTED_TYPES")
    get_settings.cache_clear()
    churn.promote("churn", mv.version)
    wait_for(lambda: any(e.action == "load_refused" and e.to_version == mv.version for e in churn.history("churn")))
    assert predict(client, {"inputs": ROW}).json()["version"] == 1


def test_registry_unreachable_keeps_serving_and_recovers(churn: Any, esteira_home: Path) -> None:
    service = make_service(churn, esteira_home)
    healthy = service.manager._registry_factory
    with TestClient(build_app(service)) as client:
        assert predict(client, {"inputs": ROW}).json()["version"] == 1

        def down() -> Any:
            raise ConnectionError("registry database unreachable (test)")

        service.manager._registry_factory, service.manager._registry = down, None
        wait_for(lambda: client.get("/v2/health/ready").json()["status"] == "degraded")
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 200 and ready.json() == {"ready": True, "status": "degraded"}
        assert "unreachable" in client.get("/v1/admin/status").json()["registry"]["error"]
        for _ in range(20):
            assert predict(client, {"inputs": ROW}).status_code == 200
        assert "esteira_gateway_registry_up 0.0" in client.get("/metrics").text
        service.manager._registry_factory = healthy
        wait_for(lambda: client.get("/v2/health/ready").json()["status"] == "ok")


def test_registry_down_at_start_is_not_ready(esteira_home: Path, tmp_path: Path) -> None:
    service = ModelService.from_config(GatewayConfig(
        database_url=f"sqlite:///{tmp_path}/missing-dir/x/registry.db", artifact_root=str(tmp_path / "a"),
        inference_log_uri=str(tmp_path / "log"), feast_lookup=False, poll_interval_s=0.05))
    with TestClient(build_app(service)) as client:
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
        assert client.get("/v2/health/live").status_code == 200


# -- auth, metrics, logging, feedback, shadow -------------------------------------------------------------------


def test_bearer_tokens_for_predictions_and_admin(churn: Any, esteira_home: Path) -> None:
    service = make_service(churn, esteira_home, predict_token="p-secret", admin_token="a-secret")
    with TestClient(build_app(service)) as client:
        assert predict(client, {"inputs": ROW}).status_code == 401
        assert predict(client, {"inputs": ROW}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = predict(client, {"inputs": ROW}, headers={"Authorization": "Bearer p-secret"})
        assert ok.status_code == 200
        assert client.get("/metrics", headers={"Authorization": "Bearer p-secret"}).status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer a-secret"}).status_code == 200
        assert client.post("/v1/admin/reload", headers={"Authorization": "Bearer a-secret"}).status_code == 200
        assert client.get("/v2/health/ready").status_code == 200  # probes stay open


def test_metrics_count_requests_errors_and_versions(client: TestClient) -> None:
    predict(client, {"inputs": ROW})
    predict(client, {"inputs": {**ROW, "x": 1}})
    text = client.get("/metrics").text
    assert 'esteira_gateway_requests_total{model="churn",route="v1",status="200",version="1"}' in text
    assert 'reason="InvalidInput"' in text and 'status="422"' in text
    assert 'esteira_gateway_loaded_version{alias="production",model="churn"} 1.0' in text
    assert "esteira_gateway_request_latency_seconds_bucket" in text


def test_feedback_joins_the_inference_log(client: TestClient, esteira_home: Path) -> None:
    rids = [predict(client, {"inputs": [ROW, ROW]}).json()["request_id"] for _ in range(3)]
    response = client.post("/v1/models/churn/feedback", json={"request_id": rids[0], "label": 1})
    assert response.status_code == 202 and response.json()["accepted"] == 1
    items = [{"request_id": rids[1], "row": 1, "label": 0}, {"request_id": rids[2], "label": 1.0}]
    assert client.post("/v1/models/churn/feedback", json={"items": items}).json()["accepted"] == 2
    bad = client.post("/v1/models/churn/feedback", json={"request_id": rids[0], "label": "maybe"})
    assert bad.status_code == 422 and bad.json()["field"] == "label"
    assert client.post("/v1/models/churn/feedback", json={"label": 1}).status_code == 422

    def joined() -> Any:
        frame = read_window("churn", root=str(esteira_home / "inference"))
        return frame if frame["label"].notna().sum() >= 3 else None

    wait_for(lambda: joined() is not None)
    frame = joined()
    assert {"tenure_months", "output.probability", "model_version", "request_id", "label"} <= set(frame.columns)
    labelled = frame.dropna(subset=["label"]).set_index(["request_id", "row"])["label"].to_dict()
    assert labelled == {(rids[0], 0): 1, (rids[1], 1): 0, (rids[2], 0): 1}
    assert (frame["model_version"] == 1).all() and len(frame) == 6


def test_shadow_challenger_is_logged_not_returned(client: TestClient, churn: Any, esteira_home: Path) -> None:
    churn.promote("churn", 2, alias="challenger")
    wait_for(lambda: client.get("/v1/models").json()["models"]["churn"]["shadow_version"] == 2)
    rid = predict(client, {"inputs": ROW}).json()["request_id"]
    root = str(esteira_home / "inference")

    def shadow_rows() -> Any:
        frame = read_window("churn", root=root, role=None)
        return frame[(frame["request_id"] == rid)] if len(frame) else frame

    wait_for(lambda: len(shadow_rows()) == 2)
    rows = shadow_rows().set_index("role")
    assert rows.loc["production", "model_version"] == 1 and rows.loc["shadow", "model_version"] == 2
    assert rows.loc["production", "output.probability"] != rows.loc["shadow", "output.probability"]
    assert read_window("churn", root=root)["role"].eq("production").all()


def test_full_log_buffer_drops_with_a_counter_and_never_fails(churn: Any, esteira_home: Path) -> None:
    service = make_service(churn, esteira_home, log_buffer_size=2, log_flush_interval_s=60)
    with TestClient(build_app(service)) as client:
        for _ in range(10):
            assert predict(client, {"inputs": ROW}).status_code == 200
        assert service.inference_log is not None and service.inference_log.dropped >= 8
        assert "esteira_gateway_inference_log_dropped_total 8.0" in client.get("/metrics").text


def test_failing_log_storage_never_fails_a_prediction(churn: Any, esteira_home: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log folder should be")
    service = make_service(churn, esteira_home)
    service.inference_log.root = str(blocker / "inference")  # type: ignore[union-attr]
    with TestClient(build_app(service)) as client:
        for _ in range(5):
            assert predict(client, {"inputs": ROW}).status_code == 200
        wait_for(lambda: "esteira_gateway_inference_log_write_errors_total 0.0" not in client.get("/metrics").text)


def test_logger_writes_profiles_per_window(tmp_path: Path) -> None:
    from core.inference_log import read_profile
    from core.profiles import profile_summary

    logger = InferenceLogger(str(tmp_path), profile_window_s=60)
    for i in range(20):
        logger.log_prediction(PredictionRecord(f"r{i}", time.time(), "m", 1, "production",
                                               {"x": np.array([float(i)])}, {"label": np.array([i % 2])}))
    assert logger.flush() == 20
    summary = profile_summary(read_profile("m", root=str(tmp_path)) or b"")
    assert summary["x"]["count"] == 20 and "output.label" in summary


def test_writer_turns_records_into_rows_often_but_writes_files_per_flush_interval(tmp_path: Path) -> None:
    """Building rows a little at a time keeps each GIL hold short; files stay one per flush interval."""
    logger = InferenceLogger(str(tmp_path), flush_interval_s=60, profile=False)
    logger.start()
    try:
        for i in range(10):
            logger.log_prediction(PredictionRecord(f"r{i}", time.time(), "m", 1, "production",
                                                   {"x": np.array([float(i)])}, {"label": np.array([1])}))
        wait_for(lambda: not logger._buffer, timeout=5)  # compacted within compact_interval_s (0.5 s)
        assert not list(tmp_path.rglob("*.parquet"))  # ... but no file before the flush interval
    finally:
        logger.stop()  # flushes
    assert len(list(tmp_path.rglob("*.parquet"))) == 1 and len(read_window("m", root=str(tmp_path))) == 10


def test_log_frame_keeps_multi_class_probabilities_as_one_list_per_row() -> None:
    from gateway.inference_log import predictions_frame

    def record(rid: str, proba: list[list[float]]) -> PredictionRecord:
        n = len(proba)
        return PredictionRecord(rid, time.time(), "m", 1, "production", {"x": np.arange(n, dtype=float)},
                                {"label": np.zeros(n, dtype=int), "probabilities": np.array(proba)})

    frame = predictions_frame([record("a", [[0.2, 0.8, 0.0]]), record("b", [[0.1, 0.1, 0.8], [1.0, 0.0, 0.0]])])
    assert frame["output.probabilities"].tolist() == [[0.2, 0.8, 0.0], [0.1, 0.1, 0.8], [1.0, 0.0, 0.0]]
    assert frame["request_id"].tolist() == ["a", "b", "b"] and frame["row"].tolist() == [0, 0, 1]
    # a swap between a 3-class and a 4-class version inside one batch: widths differ, rows stay whole
    mixed = predictions_frame([record("a", [[0.2, 0.8, 0.0]]), record("c", [[0.25, 0.25, 0.25, 0.25]])])
    assert mixed["output.probabilities"].tolist() == [[0.2, 0.8, 0.0], [0.25, 0.25, 0.25, 0.25]]


def test_profiles_come_from_a_child_process_that_is_replaced_if_it_dies(tmp_path: Path) -> None:
    """What the gateway runs: whylogs works in a child process, never in the replica holding the GIL."""
    from core.inference_log import read_profile
    from core.profiles import profile_summary

    def log_rows(start: int, n: int) -> None:
        for i in range(start, start + n):
            logger.log_prediction(PredictionRecord(f"r{i}", time.time(), "m", 1, "production",
                                                   {"x": np.array([float(i)])}, {"label": np.array([i % 2])}))

    def profiled() -> int:
        blob = read_profile("m", root=str(tmp_path))
        return int(profile_summary(blob)["x"]["count"]) if blob else 0

    logger = InferenceLogger(str(tmp_path), profile_window_s=60, profile_process=True)
    logger.warm_up()
    child = logger._profiler._proc  # type: ignore[union-attr]
    assert child is not None and child.pid != os.getpid()
    log_rows(0, 20)
    assert logger.flush() == 20  # the rows are on disk now; their profile follows from the child
    wait_for(lambda: profiled() == 20, timeout=60)
    child.kill()
    child.wait()
    log_rows(20, 10)
    assert logger.flush() == 10
    logger.stop()  # waits for the new child to finish what it was sent
    assert profiled() == 30 and logger._profiler.restarts == 1  # type: ignore[union-attr]


def test_a_profiler_child_that_was_sent_nothing_is_stopped_not_waited_for() -> None:
    """A replica stopping before its first window has no profile to lose: its child, maybe still importing
    whylogs, is terminated instead of being waited for (a sent job is waited for: the test above)."""
    import signal

    from gateway.profiler import ProfilerProcess

    profiler = ProfilerProcess()
    profiler.start()
    assert profiler.close() == -signal.SIGTERM


# -- flavors ------------------------------------------------------------------------------------------------------


def test_mixed_types_model_uses_the_dataframe_path(registry: Any, esteira_home: Path, models: dict[str, Any]) -> None:
    mv = registry.register_version("mixed", models["mixed"], signature=SIGNATURE_MIXED)
    registry.promote("mixed", mv.version)
    with TestClient(build_app(make_service(registry, esteira_home))) as client:
        ok = predict(client, {"inputs": example_row(mixed=True)}, "/v1/models/mixed/predict")
        assert ok.status_code == 200
        bad = predict(client, {"inputs": {**example_row(mixed=True), "plan": 3}}, "/v1/models/mixed/predict")
        assert bad.status_code == 422 and bad.json()["field"] == "inputs.plan"


def test_sklearn_array_path_matches_dataframe_path(models: dict[str, Any]) -> None:
    from registry.flavors.sklearn import SklearnFlavor

    flavor = SklearnFlavor()
    frame_model = flavor.load_model(flavor.save(models["v1"]))
    predictor = flavor.load(flavor.save(models["v1"]), SIGNATURE_NUMERIC)
    assert predictor.use_arrays
    rng = np.random.default_rng(1)
    columns = {"tenure_months": rng.integers(0, 72, 50), "monthly_charges": rng.normal(60, 20, 50),
               "support_calls": rng.poisson(1.5, 50)}
    expected = frame_model.predict_proba(pd.DataFrame(columns))[:, 1]
    np.testing.assert_allclose(predictor.predict(columns)["probability"], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["logistic", "forest", "mixed"])
def test_onnx_flavor_parity(kind: str) -> None:
    from gateway.testing import training_frame
    from registry.flavors.onnx import OnnxFlavor, OnnxPredictor

    model = mixed_classifier() if kind == "mixed" else numeric_classifier(kind)
    signature = SIGNATURE_MIXED if kind == "mixed" else SIGNATURE_NUMERIC
    flavor = OnnxFlavor()
    data = flavor.save(model)
    meta, _ = flavor.read(data)
    assert meta["format"] == "onnx"
    predictor = flavor.load(data, signature)
    assert isinstance(predictor, OnnxPredictor)
    frame, _ = training_frame(n=200, seed=7)
    names = [c["name"] for c in signature["inputs"]]
    columns = {name: frame[name].to_numpy() for name in names}
    out = predictor.predict(columns)
    expected = model.predict_proba(pd.DataFrame(columns)[list(model.feature_names_in_)])
    np.testing.assert_allclose(out["probability"], expected[:, 1], atol=1e-5)
    assert (out["label"] == model.classes_[expected.argmax(axis=1)]).mean() > 0.99


def test_onnx_flavor_falls_back_to_skops_for_hist_gradient_boosting() -> None:
    from registry.flavors.onnx import OnnxFlavor
    from registry.flavors.sklearn import SklearnPredictor

    model = numeric_classifier("hgb")
    flavor = OnnxFlavor()
    data = flavor.save(model)
    meta, _ = flavor.read(data)
    if meta["format"] == "onnx":  # a newer skl2onnx may convert it; parity is covered above then
        pytest.skip("skl2onnx converted HistGradientBoosting: no fallback needed with this version")
    assert meta["format"] == "skops" and meta["fallback_reason"]
    predictor = flavor.load(data, SIGNATURE_NUMERIC)
    assert isinstance(predictor, SklearnPredictor)
    assert predictor.predict({k: np.array([v]) for k, v in ROW.items()})["probability"].shape == (1,)


def test_onnx_version_served_through_the_gateway(registry: Any, esteira_home: Path, models: dict[str, Any]) -> None:
    mv = registry.register_version("fast", models["v1"], flavor="onnx", signature=SIGNATURE_NUMERIC)
    registry.promote("fast", mv.version)
    with TestClient(build_app(make_service(registry, esteira_home))) as client:
        body = predict(client, {"inputs": ROW}, "/v1/models/fast/predict").json()
        assert client.get("/v2/models/fast").json()["platform"] == "esteira-onnx"
    expected = models["v1"].predict_proba(pd.DataFrame([ROW]))[0, 1]
    assert body["predictions"][0]["probability"] == pytest.approx(expected, abs=1e-6)


def test_a_replica_freezes_the_collector_heap_once_loaded(tmp_path: Path) -> None:
    """The deployment sets the flag (its process); full collections then skip what lives as long as the replica."""
    import asyncio
    import gc

    service = ModelService.from_config(GatewayConfig(
        database_url=f"sqlite:///{tmp_path / 'registry.db'}", artifact_root=str(tmp_path / "artifacts"),
        log_inference=False, feast_lookup=False))
    before = gc.get_freeze_count()

    async def start_stop(freeze: bool) -> int:
        service.freeze_gc_after_start = freeze
        await service.start()
        await service.stop()
        return gc.get_freeze_count()

    try:
        assert asyncio.run(start_stop(False)) == before  # not in someone else's process
        assert asyncio.run(start_stop(True)) > before
    finally:
        gc.unfreeze()

"""The three tasks end to end without Feast or Ray: a multiclass and a regression model trained by the real
training procedure (in-memory fetcher, sequential trials), served by the gateway, monitored on a batch.

What differs per task is checked where a user meets it: the metric and the promotion rule, the gateway's
answer (label and probabilities per class; a number), feedback validation, the monitor's performance metric,
the OpenAPI page describing each model's input, and nullable inputs imputed as in training.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from flows.monitor import run_monitor
from flows.spec import load_spec
from flows.train import train
from gateway.app import build_app
from gateway.config import GatewayConfig
from gateway.service import ModelService
from tests.projects import FrameFetcher

SCHEMA = {"size": "float64", "rooms": "int64", "zone": "string"}
WEATHER = ("sun", "rain", "fog")


def fetcher_of(features: pd.DataFrame) -> FrameFetcher:
    return FrameFetcher(features, SCHEMA, "item_id")


def dataset(n: int, seed: int, *, shift: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(label rows, features by key): a house-price-like regression target and a 3-class target."""
    rng = np.random.default_rng(seed)
    features = pd.DataFrame({
        "item_id": np.arange(n) + 10_000 * seed,
        "size": rng.normal(80 + 40 * shift, 20, n),
        "rooms": rng.integers(1, 6, n),
        "zone": rng.choice(["north", "south", "centre"], n, p=[0.5, 0.3, 0.2] if not shift else [0.1, 0.1, 0.8]),
    })
    price = 2.0 * features["size"] + 15 * features["rooms"] + np.where(features["zone"] == "centre", 60, 0)
    score = features["size"] / 40 + rng.normal(0, 0.5, n)
    start = datetime.now(UTC) - timedelta(days=20)
    labels = pd.DataFrame({
        "item_id": features["item_id"],
        "event_timestamp": [start + timedelta(minutes=20 * i) for i in range(n)],
        "price": price + rng.normal(0, 10, n),
        "weather": np.array(WEATHER, dtype=object)[np.clip(score.round().astype(int) - 1, 0, 2)],
        "discount": rng.integers(0, 30, n),  # known at request time: a request feature
    })
    return labels, features


def spec(name: str, task: str, label: str, candidates: list[dict[str, Any]], **extra: Any) -> Any:
    return load_spec({"name": name, "task": task, "feature_service": "items_v1", "label": label,
                      "labels": {"source": "labels.parquet"}, "request_features": ["discount"],
                      "candidates": candidates, "cv": {"folds": 2}, "holdout": {"fraction": 0.25},
                      "validation": {"min_rows": 100}, **extra})


@pytest.fixture
def trained(registry: Any) -> dict[str, Any]:
    labels, features = dataset(600, 1)
    fetcher = fetcher_of(features)
    multi = train(spec("weather", "multiclass", "weather",
                       [{"family": "logistic_regression", "params": {"max_iter": 400}},
                        {"family": "random_forest", "params": {"n_estimators": 20, "max_depth": 5}}]),
                  registry=registry, fetcher=fetcher, entities=labels, parallel=False)
    price = train(spec("price", "regression", "price",
                       [{"family": "ridge", "search": {"alpha": [0.1, 1.0]}},
                        {"family": "hist_gradient_boosting", "params": {"max_iter": 50}}],
                       promotion={"min_metric": -40.0}),
                  registry=registry, fetcher=fetcher, entities=labels, parallel=False)
    return {"weather": multi, "price": price, "labels": labels, "features": features}


def test_specs_check_metrics_and_families_per_task() -> None:
    with pytest.raises(ValueError, match="metric 'roc_auc' does not apply to a regression task"):
        spec("p", "regression", "price", [{"family": "ridge"}], metric="roc_auc")
    with pytest.raises(ValueError, match="unknown estimator family 'logistic_regression' for a regression task"):
        spec("p", "regression", "price", [{"family": "logistic_regression"}])
    with pytest.raises(ValueError, match="stratified folds need classes"):
        spec("p", "regression", "price", [{"family": "ridge"}], cv={"strategy": "stratified"})
    assert spec("w", "multiclass", "weather", [{"family": "random_forest"}]).metric == "accuracy"
    assert spec("p", "regression", "price", [{"family": "ridge"}]).metric == "neg_mean_absolute_error"


def test_each_task_registers_its_metric_outputs_and_classes(trained: dict[str, Any], registry: Any) -> None:
    weather = registry.get("weather@production")
    assert weather.signature["task"] == "multiclass" and weather.signature["classes"] == sorted(WEATHER)
    assert [o["name"] for o in weather.signature["outputs"]] == ["label", "probabilities"]
    assert {"holdout_accuracy", "holdout_neg_log_loss", "cv_accuracy"} <= set(weather.metrics)
    price = registry.get("price@production")
    assert price.signature["task"] == "regression" and "classes" not in price.signature
    assert [o["name"] for o in price.signature["outputs"]] == ["prediction"]
    assert price.metrics["holdout_neg_mean_absolute_error"] < 0  # errors are negated: higher is better
    assert price.metrics["holdout_r2"] > 0.8
    # request features are inputs as they are, after the service's features
    assert [i["name"] for i in price.signature["inputs"]] == ["size", "rooms", "zone", "discount"]
    assert price.signature["request_features"] == ["discount"]
    example = price.signature["example"]
    assert example["inputs"]["zone"] in ("north", "south", "centre") and isinstance(example["inputs"]["rooms"], int)
    assert set(example["entities"]) == {"item_id"} and set(example["request_data"]) == {"discount"}


def test_the_gateway_answers_per_task_and_documents_each_model(trained: dict[str, Any], registry: Any,
                                                               esteira_home: Path) -> None:
    service = ModelService.from_config(GatewayConfig(
        database_url=registry.url, artifact_root=registry.artifacts.root, feast_lookup=False,
        inference_log_uri=str(esteira_home / "inference")))
    row = {"size": 120.0, "rooms": 3, "zone": "centre", "discount": 5}
    with TestClient(build_app(service)) as client:
        multi = client.post("/v1/models/weather/predict", json={"inputs": row})
        assert multi.status_code == 200, multi.text
        answer = multi.json()["predictions"][0]
        assert answer["label"] in WEATHER and set(answer["probabilities"]) == set(WEATHER)
        assert sum(answer["probabilities"].values()) == pytest.approx(1.0)
        v2 = client.post("/v2/models/weather/infer", json={"inputs": [
            {"name": "size", "shape": [1], "datatype": "FP64", "data": [120.0]},
            {"name": "rooms", "shape": [1], "datatype": "INT64", "data": [3]},
            {"name": "zone", "shape": [1], "datatype": "BYTES", "data": ["centre"]},
            {"name": "discount", "shape": [1], "datatype": "INT64", "data": [5]}]}).json()
        probabilities = next(o for o in v2["outputs"] if o["name"] == "probabilities")
        assert probabilities["shape"] == [1, 3] and probabilities["parameters"]["classes"] == sorted(WEATHER)

        price = client.post("/v1/models/price/predict", json={"inputs": row}).json()["predictions"][0]
        assert set(price) == {"prediction"} and price["prediction"] > 200
        # a nullable integer input given as null is imputed as in training (the pipeline's median), not refused
        missing_rooms = client.post("/v1/models/price/predict", json={"inputs": {**row, "rooms": None}})
        assert missing_rooms.status_code == 200, missing_rooms.text
        assert client.post("/v1/models/price/predict", json={"inputs": {**row, "rooms": 2.5}}).json()["field"] \
            == "inputs.rooms"

        # feedback: a class of the model, or a number for a regression
        request_id = client.post("/v1/models/weather/predict", json={"inputs": row}).json()["request_id"]
        assert client.post("/v1/models/weather/feedback", json={"request_id": request_id, "label": "fog"}
                           ).status_code == 202
        bad = client.post("/v1/models/weather/feedback", json={"request_id": request_id, "label": "snow"})
        assert bad.status_code == 422 and bad.json()["field"] == "label"
        bad = client.post("/v1/models/price/feedback", json={"request_id": request_id, "label": "high"})
        assert bad.status_code == 422 and "not a number" in bad.json()["error"]

        listing = client.get("/v1/models").json()["models"]
        assert listing["price"]["task"] == "regression" and listing["weather"]["classes"] == sorted(WEATHER)

        doc = client.get("/openapi.json").json()
    price_path = doc["paths"]["/v1/models/price/predict"]["post"]
    body = price_path["requestBody"]["content"]["application/json"]
    assert set(body["examples"]["inline"]["value"]["inputs"]) == {"size", "rooms", "zone", "discount"}
    inputs = doc["components"]["schemas"]["price_inputs"]
    assert inputs["properties"]["rooms"]["anyOf"][0] == {"type": "integer", "minimum": -2**63, "maximum": 2**63 - 1}
    assert inputs["properties"]["zone"]["anyOf"][0] == {"type": "string"}
    assert inputs["required"] == ["size", "rooms", "zone", "discount"]
    assert "prediction" in str(doc["components"]["schemas"]["price_predict_response"])
    assert "/v1/models/{name}/predict" in doc["paths"]  # the generic route stays documented


def test_the_monitor_judges_each_task_with_its_metric(trained: dict[str, Any], registry: Any) -> None:
    fetcher = fetcher_of(trained["features"])
    later, later_features = dataset(300, 2, shift=1.0)
    fetcher.features = pd.concat([trained["features"], later_features], ignore_index=True)
    regression = run_monitor("price", registry=registry, frame=later, fetcher=fetcher, trigger="off")
    report = registry.get_report(regression.report_id)
    assert report.performance["metric"] == "neg_mean_absolute_error" and report.performance["status"] == "ok"
    assert report.n_labelled == 300 and "zone" in report.drift["features"]
    classes = run_monitor("weather", registry=registry, frame=later, fetcher=fetcher, trigger="off")
    assert registry.get_report(classes.report_id).performance["metric"] == "accuracy"
    assert classes.drift_share and classes.drift_share > 0


def test_a_batch_without_inputs_or_keys_is_refused_naming_what_is_missing(trained: dict[str, Any],
                                                                          registry: Any, tmp_path: Path) -> None:
    from flows.monitor import MonitorInputError

    batch = tmp_path / "batch.csv"  # any batch file: parquet or CSV
    trained["labels"].drop(columns=["item_id"]).to_csv(batch, index=False)
    with pytest.raises(MonitorInputError, match=r"missing \['item_id'\].*size, rooms, zone, discount"):
        run_monitor("price", registry=registry, batch_uri=str(batch), trigger="off",
                    fetcher=fetcher_of(trained["features"]))
    before = len(registry.reports("price"))
    assert before == 0  # nothing recorded for a batch that could not be judged

"""Opportunistic micro-batching in ModelService: concurrent small requests share one predictor call.

Driven directly (no HTTP, no registry) with a tiny predictor that records every call it gets.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from gateway.config import GatewayConfig
from gateway.errors import InvalidInput
from gateway.models import LoadedModel
from gateway.schemas import InferRequest, PredictRequest
from gateway.service import ModelService
from gateway.signature import input_specs
from gateway.testing import SIGNATURE_NUMERIC


class CountingPredictor:
    """label = tenure * 2, probability = charges / 100; a negative support_calls is a ValueError."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append(len(columns["tenure_months"]))
        if (np.asarray(columns["support_calls"]) < 0).any():
            raise ValueError("support_calls must be >= 0")
        return {"label": np.asarray(columns["tenure_months"]) * 2,
                "probability": np.asarray(columns["monthly_charges"], dtype=np.float64) / 100}


class StubManager:
    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    def require(self, name: str) -> LoadedModel:
        return self.model

    def current(self, name: str, alias: str | None = None) -> LoadedModel | None:
        return self.model if alias is None else None

    def canary(self, name: str) -> tuple[LoadedModel, float] | None:
        return None  # batching is about one version: no canary splits the requests


def make(**config: Any) -> tuple[ModelService, CountingPredictor]:
    predictor = CountingPredictor()
    model = LoadedModel(name="churn", version=7, flavor="test", predictor=predictor,
                        specs=input_specs(SIGNATURE_NUMERIC), signature=SIGNATURE_NUMERIC)
    settings: dict[str, Any] = {"database_url": "sqlite://", "log_inference": False, "feast_lookup": False}
    return ModelService(GatewayConfig(**{**settings, **config}), StubManager(model)), predictor  # type: ignore[arg-type]


def row(i: int, calls: int = 1) -> dict[str, Any]:
    return {"tenure_months": i, "monthly_charges": float(i), "support_calls": calls}


def body(*rows: dict[str, Any]) -> PredictRequest:
    return PredictRequest(inputs=rows[0] if len(rows) == 1 else list(rows))


async def many(service: ModelService, bodies: list[PredictRequest]) -> list[Any]:
    return await asyncio.gather(*(service.predict("churn", b) for b in bodies), return_exceptions=True)


def test_concurrent_requests_share_one_call_and_get_their_own_rows() -> None:
    service, predictor = make()
    results = asyncio.run(many(service, [body(row(i)) for i in range(10)]))
    assert predictor.calls == [10]
    for i, result in enumerate(results):
        assert result["model"] == "churn" and result["version"] == 7
        assert result["predictions"] == [{"label": 2 * i, "probability": i / 100}]
    assert len({r["request_id"] for r in results}) == 10


def test_multi_row_requests_are_split_back_in_order() -> None:
    service, predictor = make()
    results = asyncio.run(many(service, [body(row(1), row(2)), body(row(3)), body(row(4), row(5), row(6))]))
    assert predictor.calls == [6]
    assert [[p["label"] for p in r["predictions"]] for r in results] == [[2, 4], [6], [8, 10, 12]]


def test_a_failing_row_does_not_fail_the_others() -> None:
    service, predictor = make()
    bodies = [body(row(i)) for i in range(5)]
    bodies[2] = body(row(2, calls=-1))
    results = asyncio.run(many(service, bodies))
    assert predictor.calls == [5, 1, 1, 1, 1, 1]  # the batch failed, then each alone
    assert isinstance(results[2], InvalidInput) and "support_calls" in str(results[2])
    for i in (0, 1, 3, 4):
        assert results[i]["predictions"] == [{"label": 2 * i, "probability": i / 100}]


def test_single_request_is_one_call_with_its_own_columns() -> None:
    service, predictor = make()
    result = asyncio.run(service.predict("churn", body(row(3))))
    assert predictor.calls == [1]
    assert result["predictions"] == [{"label": 6, "probability": 0.03}] and result["version"] == 7
    with pytest.raises(InvalidInput):
        asyncio.run(service.predict("churn", body(row(3, calls=-1))))
    assert predictor.calls == [1, 1]


def test_batches_are_capped() -> None:
    service, predictor = make(batch_max_rows=64)
    results = asyncio.run(many(service, [body(row(i)) for i in range(100)]))
    assert predictor.calls == [64, 36]
    assert [r["predictions"][0]["label"] for r in results] == [2 * i for i in range(100)]


def test_large_requests_keep_their_own_path_and_batching_can_be_off() -> None:
    service, predictor = make(inline_predict_max_rows=2)
    big = body(*(row(i) for i in range(5)))
    results = asyncio.run(many(service, [body(row(1)), big, body(row(2))]))
    assert sorted(predictor.calls) == [2, 5]
    assert [p["label"] for p in results[1]["predictions"]] == [0, 2, 4, 6, 8]
    service, predictor = make(batch_max_rows=0)
    asyncio.run(many(service, [body(row(i)) for i in range(4)]))
    assert predictor.calls == [1, 1, 1, 1]


def test_v2_requests_are_batched_too() -> None:
    service, predictor = make()
    requests = [InferRequest(inputs=[{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [i, float(i), 1]}])
                for i in range(4)]

    async def run() -> list[Any]:
        return await asyncio.gather(*(service.infer("churn", r) for r in requests))

    results = asyncio.run(run())
    assert predictor.calls == [4]
    for i, result in enumerate(results):
        label = next(o for o in result["outputs"] if o["name"] == "label")
        assert label["data"] == [2 * i] and result["model_version"] == "7"

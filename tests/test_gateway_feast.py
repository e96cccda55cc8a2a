"""Entity-key requests: the gateway reads the model's feature service from the project's real Feast store.

A model is trained on ``feature_repo.offline.training_frame`` for feature service ``churn_v1`` of a copy of
the churn example (what the training flow does), registered with that feature service and the signature
training records, and served; a request that carries only the customer id and the request-time field must
score exactly the online features ``online_features`` returns, on-demand features included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from gateway.app import build_app
from gateway.config import GatewayConfig
from gateway.service import ModelService

pytestmark = pytest.mark.slow

FEAST_DTYPES = {"Int64": "int64", "Int32": "int64", "Float64": "float64", "Float32": "float64", "String": "string",
                "Bool": "bool"}
SERVICE = "churn_v1"


@pytest.fixture
def feast_model(registry: Any, churn_project: Path) -> dict[str, Any]:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from core.project import Project
    from feature_repo.materialize import materialize
    from feature_repo.offline import training_frame
    from feature_repo.services import feature_schema
    from feature_repo.store import open_store
    from feature_repo.sync import sync
    from tests.projects import project_module

    gen = project_module(churn_project, "generator")
    gen.generate_batch(churn_project / "data", n_customers=150, seed=5)
    store = open_store()
    sync(store, Project(churn_project))
    materialize(store)
    labels = gen.load_labels(churn_project / "data")
    frame = training_frame(store, SERVICE, labels)
    schema = feature_schema(store, SERVICE)
    names = [s.name for s in schema]
    categorical = [s.name for s in schema if s.kind == "categorical"]
    numeric = [n for n in names if n not in categorical]
    model = make_pipeline(
        ColumnTransformer([("num", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
                           ("cat", OneHotEncoder(handle_unknown="ignore"), categorical)]),
        LogisticRegression(max_iter=500),
    ).fit(frame[names], frame["churned"])
    signature = {"inputs": [{"name": s.name, "dtype": FEAST_DTYPES.get(s.dtype, "string"), "nullable": True}
                            for s in schema],
                 "outputs": [{"name": "label"}, {"name": "probability"}], "classes": [0, 1], "task": "binary",
                 "feature_service": SERVICE, "entity_keys": [{"name": "customer_id", "dtype": "int64"}],
                 "request_fields": [{"name": "days_until_renewal", "dtype": "int64"}], "request_features": []}
    mv = registry.register_version("churn", model, signature=signature, feature_service=SERVICE)
    registry.promote("churn", mv.version)
    return {"model": model, "names": names, "store": store, "customer": int(labels["customer_id"].iloc[0]),
            "feature_service": SERVICE}


def test_entity_keys_are_scored_with_online_features(registry: Any, esteira_home: Path,
                                                     feast_model: dict[str, Any]) -> None:
    from feature_repo.online import online_features

    service = ModelService.from_config(GatewayConfig(
        database_url=registry.url, artifact_root=registry.artifacts.root, feast_lookup=True,
        inference_log_uri=str(esteira_home / "inference")))
    customer = feast_model["customer"]
    with TestClient(build_app(service)) as client:
        response = client.post("/v1/models/churn/predict", json={
            "entities": {"customer_id": customer}, "request_data": {"days_until_renewal": 5}})
        assert response.status_code == 200, response.text
        got = response.json()["predictions"][0]["probability"]

        online = online_features(feast_model["store"], feast_model["feature_service"],
                                    [{"customer_id": customer}], {"days_until_renewal": 5})
        frame = pd.DataFrame(online)[feast_model["names"]].astype(
            {n: float for n in feast_model["names"] if isinstance(online[0][n], (int, float))})
        expected = feast_model["model"].predict_proba(frame)[0, 1]
        assert got == pytest.approx(expected, abs=1e-9)

        many = client.post("/v1/models/churn/predict", json={
            "entities": [{"customer_id": customer}, {"customer_id": customer}],
            "request_data": [{"days_until_renewal": 1}, {"days_until_renewal": 40}]})
        assert many.status_code == 200 and len(many.json()["predictions"]) == 2
        probabilities = [p["probability"] for p in many.json()["predictions"]]
        assert not np.isclose(*probabilities)  # the on-demand feature moved with the request field

        def refused(body: dict[str, Any]) -> tuple[int, str, str]:
            answer = client.post("/v1/models/churn/predict", json=body)
            return answer.status_code, answer.json().get("field", ""), answer.json()["error"]

        # the request's parts are checked against the version's signature before the store is asked
        assert refused({"entities": {"customer_id": customer}}) == (
            422, "request_data.days_until_renewal", "missing request field 'days_until_renewal'")
        status, field, error = refused({"entities": {"customer_id": customer},
                                        "request_data": {"days_until_renewal": 2475.7}})
        assert (status, field) == (422, "request_data.days_until_renewal") and "integer" in error
        status, field, _ = refused({"entities": {"customer_id": customer},
                                    "request_data": {"days_until_renewal": "soon"}})
        assert (status, field) == (422, "request_data.days_until_renewal")
        status, field, _ = refused({"entities": {"customer_id": customer},
                                    "request_data": {"days_until_renewal": 3, "coupon": "x"}})
        assert (status, field) == (422, "request_data.coupon")
        status, field, _ = refused({"entities": {"customer": customer}, "request_data": {"days_until_renewal": 3}})
        assert (status, field) == (422, "entities.customer")
        status, field, _ = refused({"entities": {"customer_id": "abc"}, "request_data": {"days_until_renewal": 3}})
        assert (status, field) == (422, "entities.customer_id")
        # an entity the store knows nothing about: 404 naming the key, not a 422 about a null feature
        status, field, error = refused({"entities": {"customer_id": 10**9}, "request_data": {"days_until_renewal": 5}})
        assert (status, field) == (404, "entities") and "customer_id=1000000000" in error
        status, field, _ = refused({"entities": [{"customer_id": customer}, {"customer_id": 10**9}],
                                    "request_data": {"days_until_renewal": 5}})
        assert (status, field) == (404, "entities[1]")


def test_replica_reads_the_feature_store_once_before_traffic(registry: Any, esteira_home: Path,
                                                              feast_model: dict[str, Any]) -> None:
    """The first entity-key request must not pay for opening Feast (imports, registry load: about a second)."""
    import asyncio

    service = ModelService.from_config(GatewayConfig(
        database_url=registry.url, artifact_root=registry.artifacts.root, log_inference=False))

    async def start_then_stop() -> Any:
        await service.start()
        try:
            return service.features._store  # type: ignore[union-attr]
        finally:
            await service.stop()

    assert asyncio.run(start_then_stop()) is not None


def test_feature_store_warm_up_failure_does_not_stop_a_replica(esteira_home: Path,
                                                               feast_model: dict[str, Any],
                                                               caplog: pytest.LogCaptureFixture) -> None:
    from gateway.features import FeastLookup

    FeastLookup().warm(["no_such_service"])
    assert "warm-up failed" in caplog.text


def test_small_local_reads_run_on_the_event_loop_and_large_or_remote_ones_in_a_thread(
        esteira_home: Path, feast_model: dict[str, Any]) -> None:
    """SQLite reads of a few entities skip the thread hop (it costs more than the read); others do not."""
    import asyncio
    import threading

    from gateway.features import FeastLookup

    class Recording(FeastLookup):
        threads: list[int] = []

        def _lookup(self, *args: Any) -> list[dict[str, Any]]:
            self.threads.append(threading.get_ident())
            return super()._lookup(*args)

    customer = {"customer_id": feast_model["customer"]}
    request = {"days_until_renewal": 5}

    async def reads(lookup: FeastLookup) -> tuple[int, list[int]]:
        lookup.warm([feast_model["feature_service"]])
        lookup.threads.clear()  # type: ignore[attr-defined]
        await lookup.lookup(feast_model["feature_service"], [customer], request)
        await lookup.lookup(feast_model["feature_service"], [customer] * 3, request)
        return threading.get_ident(), list(lookup.threads)  # type: ignore[attr-defined]

    loop_thread, threads = asyncio.run(reads(Recording(inline_max_rows=2)))
    assert threads[0] == loop_thread and threads[1] != loop_thread
    remote = Recording(inline_max_rows=2)
    remote._open()
    remote._local = False  # what a Redis online store sets
    loop_thread, threads = asyncio.run(reads(remote))
    assert loop_thread not in threads

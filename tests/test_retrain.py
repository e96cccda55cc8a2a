"""The retrain flow: the training procedure on fresh data, linked back to the monitoring report.

Runs the real training procedure (validation, search, comparison with production, promotion) with an
in-memory feature fetcher and sequential trials, so it needs neither Feast nor Ray.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flows.retrain import retrain, run_retrain
from registry.models import MonitoringReport
from tests.projects import FrameFetcher
from tests.test_monitor import make_frame

MODEL = "churn-rt"
SCHEMA = {"tenure": "float64", "spend": "float64", "tickets": "int64", "plan": "string"}
SPEC = f"""
name: {MODEL}
task: binary
feature_service: {MODEL}_svc
label: label
labels: {{source: labels.parquet}}
candidates:
  - family: logistic_regression
    params: {{max_iter: 500}}
    search: {{C: [1.0]}}
cv: {{folds: 2}}
holdout: {{fraction: 0.25}}
validation: {{min_rows: 100}}
promotion: {{min_improvement: 0.0}}
"""


def fetcher_of(features: pd.DataFrame) -> FrameFetcher:
    return FrameFetcher(features, SCHEMA, "customer_id")


def split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(entities with timestamps and labels, features by key) of a ``make_frame`` batch."""
    frame = frame.reset_index(drop=True).assign(customer_id=lambda f: np.arange(len(f)) + 1000)
    start = datetime.now(UTC) - timedelta(days=10)
    entities = pd.DataFrame(
        {
            "customer_id": frame["customer_id"],
            "label": frame["label"],
            "event_timestamp": [start + timedelta(minutes=10 * i) for i in range(len(frame))],
        }
    )
    return entities, frame.drop(columns=["label"])


@pytest.fixture
def spec_file(tmp_path: Path) -> str:
    path = tmp_path / f"{MODEL}.yaml"
    path.write_text(SPEC)
    return str(path)


def retrain_report(registry: Any) -> MonitoringReport:
    return registry.record_report(
        MonitoringReport(
            model_name=MODEL,
            version=1,
            decision="retrain",
            reason="dataset drift: 3/4 features drifted",
            triggered_run="pending",
        )
    )


def test_retrain_trains_promotes_and_annotates_the_report(registry: Any, spec_file: str) -> None:
    entities, features = split(make_frame(600, 1))
    report = retrain_report(registry)
    outcome = run_retrain(
        MODEL,
        reason="drift",
        drift_share=0.75,
        report_id=report.id,
        spec=spec_file,
        registry=registry,
        fetcher=fetcher_of(features),
        entities=entities,
        parallel=False,
    )
    assert outcome.status == "promoted" and outcome.version == 1
    assert registry.aliases(MODEL) == {"production": 1}
    (updated,) = registry.reports(MODEL)
    assert updated.triggered_run == "in-process"
    assert updated.reason.startswith("dataset drift") and "v1 promoted to production" in updated.reason
    # the version carries what the monitor needs next time: reference profile and holdout metric
    mv = registry.get_by_alias(MODEL, "production")
    assert registry.read_reference_profile(mv) and "holdout_roc_auc" in mv.metrics


def test_garbage_data_stops_at_validation_and_production_is_untouched(registry: Any, spec_file: str) -> None:
    entities, features = split(make_frame(600, 1))
    run_retrain(
        MODEL,
        spec=spec_file,
        registry=registry,
        fetcher=fetcher_of(features),
        entities=entities,
        parallel=False,
    )
    before = ([v.version for v in registry.list_versions(MODEL)], registry.aliases(MODEL))

    entities, features = split(make_frame(600, 5))
    features["tenure"] = "not a number"  # wrong type: every value coerces to null
    features = features.drop(columns=["spend"])  # a feature the model needs is gone
    report = retrain_report(registry)
    outcome = run_retrain(
        MODEL,
        reason="drift",
        report_id=report.id,
        spec=spec_file,
        registry=registry,
        fetcher=fetcher_of(features),
        entities=entities,
        parallel=False,
    )
    assert outcome.status == "rejected" and outcome.version is None
    assert ([v.version for v in registry.list_versions(MODEL)], registry.aliases(MODEL)) == before
    assert registry.list_runs(MODEL)[0].status == "failed"
    (updated,) = registry.reports(MODEL)
    assert "failed validation, production unchanged" in updated.reason
    assert "spend" in updated.reason and "tenure" in updated.reason


def feed_retrain(monkeypatch: pytest.MonkeyPatch, frame: pd.DataFrame) -> None:
    """Make the retrain flow's training read ``frame`` (instead of Feast) with sequential trials."""
    import flows.retrain as module

    entities, features = split(frame)
    real = module.run_retrain
    monkeypatch.setattr(
        module,
        "run_retrain",
        lambda *a, **k: real(
            *a, **{**k, "fetcher": fetcher_of(features), "entities": entities, "parallel": False}
        ),
    )


def test_retrain_flow_ends_failed_on_invalid_data(
    prefect_harness: str, registry: Any, spec_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Prefect flow reports a rejected retrain as a Failed run (visible in the UI), with the reason."""
    garbage = make_frame(300, 5).assign(tenure="garbage")
    feed_retrain(monkeypatch, garbage)
    report = retrain_report(registry)
    state = retrain(model_name=MODEL, reason="drift", report_id=report.id, spec=spec_file, return_state=True)
    assert state.is_failed() and "failed validation" in (state.message or "")
    (updated,) = registry.reports(MODEL)
    assert updated.triggered_run == str(state.state_details.flow_run_id)
    assert registry.aliases(MODEL) == {}


def test_monitor_without_server_runs_the_retrain_flow_in_process(
    prefect_harness: str, registry: Any, spec_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole continuous-training step: drift -> retrain decision -> the retrain flow run directly
    -> a new version trained on the fresh data -> the report names the run and its outcome."""
    from flows.monitor import run_monitor

    entities, features = split(make_frame(600, 1))
    run_retrain(
        MODEL,
        spec=spec_file,
        registry=registry,
        fetcher=fetcher_of(features),
        entities=entities,
        parallel=False,
    )
    fresh = make_frame(600, 8, shift=1.0, plan_p=(0.1, 0.1, 0.8))
    feed_retrain(monkeypatch, fresh)
    outcome = run_monitor(MODEL, registry=registry, frame=fresh.iloc[:300], trigger="direct")
    assert outcome.decision == "retrain" and outcome.trigger_mode == "direct"
    (report,) = registry.reports(MODEL)
    assert report.triggered_run == outcome.triggered_run and report.triggered_run not in (None, "pending")
    assert "retrain " + report.triggered_run + ": v2 " in report.reason
    assert sorted(v.version for v in registry.list_versions(MODEL)) == [1, 2]
    assert registry.get_version(MODEL, 2).flow_run_id == report.triggered_run


def test_a_retrain_moves_the_label_window_forward(registry: Any, tmp_path: Path) -> None:
    """Retraining on fresh data: a relative window already ends now; an absolute one (kept for reproduction)
    keeps its width and ends now; one open at the start keeps its start."""
    from flows.retrain import spec_for_retrain

    now = datetime(2026, 6, 1, tzinfo=UTC)
    path = tmp_path / "absolute.yaml"
    path.write_text(SPEC.replace("labels: {source: labels.parquet}",
                                 "labels: {source: labels.parquet, start: '2026-01-01', end: '2026-01-31'}"))
    moved = spec_for_retrain(registry, MODEL, str(path), now=now)
    assert moved.labels.end is None and datetime.fromisoformat(moved.labels.start) == now - timedelta(days=30)
    assert moved.labels.window(now) == (now - timedelta(days=30), None)
    path.write_text(SPEC)  # the default window: -90d, relative
    relative = spec_for_retrain(registry, MODEL, str(path), now=now)
    assert (relative.labels.start, relative.labels.end) == ("-90d", None)
    path.write_text(SPEC.replace("labels: {source: labels.parquet}",
                                 "labels: {source: labels.parquet, start: null, end: '2026-01-31'}"))
    open_start = spec_for_retrain(registry, MODEL, str(path), now=now)
    assert (open_start.labels.start, open_start.labels.end) == (None, None)

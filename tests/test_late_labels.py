"""Late labels: a version calibrated at registration, a window judged before its labels arrive (estimated from
confidence, realised 'not matured'), the same window judged again once they land a day later, and the pieces
behind it (isotonic calibration stored as JSON numbers, CBPE estimates of accuracy, ROC AUC and F1).

A real SQLite registry and an inference log written by the gateway's own logger; time is driven by the
monitor's ``now``, never slept through.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from console.app import Console, create_app
from core import profiles
from core.settings import Settings
from flows.calibration import apply_calibration, brier, fit_calibration
from flows.estimators import build_pipeline
from flows.evaluate import score_candidate
from flows.monitor import run_monitor
from flows.monitoring.estimate import estimate_window, expected_metric
from flows.monitoring.trigger import TriggerResult

MODEL = "late-labels"
FEATURES = ["x1", "x2"]
DAY = timedelta(days=1)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def rows(n: int, seed: int, *, x1_scale: float = 1.5) -> pd.DataFrame:
    """P(y=1 | x) = sigmoid(2.5 x1 + 0.5 x2), the same in every window: a narrower ``x1_scale`` moves traffic
    towards the class boundary (covariate shift), where the model is right less often."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x1": rng.normal(0, x1_scale, n), "x2": rng.normal(0, 1.5, n)})
    frame["label"] = (rng.random(n) < sigmoid(2.5 * frame["x1"] + 0.5 * frame["x2"])).astype("int64")
    return frame


@pytest.fixture
def calibrated(registry: Any) -> Any:
    """Production: a logistic regression registered as the train flow registers one, with its holdout metrics,
    the training set's profile as reference and the calibration fitted on the holdout. Regularised hard, so its
    probabilities are too timid and the isotonic curve is applied (not the identity)."""
    train, holdout = rows(2000, 1), rows(1000, 2)
    model = build_pipeline("logistic_regression", {"max_iter": 500, "C": 0.002}, FEATURES, [], "binary")
    model.fit(train[FEATURES], train["label"])
    signature = {
        "inputs": [{"name": f, "dtype": "float64"} for f in FEATURES],
        "outputs": [{"name": "label", "dtype": "int64"}, {"name": "probability", "dtype": "float64"}],
        "task": "binary",
        "classes": [0, 1],
        "label": "label",
    }
    metrics, outputs = score_candidate(model, signature, holdout, "label", "accuracy")
    mv = registry.register_version(
        MODEL, model, signature=signature, metrics={f"holdout_{k}": v for k, v in metrics.items()},
        tags={"metric": "accuracy"}, reference_profile=profiles.profile_frame(train[FEATURES + ["label"]]),
        calibration=fit_calibration("binary", holdout["label"].to_numpy(), outputs, [0, 1]),
    )
    registry.promote(MODEL, mv.version, reason="test setup")
    return mv


def serve(registry: Any, mv: Any, frame: pd.DataFrame, start: datetime) -> list[tuple[str, int, int, float]]:
    """The window's traffic through the gateway's logger, answered by the registered predictor; returns
    (request id, row, label, answer time) of each row, for the feedback that comes later."""
    from core.settings import get_settings
    from gateway.inference_log import InferenceLogger, PredictionRecord

    predictor = registry.load_predictor(mv)
    logger = InferenceLogger(get_settings().resolved_inference_log_uri, profile_window_s=3600)
    truth = []
    for i, k in enumerate(range(0, len(frame), 50)):
        chunk = frame.iloc[k : k + 50]
        ts = (start + timedelta(minutes=4 * i)).timestamp()
        columns = {f: chunk[f].to_numpy() for f in FEATURES}
        logger.log_prediction(PredictionRecord(f"r{i}", ts, MODEL, mv.version, "production", columns,
                                               predictor.predict(columns)))
        truth += [(f"r{i}", row, int(label), ts) for row, label in enumerate(chunk["label"])]
    logger.flush()
    return truth


def send_labels(truth: list[tuple[str, int, int, float]], share: float, delay: timedelta) -> None:
    """Feedback for the first ``share`` of the rows, each sent ``delay`` after its answer."""
    from core.settings import get_settings
    from gateway.inference_log import FeedbackRecord, InferenceLogger

    logger = InferenceLogger(get_settings().resolved_inference_log_uri, profile=False)
    for request_id, row, label, ts in truth[: int(len(truth) * share)]:
        logger.log_feedback(FeedbackRecord(request_id, row, label, ts + delay.total_seconds(), MODEL))
    logger.flush()


def last_hour() -> datetime:
    """An hour the log can hold now: its files are written with today's clock."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)


# -- the monitor with late labels ----------------------------------------------------------------------------


def test_a_drifted_window_is_estimated_before_its_labels_and_rejudged_when_they_land_a_day_later(
    registry: Any, calibrated: Any, tmp_path: Path
) -> None:
    hour = last_hour()
    truth = serve(registry, calibrated, rows(600, 8, x1_scale=0.3), hour)
    policy = {"label_delay": "1d", "retrain_on_drift": False}  # drift warns; only performance retrains
    baseline = calibrated.metrics["holdout_accuracy"]
    assert calibrated.calibration["method"] == "isotonic"

    first = run_monitor(MODEL, registry=registry, now=hour + timedelta(minutes=65), trigger="off", policy=policy)
    report = registry.get_report(first.report_id)
    estimated, realised = report.performance["estimated"], report.performance["realised"]
    assert (estimated["kind"], estimated["method"], estimated["status"]) == ("estimated", "CBPE", "ok")
    assert estimated["rows"] == 600 and estimated["value"] < baseline - 0.1
    assert (realised["kind"], realised["matured"], realised["coverage"], realised["labelled"]) == \
        ("realised", False, 0.0, 0)
    assert realised["matures_at"] == (hour + timedelta(hours=1) + DAY).isoformat()
    assert first.decision == "warn" and "dataset drift" in first.reason and "labels not matured" in first.reason

    send_labels(truth, 0.8, DAY)  # 80% of the rows get their label, a day after the answer
    requests: list[dict[str, Any]] = []

    def record(payload: dict[str, Any], spec: str | None) -> TriggerResult:  # the retrain, asked for only
        requests.append(payload)
        return TriggerResult("direct", f"recorded-{len(requests)}")

    second = run_monitor(MODEL, registry=registry, now=hour + timedelta(hours=1, minutes=5) + DAY, trigger="direct",
                         retrainer=record, policy=policy)
    assert second.status == "insufficient_data"  # this run's own window is empty; the earlier one decides
    assert second.decision == "retrain" and second.triggered_run == "recorded-1"
    (request,) = requests
    assert (request["report_id"], request["metric"]) == (second.report_id, "accuracy")
    assert f"earlier window {hour.isoformat(timespec='minutes')}" in second.reason
    assert f"(report {first.report_id}), re-judged on its matured labels: accuracy" in second.reason
    rejudged = registry.get_report(first.report_id)
    performance = rejudged.performance
    realised = performance["realised"]
    assert (realised["matured"], realised["labelled"], realised["rows"], realised["coverage"]) == (True, 480, 600, 0.8)
    labelled = pd.DataFrame(truth[:480], columns=["request_id", "row", "label", "ts"])
    frame = rows(600, 8, x1_scale=0.3).iloc[:480]
    answered = registry.load_predictor(calibrated).predict({f: frame[f].to_numpy() for f in FEATURES})["label"]
    assert realised["value"] == pytest.approx(accuracy_score(labelled["label"], answered))
    assert performance["value"] == realised["value"] and rejudged.n_labelled == 480  # the top level is realised
    assert realised["drop"] > 0.1 and abs(realised["value"] - performance["estimated"]["value"]) < 0.06
    assert request["metric_drop"] == pytest.approx(realised["drop"])  # the evidence the retrain is asked on
    assert performance["estimated"] == estimated  # the estimate stays as it was made, beside what was measured
    assert [(e["matured"], e["labelled"], e["coverage"]) for e in performance["rejudged"]] == [(False, 0, 0.0)]
    assert "re-judged" in rejudged.reason and rejudged.decision == "warn"  # its own verdict is history

    # looked at again within the label delay: nothing new, no second retrain for the same window
    third = run_monitor(MODEL, registry=registry, now=hour + timedelta(hours=2, minutes=5) + DAY, trigger="direct",
                        retrainer=record, policy=policy)
    assert third.decision == "none" and len(requests) == 1
    assert len(registry.get_report(first.report_id).performance["rejudged"]) == 1

    page = TestClient(create_app(Console(Settings(home=tmp_path), registry))).get(f"/reports/{first.report_id}").text
    assert "<th>Realised (labels)</th><th>Estimated (CBPE)</th>" in page
    assert f'<td data-side="realised">{realised["value"]:.4g}</td>' in page
    assert f'<td data-side="estimated">{estimated["value"]:.4g}</td>' in page
    assert "480 of 600 labelled (coverage 80%)" in page and "matured: the realised value decides" in page


def test_retrain_on_estimate_asks_for_retraining_before_any_label(registry: Any, calibrated: Any) -> None:
    hour = last_hour()
    serve(registry, calibrated, rows(600, 9, x1_scale=0.3), hour)
    now = hour + timedelta(minutes=65)
    policy: dict[str, Any] = {"label_delay": "1d", "retrain_on_drift": False}
    reported = run_monitor(MODEL, registry=registry, now=now, trigger="off", policy=policy)
    asked = run_monitor(MODEL, registry=registry, now=now, trigger="off",
                        policy={**policy, "retrain_on_estimate": True})
    assert reported.decision == "warn" and "estimated performance decay" not in reported.reason
    assert asked.decision == "retrain" and asked.n_labelled == 0
    assert "estimated performance decay, labels not matured: accuracy" in asked.reason
    assert "(CBPE, from calibrated confidence) on 600 rows" in asked.reason


def test_with_no_label_delay_a_window_is_judged_once_on_the_labels_it_has(registry: Any, calibrated: Any) -> None:
    hour = last_hour()
    send_labels(serve(registry, calibrated, rows(600, 10, x1_scale=0.3), hour), 0.5, timedelta(minutes=1))
    outcome = run_monitor(MODEL, registry=registry, now=hour + timedelta(minutes=65), trigger="off")
    realised = registry.get_report(outcome.report_id).performance["realised"]
    assert (realised["matured"], realised["coverage"]) == (True, 0.5)
    assert outcome.decision == "retrain" and "performance decay: accuracy" in outcome.reason


# -- calibration ---------------------------------------------------------------------------------------------


def test_isotonic_calibration_round_trips_through_json_and_lowers_the_brier_score_of_an_overconfident_model(
) -> None:
    rng = np.random.default_rng(0)
    x, later = rng.normal(size=3000), rng.normal(size=5000)
    y, y_later = (rng.random(3000) < sigmoid(1.5 * x)).astype(int), (rng.random(5000) < sigmoid(1.5 * later))
    overconfident = {"probability": sigmoid(4 * x), "label": (x > 0).astype(int)}
    stored = json.loads(json.dumps(fit_calibration("binary", y, overconfident, [0, 1])))  # plain JSON only
    assert stored["rows"] == 3000 and stored["classes"] == [0, 1] and len(stored["curves"]) == 1
    assert stored["method"] == "isotonic"
    assert stored["brier_after"] < stored["brier_before"] - 0.01 and stored["ece_after"] < stored["ece_before"] / 3

    raw_later = sigmoid(4 * later)
    truth = y_later.astype(float).reshape(-1, 1)
    assert brier(apply_calibration(stored, raw_later), truth) < brier(raw_later, truth) - 0.01
    fitted = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(sigmoid(4 * x), y)
    np.testing.assert_allclose(apply_calibration(stored, raw_later), fitted.predict(raw_later), atol=1e-12)

    three = rng.dirichlet([1, 1, 1], size=600)
    labels = np.array(["a", "b", "c"])[[rng.choice(3, p=p) for p in three]]
    multi = fit_calibration("multiclass", labels, {"probabilities": three ** 3 / (three ** 3).sum(1, keepdims=True)},
                            ["a", "b", "c"])
    assert multi is not None and len(multi["curves"]) == 3 and multi["brier_after"] < multi["brier_before"]
    np.testing.assert_allclose(apply_calibration(multi, three).sum(axis=1), 1.0)
    assert fit_calibration("regression", y, {"prediction": x}, None) is None
    # probabilities already calibrated: isotonic does no better on rows it was not fitted on, so none is applied
    own = fit_calibration("binary", y, {"probability": sigmoid(1.5 * x)}, [0, 1])
    assert own["method"] == "identity" and own["brier_after"] >= own["brier_before"]
    np.testing.assert_allclose(apply_calibration(own, raw_later), raw_later)


# -- CBPE ----------------------------------------------------------------------------------------------------


def test_cbpe_estimates_a_binary_window_close_to_its_realised_metrics() -> None:
    """A model whose scores are miscalibrated but calibrated on a holdout; the window drifts towards the
    boundary (P(y | x) unchanged): the estimates follow the realised values within sampling noise."""
    rng = np.random.default_rng(1)
    x_holdout, x_window = rng.normal(0, 1.5, 4000), rng.normal(0.4, 0.6, 20_000)
    y_holdout = (rng.random(4000) < sigmoid(2 * x_holdout)).astype(int)
    y_window = (rng.random(20_000) < sigmoid(2 * x_window)).astype(int)

    def score(x: np.ndarray) -> np.ndarray:  # overconfident and off-centre
        return sigmoid(5 * x - 0.3)

    calibration = fit_calibration("binary", y_holdout, {"probability": score(x_holdout)}, [0, 1])
    window = pd.DataFrame({"output.probability": score(x_window), "output.label": (score(x_window) > 0.5).astype(int)})
    realised = {"accuracy": accuracy_score(y_window, window["output.label"]),
                "roc_auc": roc_auc_score(y_window, window["output.probability"]),
                "f1": f1_score(y_window, window["output.label"])}
    for metric, value in realised.items():
        estimate = estimate_window(window, task="binary", metric=metric, calibration=calibration,
                                   baseline={f"holdout_{metric}": 0.9})
        assert estimate.status == "ok" and estimate.value == pytest.approx(value, abs=0.02), metric
        assert estimate.drop == pytest.approx(0.9 - estimate.value)
    assert estimate_window(window, task="binary", metric="neg_log_loss", calibration=calibration,
                           baseline={}).status == "not_estimable"
    assert estimate_window(window, task="binary", metric="accuracy", calibration=None,
                           baseline={}).status == "no_calibration"


def test_cbpe_estimates_a_multiclass_window_close_to_its_realised_metrics() -> None:
    rng = np.random.default_rng(2)
    weights = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])

    def draw(n: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(0, spread, (n, 2))
        p = np.exp(x @ weights.T)
        p /= p.sum(axis=1, keepdims=True)
        return p, np.array([rng.choice(3, p=row) for row in p])

    def served(p: np.ndarray) -> np.ndarray:  # too confident: a softmax at temperature 1/2
        return p ** 2 / (p ** 2).sum(axis=1, keepdims=True)

    p_holdout, y_holdout = draw(4000, 1.2)
    p_window, y_window = draw(15_000, 0.6)
    classes = ["a", "b", "c"]
    calibration = fit_calibration("multiclass", np.array(classes)[y_holdout], {"probabilities": served(p_holdout)},
                                  classes)
    probabilities = served(p_window)
    outputs = {"probabilities": probabilities, "label": np.array(classes)[probabilities.argmax(axis=1)]}
    truth = np.array(classes)[y_window]
    realised = {"accuracy": accuracy_score(truth, outputs["label"]),
                "roc_auc_ovr": roc_auc_score(y_window, probabilities, multi_class="ovr"),
                "f1_macro": f1_score(truth, outputs["label"], average="macro")}
    for metric, value in realised.items():
        assert expected_metric("multiclass", metric, outputs, calibration) == pytest.approx(value, abs=0.02), metric


def test_the_estimate_cannot_see_concept_drift_only_labels_can() -> None:
    """Same inputs, the truth inverted: the confidence is unchanged, so is the estimate (NannyML's stated
    limit of CBPE); the realised accuracy collapses."""
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1.5, 5000)
    y = (rng.random(5000) < sigmoid(2 * x)).astype(int)
    outputs = {"probability": sigmoid(2 * x), "label": (x > 0).astype(int)}
    calibration = fit_calibration("binary", y, outputs, [0, 1])
    estimated = expected_metric("binary", "accuracy", outputs, calibration)
    assert estimated == pytest.approx(accuracy_score(y, outputs["label"]), abs=0.02)
    assert accuracy_score(1 - y, outputs["label"]) < estimated - 0.5

"""Monitoring: drift, performance decay, insufficient data, the decision, the cool-down, the report,
the artifacts and the retrain trigger (event with a server, direct run without one).

Small synthetic data and a logistic regression registered as production with the training set's
whylogs profile as reference, exactly as the train flow registers it. No Feast, no Ray.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prefect.testing.fixtures import asserting_events_worker, reset_worker_events  # noqa: F401 - fixtures

from core import profiles
from flows.estimators import build_pipeline
from flows.monitor import run_monitor
from flows.monitoring.decision import active_cooldown, decide
from flows.monitoring.drift import feature_drift
from flows.monitoring.performance import window_performance
from flows.monitoring.policy import MonitoringPolicy, resolve_policy
from flows.monitoring.trigger import RETRAIN_EVENT, TriggerResult, resolve_mode
from flows.reporting import LogReporter

MODEL = "churn-mon"
NUMERIC = ["tenure", "spend", "tickets"]
CATEGORICAL = ["plan"]
FEATURES = NUMERIC + CATEGORICAL


def make_frame(
    n: int,
    seed: int,
    *,
    shift: float = 0.0,
    plan_p: tuple[float, float, float] = (0.5, 0.3, 0.2),
    flip: bool = False,
) -> pd.DataFrame:
    """Rows of the toy domain. ``shift`` moves the numeric features; ``flip`` inverts the label relation
    (concept drift: same inputs, different truth, so only performance can notice)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "tenure": rng.normal(24 + 12 * shift, 8, n),
            "spend": rng.gamma(2.0, 20.0 * (1 + shift), n),
            "tickets": rng.poisson(1.0 + 2 * shift, n).astype("int64"),
            "plan": rng.choice(["basic", "pro", "max"], n, p=list(plan_p)),
        }
    )
    logit = -0.12 * (frame["tenure"] - 24) + 0.6 * (frame["tickets"] - 1) + (frame["plan"] == "basic") * 0.8
    logit = -logit if flip else logit
    frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    return frame


@pytest.fixture
def production(registry: Any) -> Any:
    """Production: trained on ``make_frame(800, seed=1)``, with reference profile and holdout metric."""
    from sklearn.metrics import roc_auc_score

    train, holdout = make_frame(800, 1), make_frame(300, 2)
    model = build_pipeline("logistic_regression", {"max_iter": 500}, NUMERIC, CATEGORICAL, "binary")
    model.fit(train[FEATURES], train["label"])
    auc = float(roc_auc_score(holdout["label"], model.predict_proba(holdout[FEATURES])[:, 1]))
    dtypes = {"tenure": "float64", "spend": "float64", "tickets": "int64", "plan": "string"}
    signature = {
        "inputs": [{"name": f, "dtype": dtypes[f]} for f in FEATURES],
        "outputs": [{"name": "label", "dtype": "int64"}, {"name": "probability", "dtype": "float64"}],
    }
    mv = registry.register_version(
        MODEL,
        model,
        signature=signature,
        metrics={"holdout_roc_auc": auc},
        tags={"metric": "roc_auc"},
        reference_profile=profiles.profile_frame(train[FEATURES + ["label"]]),
    )
    registry.promote(MODEL, mv.version, reason="test setup")
    return mv


class FakeRetrainer:
    """Stands in for the in-process retrain run; records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, payload: dict[str, Any], spec: str | None) -> TriggerResult:
        self.calls.append(payload)
        return TriggerResult("direct", f"fake-run-{len(self.calls)}")


def monitor(registry: Any, frame: pd.DataFrame, **kwargs: Any) -> Any:
    kwargs.setdefault("trigger", "off")
    return run_monitor(MODEL, registry=registry, frame=frame, **kwargs)


# -- the parts -----------------------------------------------------------------------------------------------


def test_policy_defaults_and_overrides() -> None:
    base = resolve_policy({"min_rows": 500, "dataset_drift_share": 0.5})
    merged = resolve_policy(base, {"min_rows": 10})
    assert (merged.min_rows, merged.dataset_drift_share, merged.cooldown_minutes) == (10, 0.5, 10.0)
    assert resolve_policy(None) == MonitoringPolicy()
    with pytest.raises(ValueError, match="warn_metric_drop"):
        MonitoringPolicy(warn_metric_drop=0.2, max_metric_drop=0.1)


def test_drift_detected_on_shift_not_on_same_distribution() -> None:
    """Seeded: with four features at p < 0.05 a same-distribution batch shows one false alarm in about
    five seeds (seed 7 does, on ``spend``): the reason the decision looks at the share of drifted features."""
    reference = profiles.profile_frame(make_frame(800, 1)[FEATURES])
    policy = MonitoringPolicy()
    same = feature_drift(reference, profiles.profile_frame(make_frame(400, 3)[FEATURES]), FEATURES, policy)
    shifted = feature_drift(
        reference,
        profiles.profile_frame(make_frame(400, 8, shift=1.0, plan_p=(0.1, 0.1, 0.8))[FEATURES]),
        FEATURES,
        policy,
    )
    assert same.drifted == [] and same.share == 0.0
    assert shifted.drifted == sorted(FEATURES) and shifted.share == 1.0
    assert {s["algorithm"] for s in shifted.features.values()} == {"ks", "chi-square"}
    assert (
        decide(
            shifted,
            window_performance(None, label="label", task="binary", metric="roc_auc", baseline={}, policy=policy),
            policy,
        ).decision
        == "retrain"
    )


def test_hellinger_where_configured_and_ignored_features() -> None:
    reference = profiles.profile_frame(make_frame(800, 1)[FEATURES])
    target = profiles.profile_frame(make_frame(400, 8, shift=1.0)[FEATURES])
    result = feature_drift(
        reference, target, FEATURES, MonitoringPolicy(hellinger=["spend"], ignore=["plan"])
    )
    assert result.features["spend"]["algorithm"] == "hellinger"
    assert "plan" not in result.features


def test_cooldown_only_counts_reports_that_started_a_run() -> None:
    from registry.models import MonitoringReport

    now = datetime.now(UTC)
    policy = MonitoringPolicy(cooldown_minutes=10)
    started = MonitoringReport(
        model_name=MODEL, decision="retrain", triggered_run="r1", created_at=now - timedelta(minutes=5)
    )
    suppressed = MonitoringReport(model_name=MODEL, decision="retrain", created_at=now - timedelta(minutes=1))
    assert active_cooldown([suppressed, started], policy, now) is started
    assert active_cooldown([suppressed, started], policy, now + timedelta(minutes=6)) is None
    assert active_cooldown([started], MonitoringPolicy(cooldown_minutes=0), now) is None


def test_trigger_mode_follows_the_prefect_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert resolve_mode("auto") == "direct"
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert resolve_mode("auto") == "event"
    assert resolve_mode("off") == "off"


# -- whole runs against the registry -------------------------------------------------------------------------


def test_shifted_batch_is_reported_as_drift_with_table_and_picture(
    registry: Any, production: Any, esteira_home: Any
) -> None:
    reporter = LogReporter()
    outcome = monitor(registry, make_frame(400, 8, shift=1.0, plan_p=(0.1, 0.1, 0.8)), reporter=reporter)
    assert outcome.status == "ok" and outcome.decision == "retrain"
    assert outcome.drift_share == 1.0 and "dataset drift" in outcome.reason
    assert outcome.triggered_run is None  # trigger 'off': decided and reported only
    (report,) = registry.reports(MODEL)
    assert report.id == outcome.report_id and report.version == production.version
    assert set(report.drift["drifted"]) == set(FEATURES)
    assert report.drift["features"]["tenure"]["algorithm"] == "ks"
    table = reporter.artifacts["monitor-churn-mon-drift"]
    assert [row["feature"] for row in table if row["drifted"] == "yes"] == sorted(FEATURES)
    markdown = reporter.artifacts["monitor-churn-mon-report"]
    assert "**Decision: retrain**" in markdown and "data:image/png;base64," in markdown
    picture = esteira_home / "reports" / MODEL
    assert outcome.picture and outcome.picture.startswith(str(picture))
    assert Path(outcome.picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_distribution_batch_decides_none(registry: Any, production: Any) -> None:
    outcome = monitor(registry, make_frame(400, 3))
    assert (outcome.status, outcome.decision, outcome.drift_share) == ("ok", "none", 0.0)
    (report,) = registry.reports(MODEL)
    assert report.performance["status"] == "ok" and report.performance["drop"] < 0.05


def test_performance_drop_from_labels_decides_retrain(registry: Any, production: Any) -> None:
    """Same inputs, inverted truth: no data drift, so only the labels can show the decay.
    No score column in the batch: the production predictor rescored the rows."""
    outcome = monitor(registry, make_frame(400, 3, flip=True))
    assert outcome.decision == "retrain" and outcome.drift_share == 0.0
    assert "performance decay: roc_auc" in outcome.reason
    (report,) = registry.reports(MODEL)
    assert report.performance["baseline"] == pytest.approx(production.metrics["holdout_roc_auc"])
    assert report.performance["drop"] > 0.3 and report.n_labelled == 400


def test_logged_scores_are_used_and_unlabelled_rows_skipped(registry: Any, production: Any) -> None:
    frame = make_frame(400, 3)
    frame["output.probability"] = 1.0 - frame["label"]  # a logged score that is perfectly wrong
    frame.loc[frame.index[:300], "label"] = None
    outcome = monitor(registry, frame)
    (report,) = registry.reports(MODEL)
    assert report.n_labelled == 100 and report.performance["value"] == 0.0
    assert outcome.decision == "retrain"


def test_too_little_data_is_insufficient_not_a_crash(registry: Any, production: Any) -> None:
    reporter = LogReporter()
    outcome = monitor(registry, make_frame(30, 9, shift=2.0), reporter=reporter)
    assert (outcome.status, outcome.decision, outcome.n_rows) == ("insufficient_data", "none", 30)
    assert "fewer than min_rows=100" in outcome.reason
    assert "insufficient_data" in reporter.artifacts["monitor-churn-mon-report"]
    assert monitor(registry, make_frame(0, 9)).status == "insufficient_data"


def test_second_retrain_within_cooldown_starts_nothing(registry: Any, production: Any) -> None:
    retrainer = FakeRetrainer()
    shifted = make_frame(400, 8, shift=1.0)
    first = monitor(registry, shifted, trigger="direct", retrainer=retrainer)
    second = monitor(registry, shifted, trigger="direct", retrainer=retrainer)
    assert first.triggered_run == "fake-run-1" and first.trigger_mode == "direct"
    assert len(retrainer.calls) == 1
    assert retrainer.calls[0]["report_id"] == first.report_id and retrainer.calls[0]["drift_share"] == 0.75
    assert second.decision == "retrain" and second.triggered_run is None
    assert f"cool-down: retrain fake-run-1 was started by report {first.report_id}" in second.reason
    # after the cool-down the next decision starts a retrain again
    later = run_monitor(
        MODEL,
        registry=registry,
        frame=shifted,
        trigger="direct",
        retrainer=retrainer,
        now=datetime.now(UTC) + timedelta(minutes=11),
    )
    assert later.triggered_run == "fake-run-2"


def test_auto_trigger_without_server_runs_directly(
    registry: Any, production: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    retrainer = FakeRetrainer()
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        outcome = monitor(registry, make_frame(400, 8, shift=1.0), trigger="auto", retrainer=retrainer)
    assert outcome.trigger_mode == "direct" and outcome.triggered_run == "fake-run-1"


def test_retrain_decision_emits_the_event(
    prefect_harness: str,
    registry: Any,
    production: Any,
    asserting_events_worker: Any,  # noqa: F811 - prefect's fixture, imported above
    reset_worker_events: Any,  # noqa: F811
) -> None:
    from prefect.events.clients import AssertingEventsClient

    retrainer = FakeRetrainer()
    outcome = monitor(registry, make_frame(400, 8, shift=1.0), trigger="event", retrainer=retrainer)
    asserting_events_worker.drain()
    assert isinstance(asserting_events_worker._client, AssertingEventsClient)
    events = [e for e in asserting_events_worker._client.events if e.event == RETRAIN_EVENT]
    assert len(events) == 1 and retrainer.calls == []
    event = events[0]
    assert event.resource.id == f"esteira.model.{MODEL}" and event.resource.name == MODEL
    assert event.payload["report_id"] == outcome.report_id and event.payload["drift_share"] == 0.75
    assert event.payload["model_name"] == MODEL and "dataset drift" in event.payload["reason"]
    assert outcome.triggered_run == f"event:{event.id}"
    (report,) = registry.reports(MODEL)
    assert report.triggered_run == f"event:{event.id}"


def test_monitor_flow_writes_report_and_prefect_artifacts(
    prefect_harness: str, registry: Any, production: Any
) -> None:
    """The Prefect flow end to end on a batch: a completed run, its report and its two artifacts."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.monitor import monitor as monitor_flow

    state = monitor_flow(
        model_name=MODEL, frame=make_frame(400, 8, shift=1.0), trigger="off", return_state=True
    )
    assert state.is_completed(), state.message
    result = state.result()
    assert result["decision"] == "retrain"
    (report,) = registry.reports(MODEL)
    assert report.flow_run_id == str(state.state_details.flow_run_id)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["monitor-churn-mon-drift", "monitor-churn-mon-report"])
            )
        )
    kinds = {a.key: a for a in artifacts if str(a.flow_run_id) == str(state.state_details.flow_run_id)}
    assert kinds["monitor-churn-mon-drift"].type == "table"
    assert "data:image/png;base64," in kinds["monitor-churn-mon-report"].data


def test_the_sessions_prefect_server_is_seen_only_by_tests_that_ask_for_it(
    request: pytest.FixtureRequest,
) -> None:
    """``trigger="auto"`` sends an event wherever Prefect points: after the tests above used the shared test
    server, this one (which does not ask for ``prefect_harness``) and a thread it starts must not see it."""
    import threading

    from prefect.settings import get_current_settings

    server = request.getfixturevalue("prefect_server")
    seen = [get_current_settings().api.url]
    thread = threading.Thread(target=lambda: seen.append(get_current_settings().api.url))  # no copied context
    thread.start()
    thread.join(10)
    assert len(seen) == 2 and server not in seen


def test_gateway_window_uses_logged_profiles_scores_and_feedback(
    registry: Any, production: Any, esteira_home: Any
) -> None:
    """A window of gateway traffic: rows and merged profiles written by the gateway's inference logger,
    ground truth from its feedback records, scores from the logged ``output.probability``."""
    from core.settings import get_settings
    from gateway.inference_log import FeedbackRecord, InferenceLogger, PredictionRecord

    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    frame = make_frame(300, 8, shift=1.0, plan_p=(0.1, 0.1, 0.8))
    logger = InferenceLogger(get_settings().resolved_inference_log_uri, profile_window_s=3600)
    for i, chunk in enumerate(frame.iloc[k : k + 50] for k in range(0, len(frame), 50)):
        ts = (hour + timedelta(minutes=5 * i)).timestamp()
        logger.log_prediction(
            PredictionRecord(
                request_id=f"r{i}",
                timestamp=ts,
                model=MODEL,
                version=production.version,
                role="production",
                inputs={f: chunk[f].to_numpy() for f in FEATURES},
                outputs={"probability": np.full(len(chunk), 0.5), "label": np.zeros(len(chunk), dtype=int)},
            )
        )
        for row, label in enumerate(chunk["label"].to_numpy()[:20]):
            logger.log_feedback(
                FeedbackRecord(request_id=f"r{i}", row=row, label=int(label), timestamp=ts + 60, model=MODEL)
            )
    logger.flush()
    outcome = run_monitor(
        MODEL,
        registry=registry,
        start=hour,
        end=hour + timedelta(hours=1),
        trigger="off",
        policy={"min_labelled": 100},
    )
    (report,) = registry.reports(MODEL)
    assert (outcome.n_rows, report.n_labelled) == (300, 120)
    assert report.drift["source"] == "gateway-profiles" and report.drift_share == 1.0
    assert report.performance["value"] == 0.5  # constant logged score: chance-level AUC, not rescored
    assert report.window_start.replace(tzinfo=UTC) == hour  # SQLite hands datetimes back naive (UTC)
    # no bounds given: the last complete hour before ``now``, the same traffic
    default = run_monitor(MODEL, registry=registry, now=hour + timedelta(minutes=70), trigger="off")
    assert default.n_rows == 300 and registry.reports(MODEL)[0].window_start.replace(tzinfo=UTC) == hour
    empty = run_monitor(
        MODEL,
        registry=registry,
        start=hour - timedelta(hours=3),
        end=hour - timedelta(hours=2),
        trigger="off",
    )
    assert (empty.status, empty.n_rows) == ("insufficient_data", 0)


def test_policy_comes_from_the_spec_monitoring_section(registry: Any, production: Any) -> None:
    """A spec's ``monitoring:`` section sets the policy (here: a higher min_rows and a label name);
    the flow's ``policy`` parameter overrides single fields on top of it."""
    spec = f"""
name: {MODEL}
task: binary
feature_service: {MODEL}_svc
label: label
labels: {{source: labels.parquet}}
candidates: [{{family: logistic_regression}}]
monitoring: {{min_rows: 1000, cooldown_minutes: 30}}
"""
    outcome = monitor(registry, make_frame(400, 8, shift=1.0), spec=spec)
    assert outcome.status == "insufficient_data" and "min_rows=1000" in outcome.reason
    overridden = monitor(registry, make_frame(400, 8, shift=1.0), spec=spec, policy={"min_rows": 100})
    assert overridden.decision == "retrain"
    assert registry.reports(MODEL)[0].drift["policy"]["cooldown_minutes"] == 30


def test_categorical_drift_needs_a_minimum_effect_size() -> None:
    """On a big window chi-squared calls a shift of a few points of share significant; the Hellinger distance
    of the shares must also reach ``categorical_min_hellinger``."""
    reference = profiles.profile_frame(make_frame(20_000, 1)[FEATURES])
    nudged = profiles.profile_frame(make_frame(20_000, 3, plan_p=(0.47, 0.32, 0.21))[FEATURES])
    moved = profiles.profile_frame(make_frame(2_000, 3, plan_p=(0.2, 0.3, 0.5))[FEATURES])
    significant_only = feature_drift(reference, nudged, ["plan"], MonitoringPolicy(categorical_min_hellinger=0.0))
    small = feature_drift(reference, nudged, ["plan"], MonitoringPolicy())
    large = feature_drift(reference, moved, ["plan"], MonitoringPolicy())
    assert significant_only.features["plan"]["pvalue"] < 0.05 and significant_only.drifted == ["plan"]
    assert small.features["plan"]["effect"] < 0.05 and small.drifted == []
    assert large.features["plan"]["effect"] > 0.1 and large.drifted == ["plan"]
    assert profiles.hellinger({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}) == 0.0
    assert profiles.hellinger({"a": 1.0}, {"b": 1.0}) == pytest.approx(1.0)


def test_labels_score_as_the_models_classes_whatever_json_type_they_came_as() -> None:
    """One rule for labels, the gateway's: ``1``, ``1.0``, ``"1"`` and ``true`` are class 1 when scoring too;
    a label that is no class (``1.5`` used to be truncated to 1) makes the verdict 'undefined', naming it."""
    frame = make_frame(200, 3)
    frame["output.probability"] = np.linspace(0, 1, len(frame))
    frame["output.label"] = (frame["output.probability"] > 0.5).astype(int)
    policy = MonitoringPolicy(min_labelled=10)

    def judged(labels: list[Any]) -> Any:
        return window_performance(frame.assign(label=labels), label="label", task="binary", metric="roc_auc",
                                  baseline={"holdout_roc_auc": 0.8}, policy=policy, classes=[0, 1])

    truth = frame["label"].tolist()
    as_json = [[1, 1.0, "1", True][i % 4] if v == 1 else [0, 0.0, "0", False][i % 4] for i, v in enumerate(truth)]
    assert judged(as_json).value == judged(truth).value and judged(truth).status == "ok"
    for foreign in (1.5, "yes", 2):
        verdict = judged([foreign, *truth[1:]])
        assert verdict.status == "undefined" and repr(foreign) in verdict.note
    regression = window_performance(pd.DataFrame({"label": ["1.5"] * 20, "output.prediction": 1.0}), label="label",
                                    task="regression", metric="r2", baseline={}, policy=policy)
    assert regression.status == "undefined" and "not a number" in regression.note


def test_a_gateway_window_is_judged_the_same_after_its_log_is_compacted(
    registry: Any, production: Any, esteira_home: Any
) -> None:
    """Compaction turns the window's many files into one per hour; the report's counts, metric and decision
    do not move."""
    import time

    from core.inference_log import compact_log
    from core.settings import get_settings
    from gateway.inference_log import FeedbackRecord, InferenceLogger, PredictionRecord

    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    frame = make_frame(300, 8, shift=1.0, plan_p=(0.1, 0.1, 0.8))
    logger = InferenceLogger(get_settings().resolved_inference_log_uri, profile_window_s=3600)
    for i, chunk in enumerate(frame.iloc[k : k + 25] for k in range(0, len(frame), 25)):
        ts = (hour + timedelta(minutes=4 * i)).timestamp()
        logger.log_prediction(PredictionRecord(f"r{i}", ts, MODEL, production.version, "production",
                                               {f: chunk[f].to_numpy() for f in FEATURES},
                                               {"probability": chunk["tenure"].to_numpy() / 100,
                                                "label": np.zeros(len(chunk), dtype=int)}))
        for row, label in enumerate(chunk["label"].to_numpy()[:15]):
            logger.log_feedback(FeedbackRecord(f"r{i}", row, int(label), ts + 60, MODEL))
        logger.flush()  # one file per flush, as a gateway writes them
    window: dict[str, Any] = {"start": hour, "end": hour + timedelta(hours=1), "trigger": "off",
                              "policy": {"min_labelled": 100}}
    before = run_monitor(MODEL, registry=registry, compact=False, **window)
    done = compact_log(MODEL, now=time.time() + 4 * 3600)  # as four hours later: the hour written now is closed
    assert done.files_in == 24 and done.files_out == 2
    after = run_monitor(MODEL, registry=registry, **window)
    first, second = registry.reports(MODEL)[::-1]
    assert (after.n_rows, after.n_labelled, after.decision) == (before.n_rows, before.n_labelled, before.decision)
    assert (before.n_rows, before.n_labelled) == (300, 180)
    assert second.performance == first.performance and second.performance["status"] == "ok"
    assert after.drift_share == before.drift_share == 1.0

"""Training flow: spec parsing, bad input failing early, data validation, the search on Ray, lineage,
promotion, batch scoring and reproduction, on a copy of the churn example with small generated data.

One module-scoped project (data generated once, ~1,800 labelled rows) and one module-scoped first
training keep the whole file well under a minute of compute; each test that writes gets its own
registry where it needs to start empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flows.errors import DataValidationError, TrainingInputError
from flows.estimators import InvalidSearchSpace
from flows.features import FeastFetcher, UnknownFeatureService
from flows.reporting import LogReporter
from flows.spec import ModelSpec, load_spec
from registry import Registry
from tests.projects import EXAMPLES, copy_example, project_module, use_project_alone

SPEC: dict[str, Any] = {
    "name": "churn_test",
    "task": "binary",
    "feature_service": "churn_v1",
    "label": "churned",
    "labels": {"source": "data/churn_labels"},
    "candidates": [
        {"family": "logistic_regression", "params": {"max_iter": 300}, "search": {"C": [0.3, -1.0]}},
        {"family": "random_forest", "params": {"n_estimators": 20}, "search": {"max_depth": [4]}},
        {"family": "hist_gradient_boosting", "params": {"max_iter": 20},
         "search": {"learning_rate": {"distribution": "loguniform", "low": 0.05, "high": 0.2}}},
    ],
    "cv": {"folds": 2},
    "holdout": {"fraction": 0.25},
    "validation": {"min_rows": 200},
    "promotion": {"min_improvement": 0.001, "min_metric": 0.55},
}


def make_spec(**overrides: Any) -> ModelSpec:
    return load_spec({**SPEC, **overrides})


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the churn example with generated data (600 customers, 3 labels each), shared by the module."""
    from core.settings import get_settings
    from feature_repo.store import clear_store_cache

    base = tmp_path_factory.mktemp("train")
    root = copy_example("churn", base / "churn")
    with pytest.MonkeyPatch.context() as mp:
        use_project_alone(root, base / "home", mp)
        project_module(EXAMPLES / "churn", "generator").generate_batch(root / "data", n_customers=600,
                                                                       labels_per_customer=3, seed=7)
        yield root
        clear_store_cache()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def fetcher(project: Path) -> FeastFetcher:
    return FeastFetcher(apply=True)


@pytest.fixture(scope="module")
def labels(project: Path) -> pd.DataFrame:
    return project_module(EXAMPLES / "churn", "generator").load_labels(project / "data")


def fresh_registry(path: Path) -> Registry:
    return Registry(f"sqlite:///{path / 'registry.db'}", str(path / "artifacts"))


@pytest.fixture
def empty_registry(tmp_path: Path) -> Iterator[Registry]:
    reg = fresh_registry(tmp_path)
    yield reg
    reg.close()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, fetcher: FeastFetcher, ray_local: None) -> Any:
    """The first training of ``churn_test``, searched on the session's Ray (2 CPUs)."""
    from flows.train import train

    registry = fresh_registry(tmp_path_factory.mktemp("trained-registry"))
    reporter = LogReporter()
    result = train(make_spec(), registry=registry, fetcher=fetcher, reporter=reporter, parallel=True,
                   actor="test")
    yield registry, result, reporter
    registry.close()


def assert_nothing_written(registry: Registry) -> None:
    assert registry.list_models() == []
    assert registry.list_runs() == []


# -- spec (code tests) ---------------------------------------------------------------------------------


def test_example_churn_spec_loads_with_three_families() -> None:
    path = EXAMPLES / "churn" / "specs" / "churn.yaml"
    spec = load_spec(path)
    assert spec.feature_service == "churn_v1" and spec.task == "binary" and spec.metric == "roc_auc"
    assert {c.family for c in spec.candidates} >= {"logistic_regression", "random_forest", "hist_gradient_boosting"}
    assert spec.trial_configs() == load_spec(path).trial_configs()  # seeded
    assert spec.labels.start == "-90d" and spec.labels.relative


def test_spec_refuses_families_outside_the_allow_list() -> None:
    with pytest.raises(ValueError, match="unknown estimator family 'os.system' for a binary task"):
        make_spec(candidates=[{"family": "os.system", "params": {}}])


def test_spec_refuses_unknown_parameter_names_before_any_trial() -> None:
    with pytest.raises(InvalidSearchSpace, match=r"random_forest has no parameter\(s\) 'max_dpeth'"):
        make_spec(candidates=[{"family": "random_forest", "search": {"max_dpeth": [3]}}])


def test_spec_distributions_are_deterministic_and_bounded() -> None:
    spec = make_spec(candidates=[{"family": "random_forest", "samples": 5,
                                  "search": {"max_depth": {"distribution": "randint", "low": 2, "high": 4},
                                             "n_estimators": [10, 20]}}])
    configs = spec.trial_configs()
    assert len(configs) == 10 and configs == spec.trial_configs()
    assert {c["max_depth"] for _, c in configs} <= {2, 3}


# -- bad input fails early, nothing registered ---------------------------------------------------------


def test_unknown_feature_service_fails_before_anything_is_written(empty_registry: Registry,
                                                                    fetcher: FeastFetcher) -> None:
    from flows.train import train

    with pytest.raises(UnknownFeatureService, match="'churn_v9' not found.*churn_v1"):
        train(make_spec(feature_service="churn_v9"), registry=empty_registry, fetcher=fetcher, parallel=False)
    assert_nothing_written(empty_registry)


def test_absent_label_column_fails_naming_it(empty_registry: Registry, fetcher: FeastFetcher,
                                             labels: pd.DataFrame) -> None:
    from flows.train import train

    with pytest.raises(TrainingInputError, match="label source lacks column.*'cancelled'"):
        train(make_spec(label="cancelled"), registry=empty_registry, fetcher=fetcher, entities=labels,
              parallel=False)
    assert_nothing_written(empty_registry)


def test_empty_training_set_fails(empty_registry: Registry, fetcher: FeastFetcher, labels: pd.DataFrame) -> None:
    from flows.train import train

    with pytest.raises(TrainingInputError, match="no rows"):
        train(make_spec(), registry=empty_registry, fetcher=fetcher, entities=labels.iloc[:0], parallel=False)
    assert_nothing_written(empty_registry)


def test_entity_query_outside_the_data_fails_with_both_ranges(empty_registry: Registry,
                                                               fetcher: FeastFetcher) -> None:
    from flows.train import train

    spec = make_spec(labels={"source": "data/churn_labels", "start": "2001-01-01", "end": "2001-02-01"})
    with pytest.raises(TrainingInputError, match=r"window .* selects no rows: the data covers .* \(1800 rows\)"):
        train(spec, registry=empty_registry, fetcher=fetcher, parallel=False)
    assert_nothing_written(empty_registry)


def test_search_space_invalid_for_the_estimator_fails_before_ray(empty_registry: Registry) -> None:
    from flows.train import train

    spec = ModelSpec.model_validate({**SPEC, "candidates": [{"family": "hist_gradient_boosting",
                                                             "search": {"n_estimators": [10]}}]})
    with pytest.raises(InvalidSearchSpace, match="hist_gradient_boosting has no parameter"):
        train(spec, registry=empty_registry, fetcher=None, parallel=True)  # no fetcher/Ray needed to refuse
    assert_nothing_written(empty_registry)


# -- the first training ----------------------------------------------------------------------------------


def test_first_training_registers_and_promotes_with_full_lineage(trained: Any) -> None:
    registry, result, _ = trained
    assert result.promoted and result.alias == "production" and result.version == 1
    mv = registry.get("churn_test@production")
    assert mv.version == 1
    assert mv.training_set_sha256 == result.snapshot_sha256 and mv.training_set_uri
    assert mv.feature_service == "churn_v1" and mv.code_version and mv.package_versions["scikit-learn"]
    assert mv.training_run_id == result.training_run_id
    assert mv.params["family"] == result.best_family and mv.params.get("random_state", 42) == 42
    assert {"cv_roc_auc", "holdout_roc_auc", "training_rows", "holdout_rows"} <= set(mv.metrics)
    assert registry.read_reference_profile(mv)
    run = registry.get_run(result.training_run_id)
    assert run.status == "succeeded" and run.registered_version == 1 and run.spec["name"] == "churn_test"


def test_every_trial_is_recorded_and_a_bad_one_does_not_sink_the_search(trained: Any) -> None:
    registry, result, reporter = trained
    trials = registry.trials(result.training_run_id)
    assert len(trials) == 4 == result.n_trials
    failed = [t for t in trials if t.status == "failed"]
    assert len(failed) == 1 and failed[0].params["C"] == -1.0 and "C" in failed[0].error
    assert all(t.metrics["cv_mean"] > 0.5 for t in trials if t.status == "succeeded")
    board = reporter.artifacts["trial-leaderboard"]
    assert board[0]["rank"] == 1 and board[-1]["status"] == "failed"
    assert "PASSED" in reporter.artifacts["validation-report"]
    assert "candidate vs production" in reporter.artifacts["evaluation"]


def test_registered_model_loads_and_encodes_raw_strings_itself(trained: Any, fetcher: FeastFetcher,
                                                               labels: pd.DataFrame) -> None:
    registry, _, _ = trained
    mv = registry.get("churn_test:1")
    predictor = registry.load_predictor(mv)  # skops, allow-listed types only, hash verified
    frame = fetcher.historical("churn_v1", labels.head(20), "event_timestamp")
    columns = {c["name"]: frame[c["name"]].to_numpy() for c in mv.signature["inputs"]}
    columns["plan_type"] = np.array(["never-seen-plan"] * 20, dtype=object)  # unknown category: no failure
    out = predictor.predict(columns)
    assert out["probability"].shape == (20,) and set(np.unique(out["label"])) <= {0, 1}
    assert ((out["probability"] >= 0) & (out["probability"] <= 1)).all()


def test_failed_validation_stops_and_leaves_production_alone(trained: Any, fetcher: FeastFetcher) -> None:
    from flows.train import train

    registry, _, _ = trained

    class Broken:  # a join gone wrong: charges in cents, one feature all null
        def schema(self, service: str) -> dict[str, str]:
            return fetcher.schema(service)

        def service(self, service: str) -> Any:
            return fetcher.service(service)

        def historical(self, service: str, entity_df: pd.DataFrame, timestamp: str) -> pd.DataFrame:
            frame = fetcher.historical(service, entity_df, timestamp)
            return frame.assign(monthly_charges=frame["monthly_charges"] * 100, logins_7d=np.nan)

    before = registry.list_versions("churn_test")
    reporter = LogReporter()
    with pytest.raises(DataValidationError, match="failed validation") as info:
        train(make_spec(), registry=registry, fetcher=Broken(), reporter=reporter, parallel=False)
    failed = {(c.name, c.column) for c in info.value.report.failures}
    assert ("value range", "monthly_charges") in failed and ("null fraction", "logins_7d") in failed
    assert "FAILED" in reporter.artifacts["validation-report"]
    assert registry.list_versions("churn_test") == before
    assert registry.resolve_alias("churn_test", "production") == 1
    assert registry.list_runs("churn_test")[0].status == "failed"


def test_batch_score_writes_predictions_naming_the_version(trained: Any, fetcher: FeastFetcher,
                                                           labels: pd.DataFrame, tmp_path: Path) -> None:
    from flows.batch_score import batch_score

    registry, _, _ = trained
    out = tmp_path / "scores" / "churn.parquet"
    result = batch_score("churn_test@production", labels.head(100).drop(columns=["churned"]), output=str(out),
                         registry=registry, fetcher=fetcher)
    scored = pd.read_parquet(out)
    assert result.rows == len(scored) == 100 and result.version == 1
    assert set(scored["model_name"]) == {"churn_test"} and set(scored["model_version"]) == {1}
    assert scored["probability"].between(0, 1).all()


def test_reproduce_gives_same_data_params_and_metrics(trained: Any) -> None:
    from flows.reproduce import reproduce

    registry, result, _ = trained
    outcome = reproduce("churn_test:1", registry=registry, strict=True)
    assert outcome.matches, outcome.mismatches
    assert outcome.data_sha256 == result.snapshot_sha256
    assert outcome.params == {k: v for k, v in registry.get("churn_test:1").params.items() if k != "family"}
    assert outcome.reproduced["holdout_roc_auc"] == registry.get("churn_test:1").metrics["holdout_roc_auc"]
    assert outcome.max_prediction_diff == 0.0


def test_reproduce_refuses_a_tampered_snapshot(trained: Any, tmp_path: Path) -> None:
    from flows.reproduce import reproduce
    from registry.errors import IntegrityError

    registry, _, _ = trained
    mv = registry.get("churn_test:1")
    path = Path(mv.training_set_uri)
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"x")
        with pytest.raises(IntegrityError):
            reproduce("churn_test:1", registry=registry)
    finally:
        path.write_bytes(original)


def test_retraining_that_does_not_beat_production_goes_to_staging_with_the_reason(trained: Any,
                                                                                  fetcher: FeastFetcher) -> None:
    from flows.train import train

    registry, _, _ = trained
    result = train(make_spec(), registry=registry, fetcher=fetcher, parallel=False)  # same data: a tie
    assert not result.promoted and result.alias == "staging" and result.version == 2
    assert registry.resolve_alias("churn_test", "production") == 1
    assert registry.resolve_alias("churn_test", "staging") == 2
    event = registry.history("churn_test", alias="staging")[-1]
    assert "does not beat it" in event.reason
    mv = registry.get("churn_test:2")
    assert mv.metrics["production_holdout_roc_auc"] == pytest.approx(mv.metrics["holdout_roc_auc"])


@pytest.mark.slow
def test_train_flow_runs_as_a_prefect_flow_with_artifacts(trained: Any, project: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         prefect_harness: str) -> None:
    """The Prefect wrapper: same procedure, tasks, and the artifacts in the run. The registry comes from the
    run's environment (``ESTEIRA_DATABASE_URL``), never from a parameter Prefect would store and show."""
    import yaml
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from core.settings import get_settings
    from flows.train import train_flow

    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({**SPEC, "name": "churn_flow"}))
    monkeypatch.setenv("ESTEIRA_DATABASE_URL", f"sqlite:///{tmp_path / 'flow-registry.db'}")
    get_settings.cache_clear()
    state = train_flow(spec=str(spec_path), parallel=False, return_state=True)
    assert state.is_completed(), state
    result = state.result()
    with get_client(sync_client=True) as client:  # the server is the session's: this run's artifacts only
        run = ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
        keys = {a.key for a in client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=run))}
    assert result["alias"] == "production"
    assert {"validation-report", "trial-leaderboard", "evaluation"} <= keys

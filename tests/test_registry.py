"""The registry's Python API: versions, aliases, lineage, runs, reports, and the refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from registry import (
    IntegrityError,
    InvalidName,
    ModelRef,
    MonitoringReport,
    NotFound,
    Registry,
    RegistryError,
    RegistryUnavailable,
    UntrustedArtifact,
)
from registry.models import AuditEvent, as_utc

SIGNATURE = {"inputs": [{"name": "a", "dtype": "float64"}, {"name": "b", "dtype": "float64"}],
             "outputs": [{"name": "label", "dtype": "int64"}, {"name": "probability", "dtype": "float64"}],
             "task": "binary_classification", "classes": [0, 1]}


def tiny_model(seed: int = 0) -> LogisticRegression:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    return LogisticRegression().fit(frame, (frame.a + 0.1 * frame.b > 0).astype(int))


def register(reg: Registry, name: str = "churn", **metrics: float):
    return reg.register_version(name, tiny_model(), signature=SIGNATURE, metrics=metrics or {"roc_auc": 0.9},
                                params={"C": 1.0}, feature_service="churn_v1", code_version="abc123")


def test_register_assigns_increasing_versions_and_keeps_lineage(registry: Registry) -> None:
    v1 = register(registry)
    v2 = registry.register_version("churn", tiny_model(1), signature=SIGNATURE, metrics={"roc_auc": 0.93},
                                   training_set_uri="memory://snap.parquet", training_set_sha256="f" * 64,
                                   flow_run_id="run-1", package_versions={"scikit-learn": "1.9.1"},
                                   reference_profile=b"profile-bytes")
    assert (v1.version, v2.version) == (1, 2)
    got = registry.get("churn:2")
    assert got.training_set_sha256 == "f" * 64 and got.flow_run_id == "run-1"
    assert got.package_versions == {"scikit-learn": "1.9.1"}
    assert registry.read_reference_profile(got) == b"profile-bytes"
    assert len(got.artifact_sha256) == 64 and got.artifact_size > 0
    assert registry.get("churn").version == 2  # bare name: the latest


def test_loaded_model_predicts_like_the_original(registry: Registry) -> None:
    model = tiny_model()
    mv = registry.register_version("churn", model, signature=SIGNATURE)
    predictor = registry.load_predictor(mv)
    columns = {"a": np.array([1.0, -1.0]), "b": np.array([0.0, 0.0])}
    out = predictor.predict(columns)
    expected = model.predict_proba(pd.DataFrame(columns))[:, 1]
    np.testing.assert_allclose(out["probability"], expected)
    assert list(out["label"]) == [1, 0]


def test_promote_and_rollback_walk_the_alias_history(registry: Registry) -> None:
    for _ in range(3):
        register(registry)
    registry.promote("churn", 1, reason="first")
    registry.promote("churn", 2, reason="better")
    registry.promote("churn", 3, reason="even better")
    assert registry.resolve_alias("churn", "production") == 3
    assert registry.rollback("churn", reason="v3 misbehaves").to_version == 2
    assert registry.rollback("churn").to_version == 1
    with pytest.raises(NotFound, match="no earlier version"):
        registry.rollback("churn")
    moves = [(e.action, e.from_version, e.to_version) for e in registry.history("churn", alias="production")]
    assert moves == [("promote", None, 1), ("promote", 1, 2), ("promote", 2, 3), ("rollback", 3, 2),
                     ("rollback", 2, 1)]


def promotes_to_canary(registry: Registry) -> list[AuditEvent]:
    return [e for e in registry.history("churn", alias="canary") if e.action == "promote"]


def test_a_canary_starts_at_its_newest_promote_to_the_canary_alias(registry: Registry) -> None:
    """``canary_started_at`` is what the canary flow judges from: a share change does not restart a canary,
    a version started again as the canary does."""
    for _ in range(2):
        register(registry)
    registry.promote("churn", 1, reason="first")
    assert registry.canary_started_at("churn", 2) is None  # never the canary
    registry.start_canary("churn", 2, share=0.1, reason="try it")
    started = registry.canary_started_at("churn", 2)
    assert started is not None and started.tzinfo is not None  # aware on SQLite too
    assert started == as_utc(promotes_to_canary(registry)[-1].created_at)
    registry.set_canary_share("churn", 0.5, reason="wider")
    assert registry.canary_started_at("churn", 2) == started
    registry.end_canary("churn", promote=False, reason="back")
    registry.start_canary("churn", 2, share=0.1, reason="again")
    restarted = promotes_to_canary(registry)
    assert len(restarted) == 2 and registry.canary_started_at("churn", 2) == as_utc(restarted[-1].created_at)


def test_aliases_are_unique_per_model_and_independent(registry: Registry) -> None:
    register(registry)
    register(registry)
    register(registry, name="fraud")
    registry.promote("churn", 1, alias="production")
    registry.promote("churn", 2, alias="staging")
    registry.promote("fraud", 1, alias="production")
    assert registry.aliases("churn") == {"production": 1, "staging": 2}
    assert registry.get("churn@staging").version == 2
    assert registry.get("fraud@production").model_name == "fraud"


def test_search_versions_by_metric_and_tag(registry: Registry) -> None:
    for auc in (0.81, 0.93, 0.88):
        registry.register_version("churn", tiny_model(), signature=SIGNATURE, metrics={"roc_auc": auc},
                                  tags={"team": "risk" if auc > 0.85 else "growth"})
    good = registry.list_versions("churn", filters=["metrics.roc_auc > 0.85"], order_by="metrics.roc_auc")
    assert [mv.metrics["roc_auc"] for mv in good] == [0.93, 0.88]
    assert [mv.version for mv in registry.list_versions("churn", filters=["tags.team = growth"])] == [1]
    with pytest.raises(RegistryError, match="invalid filter"):
        registry.list_versions("churn", filters=["roc_auc >> 1"])


def test_tampered_artifact_is_refused(registry: Registry) -> None:
    mv = register(registry)
    path = Path(mv.artifact_uri)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="refusing to load"):
        registry.load_predictor(mv)


def test_artifact_with_untrusted_types_is_refused(registry: Registry) -> None:
    import skops.io as sio

    from registry.flavors.sklearn import SklearnFlavor

    data = sio.dumps({"model": tiny_model(), "evil": Path("/etc/passwd")})
    with pytest.raises(UntrustedArtifact, match="pathlib"):
        SklearnFlavor().load_model(data)
    with pytest.raises(UntrustedArtifact, match="pathlib"):  # checked before the bytes are stored
        registry.register_artifact("churn", data, flavor="sklearn")
    assert registry.get_model("churn", missing_ok=True) is None


def test_a_version_becomes_servable_when_first_promoted_and_stays_so(registry: Registry) -> None:
    for _ in range(2):
        register(registry)
    assert [mv.servable for mv in registry.list_versions("churn")] == [False, False]
    registry.promote("churn", 1, alias="staging")
    registry.promote("churn", 2, alias="staging")
    registry.delete_alias("churn", "staging")
    assert [mv.servable for mv in registry.list_versions("churn")] == [True, True]
    with pytest.raises(RegistryError, match="servable when it is promoted"):
        registry.register_version("churn", tiny_model(), signature=SIGNATURE, servable=True)


@pytest.mark.parametrize("bad", ["", "has space", "-lead", "x" * 200, "a/b"])
def test_invalid_model_names_are_refused(registry: Registry, bad: str) -> None:
    with pytest.raises(InvalidName):
        registry.register_version(bad, tiny_model(), signature=SIGNATURE)


@pytest.mark.parametrize("bad", ["Production", "1", "with space", "", "a" * 65])
def test_invalid_alias_names_are_refused(registry: Registry, bad: str) -> None:
    register(registry)
    with pytest.raises(InvalidName):
        registry.promote("churn", 1, alias=bad)
    assert registry.aliases("churn") == {}


def test_unknown_model_version_and_alias_say_which(registry: Registry) -> None:
    register(registry)
    with pytest.raises(NotFound, match="model 'nope' not found"):
        registry.get("nope:1")
    with pytest.raises(NotFound, match="version 9 of model 'churn'"):
        registry.promote("churn", 9)
    with pytest.raises(NotFound, match="no alias 'production'"):
        registry.get("churn@production")
    assert registry.history("churn", alias="production") == []


def test_model_ref_parsing() -> None:
    assert ModelRef.parse("churn:3") == ModelRef("churn", version=3)
    assert ModelRef.parse("churn@staging") == ModelRef("churn", alias="staging")
    with pytest.raises(InvalidName):
        ModelRef.parse("churn:latest")


def test_training_runs_and_trials_are_recorded(registry: Registry) -> None:
    run = registry.start_run("churn", spec={"metric": "roc_auc"}, flow_run_id="fr-1")
    registry.record_trial(run.id, family="logreg", params={"C": 0.1}, metrics={"roc_auc": 0.8}, duration_s=0.5)
    registry.record_trials(run.id, [
        {"family": "rf", "params": {"n_estimators": 10}, "metrics": {"roc_auc": 0.85}, "duration_s": 1.0},
        {"family": "rf", "params": {"n_estimators": -1}, "metrics": {}, "duration_s": 0.0, "status": "failed",
         "error": "n_estimators must be >= 1"},
    ])
    trials = registry.trials(run.id)
    registry.finish_run(run.id, status="succeeded", best_trial_id=trials[1].id, registered_version=1)
    assert [t.status for t in trials] == ["succeeded", "succeeded", "failed"]
    assert registry.get_run(run.id).status == "succeeded"
    assert registry.list_runs("churn")[0].best_trial_id == trials[1].id


def test_monitoring_reports_round_trip(registry: Registry) -> None:
    register(registry)
    saved = registry.record_report(MonitoringReport(model_name="churn", version=1, n_rows=500,
                                                    drift={"a": {"algorithm": "ks", "pvalue": 0.001}},
                                                    drift_share=0.5, decision="retrain", reason="a drifted"))
    registry.update_report(saved.id, triggered_run="flow-run-42")
    latest = registry.reports("churn")[0]
    assert latest.decision == "retrain" and latest.triggered_run == "flow-run-42"
    assert latest.drift["a"]["pvalue"] == 0.001


def test_unreachable_database_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryUnavailable, match="unreachable"):
        Registry.from_url("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2", str(tmp_path))
    with pytest.raises(RegistryError, match="invalid database URL"):
        Registry.from_url("nosuchdb://x", str(tmp_path))


def test_postgresql_backend_behaves_the_same(pg_url: str, tmp_path: Path) -> None:
    reg = Registry.from_url(pg_url, str(tmp_path / "artifacts"))
    try:
        register(reg)
        register(reg)
        reg.promote("churn", 1, reason="pg")
        reg.promote("churn", 2, reason="pg")
        assert reg.resolve_alias("churn", "production") == 2
        assert reg.rollback("churn").to_version == 1
        assert reg.load_predictor(reg.get("churn@production")).predict(
            {"a": np.array([2.0]), "b": np.array([0.0])})["label"][0] == 1
    finally:
        reg.close()

"""What the registry and the gateway trust: the types an artifact may hold, the versions a pinned route may
serve, and what a refusal tells a client.

The payload used throughout is the one a prefix allow-list (``numpy.*``, ``sklearn.*``) let through: a
scikit-learn ``Pipeline`` whose ``FunctionTransformer`` steps, built from ``numpy.full_like``, ``numpy.sum``
and ``numpy.testing._private.utils.runstring`` (an ``exec``), run any Python text on the first ``predict``.
Here the text only writes a marker file, so each test can show that nothing ran.
"""

from __future__ import annotations

import asyncio
import importlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from numpy.testing._private.utils import runstring
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from core.settings import get_settings
from flows.estimators import ESTIMATORS, build_pipeline, with_seed
from gateway.app import build_app
from gateway.config import GatewayConfig
from gateway.errors import Unavailable
from gateway.models import ModelManager
from gateway.service import ModelService
from gateway.testing import SIGNATURE_NUMERIC, example_row, numeric_classifier
from registry import Registry, UntrustedArtifact
from registry.flavors.base import get_flavor
from registry.trust import BUILT_IN_TYPES, types_in

SIGNATURE = {"inputs": [{"name": "a", "dtype": "float64"}, {"name": "b", "dtype": "float64"}],
             "outputs": [{"name": "label", "dtype": "int64"}, {"name": "probability", "dtype": "float64"}],
             "task": "binary_classification", "classes": [0, 1]}
PAYLOAD_TYPES = ("numpy.full_like", "numpy.sum", "numpy.testing._private.utils.runstring",
                 "sklearn.preprocessing._function_transformer.FunctionTransformer")
ROW = example_row()


def exec_payload(marker: Path) -> Pipeline:
    """The pipeline that runs Python text on ``predict``; its text appends to ``marker``.

    Its steps are fitted one by one (fitting the pipeline would run the text here and now).
    """
    code = f"open({str(marker)!r}, 'a').write('ran')\n"
    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    steps = [("fill", FunctionTransformer(np.full_like, kw_args={"fill_value": code, "dtype": "O"})),
             ("join", FunctionTransformer(np.sum)),
             ("run", FunctionTransformer(runstring, kw_args={"dict": {}})),
             ("model", LogisticRegression())]
    for _, step in steps[:-1]:
        step.fit(frame)
    steps[-1][1].fit(frame, [0, 1, 0, 1])
    return Pipeline(steps)


def trust(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Set ``ESTEIRA_TRUSTED_TYPES`` to ``names`` (none: unset it), as a user's environment would."""
    if names:
        monkeypatch.setenv("ESTEIRA_TRUSTED_TYPES", ",".join(names))
    else:
        monkeypatch.delenv("ESTEIRA_TRUSTED_TYPES", raising=False)
    get_settings.cache_clear()


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "payload-ran"


def score_one_row(predictor: Any) -> None:
    predictor.predict({"a": np.array([1.0]), "b": np.array([2.0])})


# -- the types an artifact may hold ------------------------------------------------------------------------------


def test_the_payload_is_live_when_scored_directly(marker: Path) -> None:
    """The control: outside esteira, scoring the payload runs its text (so the refusals below mean something)."""
    with pytest.raises(ValueError):  # the text returns None, which the last step cannot score
        exec_payload(marker).predict(pd.DataFrame({"a": [1.0], "b": [2.0]}))
    assert marker.read_text().startswith("ran")


def test_registering_the_exec_payload_is_refused_naming_its_types_and_nothing_runs(
        registry: Registry, marker: Path) -> None:
    with pytest.raises(UntrustedArtifact) as refused:
        registry.register_version("payload", exec_payload(marker), signature=SIGNATURE)
    for name in PAYLOAD_TYPES:
        assert name in str(refused.value)
    assert registry.get_model("payload", missing_ok=True) is None  # no model, no version, no stored artifact
    assert not marker.exists()


def test_the_onnx_flavor_fallback_to_skops_is_checked_the_same_way(registry: Registry, marker: Path) -> None:
    with pytest.raises(UntrustedArtifact, match="runstring"):
        registry.register_version("payload", exec_payload(marker), flavor="onnx", signature=SIGNATURE)
    assert not marker.exists()


@pytest.mark.parametrize("flavor", ["sklearn", "onnx"])
def test_loading_checks_again_so_a_type_trusted_at_registration_only_never_runs(
        registry: Registry, marker: Path, monkeypatch: pytest.MonkeyPatch, flavor: str) -> None:
    """Trusted when it was registered (a list since shortened, another writer): refused at load, before it runs."""
    trust(monkeypatch, *PAYLOAD_TYPES)
    mv = registry.register_version("payload", exec_payload(marker), flavor=flavor, signature=SIGNATURE)
    trust(monkeypatch)
    with pytest.raises(UntrustedArtifact, match="runstring"):
        score_one_row(registry.load_predictor(mv))
    assert not marker.exists()


def test_the_gateway_refuses_the_payload_before_its_warm_up_scores_it(
        registry: Registry, marker: Path, monkeypatch: pytest.MonkeyPatch, esteira_home: Path) -> None:
    good = registry.register_version("payload", numeric_classifier(), signature=SIGNATURE_NUMERIC)
    registry.promote("payload", good.version)
    trust(monkeypatch, *PAYLOAD_TYPES)
    bad = registry.register_version("payload", exec_payload(marker), signature=SIGNATURE)
    trust(monkeypatch)
    with TestClient(build_app(make_service(registry, esteira_home))) as client:
        registry.promote("payload", bad.version, reason="smuggled")
        client.post("/v1/admin/reload")
        refused = [e for e in registry.history("payload") if e.action == "load_refused"]
        assert [e.to_version for e in refused] == [bad.version] and "runstring" in refused[0].reason
        assert client.post("/v1/models/payload/predict", json={"inputs": ROW}).json()["version"] == good.version
    assert not marker.exists()


def test_no_entry_of_the_built_in_list_is_a_prefix_or_a_function() -> None:
    for name in sorted(BUILT_IN_TYPES):
        module, _, attribute = name.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module), attribute), type), name


CLASS_WEIGHTS = {"binary": {0: 1.0, 1: 3.0}, "multiclass": {"lo": 1.0, "mid": 2.0, "hi": 1.0}}
HGB_REGRESSION_LOSSES = ({"loss": "absolute_error"}, {"loss": "quantile", "quantile": 0.3}, {"loss": "gamma"},
                         {"loss": "poisson"})


def training_data(task: str, n: int = 120) -> tuple[pd.DataFrame, np.ndarray]:
    """Numeric inputs with gaps and a categorical one with gaps, as the training flow coerces them."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.integers(0, 9, n).astype(np.float64),
                          "c": rng.choice(["x", "y", "z"], n).astype(object)})
    frame.loc[::17, "a"] = np.nan
    frame.loc[::19, "c"] = None
    score = frame["a"].fillna(0) + 0.2 * frame["b"] + (frame["c"] == "x")
    if task == "binary":
        return frame, (score > score.median()).astype(np.int64).to_numpy()
    if task == "multiclass":
        return frame, np.array(["lo", "mid", "hi"], dtype=object)[pd.qcut(score, 3, labels=False)]
    return frame, (score - score.min() + 0.1).to_numpy()


def training_variants() -> Iterator[tuple[str, str, dict[str, Any], list[str], list[str]]]:
    """(task, family, params, numeric, categorical): every family for every task on every input layout, and
    the parameters that change what a fitted model stores. Sizes are small: a forest of five trees holds
    the same types as one of a hundred."""
    small = {"random_forest": {"n_estimators": 5}, "extra_trees": {"n_estimators": 5},
             "hist_gradient_boosting": {"max_iter": 5}}
    for task, families in ESTIMATORS.items():
        for family in sorted(families):
            base = small.get(family, {})
            for numeric, categorical in ((["a", "b"], []), ([], ["c"]), (["a", "b"], ["c"])):
                yield task, family, base, numeric, categorical
            if task in CLASS_WEIGHTS:
                # histogram gradient boosting matches a weight dict against encoded labels: string classes fail
                weights = "balanced" if family == "hist_gradient_boosting" and task == "multiclass" else CLASS_WEIGHTS[task]
                yield task, family, {**base, "class_weight": weights}, ["a", "b"], ["c"]
            if family == "hist_gradient_boosting":
                yield task, family, {**base, "early_stopping": True}, ["a", "b"], ["c"]
                if task == "regression":
                    for loss in HGB_REGRESSION_LOSSES:
                        yield task, family, {**base, **loss}, ["a", "b"], ["c"]


@pytest.fixture(scope="module")
def measured_types() -> dict[str, str]:
    """Type name -> the first trained model (task/family/params) whose artifact holds it."""
    found: dict[str, str] = {}
    flavor = get_flavor("sklearn")
    for task, family, params, numeric, categorical in training_variants():
        frame, labels = training_data(task)
        pipeline = build_pipeline(family, with_seed(family, params, 0, task), numeric, categorical, task)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings of tiny fits
            pipeline.fit(frame[numeric + categorical], labels)
        for name in types_in(flavor.save(pipeline)):
            found.setdefault(name, f"{task}/{family} {params} on {numeric + categorical}")
    return found


def test_every_built_in_family_trains_into_trusted_types_only(measured_types: dict[str, str]) -> None:
    missing = {name: model for name, model in measured_types.items() if name not in BUILT_IN_TYPES}
    assert not missing, f"training produces types the trusted list lacks (add them after review): {missing}"


def test_the_built_in_list_holds_nothing_training_does_not_produce(measured_types: dict[str, str]) -> None:
    assert sorted(BUILT_IN_TYPES - set(measured_types)) == []


# -- extending the list: exact names only ------------------------------------------------------------------------


def naive_bayes() -> GaussianNB:
    """An estimator outside the built-in families (a user's own choice)."""
    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "b": [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]})
    return GaussianNB().fit(frame, [0, 0, 0, 1, 1, 1])


GAUSSIAN_NB = "sklearn.naive_bayes.GaussianNB"


def test_a_user_trusts_an_estimator_by_its_exact_name(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UntrustedArtifact, match=GAUSSIAN_NB):
        registry.register_version("nb", naive_bayes(), signature=SIGNATURE)
    trust(monkeypatch, GAUSSIAN_NB)
    mv = registry.register_version("nb", naive_bayes(), signature=SIGNATURE)
    assert list(registry.load_predictor(mv).predict({"a": np.array([5.0]), "b": np.array([0.0])})["label"]) == [1]


@pytest.mark.parametrize("entry", ["sklearn.", "sklearn.*", "sklearn", "*", "sklearn.naive_bayes.Gaussian*"])
def test_a_prefix_or_wildcard_in_the_setting_is_refused_by_name(
        registry: Registry, monkeypatch: pytest.MonkeyPatch, entry: str) -> None:
    trust(monkeypatch, entry)
    with pytest.raises(UntrustedArtifact, match="ESTEIRA_TRUSTED_TYPES lists .* not a full type name"):
        registry.register_version("nb", naive_bayes(), signature=SIGNATURE)


def test_a_module_name_in_the_setting_trusts_nothing_inside_it(
        registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    trust(monkeypatch, "sklearn.naive_bayes")  # a well-formed name, matched exactly: no class is called that
    with pytest.raises(UntrustedArtifact, match=GAUSSIAN_NB):
        registry.register_version("nb", naive_bayes(), signature=SIGNATURE)


def install_trust_plugin(root: Path, monkeypatch: pytest.MonkeyPatch, module: str, names: list[str]) -> None:
    """A package with an ``esteira.trusted_types`` entry point, installed on ``sys.path`` the way a wheel is:
    a module and a ``.dist-info`` folder that ``importlib.metadata`` finds."""
    (root / f"{module}.py").write_text(f"TRUSTED_TYPES = {names!r}\n")
    dist = root / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[esteira.trusted_types]\n{module} = {module}:TRUSTED_TYPES\n")
    monkeypatch.syspath_prepend(str(root))


def test_a_package_ships_its_trusted_types_through_an_entry_point(
        registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(UntrustedArtifact, match=GAUSSIAN_NB):
        registry.register_version("nb", naive_bayes(), signature=SIGNATURE)
    install_trust_plugin(tmp_path, monkeypatch, "esteira_nb_types", [GAUSSIAN_NB])
    mv = registry.register_version("nb", naive_bayes(), signature=SIGNATURE)
    assert registry.load_predictor(mv) is not None


def test_a_package_listing_a_prefix_is_refused_with_its_entry_point_named(
        registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_trust_plugin(tmp_path, monkeypatch, "esteira_wide_types", ["numpy.", GAUSSIAN_NB])
    with pytest.raises(UntrustedArtifact, match="entry point 'esteira_wide_types'.*'numpy.'"):
        registry.register_version("nb", naive_bayes(), signature=SIGNATURE)


# -- the versions a pinned route may serve ------------------------------------------------------------------------


def make_service(registry: Registry, home: Path, **overrides: Any) -> ModelService:
    config = GatewayConfig(**{"database_url": registry.url, "artifact_root": registry.artifacts.root,
                              "inference_log_uri": str(home / "inference"), "feast_lookup": False,
                              "log_inference": False, "poll_interval_s": 0.05, **overrides})
    return ModelService.from_config(config)


@pytest.fixture
def three_versions(registry: Registry) -> Registry:
    """``m`` v1 in production; v2 and v3 only registered."""
    for seed in (0, 3, 7):
        registry.register_version("m", numeric_classifier(seed=seed), signature=SIGNATURE_NUMERIC)
    registry.promote("m", 1)
    return registry


def pinned(client: TestClient, version: int) -> httpx.Response:
    return client.post(f"/v1/models/m/versions/{version}/predict", json={"inputs": ROW})


def test_a_version_only_registered_is_not_served_by_number(three_versions: Registry, esteira_home: Path) -> None:
    with TestClient(build_app(make_service(three_versions, esteira_home))) as client:
        refused = pinned(client, 2)
        assert refused.status_code == 409 and refused.json()["field"] == "version"
        assert "not servable" in refused.json()["error"] and "never been promoted" in refused.json()["error"]
        v2_infer = client.post("/v2/models/m/versions/2/infer", json={"inputs": [
            {"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [12, 70.5, 2]}]})
        assert v2_infer.status_code == 409
        three_versions.promote("m", 2, alias="staging", reason="to try it by number")
        assert pinned(client, 2).json()["version"] == 2


def test_a_version_once_promoted_stays_servable_for_rollback(three_versions: Registry, esteira_home: Path) -> None:
    three_versions.promote("m", 3, reason="better")
    three_versions.rollback("m", reason="worse after all")
    three_versions.delete_alias("m", "production", reason="retired")
    assert [mv.servable for mv in sorted(three_versions.list_versions("m"), key=lambda mv: mv.version)] == [
        True, False, True]
    with TestClient(build_app(make_service(three_versions, esteira_home))) as client:
        assert pinned(client, 3).json()["version"] == 3


def promote_all(registry: Registry, versions: range) -> None:
    for version in versions:
        registry.promote("m", version, alias="staging")


def test_a_storm_of_cold_versions_loads_at_most_the_limit_and_tells_the_rest_to_retry(
        registry: Registry) -> None:
    for seed in range(6):
        registry.register_version("m", numeric_classifier(seed=seed), signature=SIGNATURE_NUMERIC)
    promote_all(registry, range(1, 7))
    manager = ModelManager(GatewayConfig(pinned_cold_loads=2, pinned_cache_size=8),
                           lambda: Registry(registry.url, registry.artifacts.root, migrate=False))

    async def storm() -> list[Any]:
        return await asyncio.gather(*(manager.pinned("m", v) for v in range(1, 7)), return_exceptions=True)

    answers = asyncio.run(storm())
    loaded = [a.version for a in answers if not isinstance(a, Exception)]
    busy = [a for a in answers if isinstance(a, Unavailable)]
    assert len(loaded) == 2 and len(busy) == 4, answers
    assert busy[0].status_code == 503 and busy[0].headers() == {"Retry-After": "1"}
    assert "already loading 2 other version(s)" in busy[0].message
    later = asyncio.run(storm())  # once those loads are done, the others load on retry (two at a time)
    assert sum(not isinstance(a, Exception) for a in later) == 4


def test_a_storm_on_one_cold_version_shares_one_load(registry: Registry) -> None:
    registry.register_version("m", numeric_classifier(), signature=SIGNATURE_NUMERIC)
    promote_all(registry, range(1, 2))
    manager = ModelManager(GatewayConfig(pinned_cold_loads=1),
                           lambda: Registry(registry.url, registry.artifacts.root, migrate=False))

    async def storm() -> list[Any]:
        return await asyncio.gather(*(manager.pinned("m", 1) for _ in range(20)), return_exceptions=True)

    answers = asyncio.run(storm())
    assert len({id(a) for a in answers}) == 1 and answers[0].version == 1  # one LoadedModel for all twenty


def test_a_busy_replica_answers_503_with_retry_after_over_http(registry: Registry, esteira_home: Path) -> None:
    for seed in (0, 3):
        registry.register_version("m", numeric_classifier(seed=seed), signature=SIGNATURE_NUMERIC)
    promote_all(registry, range(1, 3))
    app = build_app(make_service(registry, esteira_home, pinned_cold_loads=1))

    async def two_cold_versions_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            return await asyncio.gather(*(http.post(f"/v1/models/m/versions/{v}/predict", json={"inputs": ROW})
                                          for v in (1, 2)))

    with TestClient(app) as client:  # runs the app's lifespan; the portal runs requests on its loop
        answers = client.portal.call(two_cold_versions_at_once)
    assert sorted(a.status_code for a in answers) == [200, 503]
    busy = next(a for a in answers if a.status_code == 503)
    assert busy.headers["retry-after"] == "1" and "retry" in busy.json()["error"]


# -- what a refusal tells the client ------------------------------------------------------------------------------


def test_a_refused_version_tells_the_client_its_category_and_the_admin_everything(
        three_versions: Registry, esteira_home: Path) -> None:
    three_versions.promote("m", 2, alias="staging")
    artifact = Path(three_versions.get_version("m", 2).artifact_uri)
    artifact.write_bytes(artifact.read_bytes()[:-10] + b"tampered!!")
    with TestClient(build_app(make_service(three_versions, esteira_home))) as client:
        body = pinned(client, 2).json()
        assert body == {"error": "version 2 of model 'm' was refused: artifact hash mismatch", "field": "version"}
        assert str(artifact) not in client.get("/v2/health/ready").text
        admin = client.get("/v1/admin/status").json()["refused"]["m:2"]
        assert admin.startswith("IntegrityError") and str(artifact) in admin
    event = [e for e in three_versions.history("m") if e.action == "load_refused"][-1]
    assert str(artifact) in event.reason and event.details["category"] == "artifact hash mismatch"

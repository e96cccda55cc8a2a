"""The numpy preprocessing of ``registry.flavors.sklearn_compiled`` gives scikit-learn's answers, bit for bit.

It is used only for the pipeline shape esteira's training builds and only after a check against the
pipeline's own transform; these tests hold it to exact equality on every family and task training offers,
on rows with missing values, unknown and missing categories, and show that what it does not recognise runs
through scikit-learn as before.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from flows.estimators import build_pipeline
from registry import Registry
from registry.flavors.sklearn import SklearnPredictor
from registry.flavors.sklearn_compiled import _same_as_sklearn, compile_features, probe_columns

NUMERIC = ["tenure", "charges", "logins"]
CATEGORICAL = ["plan", "region"]
SIGNATURE = {"inputs": [*({"name": n, "dtype": "float64"} for n in NUMERIC),
                        *({"name": c, "dtype": "string"} for c in CATEGORICAL)]}


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "tenure": rng.integers(0, 72, n).astype(float),
        "charges": rng.normal(70, 20, n),
        "logins": rng.poisson(3, n).astype(float),
        "plan": rng.choice(["basic", "plus", "pro"], n).astype(object),
        "region": rng.choice(["north", "south", "east", "west"], n).astype(object),
    })
    frame.loc[rng.random(n) < 0.1, "charges"] = np.nan
    frame.loc[rng.random(n) < 0.05, "plan"] = None
    return frame


def _serving_rows(seed: int = 1) -> pd.DataFrame:
    """Rows as traffic brings them: unseen categories, missing values of every kind, extremes."""
    frame = _frame(300, seed)
    frame.loc[0, "plan"] = "enterprise"          # never seen in training
    frame.loc[1, "region"] = None
    frame.loc[2, ["tenure", "charges", "logins"]] = np.nan
    frame.loc[3, "charges"] = 1e15
    frame.loc[4, "region"] = float("nan")
    return frame


def _columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: frame[c].to_numpy() for c in frame.columns}


@pytest.mark.parametrize(("family", "task", "params"), [
    ("logistic_regression", "binary", {"C": 0.3}),
    ("hist_gradient_boosting", "binary", {"max_iter": 20}),
    ("random_forest", "multiclass", {"n_estimators": 5, "random_state": 0}),
    ("ridge", "regression", {"alpha": 2.0}),
])
def test_predictions_equal_scikit_learn_bit_for_bit(family: str, task: str, params: dict) -> None:
    train = _frame(600, 0)
    target = {"binary": (train["charges"].fillna(0) > 70).astype(int),
              "multiclass": train["tenure"].floordiv(25).astype(int),
              "regression": train["logins"] * 2.0}[task]
    pipeline = build_pipeline(family, params, NUMERIC, CATEGORICAL, task).fit(train, target)
    fast = SklearnPredictor(pipeline, SIGNATURE)
    assert fast._compiled is not None, "esteira's own pipeline shape must take the numpy path"

    rows = _serving_rows()
    expected_features = pipeline[0].transform(rows)
    assert np.array_equal(fast._compiled(_columns(rows)), expected_features, equal_nan=True)
    got = fast.predict(_columns(rows))
    if task == "regression":
        assert np.array_equal(got["prediction"], pipeline.predict(rows))
    else:
        proba = pipeline.predict_proba(rows)
        assert np.array_equal(got["label"], pipeline.classes_[proba.argmax(axis=1)])
        key = "probability" if proba.shape[1] == 2 else "probabilities"
        assert np.array_equal(got[key], proba[:, 1] if key == "probability" else proba)
    one = fast.predict(_columns(rows.iloc[[0]].reset_index(drop=True)))  # the one-row request it is for
    assert all(np.array_equal(one[k], got[k][:1]) for k in got)


def test_a_version_loaded_from_the_registry_takes_the_numpy_path(tmp_path) -> None:  # noqa: ANN001
    train = _frame(400, 3)
    pipeline = build_pipeline("logistic_regression", {}, NUMERIC, CATEGORICAL, "binary").fit(
        train, (train["logins"] > 3).astype(int))
    registry = Registry.from_url(f"sqlite:///{tmp_path / 'registry.db'}", str(tmp_path / "artifacts"))
    try:
        mv = registry.register_version("compiled", pipeline, signature=SIGNATURE)
        predictor = registry.load_predictor(mv)
    finally:
        registry.close()
    assert predictor._compiled is not None  # skops builds scikit-learn's own classes
    rows = _serving_rows(5)
    assert np.array_equal(predictor.predict(_columns(rows))["probability"], pipeline.predict_proba(rows)[:, 1])


def test_a_numeric_column_that_is_not_numbers_goes_through_scikit_learn() -> None:
    train = _frame(300, 4)
    pipeline = build_pipeline("logistic_regression", {}, NUMERIC, CATEGORICAL, "binary").fit(
        train, (train["tenure"] > 30).astype(int))
    predictor = SklearnPredictor(pipeline, SIGNATURE)
    rows = _serving_rows(6).head(5)
    columns = _columns(rows)
    columns["charges"] = np.array([70.0, None, 12.5, None, 1.0], dtype=object)  # None, as JSON null arrives
    assert not predictor._compiled_applies(columns)
    expected = pipeline.predict_proba(pd.DataFrame(columns))[:, 1]
    assert np.array_equal(predictor.predict(columns)["probability"], expected)


@pytest.mark.parametrize("variant", ["passthrough remainder", "drop first", "indicator", "infrequent",
                                     "sparse one-hot"])
def test_shapes_it_does_not_know_run_as_scikit_learn_runs_them(variant: str) -> None:
    numeric = Pipeline([("impute", SimpleImputer(add_indicator=variant == "indicator")),
                        ("scale", StandardScaler())])
    encoder: object = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    if variant == "drop first":
        encoder = OneHotEncoder(drop="first", handle_unknown="ignore", sparse_output=False)
    elif variant == "infrequent":
        encoder = OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=50, sparse_output=False)
    elif variant == "sparse one-hot":
        encoder = OneHotEncoder(handle_unknown="ignore")
    # with a passthrough remainder, "logins" is left to it
    selected = NUMERIC[:2] if variant == "passthrough remainder" else NUMERIC
    columns = ColumnTransformer([("num", numeric, selected), ("cat", encoder, CATEGORICAL)],
                                remainder="passthrough" if variant == "passthrough remainder" else "drop")
    train = _frame(400, 7).fillna({"plan": "basic"})
    pipeline = Pipeline([("features", columns), ("model", LogisticRegression())]).fit(
        train, (train["tenure"] > 30).astype(int))
    assert compile_features(pipeline) is None
    predictor = SklearnPredictor(pipeline, SIGNATURE)
    rows = _serving_rows(8).fillna({"plan": "basic", "region": "north", "logins": 0.0})
    assert np.array_equal(predictor.predict(_columns(rows))["probability"], pipeline.predict_proba(rows)[:, 1])


def test_the_load_time_check_refuses_a_function_that_differs_in_one_bit() -> None:
    train = _frame(300, 9)
    pipeline = build_pipeline("logistic_regression", {}, NUMERIC, CATEGORICAL, "binary").fit(
        train, (train["tenure"] > 30).astype(int))
    compiled = compile_features(pipeline)
    assert compiled is not None
    features, _, numeric = compiled
    assert _same_as_sklearn(pipeline[0], features, numeric)
    probe = probe_columns(pipeline[0], numeric)
    assert any(v is None for v in probe["plan"]) and np.isnan(probe["charges"]).any()

    def off_by_one_ulp(columns: dict[str, np.ndarray]) -> np.ndarray:
        out = features(columns)
        out[0, 0] = np.nextafter(out[0, 0], np.inf)
        return out

    assert not _same_as_sklearn(pipeline[0], off_by_one_ulp, numeric)

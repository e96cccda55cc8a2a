"""The estimator allow-list and the one pipeline every candidate is wrapped in.

Why an allow-list: a model spec is YAML that anyone may edit, and an import string in YAML is
arbitrary code. A family name maps to a class here, nothing else can be built.

Why one pipeline: serving sends raw features (strings included) and the registered artifact must
encode them itself, with the encoders fitted at training time, so there is no refitting at serve
time and no second feature-preparation code path. Every step is a scikit-learn type, so the
sklearn flavor's skops allow-list can load it back.

Each task has its own families under the same names where the idea is the same (``random_forest`` is a
forest classifier for a classification spec and a forest regressor for a regression spec).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

CLASSIFIERS: dict[str, type[BaseEstimator]] = {
    "logistic_regression": LogisticRegression,
    "random_forest": RandomForestClassifier,
    "extra_trees": ExtraTreesClassifier,
    "hist_gradient_boosting": HistGradientBoostingClassifier,
}
REGRESSORS: dict[str, type[BaseEstimator]] = {
    "ridge": Ridge,
    "random_forest": RandomForestRegressor,
    "extra_trees": ExtraTreesRegressor,
    "hist_gradient_boosting": HistGradientBoostingRegressor,
}
ESTIMATORS: dict[str, dict[str, type[BaseEstimator]]] = {
    "binary": CLASSIFIERS, "multiclass": CLASSIFIERS, "regression": REGRESSORS,
}
"""Family name -> estimator class, per task."""


class UnknownEstimator(ValueError):
    """A family name that is not on the allow-list."""


class InvalidSearchSpace(ValueError):
    """A search space or fixed parameter the estimator does not accept."""


def families(task: str) -> list[str]:
    return sorted(ESTIMATORS[task])


def estimator_class(family: str, task: str) -> type[BaseEstimator]:
    try:
        return ESTIMATORS[task][family]
    except KeyError:
        raise UnknownEstimator(
            f"unknown estimator family {family!r} for a {task} task; allowed: {', '.join(families(task))}"
        ) from None


def valid_params(family: str, task: str) -> set[str]:
    """Constructor parameters the family accepts (``get_params()`` of a default instance)."""
    return set(estimator_class(family, task)().get_params(deep=False))


def check_param_names(family: str, names: Sequence[str], *, where: str, task: str) -> None:
    """Refuse parameter names the estimator does not have, before any trial is launched."""
    allowed = valid_params(family, task)
    unknown = sorted(set(names) - allowed)
    if unknown:
        raise InvalidSearchSpace(
            f"{where}: {family} has no parameter(s) {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(sorted(allowed))}"
        )


def with_seed(family: str, params: Mapping[str, Any], seed: int, task: str) -> dict[str, Any]:
    """``params`` plus ``random_state=seed`` when the estimator is stochastic and none was given.

    The seed is written into the params that get recorded, so a reproduction needs nothing else.
    """
    out = dict(params)
    if "random_state" in valid_params(family, task) and out.get("random_state") is None:
        out["random_state"] = seed
    return out


def build_pipeline(family: str, params: Mapping[str, Any], numeric: Sequence[str],
                   categorical: Sequence[str], task: str) -> Pipeline:
    """Preprocessing (impute, scale, one-hot) + the estimator, as one fitted-together Pipeline.

    Unknown categories at serving time encode to all zeros (``handle_unknown="ignore"``) instead of
    failing the request; missing values are imputed with training-time statistics.
    """
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        transformers.append(("num", Pipeline([("impute", SimpleImputer(strategy="median")),
                                              ("scale", StandardScaler())]), list(numeric)))
    if categorical:
        transformers.append(("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                             list(categorical)))
    estimator = estimator_class(family, task)(**params)
    return Pipeline([("features", ColumnTransformer(transformers, remainder="drop")), ("model", estimator)])

"""Time-based holdout, the final refit, and the comparison with production on the same rows.

Why time-based: a model is used on the future, so it is judged on the last part of the time range,
never on rows shuffled in from its own training period. Why the same holdout for production:
"the new model scores 0.86" means nothing next to production's 0.84 measured a month ago on other
data; both are scored here, on the same rows, through the same predictor code the gateway runs
(``registry.flavors``' predictor), so the promotion decision compares like with like.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from flows.errors import TrainingInputError
from flows.estimators import build_pipeline
from flows.tasks import Task, is_classification, metrics_for, task_of
from registry import Registry
from registry.errors import NotFound, RegistryError
from registry.flavors.sklearn import SklearnPredictor


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    holdout: pd.DataFrame
    cutoff: pd.Timestamp


@dataclass(frozen=True)
class ProductionComparison:
    """Production's score on the candidate's holdout, or why there is none."""

    version: int | None
    metric: float | None
    reason: str = ""


def time_holdout(frame: pd.DataFrame, *, timestamp: str, fraction: float, label: str, task: Task) -> Split:
    """The last ``fraction`` of rows by time is the holdout; a timestamp never straddles the cut."""
    ordered = frame.sort_values(timestamp, kind="stable").reset_index(drop=True)
    n_train = math.floor(len(ordered) * (1 - fraction))
    if n_train < 1 or n_train >= len(ordered):
        raise TrainingInputError(f"holdout fraction {fraction} leaves no training or no holdout rows "
                                 f"({len(ordered)} rows)")
    cutoff = ordered[timestamp].iloc[n_train]
    train, holdout = ordered[ordered[timestamp] < cutoff], ordered[ordered[timestamp] >= cutoff]
    if train.empty or holdout.empty:
        raise TrainingInputError(f"every row has the same timestamp {cutoff}: no time-based holdout possible")
    for part, rows in (("training part", train), ("holdout", holdout)):
        if is_classification(task) and rows[label].nunique() < 2:
            raise TrainingInputError(f"the {part} (cut at {cutoff}) has only one label class: "
                                     "more data or another holdout fraction is needed")
    return Split(train.reset_index(drop=True), holdout.reset_index(drop=True), cutoff)


def fit_final(family: str, params: dict[str, Any], X: pd.DataFrame, y: np.ndarray, numeric: list[str],
              categorical: list[str], task: Task) -> Any:
    """Refit the chosen configuration on the whole training part, single-threaded (deterministic)."""
    from threadpoolctl import threadpool_limits

    pipeline = build_pipeline(family, params, numeric, categorical, task)
    with threadpool_limits(limits=1):
        return pipeline.fit(X, y)


def columns_of(frame: pd.DataFrame, names: list[str]) -> dict[str, np.ndarray]:
    """The ``columns`` mapping predictors take (what the gateway passes too)."""
    return {name: frame[name].to_numpy() for name in names}


def evaluate_predictor(predictor: Any, frame: pd.DataFrame, signature: dict[str, Any], label: str,
                       metric: str) -> dict[str, float]:
    """Holdout metrics of a predictor: the spec's metric plus the task's standard ones, for the record."""
    inputs = [c["name"] for c in signature.get("inputs", [])]
    out = predictor.predict(columns_of(frame, inputs))
    return metrics_for(task_of(signature), metric, frame[label].to_numpy(), out, signature.get("classes"))


def evaluate_candidate(model: Any, signature: dict[str, Any], holdout: pd.DataFrame, label: str,
                       metric: str) -> dict[str, float]:
    return evaluate_predictor(SklearnPredictor(model, signature), holdout, signature, label, metric)


def score_candidate(model: Any, signature: dict[str, Any], holdout: pd.DataFrame, label: str,
                    metric: str) -> tuple[dict[str, float], dict[str, Any]]:
    """Holdout metrics and the answers they were computed from: the version's calibration
    (:func:`flows.calibration.fit_calibration`) is fitted on those same answers, so the holdout is scored once."""
    inputs = [c["name"] for c in signature.get("inputs", [])]
    out = SklearnPredictor(model, signature).predict(columns_of(holdout, inputs))
    metrics = metrics_for(task_of(signature), metric, holdout[label].to_numpy(), out, signature.get("classes"))
    return metrics, dict(out)


def evaluate_production(registry: Registry, model_name: str, alias: str, holdout: pd.DataFrame, label: str,
                        metric: str, candidate_signature: dict[str, Any]) -> ProductionComparison:
    """Load the version behind ``alias`` (hash verified) and score it on ``holdout``."""
    try:
        mv = registry.get_by_alias(model_name, alias)
    except NotFound:
        return ProductionComparison(None, None, f"no {alias} version yet")
    if task_of(mv.signature) != task_of(candidate_signature):
        return ProductionComparison(mv.version, None, f"{alias} v{mv.version} is a {task_of(mv.signature)} "
                                    f"model, this one {task_of(candidate_signature)}")
    inputs = [c["name"] for c in mv.signature.get("inputs", [])]
    missing = [c for c in inputs if c not in holdout.columns]
    if missing:
        return ProductionComparison(mv.version, None,
                                    f"{alias} v{mv.version} needs features absent from this holdout: {missing}")
    try:
        predictor = registry.load_predictor(mv)
        value = evaluate_predictor(predictor, holdout, mv.signature, label, metric)[metric]
    except (RegistryError, ValueError, KeyError) as exc:
        return ProductionComparison(mv.version, None, f"{alias} v{mv.version} could not be scored: {exc}")
    return ProductionComparison(mv.version, value)


def comparison_markdown(model_name: str, metric: str, candidate: dict[str, float], production: ProductionComparison,
                        decision: Any, holdout_rows: int, cutoff: Any) -> str:
    """The Prefect artifact: candidate vs production on the same holdout, and what was decided."""
    prod = "n/a" if production.metric is None else f"{production.metric:.5f}"
    delta = "" if production.metric is None else f"{candidate[metric] - production.metric:+.5f}"
    lines = [f"# {model_name}: candidate vs production", "",
             f"Holdout: {holdout_rows} rows from {cutoff} on (time-based).", "",
             f"| model | {metric} | delta |", "|---|---|---|",
             f"| candidate | {candidate[metric]:.5f} | {delta} |",
             f"| production{f' v{production.version}' if production.version else ''} | {prod} | |", ""]
    if production.reason:
        lines.append(f"Production: {production.reason}.")
    lines += ["", f"**Decision:** {decision.alias} ({decision.reason})"]
    other = {k: round(v, 5) for k, v in candidate.items() if k != metric}
    if other:
        lines += ["", "Other candidate holdout metrics: " + ", ".join(f"{k}={v}" for k, v in sorted(other.items()))]
    return "\n".join(lines)

"""Time-based holdout, the final refit, and the comparison with production on the same rows.

Why time-based: a churn model is used on the future, so it is judged on the last part of the time
range, never on rows shuffled in from its own training period. Why the same holdout for production:
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
from sklearn import metrics as skm

from flows.errors import TrainingInputError
from flows.estimators import build_pipeline
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


def time_holdout(frame: pd.DataFrame, *, timestamp: str, fraction: float, label: str) -> Split:
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
        if rows[label].nunique() < 2:
            raise TrainingInputError(f"the {part} (cut at {cutoff}) has only one label class: "
                                     "more data or another holdout fraction is needed")
    return Split(train.reset_index(drop=True), holdout.reset_index(drop=True), cutoff)


def fit_final(family: str, params: dict[str, Any], X: pd.DataFrame, y: np.ndarray, numeric: list[str],
              categorical: list[str]) -> Any:
    """Refit the chosen configuration on the whole training part, single-threaded (deterministic)."""
    from threadpoolctl import threadpool_limits

    pipeline = build_pipeline(family, params, numeric, categorical)
    with threadpool_limits(limits=1):
        return pipeline.fit(X, y)


def score(metric: str, y_true: np.ndarray, probability: np.ndarray, label: np.ndarray) -> float:
    """The spec's metric (scikit-learn scorer semantics: higher is better) from predictions."""
    y = np.asarray(y_true).astype(int)
    p = np.asarray(probability, dtype=float)
    lab = np.asarray(label).astype(int)
    if metric == "roc_auc":
        return float(skm.roc_auc_score(y, p))
    if metric == "average_precision":
        return float(skm.average_precision_score(y, p))
    if metric == "accuracy":
        return float(skm.accuracy_score(y, lab))
    if metric == "balanced_accuracy":
        return float(skm.balanced_accuracy_score(y, lab))
    if metric == "f1":
        return float(skm.f1_score(y, lab))
    if metric == "neg_log_loss":
        return -float(skm.log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]))
    if metric == "neg_brier_score":
        return -float(skm.brier_score_loss(y, p))
    raise ValueError(f"unknown metric {metric!r}")


def columns_of(frame: pd.DataFrame, names: list[str]) -> dict[str, np.ndarray]:
    """The ``columns`` mapping predictors take (what the gateway passes too)."""
    return {name: frame[name].to_numpy() for name in names}


def evaluate_predictor(predictor: Any, frame: pd.DataFrame, inputs: list[str], label: str,
                       metric: str) -> dict[str, float]:
    """Holdout metrics of a predictor: the spec's metric plus a few standard ones for the record."""
    out = predictor.predict(columns_of(frame, inputs))
    y = frame[label].to_numpy()
    result = {metric: score(metric, y, out["probability"], out["label"])}
    for extra in ("roc_auc", "average_precision", "accuracy", "neg_log_loss"):
        if extra not in result:
            try:
                result[extra] = score(extra, y, out["probability"], out["label"])
            except ValueError:
                pass
    return result


def evaluate_candidate(model: Any, signature: dict[str, Any], holdout: pd.DataFrame, label: str,
                       metric: str) -> dict[str, float]:
    predictor = SklearnPredictor(model, signature)
    return evaluate_predictor(predictor, holdout, predictor.input_names, label, metric)


def evaluate_production(registry: Registry, model_name: str, alias: str, holdout: pd.DataFrame, label: str,
                        metric: str) -> ProductionComparison:
    """Load the version behind ``alias`` (hash verified) and score it on ``holdout``."""
    try:
        mv = registry.get_by_alias(model_name, alias)
    except NotFound:
        return ProductionComparison(None, None, f"no {alias} version yet")
    inputs = [c["name"] for c in mv.signature.get("inputs", [])]
    missing = [c for c in inputs if c not in holdout.columns]
    if missing:
        return ProductionComparison(mv.version, None,
                                    f"{alias} v{mv.version} needs features absent from this holdout: {missing}")
    try:
        predictor = registry.load_predictor(mv)
        value = evaluate_predictor(predictor, holdout, inputs, label, metric)[metric]
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

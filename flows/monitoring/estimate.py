"""A window's performance estimated from the model's calibrated confidence, before its labels arrive.

Confidence-based performance estimation (CBPE, NannyML: "Estimation of Performance of the Monitored Model",
https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html; Kivimäki et al. 2025,
"Performance Estimation in Binary Classification Using Calibrated Confidence", arXiv:2505.05295): when a
model's probabilities are calibrated, a row predicted positive with probability p is a true positive with
probability p and a false positive with probability 1 - p, so the expected confusion matrix of a window, and
every metric built on it, follows from the model's answers alone. The probabilities are first mapped through
the version's isotonic calibration (:mod:`flows.calibration`), fitted on its holdout.

* accuracy: the mean calibrated probability of the predicted class;
* ROC AUC (binary): at every threshold t among the model's scores, expected TPR(t) = sum of p over rows
  scored >= t / sum of p, expected FPR(t) = sum of (1 - p) over those rows / sum of (1 - p); the area under
  that curve. The thresholds are the model's own scores (the ranking the realised AUC measures; isotonic
  calibration is monotone, so it orders the rows the same way, only with ties), the counts the calibrated
  probabilities. Multi-class: the macro mean of each class against the rest;
* F1 (binary; ``f1_macro`` per class, averaged): 2 TP / (2 TP + FP + FN) of the expected counts.

Assumptions, as NannyML states them: the calibrated probabilities stay calibrated on the window. That holds
under covariate shift (P(X) moves, P(Y | X) does not) into regions the holdout covered, and fails under
concept drift (P(Y | X) changes): then only labels can show the decay. The estimate is of an expectation, so a
small window gives a noisy one, as its realised metric would be.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from flows.calibration import apply_calibration, model_scores
from flows.monitoring.performance import Scorer, baseline_metric, served_outputs
from flows.tasks import Task, plain_class, positive_class

METHOD = "CBPE"
ESTIMABLE: dict[Task, tuple[str, ...]] = {
    "binary": ("accuracy", "roc_auc", "f1"),
    "multiclass": ("accuracy", "roc_auc_ovr", "f1_macro"),
    "regression": (),
}
"""Metrics CBPE estimates here: those built on the confusion matrix and the ranking of the scores."""


@dataclass(frozen=True)
class Estimate:
    """``status``: 'ok', 'not_estimable' (a metric CBPE does not estimate here), 'no_calibration', 'no_rows',
    'no_outputs' or 'undefined' (e.g. the calibrated probabilities put every row in one class)."""

    status: str
    metric: str
    rows: int
    value: float | None = None
    baseline: float | None = None
    drop: float | None = None
    note: str = ""
    method: str = METHOD

    def to_json(self) -> dict[str, Any]:
        """What a report's ``performance["estimated"]`` holds; ``kind`` says it is no measurement."""
        return {"kind": "estimated", **asdict(self)}


def expected_roc_auc(scores: np.ndarray, calibrated: np.ndarray) -> float | None:
    """Area under the expected ROC curve: thresholds at the distinct ``scores``, expected positives
    ``calibrated`` and negatives ``1 - calibrated`` per row (None when either total is 0).

    The same as the ROC AUC of the rows counted once as positives with weight p and once as negatives with
    weight 1 - p; ties in ``scores`` are one threshold, the trapezoid between them (as scikit-learn's)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ranked, p = np.asarray(scores, dtype=np.float64)[order], np.asarray(calibrated, dtype=np.float64)[order]
    tp, fp = np.cumsum(p), np.cumsum(1.0 - p)
    last_of_tie = np.r_[ranked[1:] != ranked[:-1], True]
    tp, fp = np.r_[0.0, tp[last_of_tie]], np.r_[0.0, fp[last_of_tie]]
    if tp[-1] <= 0 or fp[-1] <= 0:
        return None
    return float(np.trapezoid(tp / tp[-1], fp / fp[-1]))


def expected_f1(predicted: np.ndarray, calibrated: np.ndarray) -> float | None:
    """F1 of the expected counts: TP = sum of p over rows predicted positive, FP = sum of 1 - p over them,
    FN = sum of p over the rows predicted negative (None when all three are 0)."""
    tp = float(calibrated[predicted].sum())
    fp = float((1.0 - calibrated[predicted]).sum())
    fn = float(calibrated[~predicted].sum())
    return 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else None


def _predicted_index(outputs: Mapping[str, Any], classes: Sequence[Any], scores: np.ndarray) -> np.ndarray:
    """The class each row was answered (its index in ``classes``): the served label where every one is a class,
    else the model's highest score (what the sklearn flavor answers)."""
    index = {str(plain_class(c)): i for i, c in enumerate(classes)}
    labels = outputs.get("label")
    if labels is not None:
        found = [index.get(str(plain_class(v))) for v in np.asarray(labels)]
        if all(i is not None for i in found):
            return np.asarray(found, dtype=np.int64)
    if scores.ndim == 1:
        return (scores > 0.5).astype(np.int64)
    return scores.argmax(axis=1)


def expected_metric(task: Task, metric: str, outputs: Mapping[str, Any], calibration: Mapping[str, Any]
                    ) -> float | None:
    """``metric`` of the answers ``outputs`` expected from the version's ``calibration`` (see the module)."""
    classes = list(calibration["classes"])
    scores = model_scores(task, outputs)
    calibrated = apply_calibration(calibration, scores)
    rows = np.column_stack([1.0 - calibrated, calibrated]) if task == "binary" else calibrated
    predicted = _predicted_index(outputs, classes, scores)
    if metric == "accuracy":
        return float(rows[np.arange(len(rows)), predicted].mean())
    if task == "binary":
        positive = classes.index(positive_class(classes))
        if metric == "roc_auc":
            return expected_roc_auc(scores, calibrated)
        if metric == "f1":
            return expected_f1(predicted == positive, calibrated)
    else:
        per_class: list[float | None]
        if metric == "roc_auc_ovr":
            per_class = [expected_roc_auc(scores[:, k], rows[:, k]) for k in range(len(classes))]
        elif metric == "f1_macro":
            per_class = [expected_f1(predicted == k, rows[:, k]) for k in range(len(classes))]
        else:
            per_class = [None]
        defined = [v for v in per_class if v is not None]
        return float(np.mean(defined)) if defined else None
    raise ValueError(f"{metric!r} is not estimable for a {task} model")


def estimate_window(
    frame: pd.DataFrame | None,
    *,
    task: Task,
    metric: str,
    calibration: Mapping[str, Any] | None,
    baseline: Mapping[str, float],
    scorer: Scorer | None = None,
) -> Estimate:
    """The expected ``metric`` of every row of ``frame``, labelled or not, and its drop below the evaluation
    value. Outputs as :func:`flows.monitoring.performance.served_outputs` finds them (logged, else scored)."""
    n = 0 if frame is None else len(frame)
    _, base = baseline_metric(baseline, metric)
    if metric not in ESTIMABLE[task]:
        estimable = ", ".join(ESTIMABLE[task]) or "nothing"
        return Estimate("not_estimable", metric, n, baseline=base,
                        note=f"{metric} is not estimable from confidence (CBPE estimates {estimable} here)")
    if calibration is None:
        return Estimate("no_calibration", metric, n, baseline=base,
                        note="the version was registered without a calibration of its probabilities")
    if frame is None or n == 0:
        return Estimate("no_rows", metric, 0, baseline=base, note="no rows to estimate on")
    outputs = served_outputs(frame, task, scorer)
    if outputs is None:
        return Estimate("no_outputs", metric, n, baseline=base, note="no logged outputs and no model to score with")
    try:
        value = expected_metric(task, metric, outputs, calibration)
    except (KeyError, ValueError) as exc:
        return Estimate("no_outputs", metric, n, baseline=base, note=f"the outputs cannot be estimated on: {exc}")
    if value is None:
        return Estimate("undefined", metric, n, baseline=base,
                        note="the calibrated probabilities put every row in one class")
    return Estimate("ok", metric, n, value=value, baseline=base, drop=None if base is None else base - value)

"""Per-row scores of served predictions against their labels: the numbers the canary's test averages.

A sequential test of "is the canary better?" needs each arm's metric to be a mean of per-row values: the
confidence sequence (:mod:`flows.delivery.sequential`) bounds a difference of means, and its variance
comes from the rows. Accuracy, the Brier score, log loss and absolute or squared error are such means.
ROC AUC, average precision, F1 and RMSE are not (they rank or pool rows), so the canary judges a per-row
metric while the monitor (:mod:`flows.monitoring.performance`) keeps the spec's own metric.

Every score is oriented so that higher is better, as the spec's metrics are (``neg_*``): a loss is negated.

* ``accuracy``: 1 where the served label equals the label, else 0;
* ``brier``: minus the squared error of the probabilities. Binary: ``-(p - y)^2`` with ``p`` the served
  probability of the positive class and ``y`` 1 for the positive class (the mean is scikit-learn's
  ``neg_brier_score``). Multi-class: ``-sum_k (p_k - [y = k])^2`` (Brier, 1950), a proper score; the
  squared error of the true class's probability alone is not one (it rewards all mass on the likeliest
  class);
* ``log_loss``: ``log p_true`` with ``p_true`` clipped to ``[1e-15, 1]`` (as :func:`flows.tasks.score`);
* ``absolute_error`` / ``squared_error`` (regression): ``-|y - prediction|`` and ``-(y - prediction)^2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from core.inference_log import LABEL_COLUMN, OUTPUT_PREFIX, label_key
from flows.monitoring.performance import class_labels, labelled_rows
from flows.tasks import Task, positive_class

CLASSIFICATION_METRICS = ("accuracy", "brier", "log_loss")
REGRESSION_METRICS = ("absolute_error", "squared_error")
ROW_METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS
ALIASES = {"neg_brier_score": "brier", "neg_log_loss": "log_loss",
           "neg_mean_absolute_error": "absolute_error", "neg_mean_squared_error": "squared_error"}
"""The spec's scikit-learn names of the same metrics: their value is the mean of these per-row scores."""

LOG_LOSS_EPS = 1e-15


def canonical_metric(name: str) -> str:
    """The per-row metric ``name`` means (a spec's ``neg_log_loss`` is ``log_loss``), or a
    :class:`ValueError` that lists the ones a canary can judge and says why others cannot be."""
    metric = ALIASES.get(name, name)
    if metric not in ROW_METRICS:
        raise ValueError(f"metric {name!r} is not a mean of per-row scores, which the canary's sequential "
                         f"test needs; use one of: {', '.join(ROW_METRICS)}")
    return metric


def default_metric(task: Task) -> str:
    """Accuracy for classification, absolute error for regression."""
    return "absolute_error" if task == "regression" else "accuracy"


def _output(rows: pd.DataFrame, name: str) -> np.ndarray:
    for column in (OUTPUT_PREFIX + name, name):
        if column in rows.columns:
            values = rows[column]
            if values.isna().any():
                raise ValueError(f"{values.isna().sum()} labelled rows have no served {name!r}")
            return values.to_numpy()
    raise ValueError(f"the rows have no served {name!r} (column {OUTPUT_PREFIX + name!r})")


def _known_classes(truth: np.ndarray, predicted: np.ndarray | None, classes: Sequence[Any] | None,
                   task: Task) -> list[Any]:
    if classes:
        return list(classes)
    seen = {label_key(v): v for v in truth.tolist() + (predicted.tolist() if predicted is not None else [])}
    known = sorted(seen.values(), key=lambda v: (str(type(v)), v))
    if task == "binary" and len(known) < 2 and set(seen) <= {"0", "1"}:
        return [0, 1]
    return known


def _true_class_index(truth: np.ndarray, known: list[Any]) -> np.ndarray:
    index = {label_key(c): i for i, c in enumerate(known)}
    try:
        return np.array([index[label_key(v)] for v in truth.tolist()], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"label {exc.args[0]!r} is not one of the classes {known!r}") from None


def row_scores(frame: pd.DataFrame, *, task: Task, classes: Sequence[Any] | None = None,
               metric: str | None = None) -> np.ndarray:
    """One score per labelled row of ``frame`` (higher is better), in the frame's order; rows without a
    label are left out. ``frame`` is a window as :func:`core.inference_log.read_window` reads it: ``label``
    and the served ``output.<name>`` columns (a batch frame's plain ``<name>`` columns work too).

    Raises :class:`ValueError` for a metric that does not fit the task, a label that is no class of the
    model (``classes``), or a served output the metric needs and the rows do not have.
    """
    metric = canonical_metric(metric or default_metric(task))
    if (task == "regression") != (metric in REGRESSION_METRICS):
        allowed = REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS
        raise ValueError(f"metric {metric!r} does not apply to a {task} model; use one of: "
                         f"{', '.join(allowed)}")
    rows = labelled_rows(frame, LABEL_COLUMN)
    if not len(rows):
        return np.empty(0, dtype=np.float64)
    truth = class_labels(task, rows[LABEL_COLUMN].to_numpy(), classes)
    if task == "regression":
        error = truth.astype(np.float64) - _output(rows, "prediction").astype(np.float64)
        return -np.abs(error) if metric == "absolute_error" else -np.square(error)
    if metric == "accuracy":
        served = _output(rows, "label")
        return np.array([label_key(t) == label_key(s) for t, s in zip(truth.tolist(), served.tolist(),
                                                                      strict=True)], dtype=np.float64)
    known = _known_classes(truth, None, classes, task)
    true_index = _true_class_index(truth, known)
    if task == "binary":
        p_positive = _output(rows, "probability").astype(np.float64)
        is_positive = (true_index == known.index(positive_class(known))).astype(np.float64)
        if metric == "brier":
            return -np.square(p_positive - is_positive)
        p_true = np.where(is_positive == 1.0, p_positive, 1.0 - p_positive)
        return np.log(np.clip(p_true, LOG_LOSS_EPS, 1.0))
    proba = np.stack(_output(rows, "probabilities")).astype(np.float64)
    if proba.ndim != 2 or proba.shape[1] != len(known):
        width = proba.shape[-1] if proba.ndim else 0
        raise ValueError(f"served probabilities have {width} columns, the model has {len(known)} classes")
    if metric == "brier":
        onehot = np.zeros_like(proba)
        onehot[np.arange(len(true_index)), true_index] = 1.0
        return -np.square(proba - onehot).sum(axis=1)
    return np.log(np.clip(proba[np.arange(len(true_index)), true_index], LOG_LOSS_EPS, 1.0))

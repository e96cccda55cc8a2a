"""The three tasks esteira trains for, and everything that differs between them, in one place.

``binary`` and ``multiclass`` classification and ``regression`` differ in their metrics, their cross-
validation splitter, what a valid label looks like, what a model answers (label and probability; label and
a probability per class; a number) and how that answer is scored against ground truth. Training, the
promotion rule, batch scoring, the gateway's output and the monitor's performance metric all ask this
module, so a task is added or changed here and nowhere else.

Every metric is a scikit-learn scorer name and "higher is better" (errors are negated:
``neg_mean_absolute_error``), so the promotion rule and the monitor's "drop" read the same for all tasks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

Task = Literal["binary", "multiclass", "regression"]
TASKS: tuple[Task, ...] = ("binary", "multiclass", "regression")

METRICS: dict[Task, tuple[str, ...]] = {
    "binary": ("roc_auc", "average_precision", "accuracy", "balanced_accuracy", "f1", "neg_log_loss",
               "neg_brier_score"),
    "multiclass": ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted", "neg_log_loss", "roc_auc_ovr"),
    "regression": ("neg_mean_absolute_error", "neg_root_mean_squared_error", "neg_mean_squared_error",
                   "neg_median_absolute_error", "r2"),
}
DEFAULT_METRIC: dict[Task, str] = {"binary": "roc_auc", "multiclass": "accuracy",
                                   "regression": "neg_mean_absolute_error"}
EXTRA_METRICS: dict[Task, tuple[str, ...]] = {
    "binary": ("roc_auc", "average_precision", "accuracy", "neg_log_loss"),
    "multiclass": ("accuracy", "balanced_accuracy", "f1_macro", "neg_log_loss"),
    "regression": ("neg_mean_absolute_error", "neg_root_mean_squared_error", "r2"),
}
"""Recorded beside the spec's metric at evaluation, for the record and the comparison page."""

OUTPUTS: dict[Task, tuple[tuple[str, str], ...]] = {
    "binary": (("label", "class"), ("probability", "float64")),
    "multiclass": (("label", "class"), ("probabilities", "float64")),
    "regression": (("prediction", "float64"),),
}
"""What a model of each task answers, per row (``class`` is the type of the label)."""

_ALIASES = {"binary_classification": "binary", "multiclass_classification": "multiclass"}


def task_of(signature: Mapping[str, Any]) -> Task:
    """The task a version's signature records (``binary`` for versions from before tasks were named)."""
    value = str(signature.get("task") or "binary")
    value = _ALIASES.get(value, value)
    if value not in TASKS:
        raise ValueError(f"unknown task {value!r} in the signature")
    return value  # type: ignore[return-value]


def is_classification(task: Task) -> bool:
    return task != "regression"


def check_metric(task: Task, metric: str) -> str:
    if metric not in METRICS[task]:
        raise ValueError(f"metric {metric!r} does not apply to a {task} task; allowed: {', '.join(METRICS[task])}")
    return metric


def splitter(task: Task, strategy: str, folds: int, seed: int) -> Any:
    """Stratified folds for classification, plain shuffled folds for regression, or time-ordered folds."""
    from sklearn.model_selection import KFold, StratifiedKFold, TimeSeriesSplit

    if strategy == "time":
        return TimeSeriesSplit(n_splits=folds)
    if strategy == "stratified" or (strategy == "auto" and is_classification(task)):
        return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return KFold(n_splits=folds, shuffle=True, random_state=seed)


def label_values(task: Task, values: Any) -> np.ndarray:
    """Labels as the model takes them: numbers as float64 for regression; classes as they are, with whole
    floats (a parquet column that held nulls) turned back into integers."""
    array = np.asarray(values)
    if task == "regression":
        return array.astype(np.float64)
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(np.mod(array, 1) == 0):
        return array.astype(np.int64)
    if array.dtype.kind == "b":
        return array.astype(np.int64)
    return array


def plain_class(value: Any) -> Any:
    """A class as JSON keeps it: numpy scalars to Python, bools to ints."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    return value


def positive_class(classes: Sequence[Any]) -> Any:
    """The class whose probability a binary model reports: the greater one (scikit-learn's ``classes_[1]``)."""
    return classes[-1]


def score(task: Task, metric: str, y_true: Any, outputs: Mapping[str, Any], classes: Sequence[Any] | None = None
          ) -> float:
    """``metric`` of a model's ``outputs`` (what its predictor returned) against ``y_true``."""
    from sklearn import metrics as skm

    y = label_values(task, y_true)
    if task == "regression":
        pred = np.asarray(outputs["prediction"], dtype=np.float64)
        if metric == "neg_mean_absolute_error":
            return -float(skm.mean_absolute_error(y, pred))
        if metric == "neg_root_mean_squared_error":
            return -float(np.sqrt(skm.mean_squared_error(y, pred)))
        if metric == "neg_mean_squared_error":
            return -float(skm.mean_squared_error(y, pred))
        if metric == "neg_median_absolute_error":
            return -float(skm.median_absolute_error(y, pred))
        if metric == "r2":
            return float(skm.r2_score(y, pred))
        raise ValueError(f"unknown regression metric {metric!r}")
    labels = np.asarray(outputs["label"])
    if metric == "accuracy":
        return float(skm.accuracy_score(y, labels))
    if metric == "balanced_accuracy":
        return float(skm.balanced_accuracy_score(y, labels))
    known = list(classes) if classes is not None else sorted(set(np.asarray(y).tolist()) | set(labels.tolist()))
    if task == "binary":
        positive = positive_class(known)
        is_positive = (y == positive).astype(int)
        p = np.asarray(outputs["probability"], dtype=np.float64)
        if metric == "roc_auc":
            return float(skm.roc_auc_score(is_positive, p))
        if metric == "average_precision":
            return float(skm.average_precision_score(is_positive, p))
        if metric == "f1":
            return float(skm.f1_score(is_positive, (labels == positive).astype(int)))
        if metric == "neg_log_loss":
            return -float(skm.log_loss(is_positive, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]))
        if metric == "neg_brier_score":
            return -float(skm.brier_score_loss(is_positive, p))
        raise ValueError(f"unknown binary metric {metric!r}")
    if metric == "f1_macro":
        return float(skm.f1_score(y, labels, average="macro"))
    if metric == "f1_weighted":
        return float(skm.f1_score(y, labels, average="weighted"))
    proba = np.asarray(outputs["probabilities"], dtype=np.float64)
    if metric == "neg_log_loss":
        return -float(skm.log_loss(y, np.clip(proba, 1e-15, 1.0), labels=known))
    if metric == "roc_auc_ovr":
        return float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=known))
    raise ValueError(f"unknown multiclass metric {metric!r}")


def needs_two_classes(task: Task, metric: str) -> bool:
    """Metrics undefined when the labelled rows hold one class only."""
    return task != "regression" and metric in ("roc_auc", "average_precision", "balanced_accuracy", "roc_auc_ovr",
                                               "neg_log_loss")


def metrics_for(task: Task, metric: str, y_true: Any, outputs: Mapping[str, Any],
                classes: Sequence[Any] | None) -> dict[str, float]:
    """The spec's metric plus the task's standard ones (those defined on these rows)."""
    result = {metric: score(task, metric, y_true, outputs, classes)}
    for extra in EXTRA_METRICS[task]:
        if extra not in result:
            try:
                result[extra] = score(task, extra, y_true, outputs, classes)
            except (ValueError, KeyError):
                pass
    return result


def output_signature(task: Task, classes: Sequence[Any] | None) -> list[dict[str, Any]]:
    """The ``outputs`` part of a version's signature."""
    class_dtype = "string" if classes and any(isinstance(c, str) for c in classes) else "int64"
    return [{"name": name, "dtype": class_dtype if dtype == "class" else dtype} for name, dtype in OUTPUTS[task]]

"""Performance on the labelled part of a window, against the metric recorded at evaluation.

Ground truth arrives late and only for some requests (feedback joined to the inference log), so
only rows with a label are scored, and too few of them give no verdict rather than a noisy one.
The baseline is the production version's own evaluation metric (its holdout value), so "decay"
means "worse than this model was shown to be", not worse than some fixed number.

How late is the policy's ``label_delay``: a window's labels have *matured* once its end is that far behind
(:func:`maturity`); before, the realised metric is reported with its coverage (labelled rows / rows) but
decides nothing, and later runs judge the window again (:mod:`flows.monitoring.rejudge`). A report's
``performance`` keeps this module's result at its top level (what readers of a report have always read)
and says under ``realised`` and ``estimated`` which number was measured on labels and which was estimated
from confidence (:mod:`flows.monitoring.estimate`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from core.inference_log import OUTPUT_PREFIX, canonical_labels
from flows.monitoring.policy import MonitoringPolicy
from flows.tasks import METRICS, OUTPUTS, Task, label_values, needs_two_classes, score

Scorer = Callable[[pd.DataFrame], Mapping[str, np.ndarray]]
"""The production model's outputs for the rows of a frame (its predictor, in practice)."""


@dataclass(frozen=True)
class PerformanceResult:
    """``status``: 'ok', 'insufficient_labels', 'undefined' (e.g. one class only) or 'no_baseline'."""

    status: str
    metric: str
    n_labelled: int
    value: float | None = None
    baseline: float | None = None
    baseline_key: str | None = None
    drop: float | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def baseline_metric(metrics: Mapping[str, float], metric: str) -> tuple[str | None, float | None]:
    """The version's evaluation value of ``metric``.

    The training flow records the holdout metrics as ``holdout_<metric>``; a plain ``<metric>`` key, where a
    version has one (registered by hand), is taken when there is no holdout value.
    """
    for key in (f"holdout_{metric}", metric):
        value = metrics.get(key)
        if value is not None:
            return key, float(value)
    return None, None


def labelled_rows(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """Rows with ground truth; no label column means no labelled rows."""
    if label not in frame.columns:
        return frame.iloc[0:0]
    return frame[frame[label].notna()]


def served_outputs(rows: pd.DataFrame, task: Task, scorer: Scorer | None) -> Mapping[str, Any] | None:
    """The outputs the model gave for these rows: the gateway log's ``output.<name>`` columns, a batch-scored
    frame's ``<name>`` columns, else recomputed by ``scorer`` (None when neither is possible)."""
    outputs: dict[str, Any] = {}
    for name, _ in OUTPUTS[task]:
        for column in (OUTPUT_PREFIX + name, name):
            if column in rows.columns and rows[column].notna().all():
                values = rows[column].to_numpy()
                outputs[name] = np.stack(values) if values.dtype == object and name == "probabilities" else values
                break
    if len(outputs) == len(OUTPUTS[task]):
        return outputs
    return None if scorer is None else scorer(rows)


def class_labels(task: Task, values: Any, classes: Sequence[Any] | None) -> np.ndarray:
    """Ground truth as the model's classes (floats for a regression), by the rule the gateway applies to
    feedback (:func:`core.inference_log.canonical_labels`): ``1``, ``1.0``, ``"1"`` and ``true`` are class 1;
    a value that is no class of the model (``1.5``, ``"yes"``, a class of another version) raises
    :class:`ValueError` naming it, and the window's performance is 'undefined' rather than scored on it."""
    labels = canonical_labels(values, classes, task, strict=True)
    return label_values(task, labels.to_numpy(dtype=np.int64) if labels.dtype == "Int64" else labels.to_numpy())


def window_performance(
    frame: pd.DataFrame | None,
    *,
    label: str,
    task: Task,
    metric: str,
    baseline: Mapping[str, float],
    policy: MonitoringPolicy,
    classes: Sequence[Any] | None = None,
    scorer: Scorer | None = None,
) -> PerformanceResult:
    """The metric on the labelled rows of ``frame`` and its drop below the evaluation value.

    The model's outputs are taken from the logged output columns when present (what was actually
    served); otherwise ``scorer`` recomputes them, e.g. for a batch given without predictions.
    """
    if metric not in METRICS[task]:
        raise ValueError(f"monitoring metric {metric!r} does not apply to a {task} model; "
                         f"supported: {', '.join(METRICS[task])}")
    rows = labelled_rows(frame, label) if frame is not None else pd.DataFrame()
    n = len(rows)
    key, base = baseline_metric(baseline, metric)
    if n < policy.min_labelled:
        return PerformanceResult("insufficient_labels", metric, n, baseline=base, baseline_key=key,
                                 note=f"{n} labelled rows, fewer than min_labelled={policy.min_labelled}")
    try:
        y = class_labels(task, rows[label].to_numpy(), classes)
    except (TypeError, ValueError) as exc:
        return PerformanceResult("undefined", metric, n, baseline=base, baseline_key=key,
                                 note=f"labels do not match the model's classes: {exc}")
    if needs_two_classes(task, metric) and len(np.unique(y)) < 2:
        return PerformanceResult("undefined", metric, n, baseline=base, baseline_key=key,
                                 note=f"only one class ({y[0]!r}) among the labelled rows")
    outputs = served_outputs(rows, task, scorer)
    if outputs is None:
        return PerformanceResult("undefined", metric, n, baseline=base, baseline_key=key,
                                 note="no logged outputs and no model to score with")
    value = score(task, metric, y, outputs, classes)
    if base is None:
        return PerformanceResult("no_baseline", metric, n, value=value,
                                 note=f"the version has no recorded {metric!r} to compare with")
    return PerformanceResult("ok", metric, n, value=value, baseline=base, baseline_key=key, drop=base - value)


def maturity(end: datetime | None, label_delay: timedelta, now: datetime) -> tuple[bool, datetime | None]:
    """(have the window's labels matured at ``now``, when they do). A window without an end (a batch given
    as it is) carries the labels it has: matured."""
    if end is None:
        return True, None
    matures_at = end + label_delay
    return now >= matures_at, matures_at


def realised_json(result: PerformanceResult, *, rows: int, matured: bool, matures_at: datetime | None,
                  source: str, checked_at: datetime | None = None) -> dict[str, Any]:
    """A report's ``performance["realised"]``: the metric measured on the labels in hand, their coverage of
    the window's rows, and whether they had matured (only then does it decide). ``checked_at``: when a later
    run looked again (a first judgement is the report's ``created_at``)."""
    return {
        "kind": "realised",
        "method": "labels",
        "status": result.status,
        "value": result.value,
        "drop": result.drop,
        "labelled": result.n_labelled,
        "rows": rows,
        "coverage": result.n_labelled / rows if rows else None,
        "matured": matured,
        "matures_at": matures_at.isoformat() if matures_at is not None else None,
        "source": source,
        **({"checked_at": checked_at.isoformat()} if checked_at is not None else {}),
    }


def report_json(result: PerformanceResult, realised: dict[str, Any], estimated: dict[str, Any] | None
                ) -> dict[str, Any]:
    """A report's ``performance``: the realised result's fields at the top level, then the two sides."""
    return {**result.to_json(), "realised": realised, "estimated": estimated}

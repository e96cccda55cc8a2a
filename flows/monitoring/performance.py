"""Performance on the labelled part of a window, against the metric recorded at evaluation.

Ground truth arrives late and only for some requests (feedback joined to the inference log), so
only rows with a label are scored, and too few of them give no verdict rather than a noisy one.
The baseline is the production version's own evaluation metric (its holdout value), so "decay"
means "worse than this model was shown to be", not worse than some fixed number.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from flows.evaluate import score
from flows.monitoring.policy import MonitoringPolicy
from flows.spec import METRICS

SCORE_COLUMNS: tuple[str, ...] = ("output.probability", "probability")
"""Columns holding the served positive-class score: the gateway log's ``output.probability``, or a
batch-scored frame's ``probability`` (the predictor's output name)."""

Scorer = Callable[[pd.DataFrame], np.ndarray]
"""Positive-class scores for the rows of a frame (the production model's predictor, in practice)."""


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

    The training flow records the holdout metrics under their plain names (``roc_auc``); a
    ``holdout_<metric>`` key, where a version has one, is preferred as the more specific name.
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


def _scores(rows: pd.DataFrame, scorer: Scorer | None) -> np.ndarray | None:
    for column in SCORE_COLUMNS:
        if column in rows.columns and rows[column].notna().all():
            return rows[column].to_numpy(dtype=float)
    return None if scorer is None else np.asarray(scorer(rows), dtype=float)


def window_performance(
    frame: pd.DataFrame | None,
    *,
    label: str,
    metric: str,
    baseline: Mapping[str, float],
    policy: MonitoringPolicy,
    scorer: Scorer | None = None,
) -> PerformanceResult:
    """The metric on the labelled rows of ``frame`` and its drop below the evaluation value.

    The model's outputs are taken from the logged score column when present (what was actually
    served); otherwise ``scorer`` recomputes them, e.g. for a batch given without predictions.
    """
    if metric not in METRICS:
        raise ValueError(f"unsupported monitoring metric {metric!r}; supported: {', '.join(METRICS)}")
    rows = labelled_rows(frame, label) if frame is not None else pd.DataFrame()
    n = len(rows)
    key, base = baseline_metric(baseline, metric)
    if n < policy.min_labelled:
        return PerformanceResult(
            "insufficient_labels",
            metric,
            n,
            baseline=base,
            baseline_key=key,
            note=f"{n} labelled rows, fewer than min_labelled={policy.min_labelled}",
        )
    y = rows[label].astype(int).to_numpy()
    if len(np.unique(y)) < 2 and metric in ("roc_auc", "average_precision", "balanced_accuracy"):
        return PerformanceResult(
            "undefined",
            metric,
            n,
            baseline=base,
            baseline_key=key,
            note=f"only one class ({int(y[0])}) among the labelled rows",
        )
    scores = _scores(rows, scorer)
    if scores is None:
        return PerformanceResult(
            "undefined",
            metric,
            n,
            baseline=base,
            baseline_key=key,
            note=f"no score column ({', '.join(SCORE_COLUMNS)}) and no model to score with",
        )
    value = score(metric, y, scores, (scores >= 0.5).astype(int))
    if base is None:
        return PerformanceResult(
            "no_baseline",
            metric,
            n,
            value=value,
            note=f"the version has no recorded {metric!r} to compare with",
        )
    return PerformanceResult("ok", metric, n, value=value, baseline=base, baseline_key=key, drop=base - value)

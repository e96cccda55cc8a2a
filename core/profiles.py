"""whylogs behind one small module.

whylogs 1.6.4 is frozen upstream and uses ``np.unicode_``, which numpy 2 removed: datetime and string
columns then fail with AttributeError (whylabs/whylogs 1600, closed as stale). The alias below, set before
whylogs is first imported, fixes every case we use. Everything else in esteira calls these functions and
never imports whylogs itself, so replacing whylogs later touches one file.

Profiles travel as bytes (whylogs' own serialisation): they are stored in the registry's artifact store
with a model version, written per time window by the gateway, and merged by the monitor flow.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

DRIFT, POSSIBLE_DRIFT, NO_DRIFT = "DRIFT", "POSSIBLE_DRIFT", "NO_DRIFT"


@lru_cache(maxsize=1)
def _why() -> Any:
    os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "1")
    if not hasattr(np, "unicode_"):
        np.unicode_ = np.str_  # type: ignore[attr-defined]  # numpy 2 removed it; whylogs still uses it
    import whylogs

    return whylogs


def _view_class() -> Any:
    _why()
    from whylogs.core.view.dataset_profile_view import DatasetProfileView

    return DatasetProfileView


def profile_frame(frame: pd.DataFrame) -> bytes:
    """Profile a DataFrame; the serialised whylogs profile view."""
    return _why().log(pandas=frame).view().serialize()


def load_profile(blob: bytes) -> Any:
    return _view_class().deserialize(blob)


def merge_profiles(blobs: Iterable[bytes]) -> bytes | None:
    """One profile of all the windows given (None if none were)."""
    merged = None
    for blob in blobs:
        view = load_profile(blob)
        merged = view if merged is None else merged.merge(view)
    return merged.serialize() if merged is not None else None


def _clean(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, np.integer):
        return int(value)
    return value


def profile_summary(blob: bytes) -> dict[str, dict[str, Any]]:
    """Per column: count, nulls, mean, median, stddev, min, max, distinct estimate, inferred kind, frequent values."""
    table = load_profile(blob).to_pandas()
    summary: dict[str, dict[str, Any]] = {}
    for column, row in table.iterrows():
        get = row.get
        kinds = {kind: int(get(f"types/{kind}", 0) or 0)
                 for kind in ("integral", "fractional", "string", "boolean", "object")}
        frequent = get("frequent_items/frequent_strings")
        summary[str(column)] = {
            "count": int(get("counts/n", 0) or 0),
            "null_count": int(get("counts/null", 0) or 0) + int(get("counts/nan", 0) or 0),
            "mean": _clean(get("distribution/mean")),
            "median": _clean(get("distribution/median")),
            "stddev": _clean(get("distribution/stddev")),
            "min": _clean(get("distribution/min")),
            "max": _clean(get("distribution/max")),
            "distinct": _clean(get("cardinality/est")),
            "kind": max(kinds, key=kinds.__getitem__) if any(kinds.values()) else "unknown",
            "frequent": [item.value for item in frequent][:20] if isinstance(frequent, list) else [],
        }
    return summary


def drift_scores(reference: bytes, target: bytes, *, columns: Iterable[str] | None = None,
                 hellinger: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """Per-column drift of ``target`` against ``reference`` with whylogs' algorithms.

    KS for numeric columns and chi-squared for categorical ones (whylogs' default choice), Hellinger for
    the columns named in ``hellinger``. Each entry: algorithm, p-value (KS, chi-squared), statistic,
    and whylogs' category (DRIFT / POSSIBLE_DRIFT / NO_DRIFT). Columns whylogs cannot score are left out.
    """
    _why()
    from whylogs.viz.drift.column_drift_algorithms import Hellinger, calculate_drift_scores

    wanted = set(columns) if columns is not None else None
    drift_map = {name: Hellinger() for name in hellinger}
    scores = calculate_drift_scores(target_view=load_profile(target), reference_view=load_profile(reference),
                                    drift_map=drift_map or None, with_thresholds=True)
    result: dict[str, dict[str, Any]] = {}
    for name, score in scores.items():
        if score is None or (wanted is not None and name not in wanted):
            continue
        result[name] = {
            "algorithm": score.get("algorithm"),
            "pvalue": _clean(score.get("pvalue")),
            "statistic": _clean(score.get("statistic")),
            "category": score.get("drift_category"),
        }
    return result


def compare_distributions(reference: bytes, target: bytes, columns: Iterable[str], *, bins: int = 20,
                          top: int = 10) -> dict[str, dict[str, Any]]:
    """Reference vs target distributions per column, on common bins, for a person to look at.

    Numeric columns (those with a KLL sketch, the ones whylogs scores with KS): shares per bin over
    ``bins`` equal-width bins spanning both profiles' min..max. Others: shares of the ``top`` most
    frequent values of either profile. Columns missing or empty on either side are left out.
    """
    ref_view, tgt_view = load_profile(reference), load_profile(target)
    out: dict[str, dict[str, Any]] = {}
    for name in columns:
        ref_col, tgt_col = ref_view.get_column(name), tgt_view.get_column(name)
        if ref_col is None or tgt_col is None:
            continue
        ref_dist, tgt_dist = ref_col.get_metric("distribution"), tgt_col.get_metric("distribution")
        if ref_dist is not None and tgt_dist is not None and ref_dist.n > 0 and tgt_dist.n > 0:
            low = min(ref_dist.kll.value.get_min_value(), tgt_dist.kll.value.get_min_value())
            high = max(ref_dist.kll.value.get_max_value(), tgt_dist.kll.value.get_max_value())
            if not high > low:
                high = low + 1.0
            edges = np.linspace(low, high, bins + 1)
            splits = list(edges[1:-1])
            out[name] = {"kind": "numeric", "edges": [float(e) for e in edges],
                         "reference": [float(p) for p in ref_dist.kll.value.get_pmf(splits)],
                         "target": [float(p) for p in tgt_dist.kll.value.get_pmf(splits)]}
            continue
        shares = [_category_shares(ref_col), _category_shares(tgt_col)]
        if not shares[0] or not shares[1]:
            continue
        both = set(shares[0]) | set(shares[1])
        ranked = sorted(both, key=lambda v: -(shares[0].get(v, 0) + shares[1].get(v, 0)))
        categories = ranked[:top]
        out[name] = {"kind": "categorical", "categories": categories,
                     "reference": [float(shares[0].get(c, 0.0)) for c in categories],
                     "target": [float(shares[1].get(c, 0.0)) for c in categories]}
    return out


def _category_shares(column: Any) -> dict[str, float]:
    """Share of each frequent value of a profiled column (whylogs' frequent-items sketch), empty if none."""
    metric = column.get_metric("frequent_items")
    counts = column.get_metric("counts")
    n = counts.n.value if counts is not None else 0
    items = metric.to_summary_dict().get("frequent_strings", []) if metric is not None else []
    return {item.value: item.est / n for item in items} if n else {}


def hellinger(p: dict[str, float], q: dict[str, float]) -> float:
    """Hellinger distance of two discrete distributions given as shares; what the sketches do not list
    (rare values) is one more bucket on each side."""
    p = {**p, "\0other": max(0.0, 1.0 - sum(p.values()))}
    q = {**q, "\0other": max(0.0, 1.0 - sum(q.values()))}
    overlap = sum(math.sqrt(p.get(k, 0.0) * q.get(k, 0.0)) for k in set(p) | set(q))
    return math.sqrt(max(0.0, 1.0 - overlap))


def category_distances(reference: bytes, target: bytes, columns: Iterable[str]) -> dict[str, float]:
    """Hellinger distance between the category shares of each column in both profiles (columns with no
    frequent items on either side, numbers among them, are left out)."""
    ref_view, tgt_view = load_profile(reference), load_profile(target)
    out: dict[str, float] = {}
    for name in columns:
        ref_col, tgt_col = ref_view.get_column(name), tgt_view.get_column(name)
        if ref_col is None or tgt_col is None:
            continue
        p, q = _category_shares(ref_col), _category_shares(tgt_col)
        if p and q:
            out[name] = hellinger(p, q)
    return out

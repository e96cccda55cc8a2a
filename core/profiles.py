"""whylogs behind one small module.

whylogs 1.6.4 is frozen upstream and uses ``np.unicode_``, which numpy 2 removed: datetime and string
columns then fail with AttributeError (whylabs/whylogs 1600, closed as stale). The alias below, set before
whylogs is first imported, fixes every case we use. Everything else in esteira calls these functions and
never imports whylogs itself, so replacing whylogs later touches one file.

Profiles travel as bytes (whylogs' own serialisation): they are stored in the registry's artifact store
with a model version, written per time window by the gateway, and merged by the monitor flow.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

DRIFT, POSSIBLE_DRIFT, NO_DRIFT = "DRIFT", "POSSIBLE_DRIFT", "NO_DRIFT"
PICTURE_BINS = 20
"""Histogram bins of a picture: enough to see a shift, few enough to keep a stored report small."""
PICTURE_CATEGORIES = 12
"""Categories named in a picture; the rest share one ``OTHER`` bucket."""
OTHER = "(other)"
_LABEL_CHARS = 60
_SHARE_DIGITS = 4

log = logging.getLogger(__name__)


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


def compare_distributions(reference: bytes, target: bytes, columns: Iterable[str], *,
                          bins: int = PICTURE_BINS, top: int = 10) -> dict[str, dict[str, Any]]:
    """Reference vs target distributions per column, in the shape the monitor's PNG draws.

    The numbers are :func:`feature_pictures`' (so the PNG and the stored report agree): ``kind`` is
    ``numeric`` or ``categorical`` and the window's shares are under ``target``. Columns missing or
    empty on either side are left out.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, picture in feature_pictures(reference, target, columns, bins=bins, top=top).items():
        if picture["reference"] is None or picture["window"] is None:
            continue
        if picture["kind"] == "histogram":
            out[name] = {"kind": "numeric", "edges": picture["edges"]}
        else:
            out[name] = {"kind": "categorical", "categories": picture["categories"]}
        out[name].update(reference=picture["reference"], target=picture["window"])
    return out


def feature_pictures(reference: bytes, target: bytes, columns: Iterable[str], *, bins: int = PICTURE_BINS,
                     top: int = PICTURE_CATEGORIES) -> dict[str, dict[str, Any]]:
    """A small JSON picture per column of the reference against the window, for a person to look at.

    Numeric columns: ``{"kind": "histogram", "edges": [k+1], "reference": [k], "window": [k]}``, shares
    of the side's non-null values per bin, on one set of equal-width edges over both sides' range (the
    outer bins are open: a value beyond the range, +-inf among them, counts in the first or last bin).
    Integer columns spanning at most ``bins`` values get one bin per value. Strings and booleans:
    ``{"kind": "categories", "categories": [...], "reference": [...], "window": [...]}``, the ``top``
    largest categories by combined share and, when the sketches hold more, an ``"(other)"`` bucket, each
    side's shares summing to 1. Both kinds add ``reference_n`` / ``window_n`` (rows) and
    ``reference_null`` / ``window_null`` (null share). A side missing the column has n, null share and
    shares None; an all-null side has its n, null share 1.0 and shares None.

    The shares come from the profiles' sketches (KLL for numbers, frequent items for categories), so
    they are estimates: within about 1% of the rows for the KLL sketch whylogs uses. A column with no
    values on either side has no picture, and so has one whose picture cannot be drawn (a warning is
    logged): a picture is never a reason for the caller to fail.
    """
    ref_view, tgt_view = load_profile(reference), load_profile(target)
    out: dict[str, dict[str, Any]] = {}
    for name in columns:
        try:
            picture = _picture(_side(ref_view.get_column(name)), _side(tgt_view.get_column(name)), bins, top)
        except Exception as exc:
            log.warning("no picture for column %r: %s: %s", name, type(exc).__name__, exc)
            continue
        if picture is not None:
            out[name] = picture
    return out


@dataclass(frozen=True)
class _Side:
    """What one profile says about one column, read once from its metrics."""

    n: int | None  # rows; None when the profile has no such column
    nulls: int
    kll: Any  # the KLL sketch of the non-null numbers, None when it holds none
    frequent: dict[str, float]  # value -> estimated count (frequent-items sketch)
    kind: str  # whylogs' dominant type: integral, fractional, string, boolean, ...

    @property
    def values(self) -> int:
        return (self.n or 0) - self.nulls

    def stats(self, prefix: str) -> dict[str, Any]:
        null = round(self.nulls / self.n, _SHARE_DIGITS) if self.n else None
        return {f"{prefix}_n": self.n, f"{prefix}_null": null}


def _side(column: Any) -> _Side:
    if column is None:
        return _Side(None, 0, None, {}, "unknown")
    counts = column.get_metric("counts")
    n, nulls = (int(counts.n.value), int(counts.null.value)) if counts is not None else (0, 0)
    distribution = column.get_metric("distribution")
    kll = distribution.kll.value if distribution is not None else None
    frequent = column.get_metric("frequent_items")
    items = frequent.to_summary_dict().get("frequent_strings", []) if frequent is not None else []
    types = column.get_metric("types")
    kinds = {k: v for k, v in types.to_summary_dict().items() if v} if types is not None else {}
    return _Side(
        n=n,
        nulls=nulls,
        kll=kll if kll is not None and not kll.is_empty() else None,
        frequent={str(item.value): float(item.est) for item in items},
        kind=max(kinds, key=kinds.__getitem__) if kinds else "unknown",
    )


def _picture(ref: _Side, tgt: _Side, bins: int, top: int) -> dict[str, Any] | None:
    sides = (ref, tgt)
    if any(side.kll is not None for side in sides) and not any(side.kind == "boolean" for side in sides):
        picture = _histogram(ref, tgt, bins)
    elif any(side.frequent and side.values > 0 for side in sides):
        picture = _categories(ref, tgt, top)
    else:
        return None
    return {**picture, **ref.stats("reference"), **tgt.stats("window")}


def _histogram(ref: _Side, tgt: _Side, bins: int) -> dict[str, Any]:
    sketches = [side.kll for side in (ref, tgt) if side.kll is not None]
    low, high = _finite_range(sketches)
    integral = all(side.kind == "integral" for side in (ref, tgt) if side.kll is not None)
    edges = _edges(low, high, bins, integral=integral)
    splits = edges[1:-1]

    def shares(side: _Side) -> list[float] | None:
        if side.kll is None:
            return None
        return [round(float(p), _SHARE_DIGITS) for p in side.kll.get_pmf(splits)] if splits else [1.0]

    return {"kind": "histogram", "edges": edges, "reference": shares(ref), "window": shares(tgt)}


def _finite_range(sketches: list[Any]) -> tuple[float, float]:
    """Smallest and largest finite value of the sketches; +-inf are left to the open outer bins."""
    ends = [v for s in sketches for v in (s.get_min_value(), s.get_max_value()) if math.isfinite(v)]
    if len(ends) < 2 * len(sketches):  # an infinite end: look inside the sketch for its finite values
        grid = [i / 200 for i in range(201)]
        ends = [v for s in sketches for v in s.get_quantiles(grid) if math.isfinite(v)]
    if not ends:
        raise ValueError("no finite values to bin")
    return min(ends), max(ends)


def _edges(low: float, high: float, bins: int, *, integral: bool) -> list[float]:
    """Equal-width edges over low..high, rounded to a few digits below the bin width (short JSON)."""
    if integral and high - low + 1 <= bins:  # one bin per integer value
        return [float(v) - 0.5 for v in range(int(low), int(high) + 2)]
    if not high > low:  # a constant column: one bin around its value
        pad = abs(low) * 0.05 or 0.5
        return [low - pad, low + pad]
    step = (high - low) / bins
    digits = 3 - math.floor(math.log10(step))
    return [round(low + i * step, digits) for i in range(bins + 1)]


def _categories(ref: _Side, tgt: _Side, top: int) -> dict[str, Any]:
    def shares(side: _Side) -> dict[str, float] | None:
        if side.values <= 0 or not side.frequent:
            return None
        return {value: min(1.0, count / side.values) for value, count in side.frequent.items()}

    ref_shares, tgt_shares = shares(ref), shares(tgt)
    both = [s for s in (ref_shares, tgt_shares) if s is not None]
    ranked = sorted({v for s in both for v in s}, key=lambda v: (-sum(s.get(v, 0.0) for s in both), v))
    named = ranked[:top]

    def listed(side: dict[str, float] | None) -> list[float] | None:
        if side is None:
            return None
        values = [side.get(v, 0.0) for v in named]
        return [round(v, _SHARE_DIGITS) for v in [*values, max(0.0, 1.0 - sum(values))]]

    ref_list, tgt_list = listed(ref_shares), listed(tgt_shares)
    rest = [row[-1] for row in (ref_list, tgt_list) if row is not None]
    keep_other = len(ranked) > top or any(r > 0 for r in rest)
    labels = [v if len(v) <= _LABEL_CHARS else v[: _LABEL_CHARS - 1] + "\u2026" for v in named]

    def cut(row: list[float] | None) -> list[float] | None:
        return row if row is None or keep_other else row[:-1]

    return {"kind": "categories", "categories": labels + ([OTHER] if keep_other else []),
            "reference": cut(ref_list), "window": cut(tgt_list)}


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

"""Loading the online store from the offline store, per view, over a time range.

Feast's pitfall this module exists for: ``materialize_incremental`` on a view never materialized starts at
``now - ttl`` and silently skips older rows (and records the end time, so they are never loaded). Here a
view never materialized is backfilled from the earliest timestamp of its source instead.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from feature_repo.sources import earliest, row_counts

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)


class UnknownFeatureView(ValueError):
    """A view asked for by name is not in the registry (or is not online); names the known ones."""


def online_views(store: FeatureStore, names: Sequence[str] | None = None) -> list[Any]:
    """The registry's online feature views, all or the ones named (an unknown name is an error)."""
    views = [v for v in store.list_feature_views() if v.online]
    if names is None:
        return views
    by_name = {v.name: v for v in views}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UnknownFeatureView(f"no online feature view {', '.join(map(repr, unknown))}; known: "
                                 f"{', '.join(sorted(by_name)) or 'none (apply the project first)'}")
    return [by_name[n] for n in names]


def materialize(
    store: FeatureStore,
    end: datetime | None = None,
    *,
    start: datetime | None = None,
    feature_views: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Load the online store up to ``end`` (default now); returns figures per view and in total.

    Per view: from ``start`` if given (a backfill, e.g. after a late batch), else from where the last
    materialization ended, else (never materialized) from the earliest timestamp in the source.

    Returns ``{"end", "views": {name: {...}}, "rows_written", "source_rows", "seconds", "rows_per_second"}``:
    ``rows_written`` counts online rows (Feast keeps the latest row per entity of the interval),
    ``source_rows`` the offline rows read, and ``rows_per_second`` is source rows per second (the figure
    that grows with history). Counts are exact for file sources and None for other source types.
    """
    end = (end or datetime.now(UTC)).astimezone(UTC)
    if start is not None and start.astimezone(UTC) >= end:
        raise ValueError(f"materialization start {start.isoformat()} is not before its end {end.isoformat()}")
    repo_path = store.config.repo_path
    report: dict[str, Any] = {"end": end.isoformat(), "views": {}}
    total_rows = total_source = 0
    total_seconds = 0.0
    for view in online_views(store, feature_views):
        if start is not None:
            begin, mode = start.astimezone(UTC), "explicit"
        elif view.most_recent_end_time is not None:
            begin, mode = view.most_recent_end_time.astimezone(UTC), "incremental"
        else:
            begin = earliest(view.batch_source, repo_path) or end - (view.ttl or timedelta(0))
            mode = "backfill"
        if begin >= end:
            report["views"][view.name] = {"mode": "up-to-date", "rows_written": 0, "seconds": 0.0}
            continue
        keys = [c.name for c in view.entity_columns]
        counts = row_counts(view.batch_source, repo_path, keys, begin, end)
        t0 = time.perf_counter()
        # Feast prints coloured progress to stdout; keep it out of flow logs and command output.
        with contextlib.redirect_stdout(io.StringIO()):
            store.materialize(start_date=begin, end_date=end, feature_views=[view.name])
        seconds = time.perf_counter() - t0
        source_rows, written = counts if counts is not None else (None, None)
        report["views"][view.name] = {
            "mode": mode,
            "start": begin.isoformat(),
            "end": end.isoformat(),
            "rows_written": written,
            "source_rows": source_rows,
            "seconds": round(seconds, 4),
            "rows_per_second": round(source_rows / seconds, 1) if source_rows and seconds > 0 else None,
            "written_per_second": round(written / seconds, 1) if written and seconds > 0 else None,
        }
        total_rows += written or 0
        total_source += source_rows or 0
        total_seconds += seconds
        log.info("materialized %s (%s) %s..%s: %s rows in %.2fs", view.name, mode, begin, end, written, seconds)
    report["rows_written"] = total_rows
    report["source_rows"] = total_source
    report["seconds"] = round(total_seconds, 4)
    report["rows_per_second"] = round(total_source / total_seconds, 1) if total_seconds > 0 else None
    report["written_per_second"] = round(total_rows / total_seconds, 1) if total_seconds > 0 else None
    return report

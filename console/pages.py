"""What each page shows, read from the registry: plain data for the templates, no HTML.

Every read goes through :class:`registry.Registry`, so the console sees what the CLI and the flows see, on
SQLite or PostgreSQL alike. Pages read a page of rows, not a model's whole history: the versions table,
the leaderboard, the reports and the audit log are paged; the charts read every report's headline
numbers only (``Registry.report_series``), never the per-feature detail. A model's canary reads its share,
when it started (one audit row) and its latest reports (kind ``canary``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from console.charts import Point
from registry import Registry
from registry.api import CANARY, PRODUCTION, TRIAL_SORTS
from registry.errors import RegistryError
from registry.models import ModelAlias, ModelVersion, MonitoringReport, Trial, as_utc

VERSIONS_PER_PAGE = 50
TRIALS_PER_PAGE = 100
REPORTS_PER_PAGE = 50
EVENTS_PER_PAGE = 100
REPLICA_GONE_AFTER_HEARTBEATS = 3
CANARY_REPORTS_SHOWN = 10
"""Canary reports on the model page, newest first: the current canary's latest looks and past verdicts."""

LINEAGE_FIELDS = ("flavor", "status", "feature_service", "training_set_uri", "training_set_sha256", "code_version",
                  "flow_run_id", "training_run_id", "artifact_sha256", "created_at")


class BadRequest(RegistryError):
    """A query or form value the console cannot use; the message names it."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def headline_metric(mv: ModelVersion) -> tuple[str | None, float | None]:
    """The version's evaluation metric on the holdout (the one promotion decided on), else its first metric."""
    metric = mv.tags.get("metric")
    for key in ((f"holdout_{metric}", metric) if metric else ()):
        if key in mv.metrics:
            return key, mv.metrics[key]
    for key, value in mv.metrics.items():
        return key, value
    return None, None


def training_rows(mv: ModelVersion) -> int | None:
    rows = [mv.metrics.get(k) for k in ("training_rows", "holdout_rows")]
    known = [r for r in rows if isinstance(r, (int, float))]
    return int(sum(known)) if known else None


def aliases_by_version(registry: Registry, name: str) -> dict[int, list[str]]:
    by_version: dict[int, list[str]] = {}
    for alias, version in registry.aliases(name).items():
        by_version.setdefault(version, []).append(alias)
    return by_version


def replicas_of(registry: Registry, name: str | None, heartbeat_s: float) -> list[dict[str, Any]]:
    """Gateway replicas that reported within a few heartbeats, with what they serve of ``name``."""
    rows = registry.gateway_replicas(model_name=name, seen_within_s=heartbeat_s * REPLICA_GONE_AFTER_HEARTBEATS)
    out = []
    for row in rows:
        if row.stopped_at is not None:
            continue
        # keys are "model@alias" (serving, shadow) and "model:version" (pinned loads)
        served = {key: value for key, value in (row.served or {}).items()
                  if name is None or re.split("[@:]", key, maxsplit=1)[0] == name}
        refused = {key: value for key, value in (row.refused or {}).items()
                   if name is None or key.split(":", 1)[0] == name}
        out.append({"replica": row, "served": served, "refused": refused})
    return out


@dataclass(frozen=True)
class Pager:
    page: int
    pages: int
    total: int

    @classmethod
    def of(cls, total: int, page: int, per_page: int) -> Pager:
        pages = max(1, math.ceil(total / per_page))
        return cls(page=min(max(page, 1), pages), pages=pages, total=total)


def model_index(registry: Registry, query: str, heartbeat_s: float) -> list[dict[str, Any]]:
    """Every model matching ``query`` (in its name, description or tags), with its aliases, latest version,
    latest monitoring decision and the replicas serving it."""
    needle = query.strip().lower()
    rows = []
    served_by: dict[str, list[str]] = {}
    for entry in replicas_of(registry, None, heartbeat_s):
        for key, value in entry["served"].items():
            if value.get("role", "serving") == "serving":
                served_by.setdefault(key.split("@", 1)[0], []).append(f"{key} v{value.get('version')}")
    served_by = {model: sorted(set(keys)) for model, keys in served_by.items()}
    for model in registry.list_models():
        text = " ".join([model.name, model.description, *(f"{k}={v}" for k, v in model.tags.items())]).lower()
        if needle and needle not in text:
            continue
        latest = registry.list_versions(model.name, limit=1)
        rows.append({
            "model": model, "aliases": registry.aliases(model.name), "latest": latest[0] if latest else None,
            "versions": registry.count_versions(model.name), "report": registry.latest_report(model.name),
            "served": served_by.get(model.name, []),
        })
    return rows


def versions_page(registry: Registry, name: str, page: int, filters: Sequence[str]) -> tuple[list[ModelVersion], Pager]:
    if filters:
        everything = registry.list_versions(name, filters=filters)
        pager = Pager.of(len(everything), page, VERSIONS_PER_PAGE)
        start = (pager.page - 1) * VERSIONS_PER_PAGE
        return everything[start:start + VERSIONS_PER_PAGE], pager
    pager = Pager.of(registry.count_versions(name), page, VERSIONS_PER_PAGE)
    return registry.list_versions(name, limit=VERSIONS_PER_PAGE, offset=(pager.page - 1) * VERSIONS_PER_PAGE), pager


def leaderboard(registry: Registry, run_id: int, sort: str, order: str, page: int
                ) -> tuple[list[tuple[int, Trial]], Pager, int]:
    """A page of the run's trials ranked by CV score (rank 1 is the best), sorted as asked; the pager and how
    many trials failed."""
    if sort not in TRIAL_SORTS:
        raise BadRequest(f"cannot sort trials by {sort!r}: use one of {', '.join(TRIAL_SORTS)}", field="sort")
    if order not in ("asc", "desc"):
        raise BadRequest(f"order must be 'asc' or 'desc', not {order!r}", field="order")
    total, failed = registry.trial_counts(run_id)
    pager = Pager.of(total, page, TRIALS_PER_PAGE)
    rows = registry.leaderboard(run_id, sort=sort, descending=order == "desc",
                                offset=(pager.page - 1) * TRIALS_PER_PAGE, limit=TRIALS_PER_PAGE)
    return rows, pager, failed


def series_points(series: list[dict[str, Any]], href: str) -> tuple[list[Point], list[Point], str | None,
                                                                      float | None]:
    """Drift share and performance of each report as chart points; the metric's name and the latest
    baseline (the version's holdout value) for the performance chart's reference line."""
    drift, performance = [], []
    metric, baseline = None, None
    for row in series:
        perf = row.get("performance") or {}
        at = row["created_at"]
        value = perf.get("value")
        metric = perf.get("metric") or metric
        baseline = perf.get("baseline", baseline)
        label = (f"report {row['id']} · v{row['version']} · {row['decision']} · {at:%Y-%m-%d %H:%M}"
                 f" · drift {_fmt(row['drift_share'])} · {perf.get('metric') or 'metric'} {_fmt(value)}"
                 f" ({row['n_labelled']:,} labelled)")
        link = href.format(id=row["id"])
        drift.append(Point(at, row["drift_share"], row["decision"], link, label))
        performance.append(Point(at, value if isinstance(value, (int, float)) else None, row["decision"], link, label))
    return drift, performance, metric, baseline


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "-"


def compare_rows(versions: list[ModelVersion]) -> dict[str, list[tuple[str, list[Any], bool]]]:
    """Metrics, params and lineage of each version side by side; each row says whether the versions differ."""

    def rows(values: list[dict[str, Any]]) -> list[tuple[str, list[Any], bool]]:
        keys = sorted({k for v in values for k in v})
        return [(k, [v.get(k) for v in values], len({repr(v.get(k)) for v in values}) > 1) for k in keys]

    lineage = [{f: getattr(mv, f) for f in LINEAGE_FIELDS} for mv in versions]
    packages = [mv.package_versions for mv in versions]
    return {"metrics": rows([mv.metrics for mv in versions]), "params": rows([mv.params for mv in versions]),
            "lineage": rows(lineage), "packages": [r for r in rows(packages) if r[2]]}


def parse_versions(values: Sequence[str]) -> list[int]:
    out: list[int] = []
    for value in values:
        for part in value.replace(",", " ").split():
            if not (part.isascii() and part.isdigit()):
                raise BadRequest(f"version {part!r} is not a version number", field="v")
            if int(part) not in out:
                out.append(int(part))
    if len(out) < 2:
        raise BadRequest("pick two or more versions to compare (?v=1&v=2)", field="v")
    return out


# -- canary ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanaryBox:
    """The model's running canary: its version, share of requests, start, and its latest look (a report on
    this canary since it started; None before the canary flow first judged it)."""

    version: int
    share: float | None
    since: datetime
    latest: MonitoringReport | None


def canary_reports(registry: Registry, name: str) -> list[MonitoringReport]:
    """The model's latest canary reports, newest first."""
    return registry.reports(name, kind="canary", limit=CANARY_REPORTS_SHOWN)


def canary_box(registry: Registry, name: str, aliases: Sequence[ModelAlias],
               reports: Sequence[MonitoringReport]) -> CanaryBox | None:
    """The running canary of ``name`` (None when it has none), from its alias rows and its latest canary
    ``reports`` (newest first, as :func:`canary_reports` reads them).

    It began at the newest ``promote`` event of the canary alias to its version (what the canary flow judges
    from); a version restarted as the canary begins again, so an older report on the same version is not
    this canary's look."""
    row = next((a for a in aliases if a.alias == CANARY), None)
    if row is None:
        return None
    since = registry.canary_started_at(name, row.version) or as_utc(row.updated_at)
    latest = next((r for r in reports if r.version == row.version and as_utc(r.created_at) >= since), None)
    return CanaryBox(version=row.version, share=registry.canary_share(name), since=since, latest=latest)


def _side_value(mapping: Any, side: str) -> Any:
    return mapping.get(side) if isinstance(mapping, dict) else None


def canary_view(report: MonitoringReport) -> dict[str, Any]:
    """A canary report's evidence laid out for its page: both sides' numbers, the confidence sequence, the
    guardrails and the policy, each tolerant of a key an older report lacks (shown as "-")."""
    perf = report.performance or {}
    guard = perf.get("guardrails") or {}
    stats = guard.get("sides") or {}
    policy = perf.get("policy") or {}
    bound = perf.get("bound") or {}
    versions = {CANARY: perf.get("canary_version", report.version),
                PRODUCTION: perf.get("production_version")}
    sides = []
    for side in (CANARY, PRODUCTION):
        numbers = stats.get(side) or {}
        sides.append({
            "side": side, "version": versions[side], "labelled": _side_value(perf.get("labelled"), side),
            "served_rows": _side_value(perf.get("served_rows"), side),
            "mean": _side_value(perf.get("mean"), side), "requests": numbers.get("requests"),
            "errors": numbers.get("errors"), "error_rate": numbers.get("error_rate"),
            "p99_ms": numbers.get("p99_ms"), "rows": numbers.get("rows"),
        })
    alpha = bound.get("alpha", policy.get("alpha"))
    level = f"{100 * (1 - alpha):g}%" if isinstance(alpha, (int, float)) else None
    evidence = perf.get("evidence") or {}
    return {"perf": perf, "sides": sides, "bound": bound, "level": level, "guardrails": guard,
            "breached": list(guard.get("breached") or []), "policy": policy, "metric": perf.get("metric"),
            "margin": policy.get("margin", evidence.get("margin")), "evidence": evidence,
            "production_version": versions[PRODUCTION], "canary_version": versions[CANARY]}

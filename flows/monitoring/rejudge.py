"""Earlier windows judged again as their labels arrive: read again, their reports updated, what they now say.

With a ``label_delay`` a window is judged first before most of its labels exist: its realised metric is
reported with its coverage and ``matured: false`` and decides nothing. A later run finds the reports whose
labels have matured since (or, matured with coverage below 1, whose labels may still be trickling in within
the gateway's feedback horizon, looked at again once per label delay), reads the window's rows and feedback
from the inference log again, and, when the realised metric or its coverage changed, updates the report: the
new numbers at the top and under ``realised``, the previous ones appended to ``rejudged``. A re-judged window
whose matured metric fails the policy's drops is a reason in the current run's decision
(:func:`flows.monitoring.decision.decide`).

Bounded: only reports among the model's latest :data:`SCAN` whose window came from the gateway (a batch
cannot be read again), and at most the policy's ``rejudge_limit`` of them per run, those that matured since
their last look first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flows.monitoring.decision import EarlierWindow, as_utc
from flows.monitoring.performance import realised_json, window_performance
from flows.monitoring.policy import MonitoringPolicy
from flows.monitoring.target import GATEWAY_LABEL
from flows.tasks import task_of
from registry import Registry
from registry.models import ModelVersion

GATEWAY_SOURCES = ("gateway-profiles", "gateway-log")
"""The sources :func:`flows.monitoring.target.from_gateway` names: windows the inference log holds."""
SCAN = 200
"""How many of the model's latest monitor reports are looked through for windows to judge again."""
COMPARED = ("status", "value", "labelled", "rows", "matured")
"""What counts as a change of a window's realised performance."""


@dataclass(frozen=True)
class Rejudged:
    """One earlier report read again: what it says now and whether that differs from what it said."""

    window: EarlierWindow
    version: int | None
    changed: bool


def _when(text: Any) -> datetime | None:
    return as_utc(datetime.fromisoformat(text)) if isinstance(text, str) else None


def due(performance: Mapping[str, Any], window_end: datetime | None, now: datetime, *, label_delay: timedelta,
        horizon: timedelta, created_at: datetime | None = None) -> bool:
    """Whether a report's window is to be read again at ``now``: its labels have matured and either had not
    when it was last looked at, or covered only part of the window then and may still come (last look within
    the feedback ``horizon`` of the window's end and at least ``label_delay`` ago). The last look is the
    ``realised["checked_at"]`` a re-judging wrote, else the report's ``created_at``."""
    realised = performance.get("realised") or {}
    matures_at = _when(realised.get("matures_at"))
    checked = _when(realised.get("checked_at")) or (as_utc(created_at) if created_at is not None else None)
    if realised.get("source") not in GATEWAY_SOURCES or window_end is None or matures_at is None or checked is None:
        return False
    if now < matures_at:
        return False
    if not realised.get("matured"):
        return True
    coverage = realised.get("coverage")
    return (coverage is None or coverage < 1) and checked < as_utc(window_end) + horizon \
        and now >= checked + label_delay


def candidates(series: Sequence[Mapping[str, Any]], now: datetime, policy: MonitoringPolicy,
               horizon: timedelta) -> list[Mapping[str, Any]]:
    """The reports (rows of :meth:`registry.Registry.report_series`) to read again in this run, at most
    ``policy.rejudge_limit``: windows that matured since their last look first (oldest window first), then
    the longest unlooked-at."""
    delay = policy.labels_mature_after
    found = [row for row in series if due(row.get("performance") or {}, row.get("window_end"), now,
                                          label_delay=delay, horizon=horizon, created_at=row.get("created_at"))]
    found.sort(key=lambda row: (bool(row["performance"]["realised"].get("matured")),
                                _when(row["performance"]["realised"].get("checked_at")) or as_utc(row["created_at"]),
                                row["id"]))
    return found[: policy.rejudge_limit]


def _version(registry: Registry, model_name: str, version: int | None,
             known: dict[int, ModelVersion]) -> ModelVersion | None:
    if version is not None and version not in known:
        known[version] = registry.get_version(model_name, version)
    return known.get(version) if version is not None else None


def _note(old: Mapping[str, Any], new: Mapping[str, Any], now: datetime) -> str:
    def said(side: Mapping[str, Any]) -> str:
        value = side.get("value")
        number = f"{value:.4f}" if isinstance(value, (int, float)) else side.get("status", "-")
        coverage = side.get("coverage")
        share = f"{coverage:.0%}" if isinstance(coverage, (int, float)) else "-"
        return f"{number} on {side.get('labelled', 0)} labels (coverage {share}" \
               f"{', matured' if side.get('matured') else ', not matured'})"

    return f"re-judged {now.isoformat(timespec='seconds')}: realised {said(new)}, was {said(old)}"


def rejudge(registry: Registry, model_name: str, *, policy: MonitoringPolicy, now: datetime,
            versions: dict[int, ModelVersion] | None = None, horizon: timedelta | None = None,
            root: str | None = None) -> list[Rejudged]:
    """Read again the earlier windows that are :func:`due`, update the reports whose realised performance
    changed, and return every window read (with ``changed``). Nothing is done without a label delay.

    Each window is judged with its report's version (its classes; the baseline the report recorded, else the
    version's evaluation metrics). ``versions``: those already at hand (the production one); others are read
    from the registry. ``horizon``: how long after an answer a label is accepted (the settings'
    ``feedback_horizon_s``).
    """
    from core import inference_log

    if policy.labels_mature_after <= timedelta(0) or policy.rejudge_limit == 0:
        return []
    if horizon is None:
        from core.settings import get_settings

        horizon = timedelta(seconds=get_settings().feedback_horizon_s)
    known = dict(versions or {})
    out: list[Rejudged] = []
    for row in candidates(registry.report_series(model_name, limit=SCAN), now, policy, horizon):
        performance: dict[str, Any] = dict(row["performance"])
        before: dict[str, Any] = performance["realised"]
        start, end, version = as_utc(row["window_start"]), as_utc(row["window_end"]), row["version"]
        mv = _version(registry, model_name, version, known)
        signature = (mv.signature if mv is not None else None) or {}
        frame = inference_log.read_window(model_name, start, end, root=root)
        if version is not None and "model_version" in frame.columns:
            frame = frame[frame["model_version"] == version]
        key, base = performance.get("baseline_key"), performance.get("baseline")
        baseline = {key: base} if key and base is not None else dict(mv.metrics or {}) if mv is not None else {}
        result = window_performance(frame, label=GATEWAY_LABEL, task=task_of(signature), metric=performance["metric"],
                                    baseline=baseline, policy=policy, classes=signature.get("classes"))
        matures_at = _when(before.get("matures_at"))  # as the report said when it was written
        matured = matures_at is None or now >= matures_at
        after = realised_json(result, rows=len(frame), matured=matured, matures_at=matures_at, checked_at=now,
                              source=before.get("source", ""))
        changed = any(before.get(k) != after.get(k) for k in COMPARED)
        if changed:
            history = [*performance.get("rejudged", []),
                       {"at": before.get("checked_at"), **{k: before.get(k) for k in
                                                          ("status", "value", "labelled", "coverage", "matured")}}]
            updated = {**performance, **result.to_json(), "realised": after, "rejudged": history}
            report = registry.get_report(row["id"])
            registry.update_report(row["id"], performance=updated, n_labelled=result.n_labelled,
                                   reason=f"{report.reason}; {_note(before, after, now)}"[:4000])
        else:
            registry.update_report(row["id"], performance={**performance, "realised": {**before,
                                                                                       "checked_at": now.isoformat()}})
        window = EarlierWindow(row["id"], start, end, result, after["coverage"], matured)
        out.append(Rejudged(window, version, changed))
    return out

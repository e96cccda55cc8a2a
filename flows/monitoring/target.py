"""The data a monitor run judges: a time window of gateway traffic, or a batch frame.

Both become the same :class:`Target`: a whylogs profile (for drift) and, where rows exist, a frame
with the label column and the model's score column named (for performance). For a window the
profile is the gateway's own per-window profiles merged (``core.inference_log.read_profile``),
so drift does not need the raw rows; the rows come from the inference log joined with feedback.
A batch frame (tests, batch-scored data, a file someone wants checked) is profiled here.

Before a window is read, the monitor compacts the log's closed hours (:func:`compact_gateway_log`): the
gateway writes a file per replica and second, and every reader of the log pays per file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from core import profiles

log = logging.getLogger(__name__)

COMPACT_BUDGET_S = 60.0
"""How long one monitor run spends compacting at most; what is left is done by the next runs."""

GATEWAY_LABEL = "label"
"""Column of the gateway's inference log holding the feedback (ground truth)."""


@dataclass(frozen=True)
class Target:
    """What one run looks at. ``frame`` may be None when only a profile exists."""

    profile: bytes | None
    n_rows: int
    frame: pd.DataFrame | None
    label_column: str
    source: str
    start: datetime | None = None
    end: datetime | None = None


def _profile_rows(frame: pd.DataFrame, features: list[str] | None) -> bytes | None:
    if frame.empty:
        return None
    columns = [c for c in features if c in frame.columns] if features is not None else list(frame.columns)
    return profiles.profile_frame(frame[columns].reset_index(drop=True)) if columns else None


def from_frame(
    frame: pd.DataFrame,
    *,
    label: str,
    features: list[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Target:
    """A batch given to the flow. Only the model's features are profiled: ids and labels are not drift."""
    return Target(
        profile=_profile_rows(frame, features),
        n_rows=len(frame),
        frame=frame,
        label_column=label,
        source="batch",
        start=start,
        end=end,
    )


def from_gateway(
    model_name: str,
    start: datetime,
    end: datetime,
    *,
    features: list[str] | None = None,
    root: str | None = None,
) -> Target:
    """Gateway traffic of ``model_name`` served as production in ``[start, end)``, with its feedback.

    The gateway writes one profile per ``profile_window_s`` window (keyed by the window's start), so
    the merged profile covers the windows that start in ``[start, end)``; align the run's window to
    the gateway's (whole hours by default) for the two to describe exactly the same rows. With no
    profiles written (profiling off, or whylogs unavailable in the gateway), the logged rows are
    profiled here instead, so the monitor still works.
    """
    from core import inference_log

    frame = inference_log.read_window(model_name, start, end, root=root)
    profile = inference_log.read_profile(model_name, start, end, root=root)
    source = "gateway-profiles"
    if profile is None:
        profile, source = _profile_rows(frame, features), "gateway-log"
    return Target(
        profile=profile,
        n_rows=len(frame),
        frame=frame,
        label_column=GATEWAY_LABEL,
        source=source,
        start=start,
        end=end,
    )


def compact_gateway_log(model_name: str, *, root: str | None = None, budget_s: float = COMPACT_BUDGET_S
                        ) -> dict[str, object] | None:
    """Compact the closed hours of ``model_name``'s inference log (:func:`core.inference_log.compact_log`),
    newest first, for at most ``budget_s``. Never fails the run: compaction only saves reading time, and a
    log left as it is stays correct. Returns what was done (None when it failed)."""
    from dataclasses import asdict

    from core import inference_log

    try:
        done = inference_log.compact_log(model_name, root=root, budget_s=budget_s)
    except Exception:  # noqa: BLE001 - the log stays readable as it was; the next run tries again
        log.exception("compaction of %s's inference log failed; the log is read as it is", model_name)
        return None
    if done.files_in or done.removed_leftovers:
        log.info("compacted %s's inference log: %d files of %d hours into %d (%d rows) in %.1f s%s", model_name,
                 done.files_in, done.hours, done.files_out, done.rows, done.seconds,
                 "" if done.finished else "; more next run")
    return asdict(done)

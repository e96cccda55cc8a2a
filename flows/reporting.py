"""Where a run's human-readable results go: Prefect artifacts inside a flow, the log otherwise.

The training logic takes a :class:`Reporter` rather than calling Prefect, so the same function
runs from a test or the CLI without a Prefect server, and in a flow run its leaderboard,
validation report and evaluation show up in the UI.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger("esteira.flows")


class Reporter(Protocol):
    def markdown(self, key: str, text: str, description: str = "") -> None: ...

    def table(self, key: str, rows: list[dict[str, Any]], description: str = "") -> None: ...

    def progress(self, key: str, done: int, total: int, description: str = "") -> None: ...

    def stage(self, key: str, description: str) -> None:
        """A step of a long run begins (the CLI shows it; the log records it)."""
        ...


class LogReporter:
    """Reports to the ``esteira.flows`` logger; keeps the last of each kind for callers and tests."""

    def __init__(self) -> None:
        self.artifacts: dict[str, Any] = {}

    def markdown(self, key: str, text: str, description: str = "") -> None:
        self.artifacts[key] = text
        log.info("%s\n%s", description or key, text)

    def table(self, key: str, rows: list[dict[str, Any]], description: str = "") -> None:
        self.artifacts[key] = rows
        log.info("%s: %d rows", description or key, len(rows))

    def progress(self, key: str, done: int, total: int, description: str = "") -> None:
        self.artifacts[key] = (done, total)
        log.info("%s: %d/%d", description or key, done, total)

    def stage(self, key: str, description: str) -> None:
        self.artifacts.setdefault("stages", []).append(key)
        log.info("%s", description)


class PrefectReporter(LogReporter):
    """Also creates Prefect artifacts (keys: lowercase with dashes) in the current flow run."""

    def __init__(self) -> None:
        super().__init__()
        self._progress_ids: dict[str, Any] = {}

    def markdown(self, key: str, text: str, description: str = "") -> None:
        from prefect.artifacts import create_markdown_artifact

        self.artifacts[key] = text
        create_markdown_artifact(markdown=text, key=key, description=description or None)

    def table(self, key: str, rows: list[dict[str, Any]], description: str = "") -> None:
        from prefect.artifacts import create_table_artifact

        self.artifacts[key] = rows
        create_table_artifact(table=rows, key=key, description=description or None)

    def progress(self, key: str, done: int, total: int, description: str = "") -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        self.artifacts[key] = (done, total)
        percent = 100.0 * done / max(total, 1)
        try:
            if key not in self._progress_ids:
                self._progress_ids[key] = create_progress_artifact(progress=percent, key=key,
                                                                   description=description or None)
            else:
                # the description carries "k/n trials, best so far": the artifact shows the latest one
                update_progress_artifact(self._progress_ids[key], progress=percent,
                                         description=description or None)
        except Exception as exc:  # noqa: BLE001 - progress display must never fail a training run
            log.debug("progress artifact not updated: %s", exc)

"""This replica's row in the registry: what it serves and refuses, refreshed like a heartbeat.

A request to ``/v1/admin/status`` reaches one replica, so it cannot tell a reader what every replica
serves; each replica therefore writes its own state to the registry (``Registry.record_replica``): once its
first sync is done, at once when what it serves or refuses changes (a hot swap), and otherwise every
``interval_s``. A reader calls a replica gone when it has not been seen for three heartbeats.

The record is a by-product of serving and never a condition of it: the writes run beside the poll loop,
one at a time, and a failing write (the registry down, a schema not migrated yet) is logged, at most
once per ``LOG_EVERY_S`` while it keeps failing, and otherwise ignored.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

LOG_EVERY_S = 300.0
"""While the record keeps failing, one warning per this many seconds (the first failure is logged at once)."""

ReplicaState = tuple[dict[str, Any], dict[str, str]]
"""(served, refused), as ``GatewayReplica`` stores them."""


def local_replica_id() -> str:
    """An id for a replica outside Ray Serve: ``host:pid:<random>`` (a pid is reused after a restart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass
class ReplicaHeartbeat:
    """When to write this replica's row, and writing it without ever raising."""

    replica_id: str
    interval_s: float
    project: str | None = None
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    clock: Callable[[], float] = time.monotonic
    recorded: bool = field(default=False, init=False)  # at least one record reached the registry
    _last_attempt: float | None = field(default=None, init=False, repr=False)
    _last_state: ReplicaState | None = field(default=None, init=False, repr=False)
    _failures: int = field(default=0, init=False, repr=False)
    _last_logged: float | None = field(default=None, init=False, repr=False)

    def due(self, state: ReplicaState) -> bool:
        """The first record, a changed state, or ``interval_s`` since the last attempt.

        A failed write is retried at the next heartbeat, not at every poll tick."""
        if self._last_attempt is None or state != self._last_state:
            return True
        return self.clock() - self._last_attempt >= self.interval_s

    def record(self, registry: Callable[[], Any], state: ReplicaState) -> bool:
        """Write the row (blocking: call it in a thread); False when the write failed."""
        self._last_attempt, self._last_state = self.clock(), state
        served, refused = state
        try:
            registry().record_replica(self.replica_id, host=self.host, pid=self.pid, project=self.project,
                                      served=served, refused=refused)
        except Exception as exc:  # noqa: BLE001 - the record must never touch serving
            self._failed("record", exc)
            return False
        self._succeeded()
        self.recorded = True
        return True

    def stop(self, registry: Callable[[], Any]) -> None:
        """Mark the row stopped (a clean shutdown), if this replica ever recorded itself."""
        if not self.recorded:
            return
        try:
            registry().stop_replica(self.replica_id)
        except Exception as exc:  # noqa: BLE001 - shutting down either way
            self._failed("stop", exc)

    def _failed(self, what: str, exc: BaseException) -> None:
        self._failures += 1
        now = self.clock()
        if self._last_logged is not None and now - self._last_logged < LOG_EVERY_S:
            log.debug("gateway replica %s: %s failed: %s", self.replica_id, what, exc)
            return
        self._last_logged = now
        log.warning("gateway replica %s: could not %s its row in the registry (%d failure(s) so far; serving "
                    "is unaffected): %s: %s", self.replica_id, what, self._failures, type(exc).__name__,
                    str(exc)[:300])

    def _succeeded(self) -> None:
        if self._failures:
            log.warning("gateway replica %s: its row in the registry is written again (after %d failure(s))",
                        self.replica_id, self._failures)
        self._failures, self._last_logged = 0, None

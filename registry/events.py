"""Registry events as the world sees them: which audit events go out, under which name, with which payload,
and the background worker that sends them (as Prefect events and, see :mod:`registry.webhooks`, as webhooks).

Names (:data:`EVENT_NAMES`), each from one audit action:

==========================================  =======================================================
``esteira.model.registered``                ``register``: a new version
``esteira.model.promoted``                  ``promote`` of any alias but ``canary``
``esteira.model.canary-started``            ``promote`` of the ``canary`` alias (``details.share``)
``esteira.model.canary-share-changed``      ``canary_share``: the canary's traffic share changed
``esteira.model.canary-verdict``            ``canary_verdict``: promote or roll back, with evidence
``esteira.model.rolled-back``               ``rollback`` (``to_version`` None: a canary rolled back)
``esteira.model.alias-deleted``             ``delete_alias``
``esteira.model.load-refused``              ``load_refused``: a gateway refused to load a version
==========================================  =======================================================

Other actions (``create_model``, version status changes) stay in the audit log only. The payload
(:func:`event_payload`) is the audit row: ``id`` (the audit event's id), ``event``, ``action``,
``model``, ``alias``, ``from_version``, ``to_version``, ``actor``, ``reason``, ``details``,
``created_at`` (ISO 8601, UTC).

Prefect events go to the Prefect API only when one is configured (:func:`prefect_api_configured`): with none,
Prefect 3's ``emit_event`` would start a temporary server (``EventsWorker.instance``), about 10 s, in the
caller. Prefect is imported only then, and only in the worker thread: ``import prefect.events`` costs about
0.75 s and 44 MB of resident memory in a process that has not imported it (``python -X importtime -c "import
registry; import prefect.events"``), and a gateway replica, which imports the registry, never otherwise does.
"""

from __future__ import annotations

import atexit
import contextvars
import heapq
import itertools
import logging
import os
import queue
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from registry.models import AuditEvent

NAME_PREFIX = "esteira.model."
REGISTERED = "esteira.model.registered"
PROMOTED = "esteira.model.promoted"
CANARY_STARTED = "esteira.model.canary-started"
CANARY_SHARE_CHANGED = "esteira.model.canary-share-changed"
CANARY_VERDICT = "esteira.model.canary-verdict"
ROLLED_BACK = "esteira.model.rolled-back"
ALIAS_DELETED = "esteira.model.alias-deleted"
LOAD_REFUSED = "esteira.model.load-refused"
EVENT_NAMES = (REGISTERED, PROMOTED, CANARY_STARTED, CANARY_SHARE_CHANGED, CANARY_VERDICT, ROLLED_BACK,
               ALIAS_DELETED, LOAD_REFUSED)
"""Every name a registry event goes out under (``deployments.yaml`` triggers on ``canary-started``)."""
CANARY_ALIAS = "canary"
"""The alias :meth:`registry.Registry.start_canary` moves: a ``promote`` of it starts a canary."""
_BY_ACTION = {"register": REGISTERED, "promote": PROMOTED, "canary_share": CANARY_SHARE_CHANGED,
              "canary_verdict": CANARY_VERDICT, "rollback": ROLLED_BACK, "delete_alias": ALIAS_DELETED,
              "load_refused": LOAD_REFUSED}
QUEUE_SIZE = 1000
"""Jobs (deliveries, Prefect events) a publisher holds; past that, jobs are dropped (rows stay pending)."""
EXIT_WAIT_S = 10.0
"""How long a process that never closed its registry waits, at exit, for deliveries still in flight."""
log = logging.getLogger(__name__)


def model_resource_id(model_name: str) -> str:
    """The Prefect resource id of a model: every esteira event about it names this resource."""
    return f"{NAME_PREFIX}{model_name}"


def event_name(action: str, alias: str | None = None) -> str | None:
    """The public name of an audit action (on ``alias``), or None when the action stays in the audit log."""
    if action == "promote" and alias == CANARY_ALIAS:
        return CANARY_STARTED
    return _BY_ACTION.get(action)


def _utc(moment: datetime) -> datetime:
    """SQLite hands timestamps back without their zone; they were written in UTC."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


@dataclass(frozen=True)
class PublicEvent:
    """An audit event that goes out: its name, its model and its payload (plain JSON types)."""

    name: str
    model: str
    payload: dict[str, Any]

    @property
    def id(self) -> int:
        return int(self.payload["id"])

    @property
    def occurred(self) -> datetime:
        return datetime.fromisoformat(self.payload["created_at"])


def event_payload(event: AuditEvent, name: str) -> dict[str, Any]:
    return {
        "id": event.id, "event": name, "action": event.action, "model": event.model_name,
        "alias": event.alias, "from_version": event.from_version, "to_version": event.to_version,
        "actor": event.actor, "reason": event.reason, "details": dict(event.details or {}),
        "created_at": _utc(event.created_at).isoformat(),
    }


def public_event(event: AuditEvent) -> PublicEvent | None:
    """What goes out for ``event`` (a committed audit row, with its id), or None when it stays in the log."""
    name = event_name(event.action, event.alias)
    if name is None or event.id is None:
        return None
    return PublicEvent(name=name, model=event.model_name, payload=event_payload(event, name))


def prefect_resource(model_name: str) -> dict[str, str]:
    return {"prefect.resource.id": model_resource_id(model_name), "prefect.resource.name": model_name}


def prefect_api_configured() -> bool:
    """Whether a Prefect API (a server or Cloud) is configured: ``PREFECT_API_URL`` in the environment, or the
    current Prefect settings of a process that has already imported Prefect (a flow run, ``use_stack``).
    Never imports Prefect itself: a process that does not use Prefect pays nothing for asking."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    if "prefect.settings" not in sys.modules:
        return False
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def emit_prefect_event(event: PublicEvent) -> str | None:
    """Emit ``event`` to Prefect; its Prefect id, or None when it did not go out. Never raises: an event that
    cannot be sent (too large, a client error) is logged and dropped, like Prefect's own client does."""
    try:
        from prefect.events import emit_event

        emitted = emit_event(event=event.name, resource=prefect_resource(event.model), payload=event.payload,
                             occurred=event.occurred)
    except Exception as exc:  # noqa: BLE001 - telling the world must never fail the registry
        log.warning("could not emit %s for %s as a Prefect event: %s: %s", event.name, event.model,
                    type(exc).__name__, exc)
        return None
    return str(emitted.id) if emitted is not None else None


def collect_audit_events(session: Any, _flush_context: Any) -> None:
    """A session's ``after_flush`` listener: keep the audit rows it inserted (ids known) in its ``info``."""
    new = [obj for obj in session.new if isinstance(obj, AuditEvent)]
    if new:
        session.info.setdefault("esteira.audit_events", []).extend(new)


def flushed_public_events(session: Any) -> list[PublicEvent]:
    """The public events of the audit rows ``session`` inserted so far (see :func:`collect_audit_events`)."""
    rows = session.info.pop("esteira.audit_events", [])
    return [found for found in map(public_event, rows) if found is not None]


class Job(Protocol):
    """Work for a :class:`Publisher`: run once; return the seconds until it runs again, or None when done."""

    def __call__(self) -> float | None: ...


@dataclass
class PrefectEmission:
    """Emit one event to Prefect, in the context of the thread that published it (``temporary_settings``,
    Prefect's test harness and ``esteira.stack.use_stack`` set the API URL in a context variable)."""

    event: PublicEvent
    context: contextvars.Context

    def __call__(self) -> None:
        self.context.run(emit_prefect_event, self.event)


class Publisher:
    """A daemon thread with a bounded queue that runs :class:`Job` s off the caller's path, retries included.

    :meth:`submit` never blocks: a registry write (the gateway's poll thread recording a refused load, say)
    never waits on a slow receiver. A job asking to run again later waits in a heap, not in the thread, so a
    receiver in back-off does not hold up the others (a request in flight does, up to its timeout). What is
    left when the process ends is not lost: webhook deliveries are rows, ``pending`` until sent
    (:meth:`registry.Registry.redeliver`).
    """

    def __init__(self, *, queue_size: int = QUEUE_SIZE, name: str = "esteira-registry-events") -> None:
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self._name = name
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stop_at: float | None = None
        self._unfinished = 0  # jobs submitted and not done: queued, waiting for a retry, or running
        self._warned_full = False

    def submit(self, jobs: Sequence[Job]) -> None:
        """Queue ``jobs``, starting the thread at the first; a job that does not fit is dropped and logged."""
        with self._lock:
            if self._stop_at is not None:
                log.warning("%d registry event jobs submitted after close are not sent", len(jobs))
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
                atexit.register(_close_at_exit, weakref.ref(self))
            for job in jobs:
                try:
                    self._queue.put_nowait(job)
                except queue.Full:
                    if not self._warned_full:
                        self._warned_full = True
                        log.warning("registry event queue full (%d jobs): dropping jobs; their webhook "
                                    "deliveries stay pending for redelivery", self._queue.maxsize)
                    continue
                self._unfinished += 1

    def close(self, timeout: float) -> bool:
        """Stop taking jobs, give those in flight up to ``timeout`` seconds; True if all of them were done."""
        with self._lock:
            if self._stop_at is None:
                self._stop_at = time.monotonic() + timeout
            thread = self._thread
        if thread is None:
            return True
        try:
            self._queue.put_nowait(None)  # wakes the thread if it waits for work
        except queue.Full:
            pass
        thread.join(max(0.0, timeout) + 0.5)
        with self._lock:
            return self._unfinished == 0

    def _finished(self, count: int = 1) -> None:
        with self._lock:
            self._unfinished -= count

    def _run(self) -> None:
        waiting: list[tuple[float, int, Job]] = []  # (when it is due, tie-breaker, job)
        order = itertools.count()
        while True:
            now, stop_at = time.monotonic(), self._stop_at
            if stop_at is not None and (now >= stop_at or (not waiting and self._queue.empty())):
                break
            wake_at = [t for t in (waiting[0][0] if waiting else None, stop_at) if t is not None]
            try:
                job = self._queue.get(timeout=max(0.001, min(wake_at) - now) if wake_at else None)
            except queue.Empty:
                job = None
            if job is not None:
                heapq.heappush(waiting, (now, next(order), job))
            while waiting and waiting[0][0] <= time.monotonic() and not self._past_stop():
                _, _, due = heapq.heappop(waiting)
                again = self._run_job(due)
                if again is None:
                    self._finished()
                else:
                    heapq.heappush(waiting, (time.monotonic() + again, next(order), due))
        self._finished(len(waiting) + self._drop_queued())

    def _past_stop(self) -> bool:
        return self._stop_at is not None and time.monotonic() >= self._stop_at

    def _drop_queued(self) -> int:
        """Drop what is still queued at stop (its delivery rows stay pending); how many jobs that was."""
        count = 0
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return count
            count += job is not None

    @staticmethod
    def _run_job(job: Job) -> float | None:
        try:
            return job()
        except Exception:  # noqa: BLE001 - one broken job must not stop the thread
            log.exception("registry event job failed")
            return None


def _close_at_exit(ref: Callable[[], Publisher | None]) -> None:
    publisher = ref()
    if publisher is not None:
        publisher.close(EXIT_WAIT_S)

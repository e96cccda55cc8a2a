"""Registry events as signed webhooks: one HTTP POST per event and URL, retried, each delivery recorded.

Every public event (:mod:`registry.events`) goes as JSON to every URL of ``ESTEIRA_WEBHOOK_URLS`` with::

    Content-Type: application/json
    X-Esteira-Event: esteira.model.promoted
    X-Esteira-Delivery: 17
    X-Esteira-Signature-256: sha256=<hex HMAC-SHA256 of the raw body, keyed with ESTEIRA_WEBHOOK_SECRET>

GitHub's scheme (its ``X-Hub-Signature-256``): a receiver computes the HMAC of the bytes it received and
compares in constant time (:func:`verify_signature`). The body is the event's payload plus ``delivery`` (the
delivery's id), and the signature covers it whole, ``created_at`` included: a receiver refuses a replay by
remembering the delivery ids it has handled and refusing bodies older than its window. A redelivery keeps
its id, so handling one delivery twice is also how a receiver recognises a resend. With no secret, deliveries
go unsigned (no signature header) and a warning is logged once per process: a receiver that checks signatures
refuses them, which is the safe way to find the secret missing.

A 2xx answer is ``delivered``. Any other answer, a timeout or a connection error is retried after a delay
(:func:`backoff_delay`) up to ``webhook_max_attempts`` tries, then ``failed``. Redirects are not followed.

Each (event, URL) is a ``webhook_delivery`` row written in the transaction that wrote the event (an outbox):
once the event is committed its deliveries exist, ``pending`` until sent, and updated after every attempt. A
process that dies leaves them ``pending``; :meth:`registry.Registry.redeliver` sends those and the ``failed``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from core.settings import check_webhook_url, url_origin
from registry.events import PublicEvent
from registry.models import WebhookDelivery, utcnow

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
STATUSES = (PENDING, DELIVERED, FAILED)
EVENT_HEADER = "X-Esteira-Event"
DELIVERY_HEADER = "X-Esteira-Delivery"
SIGNATURE_HEADER = "X-Esteira-Signature-256"
MAX_BACKOFF_S = 60.0
"""The longest wait between two attempts, however many came before."""
log = logging.getLogger(__name__)
_warned_unsigned = False


@dataclass(frozen=True)
class WebhookConfig:
    """Where events go and how hard to try (``ESTEIRA_WEBHOOK_*`` settings). No URLs: no webhooks."""

    urls: tuple[str, ...] = ()
    secret: str | None = field(default=None, repr=False)
    max_attempts: int = 5
    backoff_s: float = 0.5
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "urls", tuple(check_webhook_url(url) for url in self.urls))
        if self.max_attempts < 1:
            raise ValueError(f"webhook max_attempts must be at least 1, got {self.max_attempts}")

    @classmethod
    def from_settings(cls, settings: Any = None) -> WebhookConfig:
        if settings is None:
            from core.settings import get_settings

            settings = get_settings()
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret is not None else None
        return cls(urls=tuple(settings.webhook_urls), secret=secret,
                   max_attempts=settings.webhook_max_attempts, backoff_s=settings.webhook_backoff_s,
                   timeout_s=settings.webhook_timeout_s)


def sign(body: bytes, secret: str) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of ``body`` keyed with ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, secret: str, header: str | None) -> bool:
    """Whether ``header`` (the received ``X-Esteira-Signature-256``) signs ``body`` (the raw bytes received)
    with ``secret``; compared in constant time."""
    return header is not None and hmac.compare_digest(sign(body, secret), header)


def delivery_body(event: PublicEvent, delivery_id: int) -> bytes:
    """The bytes POSTed (and signed): the event's payload and the delivery's id."""
    return json.dumps({**event.payload, "delivery": delivery_id}, separators=(",", ":"), sort_keys=True,
                      default=str).encode()


def delivery_headers(event: PublicEvent, delivery_id: int, body: bytes, secret: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", EVENT_HEADER: event.name,
               DELIVERY_HEADER: str(delivery_id)}
    if secret:
        headers[SIGNATURE_HEADER] = sign(body, secret)
    return headers


def backoff_delay(attempt: int, base_s: float, *, cap_s: float = MAX_BACKOFF_S,
                  rng: Callable[[], float] = random.random) -> float:
    """The wait after the ``attempt``-th failed try: ``base_s * 2**(attempt-1)``, capped at ``cap_s``, with
    "equal jitter" (half fixed, half random; Brooker, "Exponential Backoff And Jitter", AWS Architecture
    Blog, 2015): receivers that come back are not hit by every sender at once, and no wait shrinks to 0."""
    delay = min(cap_s, base_s * 2 ** max(0, attempt - 1))
    return delay / 2 + rng() * delay / 2


def stage_deliveries(session: Any, events: Sequence[PublicEvent], urls: Sequence[str]
                     ) -> list[WebhookDelivery]:
    """One ``pending`` row per event and URL, in ``session``'s transaction (flushed: their ids are known)."""
    rows = [WebhookDelivery(event_id=event.id, url=url) for event in events for url in urls]
    if rows:
        session.add_all(rows)
        session.flush()
    return rows


@dataclass(frozen=True)
class Attempt:
    """How one POST ended: the status code (None when no answer came) and, unless 2xx, what went wrong."""

    code: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.code is not None and 200 <= self.code < 300


class Poster:
    """The HTTP client every delivery of one registry shares, made at the first POST: a new ``httpx.Client``
    costs about 27 ms (its TLS context; ``python -c "import httpx, time; t = time.perf_counter();
    httpx.Client(); print(time.perf_counter() - t)"``), more than a delivery to a local receiver takes."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._client: Any = None
        self._lock = threading.Lock()

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> Attempt:
        import httpx

        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout_s, follow_redirects=False)
            client = self._client
        try:
            response = client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Attempt(None, f"{type(exc).__name__}: {exc}"[:4000])
        if 200 <= response.status_code < 300:
            return Attempt(response.status_code)
        return Attempt(response.status_code, f"HTTP {response.status_code}: {response.text[:200]}")

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def _warn_unsigned_once() -> None:
    global _warned_unsigned
    if not _warned_unsigned:
        _warned_unsigned = True
        log.warning("ESTEIRA_WEBHOOK_SECRET is not set: registry webhooks go out unsigned (no %s header); "
                    "receivers cannot tell them from forgeries", SIGNATURE_HEADER)


class Delivery:
    """Deliver one event to one URL, one attempt per call: a :class:`registry.events.Job` (returns the delay
    before the next try, or None when delivered or out of attempts). Every attempt updates the row."""

    def __init__(self, delivery_id: int, url: str, event: PublicEvent, config: WebhookConfig,
                 write: Callable[[], AbstractContextManager[Any]], poster: Poster) -> None:
        self.delivery_id, self.url, self.event, self.config = delivery_id, url, event, config
        self._write, self._poster = write, poster
        self.tries = 0
        self.body = delivery_body(event, delivery_id)
        if not config.secret:
            _warn_unsigned_once()
        self.headers = delivery_headers(event, delivery_id, self.body, config.secret)

    def __call__(self) -> float | None:
        attempt = self._poster.post(self.url, self.body, self.headers)
        self.tries += 1
        final = attempt.ok or self.tries >= self.config.max_attempts
        self._record(attempt, DELIVERED if attempt.ok else FAILED if final else PENDING)
        if not attempt.ok:
            log.warning("webhook %s of %s to %s: try %d/%d: %s", self.delivery_id, self.event.name,
                        url_origin(self.url), self.tries, self.config.max_attempts, attempt.error)
        return None if final else backoff_delay(self.tries, self.config.backoff_s)

    def run_to_end(self) -> None:
        """Every attempt here and now, sleeping between them (an operator's redelivery)."""
        while (delay := self()) is not None:
            time.sleep(delay)

    def _record(self, attempt: Attempt, status: str) -> None:
        try:
            with self._write() as session:
                row = session.get(WebhookDelivery, self.delivery_id, with_for_update=True)
                if row is None:
                    return
                row.status, row.attempts, row.updated_at = status, row.attempts + 1, utcnow()
                row.response_code, row.error = attempt.code, attempt.error
                session.add(row)
        except Exception as exc:  # noqa: BLE001 - the row stays as it was; a redelivery sends it again
            log.warning("could not record webhook delivery %s (%s: %s)", self.delivery_id, type(exc).__name__,
                        exc)

"""Registry events go out as signed webhooks and Prefect events, after commit, off the writer's path.

A real HTTP server on 127.0.0.1 (``http.server`` in a thread) receives what a real SQLite registry sends;
backoff is made tiny so retries take milliseconds. One test runs the same on PostgreSQL when it is reachable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import event as sa_event
from typer.testing import CliRunner

from core.settings import ESTEIRA_ROOT, Settings
from esteira.cli import app
from gateway.testing import free_port, numeric_classifier
from registry import EVENT_NAMES, NotFound, Registry, RegistryError, WebhookConfig, sign, verify_signature
from registry.events import PublicEvent, event_name, model_resource_id
from registry.webhooks import backoff_delay

SECRET = "a-webhook-secret"
MODEL = "scorer"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """What a webhook receiver got, and how it answers: ``codes`` in turn (then 200); ``hold`` makes it wait
    (at most 10 s) before answering."""

    codes: list[int] = field(default_factory=list)
    hold: threading.Event | None = None
    got: list[Received] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            self.got.append(Received(headers, body, time.monotonic()))
            code = self.codes.pop(0) if self.codes else 200
        self.arrived.set()
        if self.hold is not None:
            self.hold.wait(10)
        return code

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.got) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.got)


@contextmanager
def receiving(receiver: Receiver, port: int | None = None) -> Iterator[str]:
    """``receiver`` behind a real HTTP server on 127.0.0.1; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            code = receiver.answer({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/esteira"
    finally:
        if receiver.hold is not None:
            receiver.hold.set()
        server.shutdown()
        server.server_close()


def open_registry(home: Path, *urls: str, secret: str | None = SECRET, **config: Any) -> Registry:
    settings = {"max_attempts": 3, "backoff_s": 0.01, "timeout_s": 2.0, **config}
    return Registry(f"sqlite:///{home}/registry.db", str(home / "artifacts"),
                    webhooks=WebhookConfig(urls=urls, secret=secret, **settings))


def register(registry: Registry, name: str = MODEL) -> int:
    return registry.register_version(name, numeric_classifier(), metrics={"roc_auc": 0.9}).version


def test_every_registry_event_goes_out_signed_in_order(tmp_path: Path) -> None:
    receiver = Receiver()
    with receiving(receiver) as url:
        registry = open_registry(tmp_path, url)
        try:
            register(registry)
            register(registry)
            registry.promote(MODEL, 1, reason="first", actor="ana")
            registry.start_canary(MODEL, 2, share=0.2)
            registry.set_canary_share(MODEL, 0.3)
            registry.end_canary(MODEL, promote=False, reason="worse")
            registry.promote(MODEL, 2)
            registry.rollback(MODEL, reason="incident")
            registry.record_event(MODEL, "load_refused", version=2, reason="IntegrityError: sha256 mismatch",
                                  actor="gateway", details={"category": "integrity"})
        finally:
            registry.close()
        got = receiver.wait_for(10)
    names = [r.headers["x-esteira-event"] for r in got]
    assert names == ["esteira.model.registered", "esteira.model.registered", "esteira.model.promoted",
                     "esteira.model.canary-started", "esteira.model.canary-share-changed",
                     "esteira.model.canary-verdict", "esteira.model.rolled-back", "esteira.model.promoted",
                     "esteira.model.rolled-back", "esteira.model.load-refused"]
    assert set(names) <= set(EVENT_NAMES)  # create_model stayed in the audit log
    for received in got:
        assert received.headers["content-type"] == "application/json"
        signature = received.headers["x-esteira-signature-256"]
        assert signature.startswith("sha256=") and verify_signature(received.body, SECRET, signature)
        assert not verify_signature(received.body, "another-secret", signature)
        assert not verify_signature(received.body.replace(b"scorer", b"scorex"), SECRET, signature)
        assert received.json["delivery"] == int(received.headers["x-esteira-delivery"])
        assert datetime.fromisoformat(received.json["created_at"]).utcoffset() == timezone.utc.utcoffset(None)
    promoted = got[2].json
    assert promoted == {"id": promoted["id"], "event": "esteira.model.promoted", "action": "promote",
                        "model": MODEL, "alias": "production", "from_version": None, "to_version": 1,
                        "actor": "ana", "reason": "first", "details": {},
                        "created_at": promoted["created_at"], "delivery": promoted["delivery"]}
    assert got[3].json["alias"] == "canary" and got[3].json["details"]["share"] == 0.2
    assert got[5].json["details"]["verdict"] == "rollback" and got[6].json["to_version"] is None
    assert got[9].json["details"] == {"category": "integrity"} and got[9].json["to_version"] == 2
    history = {event.id: event for event in registry.history(MODEL)}
    assert all(history[r.json["id"]].action == r.json["action"] for r in got)
    rows = registry.deliveries(MODEL)
    assert len(rows) == 10
    assert {(r.status, r.attempts, r.response_code) for r in rows} == {("delivered", 1, 200)}
    assert {r.url for r in rows} == {url}


def test_a_receiver_that_fails_twice_gets_the_event_on_the_third_try_after_backing_off(
        tmp_path: Path) -> None:
    receiver = Receiver(codes=[500, 503])
    with receiving(receiver) as url:
        registry = open_registry(tmp_path, url, max_attempts=5, backoff_s=0.1)
        try:
            registry.create_model(MODEL)
            event = registry.record_event(MODEL, "load_refused", version=1, reason="broken file")
        finally:
            registry.close()
        got = receiver.wait_for(3)
    assert len(got) == 3 and len({r.headers["x-esteira-delivery"] for r in got}) == 1
    first_wait, second_wait = got[1].at - got[0].at, got[2].at - got[1].at
    assert 0.05 <= first_wait and 0.1 <= second_wait  # 0.1 s, then 0.2 s, less up to half for jitter
    (row,) = registry.deliveries(MODEL)
    assert (row.event_id, row.status, row.attempts, row.response_code, row.error) == (
        event.id, "delivered", 3, 200, None)


def test_a_receiver_that_is_down_ends_failed_and_redeliver_sends_it_once_it_is_up(tmp_path: Path) -> None:
    port = free_port()
    down = f"http://127.0.0.1:{port}/hooks/esteira"
    registry = open_registry(tmp_path, down, max_attempts=3, backoff_s=0.01)
    try:
        register(registry)
        registry.promote(MODEL, 1)
        registry.close()  # waits for the tries in flight
        rows = registry.deliveries(MODEL)
        assert [(r.status, r.attempts, r.response_code) for r in rows] == [("failed", 3, None)] * 2
        assert all("ConnectError" in (r.error or "") for r in rows)
        assert registry.deliveries(status="failed", limit=1) == rows[:1]
        receiver = Receiver()
        with receiving(receiver, port=port):
            redone = registry.redeliver()
            got = receiver.wait_for(2, timeout=0.5)
        assert [(r.status, r.attempts, r.response_code) for r in redone] == [("delivered", 4, 200)] * 2
        assert sorted(r.headers["x-esteira-event"] for r in got) == ["esteira.model.promoted",
                                                                   "esteira.model.registered"]
        assert registry.redeliver() == []  # nothing left to send
    finally:
        registry.close()


def test_a_slow_receiver_does_not_slow_a_promotion(tmp_path: Path) -> None:
    receiver = Receiver(hold=threading.Event())
    with receiving(receiver) as url:
        registry = open_registry(tmp_path, url)
        try:
            register(registry)
            assert receiver.arrived.wait(5)  # the registration's delivery is held by the receiver
            started = time.perf_counter()
            registry.promote(MODEL, 1)
            took = time.perf_counter() - started
            assert not receiver.hold.is_set() and took < 2.0  # the receiver holds its first request 10 s
            assert registry.resolve_alias(MODEL, "production") == 1
            receiver.hold.set()
        finally:
            registry.close()
        assert len(receiver.wait_for(2)) == 2
    assert [r.status for r in registry.deliveries(MODEL)] == ["delivered", "delivered"]


def test_a_write_that_rolls_back_sends_nothing(tmp_path: Path) -> None:
    """Refused writes, and one whose audit event was written but whose commit failed, tell no one."""
    receiver = Receiver()

    def refuse_commit(_connection: Any) -> None:
        raise RuntimeError("commit refused")

    with receiving(receiver) as url:
        registry = open_registry(tmp_path, url)
        try:
            register(registry)
            with pytest.raises(NotFound):
                registry.promote(MODEL, 7)
            with pytest.raises(NotFound):
                registry.rollback(MODEL)
            with pytest.raises(RegistryError):
                registry.start_canary(MODEL, 1, share=2.0)
            sa_event.listen(registry.write_engine, "commit", refuse_commit)
            try:
                with pytest.raises(RuntimeError, match="commit refused"):
                    registry.promote(MODEL, 1)  # its event is flushed, then the transaction rolls back
            finally:
                sa_event.remove(registry.write_engine, "commit", refuse_commit)
        finally:
            registry.close()
        got = receiver.wait_for(1)
    assert [r.headers["x-esteira-event"] for r in got] == ["esteira.model.registered"]
    assert [e.action for e in registry.history(MODEL)] == ["create_model", "register"]
    assert registry.resolve_alias(MODEL, "production") is None and len(registry.deliveries()) == 1


def test_a_silent_registry_and_one_without_urls_send_nothing(tmp_path: Path) -> None:
    receiver = Receiver()
    with receiving(receiver) as url:
        silent = Registry(f"sqlite:///{tmp_path}/registry.db", str(tmp_path / "artifacts"), notify=False,
                          webhooks=WebhookConfig(urls=(url,), secret=SECRET))
        try:
            register(silent)
            silent.promote(MODEL, 1)
        finally:
            silent.close()
        no_urls = open_registry(tmp_path)
        try:
            no_urls.promote(MODEL, 1, alias="staging")
        finally:
            no_urls.close()
    assert receiver.got == [] and no_urls.deliveries() == []


def test_unsigned_deliveries_go_out_without_a_signature_when_no_secret_is_set(tmp_path: Path) -> None:
    receiver = Receiver()
    with receiving(receiver) as url:
        registry = open_registry(tmp_path, url, secret=None)
        try:
            register(registry)
        finally:
            registry.close()
        (got,) = receiver.wait_for(1)
    assert "x-esteira-signature-256" not in got.headers and got.headers["x-esteira-event"]
    assert not verify_signature(got.body, SECRET, got.headers.get("x-esteira-signature-256"))


_DIES_WITH_A_DELIVERY_IN_FLIGHT = """
import os, sys, time
from registry import Registry, WebhookConfig
home, url = sys.argv[1], sys.argv[2]
registry = Registry(f"sqlite:///{home}/registry.db", f"{home}/artifacts",
                    webhooks=WebhookConfig(urls=(url,), secret="a-webhook-secret"))
registry.create_model("scorer")
registry.record_event("scorer", "load_refused", version=1, reason="broken file", actor="gateway")
deadline = time.monotonic() + 10
while not os.path.exists(f"{home}/arrived") and time.monotonic() < deadline:
    time.sleep(0.01)
print("prefect imported:", "prefect" in sys.modules, flush=True)
os._exit(0)  # dies with its delivery in flight
"""


def test_a_process_that_dies_leaves_its_deliveries_pending_and_redeliver_sends_them(tmp_path: Path) -> None:
    receiver = Receiver(hold=threading.Event())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ESTEIRA_"))}
    with receiving(receiver) as url:
        command = [sys.executable, "-c", _DIES_WITH_A_DELIVERY_IN_FLIGHT, str(tmp_path), url]
        process = subprocess.Popen(command, env=env, cwd=ESTEIRA_ROOT, stdout=subprocess.PIPE, text=True)
        try:
            assert receiver.arrived.wait(30), "the delivery never arrived"
            (tmp_path / "arrived").touch()
            out, _ = process.communicate(timeout=30)
        finally:
            process.kill()
    # Without a Prefect API, a registry process does not pay for importing Prefect (about 0.75 s and 44 MB).
    assert "prefect imported: False" in out
    registry = open_registry(tmp_path, url)
    try:
        (row,) = registry.deliveries()
        assert (row.status, row.attempts) == ("pending", 0)
        assert registry.redeliver() == []  # a fresh pending row may still be in flight in a live process
        receiver.hold, receiver.arrived = None, threading.Event()
        with receiving(receiver, port=urlsplit(url).port):
            (redone,) = registry.redeliver(stale_after_s=0)
        assert (redone.id, redone.status, redone.attempts) == (row.id, "delivered", 1)
        assert [r.headers["x-esteira-delivery"] for r in receiver.got] == [str(row.id)] * 2
    finally:
        registry.close()


def test_registry_events_are_prefect_events_when_a_prefect_api_is_configured(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    registry = open_registry(tmp_path)  # no webhook URLs: Prefect events only
    try:
        with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
            # made here, its client sees this API URL: made outside, it would start a temporary server (~10 s)
            worker = EventsWorker.instance(AssertingEventsClient)
            monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)
            register(registry)
            registry.start_canary(MODEL, 1, share=0.25)
        register(registry)  # outside: no API configured, no Prefect event (and no temporary server)
    finally:
        registry.close()
        worker.drain()
    assert isinstance(worker._client, AssertingEventsClient)
    events = [e for e in worker._client.events if e.resource.id == model_resource_id(MODEL)]
    worker._client.events = []
    assert [e.event for e in events] == ["esteira.model.registered", "esteira.model.canary-started"]
    canary = events[1]
    assert canary.resource.name == MODEL and canary.payload["details"]["share"] == 0.25
    audit = registry.history(MODEL)[-2]
    assert canary.payload["id"] == audit.id and canary.occurred == PublicEvent(
        "x", MODEL, {"created_at": canary.payload["created_at"]}).occurred
    assert registry.deliveries() == []


def test_event_names_cover_the_audit_actions_that_go_out() -> None:
    assert event_name("promote", "canary") == "esteira.model.canary-started"
    assert event_name("promote", "staging") == "esteira.model.promoted"
    assert event_name("rollback", "canary") == "esteira.model.rolled-back"
    assert event_name("create_model") is None and event_name("status:archived") is None
    assert len(set(EVENT_NAMES)) == len(EVENT_NAMES) == 8
    assert all(name.startswith("esteira.model.") for name in EVENT_NAMES)


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    assert [backoff_delay(n, 0.5, rng=lambda: 1.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert [backoff_delay(n, 0.5, rng=lambda: 0.0) for n in (1, 2, 3)] == [0.25, 0.5, 1.0]
    assert backoff_delay(30, 0.5, rng=lambda: 1.0) == 60.0


def test_a_signature_is_githubs_hmac_sha256_of_the_raw_body() -> None:
    import hashlib
    import hmac

    body = b'{"event":"esteira.model.promoted"}'
    assert sign(body, SECRET) == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert not verify_signature(body, SECRET, None) and not verify_signature(body, SECRET, "sha256=00")


def test_webhook_settings_take_comma_separated_urls_and_refuse_anything_but_http(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESTEIRA_WEBHOOK_URLS", "https://hooks.example.org/a?token=x, http://127.0.0.1:9/b")
    monkeypatch.setenv("ESTEIRA_WEBHOOK_SECRET", f"{SECRET}\n")
    monkeypatch.setenv("ESTEIRA_WEBHOOK_MAX_ATTEMPTS", "2")
    config = WebhookConfig.from_settings(Settings())
    assert config.urls == ("https://hooks.example.org/a?token=x", "http://127.0.0.1:9/b")
    assert (config.secret, config.max_attempts, config.backoff_s, config.timeout_s) == (SECRET, 2, 0.5, 5.0)
    assert SECRET not in repr(config)
    monkeypatch.setenv("ESTEIRA_WEBHOOK_URLS", '["https://hooks.example.org/a"]')
    assert Settings().webhook_urls == ["https://hooks.example.org/a"]
    for wrong in ("ftp://hooks.example.org/a", "hooks.example.org/a", "https://"):
        monkeypatch.setenv("ESTEIRA_WEBHOOK_URLS", wrong)
        with pytest.raises(ValueError, match="is not an http\\(s\\) URL"):
            Settings()
    monkeypatch.setenv("ESTEIRA_WEBHOOK_URLS", "https://hooks.example.org/a")
    monkeypatch.setenv("ESTEIRA_WEBHOOK_SECRET", " ")
    with pytest.raises(ValueError, match="ESTEIRA_WEBHOOK_SECRET is set but empty"):
        Settings()


def test_replicas_get_the_webhook_settings_but_not_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.ray_runtime import replica_env_vars

    monkeypatch.setenv("ESTEIRA_WEBHOOK_URLS", "https://hooks.example.org/a")
    monkeypatch.setenv("ESTEIRA_WEBHOOK_BACKOFF_S", "1.5")
    monkeypatch.setenv("ESTEIRA_WEBHOOK_SECRET", SECRET)
    env = replica_env_vars(None, shipped=False)
    assert env["ESTEIRA_WEBHOOK_URLS"] == "https://hooks.example.org/a"
    assert env["ESTEIRA_WEBHOOK_BACKOFF_S"] == "1.5"
    assert "ESTEIRA_WEBHOOK_SECRET" not in env


def test_the_cli_lists_deliveries_and_retries_the_failed_ones(
        esteira_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import get_settings

    port = free_port()
    monkeypatch.setenv("ESTEIRA_WEBHOOK_URLS", f"http://127.0.0.1:{port}/hooks/esteira?token=hidden")
    monkeypatch.setenv("ESTEIRA_WEBHOOK_MAX_ATTEMPTS", "1")
    get_settings.cache_clear()
    registry = Registry.from_url()
    try:
        register(registry)
    finally:
        registry.close()
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "deliveries", MODEL, "--status", "failed"], catch_exceptions=False)
    assert listed.exit_code == 0 and "failed" in listed.stdout and "hidden" not in listed.stdout
    with receiving(Receiver(), port=port):
        retried = runner.invoke(app, ["models", "deliveries", "--retry"], catch_exceptions=False)
    assert retried.exit_code == 0 and "1 of 1 delivered" in retried.stdout
    wrong = runner.invoke(app, ["models", "deliveries", "--status", "lost"], catch_exceptions=False)
    assert wrong.exit_code == 1 and "unknown delivery status 'lost'" in wrong.stderr


def test_deliveries_are_recorded_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    receiver = Receiver(codes=[500])
    with receiving(receiver) as url:
        registry = Registry(pg_url, str(tmp_path / "artifacts"),
                            webhooks=WebhookConfig(urls=(url,), secret=SECRET, backoff_s=0.01))
        try:
            register(registry)
            registry.promote(MODEL, 1)
        finally:
            registry.close()
        got = receiver.wait_for(3)
    assert sorted(r.headers["x-esteira-event"] for r in got) == [
        "esteira.model.promoted", "esteira.model.registered", "esteira.model.registered"]
    rows = registry.deliveries(MODEL)
    assert sorted((r.status, r.attempts) for r in rows) == [("delivered", 1), ("delivered", 2)]
    registry.read_engine.dispose()

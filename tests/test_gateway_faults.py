"""A replica killed under load loses no request: ``esteira serve`` with its defaults, then ``kill -9``.

``esteira serve`` runs as a process (its own local Ray, HAProxy ingress) on a free loopback port with a
tiny model in the test's own registry. Sixteen clients score; 3 s in, one replica process gets
SIGKILL. Every request must still be answered (HAProxy sends a prediction the dead replica dropped to
another replica), and Serve's replacement replica must be back in HAProxy's list, UP, soon after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from gateway.launch import default_replica_cpus, default_replicas
from gateway.testing import (
    SIGNATURE_NUMERIC,
    example_row,
    free_port,
    haproxy_replicas,
    numeric_classifier,
    replica_pids,
)

MODEL = "churn"
# A replacement replica is a cold start on the cores the load runs on: Serve notices the death at its next
# health check (every second), Ray spawns a worker (1.3 s), the replica imports Serve (1.6 s), builds the
# service and loads the model (7.6 s), HAProxy reloads (0.8 s): 8.96 to 13.3 s measured on 2 shared cores
# (bench/bench_faults.py), so the bound leaves room above the 10 s aimed at.
REPLACEMENT_WITHIN_S = 15.0


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    stats_port: int
    log: Path

    def replica_pids(self) -> list[int]:
        return replica_pids(self.process.pid)

    def replicas_up(self) -> set[str]:
        """Replica servers HAProxy routes to: status UP on its stats page."""
        return {name for name, status in haproxy_replicas(self.stats_port).items() if status.startswith("UP")}


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL to ``esteira serve`` and to everything it started, each by its pid: Ray and the replicas share
    its process group, but HAProxy runs in a group of its own and would outlive a group kill."""
    try:
        family = [process.pid, *(child.pid for child in psutil.Process(process.pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        family = [process.pid]
    for pid in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


@pytest.fixture
def served(registry, esteira_home: Path) -> Iterator[Served]:  # noqa: ANN001 - conftest's Registry fixture
    version = registry.register_version(MODEL, numeric_classifier(), signature=SIGNATURE_NUMERIC).version
    registry.promote(MODEL, version)
    port, stats_port = free_port(), free_port()
    env = {**os.environ, "ESTEIRA_RAY_ADDRESS": "local", "RAY_ADDRESS": "local", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONWARNINGS": "ignore",
           # HAProxy's stats and metrics listeners default to fixed ports: free ones, beside any other Ray
           "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port), "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port())}
    log = esteira_home.parent / "esteira-serve.log"
    esteira = str(Path(sys.executable).with_name("esteira"))
    with open(log, "wb") as out:
        process = subprocess.Popen([esteira, "serve", "--host", "127.0.0.1", "--port", str(port), "--model", MODEL,
                                    "--shadow-alias", ""], env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = Served(f"http://127.0.0.1:{port}", process, stats_port, log)
    try:
        _wait_ready(server)
        yield server
    finally:
        _stop(process)


def _wait_ready(server: Served, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log.read_text()[-3000:]
        try:
            if httpx.get(f"{server.url}/v2/models/{MODEL}/ready", timeout=2).status_code == 200 and \
                    len(server.replicas_up()) == len(server.replica_pids()):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError("esteira serve not ready:\n" + server.log.read_text()[-3000:])


@dataclass
class Clients:
    """``count`` httpx clients scoring one row at a time until stopped, on an event loop in a thread; every
    answer and failure recorded. httpx writes a request's headers and body apart, as many clients do."""

    url: str
    count: int = 16
    stop: threading.Event = field(default_factory=threading.Event)
    answered: list[float] = field(default_factory=list)  # completion times of 200 answers
    failures: list[tuple[float, str]] = field(default_factory=list)  # (completion time, what went wrong)

    async def _score(self, client: httpx.AsyncClient) -> None:
        while not self.stop.is_set():
            try:
                response = await client.post(f"{self.url}/v1/models/{MODEL}/predict", json={"inputs": example_row()})
                if response.status_code == 200:
                    self.answered.append(time.monotonic())
                else:
                    self.failures.append((time.monotonic(), f"{response.status_code}: {response.text[:200]}"))
            except httpx.HTTPError as exc:
                self.failures.append((time.monotonic(), repr(exc)))

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=self.count, max_keepalive_connections=self.count)
        async with httpx.AsyncClient(timeout=10, limits=limits) as client:
            await asyncio.gather(*(self._score(client) for _ in range(self.count)))

    def __enter__(self) -> Clients:
        self.thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(15)

    def longest_gap(self) -> float:
        times = sorted(self.answered)
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=float("inf"))


@pytest.mark.parametrize("cores", [1, 2, 8])
def test_the_default_replicas_leave_one_to_fail_over_to_and_fit_the_cores(cores: int,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    replicas = default_replicas()
    assert replicas >= 2
    assert replicas * default_replica_cpus(replicas) <= cores  # a local Ray (one CPU per core) places them all


@pytest.mark.slow
def test_killing_a_replica_under_load_fails_no_request_and_serve_replaces_it(served: Served) -> None:
    replicas = served.replica_pids()
    assert len(replicas) >= 2, "the default must leave a replica to fail over to"
    before = served.replicas_up()
    with Clients(served.url) as clients:
        time.sleep(3.0)
        os.kill(replicas[0], signal.SIGKILL)
        killed = time.monotonic()
        replaced_after = None
        while replaced_after is None and time.monotonic() - killed < REPLACEMENT_WITHIN_S + 1:
            serving = served.replicas_up()
            if serving - before and len(serving) >= len(before):
                replaced_after = time.monotonic() - killed
            time.sleep(0.1)
        time.sleep(2.0)  # traffic goes on through HAProxy's reload with the replacement in its list
    # A response already on its way out when the replica dies is cut: HAProxy has forwarded its headers to the
    # client and cannot send it again (seen once in CI, 40 ms after the kill, in some 30 runs of 7,000 requests).
    # At most that one, and not one failure of any other kind: refused, reset, 5xx, empty.
    cut = [(at, what) for at, what in clients.failures if "without sending complete message body" in what]
    lost = [(round(at - killed, 3), what) for at, what in clients.failures if (at, what) not in cut]
    assert not lost, lost[:5]
    assert len(cut) <= 1 and all(abs(at - killed) < 1.0 for at, _ in cut), cut
    assert len(clients.answered) > 200
    assert clients.longest_gap() < 1.0, f"no answer for {clients.longest_gap():.2f} s"
    assert replaced_after is not None and replaced_after <= REPLACEMENT_WITHIN_S, (
        f"replacement replica serving after {replaced_after} s (load average {os.getloadavg()[0]:.1f}); "
        f"HAProxy lists {served.replicas_up()}")

"""A replica killed under load: ``kill -9`` of one gateway replica while closed-loop clients score.

Setup: the bench model in a temporary registry (``baselines/common.py``), ``esteira serve`` as a process
on a free loopback port. Variants, each in its own local Ray, one after the other in one invocation:

* ``fix on``: ``esteira serve`` as shipped (two replicas at least, HAProxy retrying a prediction that got
  no answer once on another replica, whole bodies read first: ``gateway.launch.HAPROXY_RETRY_ENV``);
* ``fix off``: what it shipped before: one replica, Ray's own HAProxy retry policy (connect failures only);
* ``two replicas only``, ``retries only``, ``no body buffering`` (retries without
  ``option http-buffer-request``), ``standby`` (HAProxy ``balance first``: all traffic on one replica, the
  other idle until the first fails): one piece of the fix at a time, or an alternative.

For each variant, ``--concurrency`` httpx clients (keep-alive, 10 s time-out) send one-row
``/v1/models/{name}/predict`` requests for ``--duration`` seconds; ``--kill-at`` seconds in, one replica
process (``ray::ServeReplica...``, found in the server's process tree) gets SIGKILL. Measured:

* failed requests: any non-2xx answer, dropped connection or time-out (target: 0);
* the longest gap without an answer, over the whole window (the clients see a stall that long);
* time from the kill until the replacement replica is serving: HAProxy's own view (its stats page lists
  a replica that was not there before the kill, status UP, and as many replicas UP as before; target 10 s);
* steady-state cost of the variant, before the kill: p50 at concurrency 1 and requests/s at 32
  (``loadgen.py``, ``--steady`` seconds each after 1 s of warm-up), and the replicas' resident memory;
* how busy the machine was: load average and the CPU that neither the gateway nor this process used
  during the kill run (``other CPU-s``). A replacement replica starts Python, Ray, FastAPI and
  scikit-learn and loads the model: on a 2-core machine shared with other work it waits for CPU.

    uv run python bench/bench_faults.py                                   # fix off, then fix on; ~4 min
    uv run python bench/bench_faults.py --variants "fix on" --concurrency 32
    uv run python bench/bench_faults.py --variants "two replicas only,retries only,no body buffering"

Results: a table on stdout and ``bench/results/faults-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines import common as c
from loadgen import run_load

from gateway.testing import haproxy_replicas, replica_pids

# Ray 2.60's HAProxy retry policy when nothing overrides it (ray/serve/_private/constants.py:
# RAY_SERVE_HAPROXY_RETRY_ON="conn-failure", RAY_SERVE_HAPROXY_RETRIES unset: HAProxy's default of 3).
RAY_RETRIES = {"RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure", "RAY_SERVE_HAPROXY_RETRIES": "3"}


@dataclass
class Variant:
    """``esteira serve`` options and environment; empty means the command's shipped defaults."""

    options: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


VARIANTS = {
    "fix off": Variant({"replicas": 1, "replica_cpus": 1.0}, RAY_RETRIES),
    "fix on": Variant(),
    "two replicas only": Variant({"replicas": 2}, RAY_RETRIES),
    "retries only": Variant({"replicas": 1, "replica_cpus": 1.0}),
    "no body buffering": Variant({}, {"RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response junk-response"}),
    "standby": Variant({}, {"RAY_SERVE_HAPROXY_BALANCE_ALGORITHM": "first"}),
}


# -- what the server's process tree and HAProxy say --------------------------------------------------------

def replicas_rss_mb(root_pid: int) -> float:
    import psutil

    total = 0
    for pid in replica_pids(root_pid):
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def up(servers: dict[str, str]) -> set[str]:
    return {name for name, status in servers.items() if status.startswith("UP")}


def wait_replicas_up(stats_port: int, count: int, timeout_s: float = 60.0) -> set[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        serving = up(haproxy_replicas(stats_port))
        if len(serving) >= count:
            return serving
        time.sleep(0.2)
    raise RuntimeError(f"HAProxy never listed {count} replicas UP: {haproxy_replicas(stats_port)}")


# -- one kill under load -----------------------------------------------------------------------------------

async def _score(url: str, body: Any, concurrency: int, duration_s: float) -> list[tuple[float, float, int | str]]:
    """``concurrency`` httpx clients in a closed loop; (sent, answered, HTTP status or error name) per request.

    httpx on purpose: it writes a request's headers and its body apart, as many clients do, which is what
    decides whether HAProxy can replay a request (see ``gateway.launch.HAPROXY_RETRY_ENV``)."""
    samples: list[tuple[float, float, int | str]] = []
    end = time.monotonic() + duration_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        async def one() -> None:
            while time.monotonic() < end:
                sent = time.monotonic()
                try:
                    outcome: int | str = (await client.post(url, json=body)).status_code
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                samples.append((sent, time.monotonic(), outcome))

        await asyncio.gather(*(one() for _ in range(concurrency)))
    return samples


def watch_replacement(stats_port: int, before: set[str], started: float, timeout_s: float) -> dict[str, Any]:
    """Poll HAProxy every 50 ms until a replica not in ``before`` is UP and as many are UP as before."""
    first_down = replaced = None
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        serving = up(haproxy_replicas(stats_port))
        now = time.monotonic()
        if first_down is None and len(serving & before) < len(before):
            first_down = now - started
        if serving - before and len(serving) >= len(before):
            replaced = now - started
            break
        time.sleep(0.05)
    return {"killed_out_of_haproxy_s": first_down, "replacement_serving_s": replaced}


def analyse(samples: list[tuple[float, float, int | str]], killed_at: float) -> dict[str, Any]:
    """Failures and the longest stretch without a successful answer."""
    samples = sorted(samples, key=lambda s: s[1])
    ok_ends = [end for _, end, outcome in samples if outcome == 200]
    failed = [s for s in samples if s[2] != 200]
    kinds: dict[str, int] = {}
    for _, _, outcome in failed:
        kinds[str(outcome)] = kinds.get(str(outcome), 0) + 1
    marks = [samples[0][0], *ok_ends, samples[-1][1]] if samples else [killed_at]
    gaps = [(b - a, a) for a, b in zip(marks, marks[1:], strict=False)]
    gap, gap_at = max(gaps) if gaps else (float("nan"), killed_at)
    window = (samples[-1][1] - samples[0][0]) if samples else float("nan")
    return {"requests": len(samples), "failed": len(failed), "error_kinds": kinds,
            "failed_at_s": [round(end - killed_at, 2) for _, end, _ in failed[:10]],
            "longest_gap_s": gap, "longest_gap_starts_s": gap_at - killed_at,
            "max_latency_s": max((end - sent for sent, end, _ in samples), default=float("nan")),
            "rps": len(ok_ends) / window if samples else float("nan")}


def kill_under_load(srv: c.Server, url: str, body: Any, stats_port: int, args: argparse.Namespace) -> dict[str, Any]:
    box: dict[str, list[tuple[float, float, int | str]]] = {}
    load = threading.Thread(target=lambda: box.setdefault("samples", asyncio.run(
        _score(url, body, args.concurrency, args.duration))))
    before = up(haproxy_replicas(stats_port))
    pids = replica_pids(srv.proc.pid)
    meter = c.CpuMeter(srv.proc.pid)
    load1, client0 = os.getloadavg()[0], _own_cpu_s()
    meter.start()
    load.start()
    time.sleep(args.kill_at)
    victim = pids[0]
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    replacement = watch_replacement(stats_port, before, killed_at, timeout_s=args.duration)
    load.join()
    cpu, client_cpu = meter.stop(), _own_cpu_s() - client0
    return {"replicas_before": len(before), "killed_pid": victim, **replacement, **analyse(box["samples"], killed_at),
            "loadavg_1m_before": load1, "server_cpu_s": cpu["server_cpu_s"], "client_cpu_s": client_cpu,
            # CPU used during the run by neither the gateway nor this process: other work on the machine
            "other_cpu_s": max(0.0, cpu["machine_busy_cpu_s"] - cpu["server_cpu_s"] - client_cpu)}


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def steady(srv: c.Server, url: str, body: Any, seconds: float) -> dict[str, Any]:
    """p50 at concurrency 1, requests/s and p99 at 32, and the gateway's CPU per request (its whole process
    tree), which other work on the machine disturbs less than latency."""
    row: dict[str, Any] = {}
    meter = c.CpuMeter(srv.proc.pid)
    for conc in (1, 32):
        meter.start()
        result = run_load(url, body, concurrency=conc, duration_s=seconds, warmup_s=1.0)
        cpu = meter.stop()
        row.update({f"c{conc}_p50_ms": result.p50_ms, f"c{conc}_p99_ms": result.p99_ms, f"c{conc}_rps": result.rps,
                    f"c{conc}_server_cpu_ms_per_req": 1e3 * cpu["server_cpu_s"] / max(1, result.requests),
                    f"c{conc}_errors": result.errors})
    return row


def run_variant(name: str, variant: Variant, reg: c.BenchRegistry, args: argparse.Namespace,
                log_dir: Path) -> dict[str, Any]:
    port, stats_port = c.free_port(), c.free_port()
    env = {**c.gateway_env(reg, variant.env), "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port)}
    body = c.body_v1(c.sample_row())
    url = f"http://127.0.0.1:{port}/v1/models/{c.MODEL_NAME}/predict"
    log_name = "gateway-" + "".join(ch if ch.isalnum() else "-" for ch in name)
    with c.Server(log_name, c.gateway_command(port, **variant.options), env=env, log_dir=log_dir) as srv:
        ready = srv.wait_ready(f"http://127.0.0.1:{port}/v2/models/{c.MODEL_NAME}/ready", timeout_s=240)
        replicas = len(replica_pids(srv.proc.pid))
        wait_replicas_up(stats_port, replicas)
        print(f"{name}: ready in {ready:.1f} s, {replicas} replica(s) (log: {srv.log_path})", flush=True)
        row = {"variant": name, "options": variant.options, "env": variant.env, "replicas": replicas,
               "replicas_rss_mb": replicas_rss_mb(srv.proc.pid), **steady(srv, url, body, args.steady)}
        row.update(kill_under_load(srv, url, body, stats_port, args))
    print(line(row), flush=True)
    return row


def line(row: dict[str, Any]) -> str:
    def s(value: float | None) -> str:
        return "never" if value is None else f"{value:.2f} s"

    return (f"  {row['variant']:<28} failed {row['failed']:>3}/{row['requests']:<6} longest gap "
            f"{s(row['longest_gap_s'])}  replacement serving {s(row['replacement_serving_s'])} | steady: c=1 p50 "
            f"{row['c1_p50_ms']:.2f} ms ({row['c1_server_cpu_ms_per_req']:.2f} ms CPU/req), c=32 {row['c32_rps']:.0f} "
            f"req/s ({row['c32_server_cpu_ms_per_req']:.2f}), {row['replicas']} replica(s) "
            f"{row['replicas_rss_mb']:.0f} MB RSS | load {row['loadavg_1m_before']:.1f}, "
            f"other {row['other_cpu_s']:.0f} CPU-s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="fix off,fix on", help=f"comma-separated, of {sorted(VARIANTS)}")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=25.0, help="seconds of load around the kill")
    parser.add_argument("--kill-at", type=float, default=5.0, help="seconds into the load")
    parser.add_argument("--steady", type=float, default=10.0, help="seconds per steady-state point")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    tmp = Path(tempfile.mkdtemp(prefix="esteira-bench-faults-"))
    print(f"work dir {tmp}", flush=True)
    reg = c.build_registry(tmp / "home")
    started = time.monotonic()
    rows = [run_variant(name, VARIANTS[name], reg, args, tmp / "logs") for name in names]
    report = {"bench": "faults", "when": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "settings": {k: v for k, v in vars(args).items()}, "total_s": round(time.monotonic() - started, 1),
              "command": " ".join(["python", "bench/bench_faults.py", *(argv if argv is not None else sys.argv[1:])]),
              "rows": rows}
    c.RESULTS_DIR.mkdir(exist_ok=True)
    out = c.RESULTS_DIR / f"faults-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print("\n".join(line(row) for row in rows))
    print(f"results: {out}")


if __name__ == "__main__":
    main()

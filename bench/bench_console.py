"""The web console's pages at real sizes: server and client time of each page, against a 300 ms target.

A model with ``--versions`` versions (1,000), ``--trials`` trials (10,000) and ``--reports`` monitoring
reports (1,000), filled through the ``Registry`` API as the flows fill it (``tests/console_data.py``), in a
fresh SQLite registry in a temporary folder; ``--postgres URL`` does the same again on a fresh database
created on that PostgreSQL server (dropped at the end). ``--big-run-share`` (default 1.0) of the trials are
in the latest training run, so its leaderboard holds all 10,000: the largest run page the target allows.

The console is served as users get it: ``esteira console`` in its own process (uvicorn on 127.0.0.1, a free
port). Each page is requested ``--requests`` times (20) after ``--warmup`` (2) by one keep-alive httpx
client, one request at a time; the first answer must show the rows the page claims (50 versions, 100
trials, 1,000 points on each chart, ...). Per page: median and p95 of the server's time (its
``Server-Timing`` header, measured by the console's middleware around the whole request) and of the
client's wall time (request sent to body read), the console process's CPU per request (psutil, over the
timed requests: near the server time when nothing else competes for the cores), the response size, and
PASS/MISS of the median and of the p95 against ``--target-ms``.

Baselines measured in the same run:

* ``/healthz`` on the same server: the floor of the stack (uvicorn, FastAPI, the timing middleware);
* the ``Registry`` calls that give someone without the console the same data, timed in this process on the
  same database: what ``esteira models list`` / ``models show`` / ``models history`` call, and for the pages
  no command shows (a run's trials, the monitoring history, a report) the reads the page itself makes.

Also printed: the fill's time, this process's peak RSS before and after the fill (``ru_maxrss``), and the
console process's peak RSS (``VmHWM`` of its ``/proc`` status, read before it is stopped).

    python bench/bench_console.py [--versions 1000] [--trials 10000] [--reports 1000] [--requests 20]
                                  [--postgres postgresql://postgres@127.0.0.1:5432/test] [--skip-sqlite]

Results: stdout and ``bench/results/console-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import psutil
from baselines import common as c
from rich.console import Console
from rich.table import Table

from console.pages import EVENTS_PER_PAGE, TRIALS_PER_PAGE, VERSIONS_PER_PAGE, Pager
from registry import Registry
from tests.console_data import CATEGORICAL, NUMERIC, Filled, fill

ESTEIRA = Path(sys.executable).parent / "esteira"
CLEARED = ("ESTEIRA_PROJECT", "ESTEIRA_DATABASE_URL", "ESTEIRA_ARTIFACT_ROOT", "ESTEIRA_GATEWAY_ADMIN_TOKEN",
           "ESTEIRA_CONSOLE_URL")


@dataclass(frozen=True)
class Page:
    name: str
    path: str
    reference: str  # what the reference column times
    reads: Callable[[Registry], object]
    expect: tuple[str, int] | None = None  # a marker and how often the page must show it: the rows it claims


def _on_page(total: int, page: int, per_page: int) -> int:
    shown = Pager.of(total, page, per_page)
    return max(0, min(per_page, total - (shown.page - 1) * per_page))


def pages(reg: Registry, data: Filled, big_run_trials: int) -> list[Page]:
    """Every page of the console, each with the registry reads that give the same data in-process."""
    m, versions, run = data.model, data.versions, data.big_run_id
    middle = max(2, Pager.of(versions, 1, VERSIONS_PER_PAGE).pages // 2)
    mid = max(1, versions // 2)
    compared = sorted({1, mid, versions})
    report = data.report_ids[-1] if data.report_ids else 0
    events = len(reg.history(m))

    def models_list(r: Registry) -> object:  # `esteira models list`
        return [(r.list_versions(x.name, limit=1), r.aliases(x.name)) for x in r.list_models()]

    def models_show(r: Registry) -> object:  # `esteira models show M`
        return r.aliases(m), r.list_versions(m)

    def run_reads(r: Registry) -> object:  # every trial, as ranking and sorting them in Python needs
        return r.get_run(run), r.trials(run)

    def monitoring_reads(r: Registry) -> object:
        return r.report_series(m), r.reports(m, limit=50)

    no_command = "(no command)"
    return [
        Page("index", "/", "models list", models_list, (f'data-model="{m}"', 1)),
        Page("model, page 1", f"/models/{m}", "models show M", models_show,
             ("data-version=", _on_page(versions, 1, VERSIONS_PER_PAGE))),
        Page(f"model, page {middle}", f"/models/{m}?page={middle}", "models show M", models_show,
             ("data-version=", _on_page(versions, middle, VERSIONS_PER_PAGE))),
        Page(f"version {mid}", f"/models/{m}/versions/{mid}", f"models show M:{mid}",
             lambda r: r.get(f"{m}:{mid}")),
        Page(f"run ({big_run_trials:,} trials), by cv", f"/runs/{run}", "get_run + every trial (no command)",
             run_reads, ("data-trial=", _on_page(big_run_trials, 1, TRIALS_PER_PAGE))),
        Page("run, page 2 by duration", f"/runs/{run}?sort=duration&order=asc&page=2",
             "get_run + every trial (no command)", run_reads,
             ("data-trial=", _on_page(big_run_trials, 2, TRIALS_PER_PAGE))),
        Page(f"monitoring ({data.reports:,} points)", f"/models/{m}/monitoring",
             f"report_series + reports(50) {no_command}", monitoring_reads,
             (f'data-points="{data.reports}"', 2)),
        Page("report", f"/reports/{report}", f"get_report {no_command}", lambda r: r.get_report(report),
             ('class="picture ', len(NUMERIC) + len(CATEGORICAL))),
        Page(f"compare v{'/'.join(map(str, compared))}",
             f"/models/{m}/compare?" + "&".join(f"v={v}" for v in compared),
             f"models show M:v, {len(compared)} times", lambda r: [r.get(f"{m}:{v}") for v in compared]),
        Page("audit", f"/models/{m}/audit", "models history M -n 100", lambda r: r.history(m, limit=100),
             ("data-event=", min(EVENTS_PER_PAGE, events))),
    ]


# -- measuring -----------------------------------------------------------------------------------------------


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def time_reads(fn: Callable[[], object], calls: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def time_page(client: httpx.Client, server: psutil.Process, path: str, calls: int, warmup: int,
              expect: tuple[str, int] | None = None) -> dict[str, Any]:
    """``calls`` GETs of ``path`` after ``warmup``: server ms (Server-Timing), client wall ms, server CPU ms.
    The first answer must show ``expect``'s marker that many times: the page measured is the page claimed."""
    for index in range(max(warmup, 1)):
        answer = client.get(path)
        answer.raise_for_status()
        seen = answer.text.count(expect[0]) if expect else 0
        if index == 0 and expect and seen != expect[1]:
            raise RuntimeError(f"{path} shows {expect[0]!r} {seen} times, not {expect[1]}")
    server_ms, wall_ms, sizes = [], [], []
    cpu_before = sum(server.cpu_times()[:2])
    for _ in range(calls):
        start = time.perf_counter()
        answer = client.get(path)
        wall_ms.append((time.perf_counter() - start) * 1000)
        answer.raise_for_status()
        timing = answer.headers["server-timing"]  # app;dur=<ms>
        server_ms.append(float(timing.split("dur=", 1)[1].split(",", 1)[0]))
        sizes.append(len(answer.content))
    cpu_ms = (sum(server.cpu_times()[:2]) - cpu_before) * 1000 / calls
    return {"path": path, "server_ms": server_ms, "wall_ms": wall_ms, "cpu_ms_per_request": cpu_ms,
            "bytes": max(sizes)}


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- one registry --------------------------------------------------------------------------------------------


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A brand-new database on the server of ``admin_url`` (dropped afterwards), as a SQLAlchemy URL."""
    import psycopg

    name = f"esteira_bench_console_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base = admin_url.rsplit("/", 1)[0]
        yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_backend(backend: str, url: str, work: Path, args: argparse.Namespace, out: Console) -> dict[str, Any]:
    """Fill a registry on ``url``, time the reference reads, serve the console on it and time every page."""
    artifacts = work / "artifacts"
    reg = Registry(url, str(artifacts))
    try:
        out.print(f"[bold]{backend}[/]: filling {args.versions:,} versions, {args.trials:,} trials, "
                  f"{args.reports:,} reports ...")
        rss_before = _peak_rss_mb()
        start = time.perf_counter()
        data = fill(reg, versions=args.versions, trials=args.trials, reports=args.reports,
                    big_run_share=args.big_run_share)
        fill_s = time.perf_counter() - start
        rss_after = _peak_rss_mb()
        big_run_trials = len(reg.trials(data.big_run_id))
        out.print(f"  fill {fill_s:.1f} s; this process's peak RSS {rss_before:.0f} MB before, "
                  f"{rss_after:.0f} MB after (ru_maxrss)")
        page_list = pages(reg, data, big_run_trials)
        references: dict[str, list[float]] = {}
        for page in page_list:  # the same reads in this process, once per distinct reference
            if page.reference not in references:
                references[page.reference] = time_reads(lambda p=page: p.reads(reg), args.requests,
                                                        args.warmup)
        port = c.free_port()
        env = {k: v for k, v in os.environ.items() if k not in CLEARED}
        env.update({"ESTEIRA_HOME": str(work / "home"), "ESTEIRA_DATABASE_URL": url,
                    "ESTEIRA_ARTIFACT_ROOT": str(artifacts)})
        cmd = [str(ESTEIRA), "console", "--host", "127.0.0.1", "--port", str(port)]
        with c.Server(f"console-{backend}", cmd, env=env, log_dir=work / "logs", cwd=work) as srv:
            srv.wait_ready(f"http://127.0.0.1:{port}/healthz", timeout_s=120)
            server = psutil.Process(srv.proc.pid)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                floor = time_page(client, server, "/healthz", args.requests * 5, args.warmup)
                results = []
                for page in page_list:
                    measured = time_page(client, server, page.path, args.requests, args.warmup, page.expect)
                    results.append({"page": page.name, "reference": page.reference,
                                    "reference_ms": references[page.reference], **measured})
            console_peak, console_end = _status_mb(srv.proc.pid, "VmHWM"), _status_mb(srv.proc.pid, "VmRSS")
    finally:
        reg.close()
    return {"backend": backend, "fill_s": fill_s, "bench_peak_rss_mb_before_fill": rss_before,
            "bench_peak_rss_mb_after_fill": rss_after, "console_peak_rss_mb": console_peak,
            "console_rss_mb_at_end": console_end, "big_run_trials": big_run_trials, "floor": floor,
            "pages": results}


# -- printing ------------------------------------------------------------------------------------------------


def print_backend(result: dict[str, Any], args: argparse.Namespace, out: Console) -> None:
    target = args.target_ms
    floor = result["floor"]
    floor_ms = statistics.median(floor["server_ms"])
    table = Table(title=f"Console pages on {result['backend']}: {args.versions:,} versions, {args.trials:,} "
                        f"trials ({result['big_run_trials']:,} in the big run), {args.reports:,} reports; "
                        f"{args.requests} requests per page after {args.warmup} warm-ups")
    columns = ("page", "server p50 ms", "server p95 ms", "wall p50 ms", "wall p95 ms", "server CPU ms/req",
               "KB", f"p50 < {target:.0f}", f"p95 < {target:.0f}", "÷ /healthz", "reference (in-process)",
               "ref p50 ms", "÷ ref")
    for column in columns:
        table.add_column(column, justify="left" if column in ("page", "reference (in-process)") else "right")
    table.add_row("/healthz (floor)", f"{floor_ms:.1f}", f"{pct(floor['server_ms'], 0.95):.1f}",
                  f"{statistics.median(floor['wall_ms']):.1f}", f"{pct(floor['wall_ms'], 0.95):.1f}",
                  f"{floor['cpu_ms_per_request']:.1f}", f"{floor['bytes'] / 1024:.1f}", "", "", "1x", "", "",
                  "")
    for r in result["pages"]:
        p50, p95 = statistics.median(r["server_ms"]), pct(r["server_ms"], 0.95)
        ref = statistics.median(r["reference_ms"])
        table.add_row(r["page"], f"{p50:.1f}", f"{p95:.1f}", f"{statistics.median(r['wall_ms']):.1f}",
                      f"{pct(r['wall_ms'], 0.95):.1f}", f"{r['cpu_ms_per_request']:.1f}",
                      f"{r['bytes'] / 1024:.0f}", "[green]PASS[/]" if p50 < target else "[red]MISS[/]",
                      "[green]PASS[/]" if p95 < target else "[red]MISS[/]", f"{p50 / floor_ms:.0f}x",
                      r["reference"], f"{ref:.1f}", f"{p50 / ref:.1f}x")
    out.print(table)
    out.print(f"  fill {result['fill_s']:.1f} s; this process's peak RSS "
              f"{result['bench_peak_rss_mb_before_fill']:.0f} MB before the fill, "
              f"{result['bench_peak_rss_mb_after_fill']:.0f} MB after (ru_maxrss); the console process "
              f"(esteira console, its own process): peak RSS {result['console_peak_rss_mb']:.0f} MB (VmHWM), "
              f"{result['console_rss_mb_at_end']:.0f} MB at the end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--big-run-share", type=float, default=1.0,
                        help="share of the trials in the latest run (the run page measured)")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per page")
    parser.add_argument("--warmup", type=int, default=2, help="untimed requests per page first")
    parser.add_argument("--target-ms", type=float, default=300.0)
    parser.add_argument("--postgres", metavar="URL", help="also on a fresh database created on this server, "
                        "e.g. postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    out = Console(width=230)
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        if not args.skip_sqlite:
            work = Path(tmp) / "sqlite"
            work.mkdir()
            results.append(run_backend("SQLite", f"sqlite:///{work / 'registry.db'}", work, args, out))
            print_backend(results[-1], args, out)
        if args.postgres:
            work = Path(tmp) / "postgresql"
            work.mkdir()
            with postgres_database(args.postgres) as url:
                results.append(run_backend("PostgreSQL", url, work, args, out))
            print_backend(results[-1], args, out)
    load_after = os.getloadavg()
    out.print(f"load average (1 min): {load_before[0]:.2f} before, {load_after[0]:.2f} after, on "
              f"{os.cpu_count()} cores; a server time well above its CPU per request is time spent waiting "
              "for a core")
    c.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = c.RESULTS_DIR / f"console-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps({"args": vars(args), "started": started.isoformat(),
                                "load_before": load_before, "load_after": load_after, "results": results},
                               indent=1))
    out.print(f"results: {path}")


if __name__ == "__main__":
    main()

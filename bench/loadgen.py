"""A loopback HTTP/1.1 load generator: requests/s, p50, p99 and errors for one URL and body.

Closed loop: ``concurrency`` workers, each on its own keep-alive connection, send the next
request as soon as the previous answer is in. The client is a few dozen lines of raw asyncio
(uvloop when installed) on pre-encoded request bytes, not httpx: on a 2-core machine the
generator shares the CPU with the server under test, so it must cost as little as possible.
Each result reports the generator's own CPU time per request so the reader can see that share;
``python bench/loadgen.py --selftest`` measures the ceiling against a trivial server.

Bounded: each run stops at ``warmup_s + duration_s`` seconds or ``max_requests`` requests,
whichever comes first; each request times out after ``timeout_s``. Only loopback hosts are
accepted.

    uv run python bench/loadgen.py http://127.0.0.1:8000/predict --body '{"rows": [...]}' -c 32 -d 20
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import resource
import socket
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}
MAX_REQUESTS_DEFAULT = 2_000_000
MAX_DURATION_S = 600.0


class LoadgenError(RuntimeError):
    pass


def check_loopback(host: str) -> None:
    """Refuse any target that is not this machine's loopback interface."""
    if host in LOOPBACK_NAMES:
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise LoadgenError(f"refusing to send load to {host!r}: only loopback addresses (127.0.0.0/8, ::1)")


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


@dataclass
class LoadResult:
    url: str
    concurrency: int
    duration_s: float  # measured window actually covered
    requests: int  # completed in the window, successes and failures
    ok: int
    errors: int
    error_kinds: dict[str, int]
    rps: float  # successful requests per second
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    client_cpu_s: float  # CPU the generator itself used in the window (all its processes)
    client_cpu_us_per_req: float
    processes: int = 1
    # Raw samples, only when asked (hot-swap bench):
    # (start, end) as time.monotonic() seconds, latency ms, HTTP status (0: no answer), version_of(body)
    samples: list[tuple[float, float, float, int, Any]] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("samples")
        return out

    def line(self) -> str:
        errs = f" errors={self.errors} {self.error_kinds}" if self.errors else ""
        return (f"{self.rps:8.1f} req/s  p50 {self.p50_ms:7.2f} ms  p99 {self.p99_ms:7.2f} ms  "
                f"n={self.requests}{errs}  (client {self.client_cpu_us_per_req:.0f} µs CPU/req)")


def build_request(url: str, body: bytes | None, method: str, headers: dict[str, str] | None) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise LoadgenError(f"only http:// URLs: {url}")
    host = parts.hostname or "127.0.0.1"
    check_loopback(host)
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive",
             "User-Agent: esteira-loadgen"]
    hdrs = {"Accept": "application/json", **(headers or {})}
    if body is not None:
        hdrs.setdefault("Content-Type", "application/json")
        hdrs["Content-Length"] = str(len(body))
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    return host, port, raw


class _Conn:
    """One keep-alive HTTP/1.1 connection; reads Content-Length and chunked responses."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = -1
        chunked, keep = False, True
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                keep = False
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size + 2))
            body = b"".join(p[:-2] for p in parts)
        elif length >= 0:
            body = await self.reader.readexactly(length)
        else:
            body = await self.reader.read()
            keep = False
        if not keep:
            self.close()
        return status, body


async def _run(url: str, body: bytes | None, *, concurrency: int, duration_s: float, warmup_s: float,
               max_requests: int, timeout_s: float, method: str, headers: dict[str, str] | None,
               keep_samples: bool, version_of: Callable[[bytes], Any] | None) -> LoadResult:
    host, port, raw = build_request(url, body, method, headers)
    loop = asyncio.get_running_loop()
    t_start = loop.time()
    t_measure = t_start + warmup_s
    t_end = t_measure + duration_s
    latencies: list[float] = []
    samples: list[tuple[float, float, float, int, Any]] = []
    errors: dict[str, int] = {}
    counted = [0]
    issued = [0]
    cpu_mark: list[float] = []

    async def worker() -> None:
        conn = _Conn(host, port)
        try:
            while True:
                now = loop.time()
                if now >= t_end or issued[0] >= max_requests:
                    return
                issued[0] += 1
                t0 = time.perf_counter()
                started = loop.time()
                mono0 = time.monotonic()
                try:
                    status, payload = await asyncio.wait_for(conn.request(raw), timeout_s)
                    kind = None if 200 <= status < 300 else f"HTTP {status}"
                except TimeoutError:
                    status, payload, kind = 0, b"", "timeout"
                    conn.close()
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                    status, payload, kind = 0, b"", type(exc).__name__
                    conn.close()
                    await asyncio.sleep(0.01)  # don't spin on a refused connection
                elapsed_ms = (time.perf_counter() - t0) * 1e3
                if started < t_measure or started >= t_end:
                    continue
                counted[0] += 1
                if kind is None:
                    latencies.append(elapsed_ms)
                else:
                    errors[kind] = errors.get(kind, 0) + 1
                if keep_samples:
                    version = version_of(payload) if (version_of and kind is None) else None
                    samples.append((mono0, time.monotonic(), elapsed_ms, status, version))
        finally:
            conn.close()

    async def mark_cpu() -> None:
        await asyncio.sleep(max(0.0, t_measure - loop.time()))
        cpu_mark.append(_cpu_s())

    marker = asyncio.ensure_future(mark_cpu())
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await marker
    cpu = _cpu_s() - cpu_mark[0]
    window = min(duration_s, max(1e-9, loop.time() - t_measure))
    ordered = sorted(latencies)
    n = counted[0]
    return LoadResult(
        url=url, concurrency=concurrency, duration_s=round(window, 3), requests=n, ok=len(ordered),
        errors=sum(errors.values()), error_kinds=errors, rps=len(ordered) / window,
        p50_ms=percentile(ordered, 50), p90_ms=percentile(ordered, 90), p99_ms=percentile(ordered, 99),
        max_ms=ordered[-1] if ordered else float("nan"),
        mean_ms=statistics.fmean(ordered) if ordered else float("nan"),
        client_cpu_s=cpu, client_cpu_us_per_req=cpu / max(1, n) * 1e6,
        samples=samples,
    )


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def _run_sync(kwargs: dict[str, Any]) -> LoadResult:
    loop = _new_loop()
    try:
        return loop.run_until_complete(_run(**kwargs))
    finally:
        loop.close()


def run_load(url: str, body: bytes | str | dict | list | None = None, *, concurrency: int = 1,
             duration_s: float = 20.0, warmup_s: float = 2.0, max_requests: int = MAX_REQUESTS_DEFAULT,
             timeout_s: float = 10.0, method: str = "POST", headers: dict[str, str] | None = None,
             processes: int = 1, keep_samples: bool = False,
             version_of: Callable[[bytes], Any] | None = None) -> LoadResult:
    """Closed-loop load on ``url`` for ``warmup_s`` (discarded) then ``duration_s`` seconds.

    ``processes > 1`` splits the workers over that many processes (results merged; samples and
    ``version_of`` are then not supported).
    """
    if not 0 < duration_s <= MAX_DURATION_S:
        raise LoadgenError(f"duration must be in (0, {MAX_DURATION_S}] s")
    if concurrency < 1 or concurrency > 1024:
        raise LoadgenError("concurrency must be in [1, 1024]")
    if isinstance(body, (dict, list)):
        body = json.dumps(body, separators=(",", ":"))
    if isinstance(body, str):
        body = body.encode()
    kwargs = dict(url=url, body=body, concurrency=concurrency, duration_s=duration_s, warmup_s=warmup_s,
                  max_requests=max_requests, timeout_s=timeout_s, method=method, headers=headers,
                  keep_samples=keep_samples, version_of=version_of)
    build_request(url, body, method, headers)  # validate (loopback) before anything runs
    if processes <= 1:
        return _run_sync(kwargs)
    if keep_samples or version_of:
        raise LoadgenError("samples need a single process")
    per = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    per = [c for c in per if c > 0]
    jobs = [{**kwargs, "concurrency": c, "max_requests": max_requests // len(per)} for c in per]
    with ProcessPoolExecutor(len(jobs)) as pool:
        parts = list(pool.map(_run_sync_keep_latencies, jobs))
    lat = sorted(x for _, xs in parts for x in xs)
    window = max(p.duration_s for p, _ in parts)
    errors: dict[str, int] = {}
    for p, _ in parts:
        for k, v in p.error_kinds.items():
            errors[k] = errors.get(k, 0) + v
    n = sum(p.requests for p, _ in parts)
    cpu = sum(p.client_cpu_s for p, _ in parts)
    return LoadResult(
        url=url, concurrency=concurrency, duration_s=window, requests=n, ok=len(lat), errors=sum(errors.values()),
        error_kinds=errors, rps=len(lat) / window, p50_ms=percentile(lat, 50), p90_ms=percentile(lat, 90),
        p99_ms=percentile(lat, 99), max_ms=lat[-1] if lat else float("nan"),
        mean_ms=statistics.fmean(lat) if lat else float("nan"), client_cpu_s=cpu,
        client_cpu_us_per_req=cpu / max(1, n) * 1e6, processes=len(jobs),
    )


def _run_sync_keep_latencies(kwargs: dict[str, Any]) -> tuple[LoadResult, list[float]]:
    kwargs = {**kwargs, "keep_samples": True}
    result = _run_sync(kwargs)
    lat = [ms for _, _, ms, status, _ in result.samples if 200 <= status < 300]
    result.samples = []
    return result, lat


# -- self-test: the generator's ceiling against a server that does nothing ---------------------------------

_CANNED = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n"
           b"Connection: keep-alive\r\n\r\n{\"ok\":true}")


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            length = 0
            pos = head.find(b"content-length:")
            if pos >= 0:
                length = int(head[pos + 15:].split(b"\r\n")[0])
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            self.transport.write(_CANNED)  # type: ignore[attr-defined]


def _serve_canned(port: int, seconds: float) -> None:
    loop = _new_loop()
    server = loop.run_until_complete(loop.create_server(_Echo, "127.0.0.1", port))
    loop.run_until_complete(asyncio.sleep(seconds))
    server.close()
    loop.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def selftest(duration_s: float = 5.0) -> list[LoadResult]:
    """The generator against a canned-response server in another process: its own ceiling."""
    import multiprocessing

    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=_serve_canned, args=(port, 4 * (duration_s + 2) + 5))
    server.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        body = json.dumps({"rows": [{f"f{i}": 0.5 for i in range(20)}]})
        return [run_load(f"http://127.0.0.1:{port}/x", body, concurrency=c, duration_s=duration_s, warmup_s=1.0)
                for c in (1, 32)]
    finally:
        server.terminate()
        server.join(5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", nargs="?")
    parser.add_argument("--body", help="request body (JSON text); @file reads a file")
    parser.add_argument("--method", default=None, help="default POST with a body, GET without")
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("-n", "--max-requests", type=int, default=MAX_REQUESTS_DEFAULT)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("-p", "--processes", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--selftest", action="store_true", help="measure the generator against a null server")
    args = parser.parse_args(argv)
    if args.selftest:
        for r in selftest(args.duration if args.duration != 20.0 else 5.0):
            print(f"null server  c={r.concurrency:<3d} {r.line()}")
        return
    if not args.url:
        parser.error("url is required")
    body = args.body
    if body and body.startswith("@"):
        with open(body[1:], "rb") as fh:
            body = fh.read()
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    result = run_load(args.url, body, concurrency=args.concurrency, duration_s=args.duration, warmup_s=args.warmup,
                      max_requests=args.max_requests, timeout_s=args.timeout,
                      method=args.method or ("POST" if body else "GET"), headers=headers, processes=args.processes)
    if args.json:
        json.dump(result.summary(), sys.stdout, indent=2)
        print()
    else:
        print(f"c={args.concurrency:<3d} {result.line()}")


if __name__ == "__main__":
    main()

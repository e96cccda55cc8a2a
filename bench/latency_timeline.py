"""Per-request latency against time under load: where a gateway's p99 comes from.

Starts ``esteira serve`` (the shipped defaults, local Ray) on the benchmark model in a temporary registry,
warms it up, runs closed-loop load for ``--duration`` seconds at ``--concurrency`` on 127.0.0.1 keeping
every sample, and prints one line per ``--bucket`` of start time: requests, p50, max, marked ``<==``
when the bucket holds a request slower than the run's p99. Periodic marks point at periodic work in the
replica (this is how the inference log's flush stalls were found: one 100-150 ms stall every ~5 s).

    uv run python bench/latency_timeline.py                  # 20 s at c=32, 250 ms buckets
    uv run python bench/latency_timeline.py --duration 10 --concurrency 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines import common as c
from loadgen import run_load


def timeline(samples: list[tuple[float, float, float, int, object]], bucket_s: float) -> tuple[float, list[str]]:
    """(p99 ms, one printable line per bucket) from loadgen samples ``(start, end, ms, status, version)``."""
    if not samples:
        return 0.0, []
    t0 = min(s[0] for s in samples)
    buckets: dict[int, list[float]] = {}
    for start, _end, ms, _status, _version in samples:
        buckets.setdefault(int((start - t0) / bucket_s), []).append(ms)
    everything = sorted(s[2] for s in samples)
    p99 = everything[min(len(everything) - 1, int(len(everything) * 0.99))]
    lines = []
    for index in sorted(buckets):
        values = sorted(buckets[index])
        mark = "  <==" if values[-1] > p99 else ""
        lines.append(f"{index * bucket_s:7.2f} s  n={len(values):4d}  p50 {values[len(values) // 2]:7.1f} ms  "
                     f"max {values[-1]:7.1f} ms{mark}")
    return p99, lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--bucket", type=float, default=0.25, help="seconds per line")
    parser.add_argument("--replicas", type=int, default=None, help="gateway replicas (default: esteira serve's)")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="esteira-bench-timeline-"))
    reg = c.build_registry(tmp / "home")
    port = c.free_port()
    body = c.body_v1(c.sample_row())
    with c.Server("gateway", c.gateway_command(port, replicas=args.replicas), env=c.gateway_env(reg),
                  log_dir=tmp / "logs") as srv:
        srv.wait_ready(f"http://127.0.0.1:{port}/v2/models/{c.MODEL_NAME}/ready", timeout_s=240)
        url = f"http://127.0.0.1:{port}/v1/models/{c.MODEL_NAME}/predict"
        run_load(url, body, concurrency=args.concurrency, duration_s=5, warmup_s=1)  # warm, discarded
        result = run_load(url, body, concurrency=args.concurrency, duration_s=args.duration, warmup_s=0,
                          keep_samples=True)
    p99, lines = timeline(result.samples, args.bucket)
    print(result.line())
    print(f"p99 {p99:.1f} ms; buckets holding a request slower than that are marked <==")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

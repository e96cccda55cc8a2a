"""Hot swap under load: the production alias moves three times (one a rollback) while 32 clients score.

Setup: a temporary registry with three versions of the bench model (same features, different seeds),
v1 in production; ``esteira serve`` (one replica, local Ray) on 127.0.0.1. Then 32 closed-loop clients
send one-row ``/v1/models/{name}/predict`` requests for ``--duration`` seconds (default 30) while, from
this process, the registry's alias moves: promote v2 at 25 %, promote v3 at 50 %, roll back (to v2) at
75 % of the run. The gateway learns of each move by polling (``ESTEIRA_GATEWAY_POLL_INTERVAL_S``,
default 0.5 s), loads the new version off the event loop and swaps one reference.

Measured (every response names its version):

* failed requests (target: zero): any non-2xx, time-out or dropped connection;
* time from each alias move (the registry commit) to the first response from the new version;
* p99 in the swap windows (from each move until 1 s after its first new-version response) against
  steady state (the rest of the run): target within 2x;
* requests answered by an older version after a newer one was first seen (in-flight requests may
  finish on the version they started with; more than that would mean the swap is not atomic).

    uv run python bench/bench_hotswap.py [--duration 30] [--concurrency 32]

Results: stdout and ``bench/results/hotswap-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines import common as c
from loadgen import percentile, run_load


def version_of(body: bytes) -> int | None:
    try:
        return int(json.loads(body)["version"])
    except (ValueError, KeyError, TypeError):
        return None


def mover(reg: c.BenchRegistry, start_at: float, duration: float, events: list[dict[str, Any]],
          errors: list[str]) -> None:
    """Move the alias at 25 / 50 / 75 % of the measured window; record each commit's monotonic time."""
    from registry import Registry

    registry = Registry.from_url(reg.url, reg.artifact_root, migrate=False)
    plan = [(0.25, "promote", reg.versions["v2"]), (0.50, "promote", reg.versions["v3"]),
            (0.75, "rollback", reg.versions["v2"])]
    try:
        for fraction, action, expected in plan:
            delay = start_at + fraction * duration - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if action == "promote":
                registry.promote(c.MODEL_NAME, expected, alias="production", reason="bench hot swap")
            else:
                registry.rollback(c.MODEL_NAME, alias="production", reason="bench hot swap")
            at = time.monotonic()
            now_version = registry.resolve_alias(c.MODEL_NAME, "production")
            events.append({"action": action, "version": now_version, "expected": expected, "at": at})
    except Exception as exc:  # noqa: BLE001 - reported, the load run still ends on its own
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        registry.close()


def analyse(samples: list[tuple[float, float, float, int, Any]], events: list[dict[str, Any]], t0: float,
            t_end: float) -> dict[str, Any]:
    samples = sorted(samples, key=lambda s: s[1])  # by completion time
    failed = [s for s in samples if not 200 <= s[3] < 300]
    swaps = []
    windows = []
    for event in events:
        first = next((s for s in samples if s[1] >= event["at"] and s[4] == event["version"] and s[0] >= event["at"]),
                     None)
        first_any = next((s for s in samples if s[1] >= event["at"] and s[4] == event["version"]), None)
        reached = first or first_any
        swap_s = (reached[1] - event["at"]) if reached else None
        end = (reached[1] if reached else event["at"] + 5.0) + 1.0
        windows.append((event["at"], end))
        in_window = sorted(s[2] for s in samples if event["at"] <= s[0] < end and 200 <= s[3] < 300)
        swaps.append({"action": event["action"], "to_version": event["version"],
                      "at_s": round(event["at"] - t0, 3),
                      "promotion_to_first_new_response_ms": None if swap_s is None else round(1e3 * swap_s, 1),
                      "window_requests": len(in_window), "window_p99_ms": percentile(in_window, 99),
                      "window_max_ms": in_window[-1] if in_window else None})
    steady = sorted(s[2] for s in samples if 200 <= s[3] < 300 and not any(a <= s[0] < b for a, b in windows))
    during = sorted(s[2] for s in samples if 200 <= s[3] < 300 and any(a <= s[0] < b for a, b in windows))
    # A response from an older version that *started* after the newer one was first seen.
    stale = 0
    for event, swap in zip(events, swaps, strict=True):
        if swap["promotion_to_first_new_response_ms"] is None:
            continue
        seen = event["at"] + swap["promotion_to_first_new_response_ms"] / 1e3
        nxt = next((e["at"] for e in events if e["at"] > event["at"]), t_end)
        stale += sum(1 for s in samples if seen <= s[0] < nxt and s[4] is not None and s[4] != event["version"])
    versions: dict[str, int] = {}
    for s in samples:
        versions[str(s[4])] = versions.get(str(s[4]), 0) + 1
    p99_steady, p99_during = percentile(steady, 99), percentile(during, 99)
    return {
        "requests": len(samples), "failed": len(failed),
        "failed_kinds": sorted({s[3] for s in failed}),
        "rps": (len(samples) - len(failed)) / max(1e-9, t_end - t0),
        "steady": {"requests": len(steady), "p50_ms": percentile(steady, 50), "p99_ms": p99_steady},
        "during_swaps": {"requests": len(during), "p50_ms": percentile(during, 50), "p99_ms": p99_during},
        "p99_ratio": p99_during / p99_steady if steady and during else None,
        "swaps": swaps, "stale_after_switch": stale, "responses_by_version": versions,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--replicas", type=int, default=None, help="gateway replicas (default: esteira serve's)")
    parser.add_argument("--replica-cpus", type=float, default=1.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="esteira-bench-swap-"))
    t = time.monotonic()
    reg = c.build_registry(tmp / "home", hot_swap_versions=2)
    print(f"registry with v1..v3 ready ({time.monotonic() - t:.1f} s); work dir {tmp}", flush=True)
    row = c.sample_row()
    port = c.free_port()
    with c.Server("gateway", c.gateway_command(port, replica_cpus=args.replica_cpus, replicas=args.replicas),
                  env=c.gateway_env(reg), log_dir=tmp / "logs") as srv:
        ready = srv.wait_ready(f"http://127.0.0.1:{port}/v2/models/{c.MODEL_NAME}/ready", timeout_s=240)
        print(f"gateway ready in {ready:.1f} s (log: {srv.log_path})", flush=True)
        url = f"http://127.0.0.1:{port}/v1/models/{c.MODEL_NAME}/predict"
        status, answer = c.post_json(url, c.body_v1(row))
        if status != 200 or answer.get("version") != reg.versions["v1"]:
            raise SystemExit(f"unexpected first answer {status}: {answer}")
        events: list[dict[str, Any]] = []
        errors: list[str] = []
        t0 = time.monotonic() + args.warmup
        thread = threading.Thread(target=mover, args=(reg, t0, args.duration, events, errors), daemon=True)
        thread.start()
        result = run_load(url, c.body_v1(row), concurrency=args.concurrency, duration_s=args.duration,
                          warmup_s=args.warmup, keep_samples=True, version_of=version_of)
        thread.join(30)
        t_end = t0 + args.duration
    if errors or len(events) != 3:
        raise SystemExit(f"alias moves failed: {errors} {events}")
    report = analyse(result.samples, events, t0, t_end)
    report.update({"bench": "hotswap", "when": datetime.now(UTC).isoformat(timespec="seconds"),
                   "settings": {"duration_s": args.duration, "concurrency": args.concurrency,
                                "poll_interval_s": float(os.environ.get("ESTEIRA_GATEWAY_POLL_INTERVAL_S", 0.5))},
                   "versions": reg.versions})
    verdicts = [
        ("zero failed requests", report["failed"], "== 0", report["failed"] == 0),
        ("p99 during swaps / steady p99", report["p99_ratio"], "<= 2.0x",
         report["p99_ratio"] is not None and report["p99_ratio"] <= 2.0),
        ("every move reached clients", sum(s["promotion_to_first_new_response_ms"] is not None
                                           for s in report["swaps"]), "== 3",
         all(s["promotion_to_first_new_response_ms"] is not None for s in report["swaps"])),
    ]
    report["verdicts"] = [{"target": n, "value": v, "goal": g, "verdict": "PASS" if ok else "MISS"}
                          for n, v, g, ok in verdicts]

    print(f"\n{report['requests']} requests in {args.duration:.0f} s at c={args.concurrency} "
          f"({report['rps']:.1f} req/s), failed {report['failed']} {report['failed_kinds'] or ''}")
    print(f"steady      p50 {report['steady']['p50_ms']:.1f} ms  p99 {report['steady']['p99_ms']:.1f} ms "
          f"(n={report['steady']['requests']})")
    print(f"swap windows p50 {report['during_swaps']['p50_ms']:.1f} ms  p99 {report['during_swaps']['p99_ms']:.1f} ms "
          f"(n={report['during_swaps']['requests']})")
    for s in report["swaps"]:
        print(f"  t={s['at_s']:6.2f} s  {s['action']:<8} -> v{s['to_version']}: first response from it after "
              f"{s['promotion_to_first_new_response_ms']} ms; window p99 {s['window_p99_ms']:.1f} ms, "
              f"max {s['window_max_ms']:.1f} ms")
    print(f"responses by version: {report['responses_by_version']}; older version after the newer was seen: "
          f"{report['stale_after_switch']}")
    for v in report["verdicts"]:
        print(f"{v['verdict']:<6} {v['target']}: {v['value'] if not isinstance(v['value'], float) else round(v['value'], 2)}"
              f" (target {v['goal']})")
    out = Path(args.out) if args.out else c.RESULTS_DIR / f"hotswap-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()

"""Cold start: from the command to the first answer, as a user types it.

Run: ``uv run python bench/bench_cold_start.py [--runs 2] [--skip-before] [--skip-up]``.

What it measures, each in a fresh process started with ``uv run --frozen`` (so Ray sees a driver under
``uv run``, as it does for a user):

- ``esteira serve`` of one model from a fresh registry: seconds to the first 200 of ``/v1/.../predict``;
  "before" is the same command with ``RAY_ENABLE_UV_RUN_RUNTIME_ENV=1`` set explicitly (Ray's default, which
  esteira respects when it is set: what ``esteira serve`` did before it turned the propagation off);
  the floor is the bare FastAPI app of ``bench/baselines/fastapi_app.py`` serving the same artifact.
- ``esteira up`` of a copy of the churn example (Prefect server, work pool, worker, deployments, Ray head and
  the gateway): seconds until the command returns with everything up, and its own per-step timings.
- a CLI command (``esteira --help``, ``esteira models list``): seconds, and whether anything but the command's
  own output was printed (uv's "Bytecode compiled ..." line).

Figures vary with what else runs on the machine; the ratios are against the floor of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines import common as c

UV = ["uv", "run", "--frozen", "--quiet"]


def esteira_cmd(*args: str) -> list[str]:
    return [*UV, "esteira", *args]


def time_serve(reg: c.BenchRegistry, log_dir: Path, name: str, extra_env: dict[str, str] | None = None) -> float:
    """Seconds from starting ``esteira serve`` to its first 200 prediction."""
    port = c.free_port()
    cmd = esteira_cmd("serve", "--host", "127.0.0.1", "--port", str(port), "--model", c.MODEL_NAME,
                      "--shadow-alias", "")
    env = c.gateway_env(reg, extra_env)
    url = f"http://127.0.0.1:{port}/v1/models/{c.MODEL_NAME}/predict"
    start = time.monotonic()
    with c.Server(name, cmd, env=env, log_dir=log_dir) as srv:
        srv.wait_ready(url, method="POST", body=c.body_v1(c.sample_row()), timeout_s=180)
        return time.monotonic() - start


def time_floor(reg: c.BenchRegistry, log_dir: Path) -> float:
    port = c.free_port()
    # floor_command starts this interpreter; under `uv run` like the others: `uv run python <app>`
    cmd = [*UV, "python", *c.floor_command(reg.artifact_paths["v1"], port)[1:]]
    url = f"http://127.0.0.1:{port}/v1/models/{c.MODEL_NAME}/predict"
    start = time.monotonic()
    with c.Server("floor", cmd, env=reg.env(), log_dir=log_dir) as srv:
        srv.wait_ready(url, method="POST", body=c.body_v1(c.sample_row()), timeout_s=120)
        return time.monotonic() - start


def time_up(work: Path, log_dir: Path) -> dict[str, float]:
    """``esteira up`` on a fresh copy of the churn example; its wall time and its own step timings."""
    root, _ = c.churn_project(work / "churn-up")
    env = {**os.environ, "ESTEIRA_PROJECT": str(root), "ESTEIRA_PREFECT_PORT": str(c.free_port()),
           "ESTEIRA_GATEWAY_PORT": str(c.free_port()), "ESTEIRA_STACK_RAY_PORT": str(c.free_port()),
           "RAY_SERVE_HAPROXY_STATS_PORT": str(c.free_port()), "RAY_SERVE_HAPROXY_METRICS_PORT": str(c.free_port()),
           "COLUMNS": "200"}
    for key in ("ESTEIRA_HOME", "ESTEIRA_DATABASE_URL", "PREFECT_API_URL", "RAY_ADDRESS"):
        env.pop(key, None)
    start = time.monotonic()
    up = subprocess.run(esteira_cmd("up"), env=env, capture_output=True, text=True, timeout=300, check=False)
    wall = time.monotonic() - start
    (log_dir / "up.log").write_text(up.stdout + up.stderr)
    try:
        if up.returncode != 0:
            raise RuntimeError(f"esteira up failed:\n{up.stdout[-2000:]}\n{up.stderr[-2000:]}")
        from esteira.stack import STACK_FILE

        stack = json.loads((root / ".esteira" / STACK_FILE).read_text())
        steps = {k: float(v) for k, v in stack.get("timings_s", {}).items()}
    finally:
        subprocess.run(esteira_cmd("down"), env=env, capture_output=True, timeout=120, check=False)
    return {"wall": wall, **steps}


def time_cli(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.monotonic()
    done = subprocess.run(esteira_cmd(*args), env=env, capture_output=True, text=True, timeout=60, check=False)
    return time.monotonic() - start, done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="measurements of each serve variant (median shown)")
    parser.add_argument("--skip-before", action="store_true", help="skip the slow 'before' variant")
    parser.add_argument("--skip-up", action="store_true", help="skip esteira up")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="esteira-cold-") as tmp:
        work = Path(tmp)
        log_dir = work / "logs"
        reg = c.build_registry(work / "home")
        env = {**os.environ, **reg.env()}

        cli = {name: [time_cli(a, env) for _ in range(5)] for name, a in
               {"esteira --help": ["--help"], "esteira models list": ["models", "list"]}.items()}
        for name, runs in cli.items():
            noise = sorted({line for _, err in runs for line in err.splitlines() if line.strip()})
            print(f"{name:<22} p50 {statistics.median(t for t, _ in runs):.2f} s over {len(runs)} runs; "
                  f"stderr lines: {noise or 'none'}", flush=True)

        floor = statistics.median(time_floor(reg, log_dir) for _ in range(args.runs))
        print(f"{'bare FastAPI (floor)':<22} first 200 in {floor:5.1f} s", flush=True)
        shipped = statistics.median(time_serve(reg, log_dir, f"serve-{i}") for i in range(args.runs))
        print(f"{'esteira serve':<22} first 200 in {shipped:5.1f} s  ({shipped / floor:.1f}x the floor)", flush=True)
        if not args.skip_before:
            before = time_serve(reg, log_dir, "serve-before", {"RAY_ENABLE_UV_RUN_RUNTIME_ENV": "1"})
            print(f"{'before (uv propagation)':<22} first 200 in {before:5.1f} s  ({before / floor:.1f}x the floor; "
                  f"shipped is {before / shipped:.1f}x faster)", flush=True)
        if not args.skip_up:
            up = time_up(work, log_dir)
            steps = ", ".join(f"{k} {v:.1f} s" for k, v in up.items() if k not in ("wall", "total"))
            print(f"{'esteira up':<22} {up['wall']:5.1f} s wall ({steps})", flush=True)


if __name__ == "__main__":
    main()

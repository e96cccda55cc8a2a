"""Gateway throughput and latency against the bare FastAPI floor and MLflow, one row per request.

Every server serves the same artifact (the registry's skops file of one HistGradientBoostingClassifier,
20 float features, seeded synthetic data) on 127.0.0.1, one at a time, each with OpenMP limited to one
thread (Ray Serve's default per replica; set deliberately for the floor and MLflow). For each server
and concurrency (1 and 32) the closed-loop generator in ``bench/loadgen.py`` runs ``--warmup`` seconds
(discarded) then ``--duration`` seconds.

Servers and payloads:

* ``gateway v1``: ``esteira serve`` (esteira.commands.serve.serve_command: local Ray, its default replicas,
  HAProxy ingress on a free port) ``POST /v1/models/{name}/predict`` with ``{"inputs": [{f0..f19}]}``.
* ``gateway v2`` (``--with-v2``): ``POST /v2/models/{name}/infer``, one ``[1, 20]`` FP64 tensor.
* ``floor``: ``bench/baselines/fastapi_app.py``, same route, same body, same response shape.
* ``mlflow dataframe_split``: ``mlflow models serve`` of the named model with a column signature.
* ``mlflow instances``: ``mlflow models serve`` of the array-fitted model with a tensor signature (the
  only signature ``instances`` lists pass; MLflow's fastest path).
* ``entity`` (entity keys): the churn example project (``examples/churn``) is copied into the work dir,
  its own generator writes 5,000 customers, and the real flows run on the copy (``ESTEIRA_PROJECT`` set):
  ``esteira materialize`` then ``esteira train run churn --sequential``; then ``gateway entity-key`` posts
  ``{"entities": {"customer_id": ...}, "request_data": {...}}`` and the gateway reads feature service
  ``churn_v1`` from the project's Feast online store (SQLite), on-demand features included, and ``floor
  entity-key`` is the same bare FastAPI app reading the same service with Feast's ``get_online_features``
  inline. MLflow has no feature-store lookup, so it has no entity-key point.

Targets (issue 4): at concurrency 32, gateway v1 requests/s >= 1.2x the faster MLflow format and >=
1.0x the floor, and gateway p99 <= the floor's p99; at concurrency 1, gateway p50 within 2 ms of the
floor's. Each measurement also records the server's own CPU per request (its whole process tree) and
how busy the machine was, so a run disturbed by other work on the 2 cores shows it.

    uv run python bench/bench_gateway.py                 # about 4 to 5 minutes
    uv run python bench/bench_gateway.py --duration 5    # quick look
    uv run python bench/bench_gateway.py --only gateway,floor --with-v2
    uv run python bench/bench_gateway.py --only entity                   # entity keys: Feast lookups
    uv run python bench/bench_gateway.py --only gateway,floor --direct-ingress   # what the proxy hop costs

Results: a table on stdout and ``bench/results/gateway-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines import common as c
from loadgen import run_load

SYSTEMS = ("floor", "mlflow", "gateway", "entity")
CONCURRENCIES = (1, 32)


def measure(name: str, server: c.Server, url: str, body: Any, args: argparse.Namespace,
            check: Any = None) -> list[dict[str, Any]]:
    """Both concurrencies against one running server; returns one row per concurrency."""
    status, answer = c.post_json(url, body)
    if status != 200 or (check is not None and not check(answer)):
        raise RuntimeError(f"{name}: unexpected answer {status}: {str(answer)[:400]}")
    rows = []
    meter = c.CpuMeter(server.proc.pid)
    for conc in args.concurrency:
        load1 = os.getloadavg()[0]
        meter.start()
        result = run_load(url, body, concurrency=conc, duration_s=args.duration, warmup_s=args.warmup,
                          timeout_s=args.timeout)
        cpu = meter.stop()
        row = {"system": name, **result.summary(), "loadavg_1m_before": load1,
               "server_cpu_ms_per_req": 1e3 * cpu["server_cpu_s"] / max(1, result.requests),
               "machine_busy_pct": cpu["machine_busy_pct"], "server_cpu_s_by_process": cpu["cpu_s_by_process"],
               # CPU used during the run by neither the server nor the generator: other work on the machine
               "other_cpu_s": max(0.0, cpu["machine_busy_cpu_s"] - cpu["server_cpu_s"] - result.client_cpu_s)}
        rows.append(row)
        print(f"  {name:<24} c={conc:<3d} {result.line()}  server {row['server_cpu_ms_per_req']:.2f} ms CPU/req, "
              f"other {row['other_cpu_s']:.1f} CPU-s", flush=True)
    return rows


def replica_direct_port(root_pid: int) -> int:
    """The HTTP port a replica opens itself under RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (30000 and up).

    Not a documented client path (Ray's HAProxy mode uses it): measured to show what the proxy hop costs.
    """
    import psutil

    for proc in psutil.Process(root_pid).children(recursive=True):
        try:
            if " ".join(proc.cmdline()).startswith("ray::ServeReplica"):
                ports = sorted(cn.laddr.port for cn in proc.net_connections("tcp")
                               if cn.status == psutil.CONN_LISTEN and cn.laddr.port >= 30000)
                if ports:
                    return ports[0]
        except psutil.NoSuchProcess:
            continue
    raise RuntimeError("no replica listening on a direct-ingress port (30000+)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from baselines import mlflow_setup as m

    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="esteira-bench-gw-"))
    log_dir = tmp / "logs"
    print(f"work dir {tmp}", flush=True)
    if "mlflow" in args.only:
        t = time.monotonic()
        m.ensure_venv()
        print(f"mlflow venv ready ({time.monotonic() - t:.1f} s): mlflow {m.mlflow_version()}", flush=True)
    t = time.monotonic()
    reg = c.build_registry(tmp / "home")
    print(f"registry with the trained models ready ({time.monotonic() - t:.1f} s)", flush=True)
    row = c.sample_row()
    rows: list[dict[str, Any]] = []
    version_ok = lambda answer: answer.get("version") == reg.versions["v1"]

    if "floor" in args.only:
        port = c.free_port()
        with c.Server("floor", c.floor_command(reg.artifact_paths["v1"], port), env={"OMP_NUM_THREADS": "1"},
                      log_dir=log_dir) as srv:
            print(f"floor ready in {srv.wait_ready(f'http://127.0.0.1:{port}/healthz'):.1f} s", flush=True)
            rows += measure("floor", srv, f"http://127.0.0.1:{port}/v1/models/{c.MODEL_NAME}/predict",
                            c.body_v1(row), args, version_ok)

    if "mlflow" in args.only:
        for label, kind, artifact, body in (
            ("mlflow dataframe_split", "columns", reg.artifact_paths["v1"], c.body_mlflow_split(row)),
            ("mlflow instances", "tensor", reg.artifact_paths["array"], c.body_mlflow_instances(row)),
        ):
            model_dir = tmp / f"mlflow-{kind}"
            m.export_model(artifact, model_dir, kind=kind, features=c.FEATURES)
            port = c.free_port()
            with c.Server(f"mlflow-{kind}", m.serve_command(model_dir, port), env=m.serve_env(1),
                          log_dir=log_dir) as srv:
                print(f"{label} ready in {srv.wait_ready(f'http://127.0.0.1:{port}/ping'):.1f} s", flush=True)
                rows += measure(label, srv, f"http://127.0.0.1:{port}/invocations", body, args,
                                lambda answer: "predictions" in answer)

    if "gateway" in args.only:
        port = c.free_port()
        extra = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"} if args.direct_ingress else None
        with c.Server("gateway", c.gateway_command(port, replica_cpus=args.replica_cpus, replicas=args.replicas),
                      env=c.gateway_env(reg, extra), log_dir=log_dir) as srv:
            ready = srv.wait_ready(f"http://127.0.0.1:{port}/v2/models/{c.MODEL_NAME}/ready", timeout_s=240)
            print(f"gateway ready in {ready:.1f} s (log: {srv.log_path})", flush=True)
            base = f"http://127.0.0.1:{port}"
            rows += measure("gateway v1", srv, f"{base}/v1/models/{c.MODEL_NAME}/predict", c.body_v1(row), args,
                            version_ok)
            if args.with_v2:
                rows += measure("gateway v2", srv, f"{base}/v2/models/{c.MODEL_NAME}/infer", c.body_v2(row), args,
                                lambda answer: answer.get("model_version") == str(reg.versions["v1"]))
            if args.direct_ingress:
                direct = replica_direct_port(srv.proc.pid)
                print(f"replica direct-ingress port: {direct}", flush=True)
                rows += measure("gateway v1 direct", srv,
                                f"http://127.0.0.1:{direct}/v1/models/{c.MODEL_NAME}/predict", c.body_v1(row), args,
                                version_ok)

    if "entity" in args.only:
        t = time.monotonic()
        churn = c.build_churn_home(tmp / "churn", log_dir=log_dir)
        print(f"churn model trained by the flows ({time.monotonic() - t:.1f} s): v{churn.versions['v1']} "
              f"({churn.family}) on feature service {churn.feature_service}", flush=True)
        body = c.body_entity(churn)
        churn_ok = lambda answer: answer.get("version") == churn.versions["v1"]  # noqa: E731
        port = c.free_port()
        with c.Server("floor-entity", c.floor_command(churn.artifact_paths["v1"], port, version=churn.versions["v1"],
                                                      name=churn.model, features=churn.input_names,
                                                      feature_service=churn.feature_service),
                      env={**churn.env(), "OMP_NUM_THREADS": "1"}, log_dir=log_dir) as srv:
            print(f"floor entity-key ready in {srv.wait_ready(f'http://127.0.0.1:{port}/healthz'):.1f} s", flush=True)
            rows += measure("floor entity-key", srv, f"http://127.0.0.1:{port}/v1/models/{churn.model}/predict", body,
                            args, churn_ok)
        port = c.free_port()
        with c.Server("gateway-entity", c.gateway_command(port, model=churn.model, replica_cpus=args.replica_cpus,
                                                          replicas=args.replicas),
                      env=c.gateway_env(churn), log_dir=log_dir) as srv:
            ready = srv.wait_ready(f"http://127.0.0.1:{port}/v2/models/{churn.model}/ready", timeout_s=240)
            print(f"gateway (churn) ready in {ready:.1f} s (log: {srv.log_path})", flush=True)
            rows += measure("gateway entity-key", srv, f"http://127.0.0.1:{port}/v1/models/{churn.model}/predict",
                            body, args, churn_ok)

    return {
        "bench": "gateway",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {"duration_s": args.duration, "warmup_s": args.warmup, "concurrency": args.concurrency,
                     "omp_num_threads": 1, "replica_cpus": args.replica_cpus,
                     "direct_ingress": args.direct_ingress, "model": "HistGradientBoostingClassifier,"
                     " 20 float features, max_iter=100", "row": row},
        "total_s": round(time.monotonic() - started, 1),
        "rows": rows,
    }


def _find(rows: list[dict[str, Any]], system: str, conc: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["system"] == system and r["concurrency"] == conc), None)


def floor_targets(target: Any, label: str, gw32: dict[str, Any] | None, fl32: dict[str, Any] | None,
                  gw1: dict[str, Any] | None, fl1: dict[str, Any] | None) -> None:
    """The three targets against a floor: req/s and p99 at concurrency 32, p50 at concurrency 1."""
    r = gw32["rps"] / fl32["rps"] if gw32 and fl32 and fl32["rps"] else None
    target(f"c=32 {label} req/s vs floor", r, ">= 1.0x", None if r is None else r >= 1.0)
    p = (gw32["p99_ms"] - fl32["p99_ms"]) if gw32 and fl32 else None
    target(f"c=32 {label} p99 minus floor p99 (ms)", p, "<= 0", None if p is None else p <= 0)
    d = (gw1["p50_ms"] - fl1["p50_ms"]) if gw1 and fl1 else None
    target(f"c=1 {label} p50 minus floor p50 (ms)", d, "<= 2 ms", None if d is None else d <= 2.0)


def verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """PASS / MISS per target from the issue (MISSING when a point was not measured)."""
    out = []

    def target(name: str, value: float | None, goal: str, ok: bool | None) -> None:
        out.append({"target": name, "value": value, "goal": goal,
                    "verdict": "MISSING" if ok is None else ("PASS" if ok else "MISS")})

    gw32, fl32 = _find(rows, "gateway v1", 32), _find(rows, "floor", 32)
    ml32 = [r for r in (_find(rows, "mlflow dataframe_split", 32), _find(rows, "mlflow instances", 32)) if r]
    best_ml = max(ml32, key=lambda r: r["rps"]) if ml32 else None
    gw1, fl1 = _find(rows, "gateway v1", 1), _find(rows, "floor", 1)
    ratio = lambda a, b: (a["rps"] / b["rps"] if a and b and b["rps"] else None)
    r = ratio(gw32, best_ml)
    target(f"c=32 gateway req/s vs faster MLflow ({best_ml['system'] if best_ml else '-'})", r, ">= 1.2x",
           None if r is None else r >= 1.2)
    floor_targets(target, "gateway", _find(rows, "gateway v1", 32), fl32, gw1, fl1)
    # Entity keys: the same targets against the floor doing the same Feast read (no MLflow peer).
    floor_targets(target, "entity-key gateway", _find(rows, "gateway entity-key", 32),
                  _find(rows, "floor entity-key", 32), _find(rows, "gateway entity-key", 1),
                  _find(rows, "floor entity-key", 1))
    return out


def print_table(report: dict[str, Any]) -> None:
    rows = report["rows"]
    print()
    header = (f"{'system':<24} {'c':>3} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'x floor':>8} "
              f"{'x best MLflow':>13} {'srv CPU ms/req':>14} {'other CPU-s':>11}")
    print(header)
    print("-" * len(header))
    for conc in report["settings"]["concurrency"]:
        floor = _find(rows, "floor", conc)
        mls = [r for r in (_find(rows, "mlflow dataframe_split", conc), _find(rows, "mlflow instances", conc)) if r]
        best = max(mls, key=lambda r: r["rps"]) if mls else None
        entity_floor = _find(rows, "floor entity-key", conc)
        for r in (r for r in rows if r["concurrency"] == conc):
            base = entity_floor if "entity-key" in r["system"] else floor
            xf = f"{r['rps'] / base['rps']:.2f}" if base and base["rps"] else "-"
            xm = f"{r['rps'] / best['rps']:.2f}" if best and best["rps"] and "entity-key" not in r["system"] else "-"
            print(f"{r['system']:<24} {conc:>3} {r['rps']:>8.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                  f"{r['errors']:>6} {xf:>8} {xm:>13} {r['server_cpu_ms_per_req']:>14.2f} {r['other_cpu_s']:>11.1f}")
    print()
    for v in report["verdicts"]:
        value = "-" if v["value"] is None else f"{v['value']:.2f}"
        print(f"{v['verdict']:<8} {v['target']}: {value} (target {v['goal']})")
    busy = [r["other_cpu_s"] / max(1e-9, r["duration_s"]) for r in rows]
    if busy and max(busy) > 0.25:
        print(f"\nnote: other work used up to {max(busy):.2f} cores during some points; compare with care "
              "(see other_cpu_s per row).")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per point (default 20)")
    parser.add_argument("--warmup", type=float, default=2.0, help="discarded seconds before each point")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=list(CONCURRENCIES))
    parser.add_argument("--only", type=lambda s: s.split(","), default=list(SYSTEMS),
                        help="comma-separated subset of floor,mlflow,gateway,entity")
    parser.add_argument("--with-v2", action="store_true", help="also measure the gateway's v2 infer route")
    parser.add_argument("--direct-ingress", action="store_true",
                        help="start the gateway with RAY_SERVE_THROUGHPUT_OPTIMIZED=1 and also measure the replica's "
                             "own HTTP port (no proxy hop)")
    parser.add_argument("--replicas", type=int, default=None, help="gateway replicas (default: esteira serve's)")
    parser.add_argument("--replica-cpus", type=float, default=1.0, help="num_cpus reserved per gateway replica")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout (counts as an error)")
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/gateway-<time>.json)")
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {unknown}")
    report = run(args)
    report["verdicts"] = verdicts(report["rows"])
    print_table(report)
    out = Path(args.out) if args.out else c.RESULTS_DIR / f"gateway-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nresults: {out}  (total {report['total_s']:.0f} s)")


if __name__ == "__main__":
    main()

"""What every serving benchmark shares: the model, the registry it lives in, payloads, server processes.

The model: ``HistGradientBoostingClassifier`` on 20 float features, trained on seeded synthetic data
(``make_classification``). Two variants of the same training: "named" is fitted on a DataFrame with
columns ``f0..f19`` (what the gateway's signature describes), "array" on the bare numpy array (for
MLflow's tensor-signature ``instances`` path). Both go through esteira's registry (skops format) in a
temporary ``ESTEIRA_HOME``; every baseline serves the very artifact the registry stored.

The churn example (entity-key points, and the feature and search benchmarks) is a project: it is copied
from ``examples/churn`` into a temporary folder (never written in place), its data made by its own
generator, and esteira pointed at the copy with ``ESTEIRA_PROJECT``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
MODEL_NAME = "bench-hgb"
N_FEATURES = 20
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
SIGNATURE = {
    "inputs": [{"name": name, "dtype": "float64"} for name in FEATURES],
    "outputs": [{"name": "label", "dtype": "int64"}, {"name": "probability", "dtype": "float64"}],
}
SEED = 20240611
CHURN_EXAMPLE = "churn"
CHURN_SPEC = "churn"


def dataset(n: int = 10_000, seed: int = SEED) -> tuple[Any, Any]:
    from sklearn.datasets import make_classification

    return make_classification(n_samples=n, n_features=N_FEATURES, n_informative=10, n_redundant=4,
                               random_state=seed)


def train(named: bool = True, *, seed: int = SEED, max_iter: int = 100) -> Any:
    """One HistGradientBoostingClassifier; ``seed`` changes the data and so the model (hot-swap versions)."""
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = dataset(seed=seed)
    model = HistGradientBoostingClassifier(max_iter=max_iter, random_state=0)
    model.fit(pd.DataFrame(X, columns=FEATURES) if named else X, y)
    return model


def sample_row(seed: int = 7) -> dict[str, float]:
    """One realistic row (from the same distribution as training), rounded to keep the body short."""
    X, _ = dataset(n=64, seed=seed)
    return {name: round(float(v), 6) for name, v in zip(FEATURES, X[3], strict=True)}


# -- payloads: one row, in each server's format ----------------------------------------------------------------

def body_v1(row: dict[str, float]) -> dict[str, Any]:
    """esteira gateway ``/v1/models/{name}/predict`` with inline features (and the FastAPI floor)."""
    return {"inputs": [row]}


def body_v2(row: dict[str, float]) -> dict[str, Any]:
    """Open Inference Protocol v2: one ``[1, 20]`` FP64 tensor in signature order."""
    return {"inputs": [{"name": "input-0", "shape": [1, N_FEATURES], "datatype": "FP64",
                        "data": [row[name] for name in FEATURES]}]}


def body_mlflow_split(row: dict[str, float]) -> dict[str, Any]:
    return {"dataframe_split": {"columns": FEATURES, "data": [[row[name] for name in FEATURES]]}}


def body_mlflow_instances(row: dict[str, float]) -> dict[str, Any]:
    return {"instances": [[row[name] for name in FEATURES]]}


# -- registry ----------------------------------------------------------------------------------------------

@dataclass
class BenchRegistry:
    home: Path
    url: str
    artifact_root: str
    versions: dict[str, int]  # label -> version number
    artifact_paths: dict[str, str]  # label -> skops file the registry stored

    def env(self) -> dict[str, str]:
        return {"ESTEIRA_HOME": str(self.home), "ESTEIRA_DATABASE_URL": self.url,
                "ESTEIRA_ARTIFACT_ROOT": self.artifact_root}


def build_registry(home: Path, *, hot_swap_versions: int = 0) -> BenchRegistry:
    """Register the named model (v1, promoted to production) and, for the hot-swap bench, more versions.

    The array variant is registered under ``<name>-array`` (the MLflow ``instances`` baseline serves it).
    """
    from registry import Registry

    home.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{home / 'registry.db'}"
    root = str(home / "artifacts")
    reg = Registry.from_url(url, root)
    versions: dict[str, int] = {}
    paths: dict[str, str] = {}
    try:
        for i in range(1 + hot_swap_versions):
            mv = reg.register_version(MODEL_NAME, train(named=True, seed=SEED + i), signature=SIGNATURE,
                                      metrics={"seed": SEED + i}, description=f"bench model, seed {SEED + i}")
            versions[f"v{i + 1}"] = mv.version
            paths[f"v{i + 1}"] = _local_path(mv.artifact_uri)
        reg.promote(MODEL_NAME, versions["v1"], alias="production", reason="bench")
        mv = reg.register_version(f"{MODEL_NAME}-array", train(named=False), signature=SIGNATURE,
                                  description="bench model fitted on a bare array")
        paths["array"] = _local_path(mv.artifact_uri)
    finally:
        reg.close()
    return BenchRegistry(home=home, url=url, artifact_root=root, versions=versions, artifact_paths=paths)


def churn_project(dest: Path) -> tuple[Path, ModuleType]:
    """``examples/churn`` copied to ``dest`` (no data, no local state) and the copy's own ``generator`` module.

    The copy and the import are the tests' (``tests.projects``): benchmarks never write into ``examples/``.
    """
    from tests.projects import copy_example, project_module

    root = copy_example(CHURN_EXAMPLE, dest)
    return root, project_module(root, "generator")


@dataclass
class ChurnBench(BenchRegistry):
    """The churn model the training flow registered over a materialized Feast store (entity-key points)."""

    project: Path | None = None
    model: str = "churn"
    feature_service: str = ""
    input_names: tuple[str, ...] = ()
    family: str = ""
    customer_id: int = 0

    def env(self) -> dict[str, str]:
        return {**super().env(), **({"ESTEIRA_PROJECT": str(self.project)} if self.project else {})}


def build_churn_home(work: Path, *, customers: int = 5_000, log_dir: Path) -> ChurnBench:
    """The churn example's model made the way a user makes it, with the real flows.

    ``examples/churn`` is copied to ``work/project``, its own generator writes ``customers`` customers of
    history into the copy's ``data/``, then ``esteira materialize`` (apply + online store load) and
    ``esteira train run churn --sequential`` run as subprocesses with ``ESTEIRA_PROJECT`` set to the copy
    (settings are process-wide); the state is the project's own ``.esteira``. Logs go to ``log_dir``.
    """
    from registry import Registry

    root, generator = churn_project(work / "project")
    generator.generate_batch(root / "data", n_customers=customers)
    home = root / ".esteira"
    home.mkdir(parents=True, exist_ok=True)
    url, artifacts = f"sqlite:///{home / 'registry.db'}", str(home / "artifacts")
    env = {**os.environ, "ESTEIRA_PROJECT": str(root), "ESTEIRA_HOME": str(home), "ESTEIRA_DATABASE_URL": url,
           "ESTEIRA_ARTIFACT_ROOT": artifacts, "PYTHONWARNINGS": "ignore", "WHYLOGS_NO_ANALYTICS": "1"}
    log_dir.mkdir(parents=True, exist_ok=True)
    for step, args in (("materialize", ["materialize"]),
                       ("train", ["train", "run", CHURN_SPEC, "--sequential"])):
        with open(log_dir / f"churn-{step}.log", "wb") as log:
            done = subprocess.run([python_exe(), "-m", "esteira.cli", *args], cwd=REPO_DIR, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, timeout=900)
        if done.returncode:
            raise RuntimeError(f"esteira {step} failed; see {log_dir / f'churn-{step}.log'}")
    reg = Registry.from_url(url, artifacts)
    try:
        mv = reg.get_by_alias(CHURN_SPEC, "production")
        inputs = tuple(col["name"] for col in mv.signature["inputs"])
        return ChurnBench(home=home, url=url, artifact_root=artifacts, versions={"v1": mv.version},
                          artifact_paths={"v1": _local_path(mv.artifact_uri)}, project=root, model=CHURN_SPEC,
                          feature_service=mv.feature_service, input_names=inputs,
                          family=str((mv.params or {}).get("family", "")),
                          customer_id=generator.FIRST_CUSTOMER_ID + 17)
    finally:
        reg.close()


def body_entity(churn: ChurnBench, days_until_renewal: int = 12) -> dict[str, Any]:
    """The gateway's entity-key body: keys only, plus the request-time field the on-demand view needs
    (``customer_id`` and ``days_until_renewal``: the churn example's join key and request field)."""
    return {"entities": {"customer_id": churn.customer_id}, "request_data": {"days_until_renewal": days_until_renewal}}


def _local_path(uri: str) -> str:
    return uri.removeprefix("file://")


# -- server processes --------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server in its own process group, logging to a file; stopped by its own pid, never by name."""

    def __init__(self, name: str, cmd: list[str], *, env: dict[str, str] | None = None, log_dir: Path,
                 cwd: Path = REPO_DIR) -> None:
        self.name = name
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        # A mark in the environment every process it starts inherits: Ray Serve's HAProxy daemonises (parent
        # 1, a session of its own), so only the mark finds it when the server stops.
        self.mark = f"{name}-{os.getpid()}-{time.monotonic_ns()}"
        full_env = {**os.environ, **(env or {}), "ESTEIRA_BENCH_SERVER": self.mark}
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, url: str, *, timeout_s: float = 120.0, method: str = "GET", body: Any = None,
                   ok: tuple[int, ...] = (200,)) -> float:
        """Poll ``url`` until it answers one of ``ok``; returns seconds waited. Raises with the log's tail."""
        start = time.monotonic()
        data = json.dumps(body).encode() if body is not None else None
        last = ""
        while time.monotonic() - start < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                req = urllib.request.Request(url, data=data, method=method,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=5) as resp:
                    if resp.status in ok:
                        return time.monotonic() - start
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                if exc.code in ok:
                    return time.monotonic() - start
                last = f"HTTP {exc.code}: {exc.read()[:300]!r}"
            except (OSError, urllib.error.URLError) as exc:
                last = repr(exc)
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f} s ({last}):\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 40.0) -> None:
        """SIGINT to the server's process group, SIGKILL after ``timeout_s``; then SIGKILL to any process that
        carries its mark and is still there: Ray Serve's HAProxy outlives a group signal."""
        import psutil

        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        for proc in psutil.process_iter():
            try:
                if proc.environ().get("ESTEIRA_BENCH_SERVER") == self.mark:
                    proc.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        self._log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def post_json(url: str, body: Any, timeout_s: float = 10.0) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


def python_exe() -> str:
    return sys.executable


# -- commands for each server under test -------------------------------------------------------------------

_GATEWAY_LAUNCH = r'''
import inspect, json, sys
from esteira.commands.serve import serve_command
wanted = json.loads(sys.argv[1])
accepted = inspect.signature(serve_command).parameters
ignored = sorted(set(wanted) - set(accepted))
if ignored:
    print(f"bench launcher: serve_command does not take {ignored}; using its defaults", flush=True)
serve_command(**{k: v for k, v in wanted.items() if k in accepted})
'''


def gateway_command(port: int, model: str = MODEL_NAME, **options: object) -> list[str]:
    """``esteira serve`` as a process (esteira.commands.serve.serve_command: HAProxy ingress, always on) on
    local Ray, serving this model only.

    Anything not given (replicas, proxy mode...) is the command's own default: what ``esteira serve`` ships.
    Options ``serve_command`` does not take (its signature moves while it is written) are dropped, said so.
    """
    wanted = {"host": "127.0.0.1", "port": port, "model": [model], "shadow_alias": "", "access_log": False,
              **{k: v for k, v in options.items() if v is not None}}
    return [python_exe(), "-c", _GATEWAY_LAUNCH, json.dumps(wanted)]


def gateway_env(reg: BenchRegistry, extra: dict[str, str] | None = None) -> dict[str, str]:
    # Ray's HAProxy mode binds fixed stats/metrics ports (8404, 9101, on 0.0.0.0): free ones, so a bench
    # gateway can run beside another gateway on the same machine.
    # "local": always a new Ray instance of our own, never an existing cluster on this machine (another
    # session's), which ray.init(address=None) would join.
    env = {**reg.env(), "RAY_ADDRESS": "local", "ESTEIRA_RAY_ADDRESS": "local", "RAY_USAGE_STATS_ENABLED": "0",
           "WHYLOGS_NO_ANALYTICS": "1", "PYTHONWARNINGS": "ignore",
           "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()), "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port())}
    return {**env, **(extra or {})}


def floor_command(artifact: str, port: int, *, version: int = 1, input_kind: str = "numpy", name: str = MODEL_NAME,
                  features: tuple[str, ...] | None = None, feature_service: str | None = None) -> list[str]:
    cmd = [python_exe(), str(BENCH_DIR / "baselines" / "fastapi_app.py"), "--artifact", artifact, "--port", str(port),
           "--name", name, "--version", str(version), "--input", input_kind]
    if features:
        cmd += ["--features", ",".join(features)]
    if feature_service:
        cmd += ["--feature-service", feature_service]
    return cmd


# -- CPU accounting: who used the 2 cores during a measurement ---------------------------------------------

class CpuMeter:
    """CPU seconds of a process tree (the server under test) and of the whole machine over a window."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._start: tuple[float, float, float] | None = None
        self._seen: dict[int, float] = {}
        self._names: dict[int, str] = {}
        self._base: dict[int, float] = {}

    def _tree_cpu(self) -> float:
        import psutil

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return sum(self._seen.values())
        for proc in procs:
            try:
                t = proc.cpu_times()
                self._seen[proc.pid] = t.user + t.system
                if proc.pid not in self._names:
                    self._names[proc.pid] = _short_name(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return sum(self._seen.values())

    @staticmethod
    def _machine() -> tuple[float, float]:
        """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
        fields = [float(x) for x in open("/proc/stat").readline().split()[1:]]
        tick = os.sysconf("SC_CLK_TCK")
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
        return (sum(fields) - idle) / tick, sum(fields) / tick

    def start(self) -> None:
        self._seen.clear()
        self._tree_cpu()
        self._base = dict(self._seen)
        busy, total = self._machine()
        self._start = (sum(self._seen.values()), busy, total)

    def stop(self) -> dict[str, float]:
        assert self._start is not None
        tree = self._tree_cpu()
        busy, total = self._machine()
        t0, b0, tot0 = self._start
        cores = os.cpu_count() or 1
        wall = (total - tot0) / cores
        by_process: dict[str, float] = {}
        for pid, cpu in self._seen.items():
            name = self._names.get(pid, str(pid))
            by_process[name] = by_process.get(name, 0.0) + cpu - self._base.get(pid, 0.0)
        top = dict(sorted(((k, round(v, 2)) for k, v in by_process.items() if v >= 0.05), key=lambda kv: -kv[1]))
        return {"server_cpu_s": tree - t0, "machine_busy_cpu_s": busy - b0, "wall_s": wall,
                "machine_busy_pct": 100 * (busy - b0) / max(1e-9, total - tot0), "cpu_s_by_process": top}


def _short_name(proc: Any) -> str:
    """A readable process name: Ray actors by their title (ray::ProxyActor), others by their main file."""
    try:
        cmd = proc.cmdline()
    except Exception:  # noqa: BLE001 - gone or hidden
        return str(proc.pid)
    if cmd and cmd[0].startswith("ray::"):
        return cmd[0].split()[0]
    for part in cmd[1:]:
        if part.endswith(".py") or part.endswith("_server") or part.endswith("raylet"):
            return Path(part).name
    return Path(cmd[0]).name if cmd else str(proc.pid)

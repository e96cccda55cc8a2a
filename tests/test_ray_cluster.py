"""The search on a real two-node Ray cluster (head + one worker, 1 CPU each), as ``RAY_ADDRESS`` users run it.

Everything Ray here is isolated from the test session's own local Ray (``ray_local``) and from any
other Ray on the machine: the cluster gets its own temp dir and free ports, the client runs in a
subprocess with ``RAY_ADDRESS`` set, and teardown stops exactly the processes this test started
(``ray start --block`` owns its node's processes and stops them on SIGTERM; a sweep by the unique
temp dir catches stragglers). Never ``ray stop``: it kills every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from core.ray_runtime import ray_token_file, token_auth_env

CLIENT = r"""
import json, ray
import numpy as np, pandas as pd
from sklearn.datasets import make_classification
from core.ray_runtime import ensure_ray
from flows.search import CVSettings, run_on_ray, trial_configs

import time
ensure_ray()  # joins RAY_ADDRESS
deadline = time.monotonic() + 120
while sum(n["Alive"] for n in ray.nodes()) < 2 and time.monotonic() < deadline:
    time.sleep(0.5)  # the worker node registers some seconds after the head
resources = ray.cluster_resources()
X, y = make_classification(n_samples=400, n_features=6, random_state=0)
frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
frame["cat"] = np.where(X[:, 0] > 0, "a", "b")
configs = trial_configs([("logistic_regression", {"C": 1.0}), ("random_forest", {"n_estimators": 10}),
                         ("hist_gradient_boosting", {"max_iter": 10}), ("logistic_regression", {"C": -1.0})], 0,
                        "binary")
settings = CVSettings("binary", "roc_auc", 2, "stratified", 0, tuple(f"f{i}" for i in range(6)), ("cat",))
results = run_on_ray(configs, frame, y, settings)

@ray.remote(num_cpus=1)
def where(_):
    import time
    time.sleep(1.0)
    return ray.get_runtime_context().get_node_id()

nodes = set(ray.get([where.remote(i) for i in range(2)]))
print("RESULT " + json.dumps({"cpus": resources.get("CPU"), "alive": sum(n["Alive"] for n in ray.nodes()),
                              "task_nodes": len(nodes), "statuses": [r.status for r in results]}))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ports() -> list[str]:
    names = ("--node-manager-port", "--object-manager-port", "--metrics-export-port", "--runtime-env-agent-port",
             "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port")
    return [f"{name}={_free_port()}" for name in names]


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _sweep(marker: str) -> None:
    """Kill processes of this cluster only: their command line names our unique temp dir."""
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or []):
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


@pytest.fixture
def two_node_cluster() -> Iterator[tuple[str, dict[str, str]]]:
    """(the head's address, the environment of its nodes and clients: token authentication on)."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    temp_dir = tempfile.mkdtemp(prefix="rc-", dir="/tmp")  # short: Ray's unix sockets live under it
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RAY_USAGE_STATS_ENABLED": "0",
           **token_auth_env(ray_token_file(Path(temp_dir) / "auth_token"))}  # nodes and clients need the token
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN", None)
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--block", "--disable-usage-stats"]
    head = subprocess.Popen(
        [ray_bin, "start", "--head", f"--port={port}", f"--temp-dir={temp_dir}", "--include-dashboard=false",
         f"--ray-client-server-port={_free_port()}", f"--min-worker-port={_free_port()}",
         "--max-worker-port=0", *_ports(), *common],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        else:
            pytest.fail("the Ray head did not come up in 60 s")
        worker = subprocess.Popen([ray_bin, "start", f"--address={address}", *_ports(), *common],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield address, env
    finally:
        for proc in (worker, head):
            if proc is not None:
                _kill_tree(proc)
        _sweep(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_search_runs_across_two_nodes(two_node_cluster: tuple[str, dict[str, str]]) -> None:
    address, cluster_env = two_node_cluster
    env = {**cluster_env, "RAY_ADDRESS": address}
    env.pop("ESTEIRA_RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-c", CLIENT], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["alive"] == 2 and result["cpus"] == 2.0
    assert result["task_nodes"] == 2  # two 1-CPU tasks at once must land on both nodes
    assert result["statuses"] == ["succeeded", "succeeded", "succeeded", "failed"]

"""The search on a real two-node Ray cluster (head + one worker, 1 CPU each), as ``RAY_ADDRESS`` users run it.

Everything Ray here is isolated from the test session's own local Ray (``ray_local``) and from any
other Ray on the machine (``tests/ray_cluster.py``); the client runs in a subprocess with ``RAY_ADDRESS``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.ray_cluster import two_node_ray

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


@pytest.fixture
def two_node_cluster() -> Iterator[tuple[str, dict[str, str]]]:
    """(the head's address, the environment of its nodes and clients): two nodes of 1 CPU each."""
    with two_node_ray(cpus_per_node=1) as cluster:
        yield cluster


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

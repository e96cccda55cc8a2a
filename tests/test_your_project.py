"""A team's own project, from `esteira init` to retraining, touching only files of that project.

What a newcomer does, through the `esteira` command in subprocesses: `esteira init`, then a domain of
their own is added with files only (a Feast definitions module, a model spec, parquet data): machines at
sites, a composite key (machine, site), two views with different TTLs, a request field used directly as a
model input, a multiclass label. Then `features plan`, `materialize`, `train run`, `serve` and a prediction
by entity key over HTTP, `monitor` on a batch of entity rows whose drift starts the retrain, and the new
version in the registry. No file of esteira is written (a check at the end).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from core.settings import ESTEIRA_ROOT
from gateway.testing import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DEFINITIONS = '''
"""Machines at sites: what fails, and how."""
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.types import Float64, Int64, String
from feast.value_type import ValueType

machine = Entity(name="machine", join_keys=["machine_id"], value_type=ValueType.INT64)
site = Entity(name="site", join_keys=["site_code"], value_type=ValueType.STRING)

machine_profile = FeatureView(
    name="machine_profile", entities=[machine], ttl=timedelta(days=400),
    schema=[Field(name="machine_id", dtype=Int64), Field(name="model_family", dtype=String),
            Field(name="age_years", dtype=Float64)],
    source=FileSource(name="machine_profile_source", path="data/machines.parquet", timestamp_field="event_timestamp"),
)
machine_at_site_hourly = FeatureView(
    name="machine_at_site_hourly", entities=[machine, site], ttl=timedelta(hours=6),
    schema=[Field(name="machine_id", dtype=Int64), Field(name="site_code", dtype=String),
            Field(name="temperature", dtype=Float64), Field(name="vibration", dtype=Float64),
            Field(name="load_pct", dtype=Int64)],
    source=FileSource(name="readings_source", path="data/readings", timestamp_field="event_timestamp"),
)
failure_v1 = FeatureService(name="failure_v1", features=[machine_profile, machine_at_site_hourly])
'''

SPEC = """
name: failure_mode
task: multiclass
feature_service: failure_v1
label: mode
labels: {source: data/inspections.parquet, timestamp_column: inspected_at, start: -30d}
request_features: [shift]
candidates:
  - {family: logistic_regression, params: {max_iter: 500}}
  - {family: random_forest, params: {n_estimators: 30, max_depth: 6}}
cv: {folds: 2}
validation: {min_rows: 200, min_class_rows: 5}
promotion: {min_metric: 0.4}
monitoring: {min_rows: 50, min_labelled: 30, ks_min_statistic: 0.1, cooldown_minutes: 0}
"""

MODES = np.array(["none", "bearing", "overheat"], dtype=object)


def readings(machines: int, hours: int, end: datetime, seed: int, *, hot: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    stamps = pd.date_range(end - timedelta(hours=hours), periods=hours, freq="h", tz="UTC")
    n = machines * hours
    return pd.DataFrame({
        "machine_id": np.repeat(np.arange(machines), hours),
        "site_code": np.repeat(np.where(np.arange(machines) % 2 == 0, "LIS", "OPO"), hours),
        "temperature": rng.normal(60 + hot, 8, n), "vibration": rng.gamma(2.0, 1.0 + hot / 20, n),
        "load_pct": rng.integers(20, 100, n), "event_timestamp": np.tile(stamps, machines),
    })


def inspections(frame: pd.DataFrame, count: int, seed: int) -> pd.DataFrame:
    """Labelled inspections half an hour after a reading: the truth follows the readings."""
    rng = np.random.default_rng(seed)
    rows = frame.iloc[rng.choice(len(frame), count, replace=False)].reset_index(drop=True)
    shift = rng.choice(["day", "night"], count)
    score = (rows["temperature"] - 60) / 8 + (shift == "night") * 0.5
    mode = np.where(score > 1.0, "overheat", np.where(rows["vibration"] > 3.0, "bearing", "none"))
    return pd.DataFrame({"machine_id": rows["machine_id"], "site_code": rows["site_code"],
                         "inspected_at": rows["event_timestamp"] + timedelta(minutes=30), "shift": shift,
                         "mode": mode})


def esteira(project: Path, env: dict[str, str], *args: str, timeout: float = 300) -> str:
    done = subprocess.run([sys.executable, "-m", "esteira.cli", *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"esteira {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_a_project_of_its_own_from_init_to_retraining(tmp_path: Path) -> None:
    esteira_files = ["status", "--porcelain", "--", "core", "registry", "feature_repo", "flows", "gateway", "console",
                     "esteira", "deployments.yaml", "pyproject.toml"]
    before = subprocess.run(["git", "-C", str(ESTEIRA_ROOT), *esteira_files], capture_output=True, text=True,
                            check=False).stdout
    project = tmp_path / "plant"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESTEIRA_", "PREFECT_API", "RAY_ADDRESS"))}
    env.update({"COLUMNS": "200", "ESTEIRA_GATEWAY_PORT": str(free_port())})
    # As on a cluster: the gateway's replicas get the project as Ray ships code (the folder uploaded as their
    # working directory, without .esteira/ and data/), and reach the stores through shared locations.
    home = project / ".esteira"
    env.update({"ESTEIRA_RAY_SHIP_PROJECT": "always", "ESTEIRA_HOME": str(home),
                "ESTEIRA_FEAST_REGISTRY": str(home / "feast" / "registry.db"), "ESTEIRA_FEAST_ONLINE_STORE": "sqlite"})

    esteira(tmp_path, env, "init", "plant")
    assert (project / "feature_store.yaml").is_file() and (project / "specs" / "plant.yaml").is_file()

    # The team's domain: files in the project, nothing else.
    (project / "features" / "plant.py").write_text(DEFINITIONS)
    (project / "specs" / "failure_mode.yaml").write_text(SPEC)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    data = project / "data"
    pd.DataFrame({"machine_id": np.arange(40), "model_family": np.where(np.arange(40) % 3 == 0, "A", "B"),
                  "age_years": np.linspace(0.5, 12, 40), "event_timestamp": now - timedelta(days=200)}
                 ).to_parquet(data / "machines.parquet", index=False)
    (data / "readings").mkdir()
    history = readings(40, 24 * 14, now - timedelta(days=3), seed=1)
    history.to_parquet(data / "readings" / "history.parquet", index=False)
    inspections(history, 900, seed=2).to_parquet(data / "inspections.parquet", index=False)
    # and the init sample goes: its definitions removed, apply will remove its Feast objects
    (project / "features" / "items.py").unlink()
    (project / "specs" / "plant.yaml").unlink()

    plan = json.loads(esteira(project, env, "features", "plan", "--json"))
    actions = {(c["action"], c["name"]) for c in plan["changes"]}
    assert {("add", "machine_at_site_hourly"), ("add", "failure_v1")} <= actions
    esteira(project, env, "materialize")
    trained = json.loads(esteira(project, env, "train", "run", "failure_mode", "--sequential", "--json"))
    assert trained["promoted"] and trained["version"] == 1, trained
    assert set(trained["metrics"]) >= {"holdout_accuracy", "cv_accuracy"}

    port = int(env["ESTEIRA_GATEWAY_PORT"])
    server = subprocess.Popen([sys.executable, "-m", "esteira.cli", "serve", "--replicas", "1", "--replica-cpus", "0"],
                              cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stdout.read() if server.stdout else "esteira serve exited"
            time.sleep(1)
        answer = httpx.post(f"{url}/v1/models/failure_mode/predict", timeout=30,
                            json={"entities": {"machine_id": 4, "site_code": "LIS"}, "request_data": {"shift": "night"}})
        assert answer.status_code == 200, answer.text
        prediction = answer.json()["predictions"][0]
        assert prediction["label"] in MODES and set(prediction["probabilities"]) == set(MODES)
        unknown = httpx.post(f"{url}/v1/models/failure_mode/predict", timeout=30,
                             json={"entities": {"machine_id": 4000, "site_code": "XXX"},
                                   "request_data": {"shift": "day"}})
        assert unknown.status_code == 404 and "machine_id=4000" in unknown.json()["error"]
        docs = httpx.get(f"{url}/openapi.json", timeout=30).json()
        assert "/v1/models/failure_mode/predict" in docs["paths"]
        replica_project = httpx.get(f"{url}/v1/admin/status", timeout=30).json()["project"]  # the detail, not the probe
        assert replica_project != str(project) and "working_dir" in replica_project  # Ray's unpacked copy
    finally:
        server.terminate()
        try:
            server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            server.kill()

    # Later: the machines run hot. New readings and inspections arrive; a batch of them is monitored, its
    # drift decides a retrain, and the retrain trains on the window that now holds the new data.
    later = readings(40, 24 * 3, now, seed=3, hot=15.0)
    later.to_parquet(data / "readings" / "later.parquet", index=False)
    recent = inspections(later, 300, seed=4)
    pd.concat([pd.read_parquet(data / "inspections.parquet"), recent]).to_parquet(data / "inspections.parquet",
                                                                                  index=False)
    recent.to_parquet(data / "batch.parquet", index=False)  # entity rows + timestamps + labels, no features
    outcome = json.loads(esteira(project, env, "monitor", "failure_mode", "--batch", "data/batch.parquet",
                                 "--trigger", "direct", timeout=600))
    assert outcome["decision"] == "retrain", outcome
    assert "temperature" in outcome["reason"] or outcome["drift_share"] > 0
    from registry import Registry

    registry = Registry.from_url(f"sqlite:///{project / '.esteira' / 'registry.db'}")  # the project's own home
    try:
        versions = registry.list_versions("failure_mode")
        report = registry.get_report(outcome["report_id"])
        retrain_run = registry.get_run(versions[0].training_run_id)
    finally:
        registry.close()
    assert [v.version for v in versions] == [2, 1]
    assert report.triggered_run and report.triggered_run != "pending"
    assert retrain_run.summary["window"]["end"] > (now - timedelta(minutes=5)).isoformat()
    assert versions[0].training_set_sha256 != versions[1].training_set_sha256  # fresh data, not the same rows

    after = subprocess.run(["git", "-C", str(ESTEIRA_ROOT), *esteira_files], capture_output=True, text=True,
                           check=False).stdout
    assert after == before, "the project's life wrote into esteira's own folder"

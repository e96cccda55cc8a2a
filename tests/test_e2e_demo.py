"""The whole loop, as the README's main command runs it, on a copy of the churn example, on free ports.

Drift is injected, the monitor's Prefect event starts the retrain deployment on the worker, v2 is
promoted, and the gateway answers with v2 while clients keep sending requests: none may fail.
The demo runs in its own process, as a user runs it, so that its Ray cluster is not this session's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.testing import free_port

pytestmark = pytest.mark.slow


def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    from tests.projects import copy_example

    project = copy_example("churn", tmp_path / "churn")
    home = tmp_path / "home"
    summary_file = tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESTEIRA_", "PREFECT_", "RAY_ADDRESS"))}
    env.update({"ESTEIRA_HOME": str(home), "ESTEIRA_PREFECT_PORT": str(free_port()),
                "ESTEIRA_GATEWAY_PORT": str(free_port()), "ESTEIRA_STACK_RAY_PORT": str(free_port()),
                "COLUMNS": "160"})
    command = [sys.executable, "-m", "esteira.cli", "demo", str(project), "--scale", "0.5",
               "--summary-json", str(summary_file)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    finally:  # whatever happened, leave no stack behind
        subprocess.run([sys.executable, "-m", "esteira.cli", "--project", str(project), "down"], env=env,
                       capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    summary = json.loads(summary_file.read_text())

    steady, drifted = summary["reports"]
    assert drifted["decision"] == "retrain" and drifted["drift_share"] >= 0.3
    assert drifted["drift_share"] > steady["drift_share"]
    assert drifted["triggered_run"].startswith("event:"), "the retrain must start through the Prefect event"

    swap = summary["swap"]
    assert (swap["from_version"], swap["to_version"]) == (1, 2)
    assert swap["failed"] == 0 and swap["requests"] > 100
    assert swap["promotion_to_first_v2_response_s"] is not None and swap["promotion_to_first_v2_response_s"] < 2.0

    versions = {v["version"]: v for v in summary["versions"]}
    assert versions[2]["aliases"] == ["production"]
    assert versions[2]["flow_run_id"], "v2 must record the retrain flow run that made it"
    assert versions[2]["holdout_metric"] > versions[2]["production_holdout_metric"]

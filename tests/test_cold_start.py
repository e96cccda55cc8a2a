"""What keeps a cold start short, checked the way a user starts things: through ``uv run``.

The figures (``esteira serve`` to its first answer, ``esteira up``, a CLI command) are measured by
``bench/bench_cold_start.py``; these tests pin the causes, so that a change bringing one back fails here:

- Ray 2.60 turns a driver started by ``uv run`` into a job whose workers run through ``uv run`` in an
  uploaded copy of the working directory (``RAY_ENABLE_UV_RUN_RUNTIME_ENV``): a second virtualenv of the whole
  lock, 25+ s before the first replica. Every ``ray.init`` of esteira's must turn that off.
- ``compile-bytecode`` in ``pyproject.toml`` makes uv recompile the environment before every ``uv run``
  (astral-sh/uv#12202), printing a line the user did not ask for.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UV = shutil.which("uv")
needs_uv = pytest.mark.skipif(UV is None, reason="uv is not on PATH (the README's commands install it)")

# A driver started by `uv run`, as `esteira serve` and the flows are: which runtime environment did Ray give
# the job? Ray's uv propagation shows as a `py_executable` of "uv run ..." (ray/_private/runtime_env/
# uv_runtime_env_hook.py).
DRIVER = r"""
import json, sys
import ray
if sys.argv[1] == "gateway":
    from gateway.launch import connect_for_serving
    connect_for_serving()
else:
    from core.ray_runtime import ensure_ray
    ensure_ray(num_cpus=1)
env = ray.get_runtime_context().runtime_env
print(json.dumps({"py_executable": env.get("py_executable"), "working_dir": env.get("working_dir")}))
ray.shutdown()
"""


def _uv_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_ADDRESS", "ESTEIRA_RAY", "RAY_ENABLE_UV", "VIRTUAL_ENV"))}
    env.update({"ESTEIRA_HOME": str(tmp_path / "home"), "RAY_ADDRESS": "local", "RAY_USAGE_STATS_ENABLED": "0",
                "PYTHONWARNINGS": "ignore"})
    return env


@needs_uv
@pytest.mark.slow
@pytest.mark.parametrize("entry", ["flows", "gateway"])
def test_a_driver_under_uv_run_keeps_this_environment_for_its_workers(entry: str, tmp_path: Path) -> None:
    done = subprocess.run([UV, "run", "--frozen", "python", "-c", DRIVER, entry], cwd=ROOT, env=_uv_env(tmp_path),
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    runtime_env = json.loads(done.stdout.strip().splitlines()[-1])
    assert runtime_env == {"py_executable": None, "working_dir": None}, runtime_env


@needs_uv
def test_uv_run_of_a_command_prints_only_the_command(tmp_path: Path) -> None:
    done = subprocess.run([UV, "run", "--frozen", "esteira", "--version"], cwd=ROOT, env=_uv_env(tmp_path),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("esteira "), done.stdout
    assert done.stderr == "", f"uv or esteira printed what the command did not: {done.stderr!r}"


def test_bytecode_is_compiled_at_install_not_before_every_run() -> None:
    uv_settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]
    assert not uv_settings.get("compile-bytecode"), "astral-sh/uv#12202: uv run would recompile every time"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "uv sync --frozen --compile-bytecode" in ci

"""A real two-node Ray cluster on 127.0.0.1 for tests, isolated from every other Ray on the machine.

The cluster gets its own temp dir, free ports and token authentication; clients join it from a subprocess
with ``RAY_ADDRESS``. Teardown stops exactly the processes it started (``ray start --block`` owns its
node's processes and stops them on SIGTERM; a sweep by the unique temp dir catches stragglers). Never
``ray stop``: it kills every Ray on the machine.
"""

from __future__ import annotations

import contextlib
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def node_ports() -> list[str]:
    names = ("--node-manager-port", "--object-manager-port", "--metrics-export-port", "--runtime-env-agent-port",
             "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port")
    return [f"{name}={free_port()}" for name in names]


def sweep(marker: str) -> None:
    """Kill processes of this cluster only: their command line names our unique temp dir."""
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or []):
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


@contextlib.contextmanager
def two_node_ray(cpus_per_node: int) -> Iterator[tuple[str, dict[str, str]]]:
    """(the head's address, the environment of its nodes and clients: token authentication on)."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    temp_dir = tempfile.mkdtemp(prefix="rc-", dir="/tmp")  # short: Ray's unix sockets live under it
    port = free_port()
    address = f"127.0.0.1:{port}"
    # No drain on SIGTERM: Ray 2.60's nodes otherwise wait up to 30 s for Serve replicas these clusters never have.
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
           **token_auth_env(ray_token_file(Path(temp_dir) / "auth_token"))}  # nodes and clients need the token
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN", None)
    common = [f"--num-cpus={cpus_per_node}", "--node-ip-address=127.0.0.1", "--block", "--disable-usage-stats"]
    head = subprocess.Popen(
        [ray_bin, "start", "--head", f"--port={port}", f"--temp-dir={temp_dir}", "--include-dashboard=false",
         f"--ray-client-server-port={free_port()}", f"--min-worker-port={free_port()}",
         "--max-worker-port=0", *node_ports(), *common],
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
        worker = subprocess.Popen([ray_bin, "start", f"--address={address}", *node_ports(), *common],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield address, env
    finally:
        started = [proc for proc in (worker, head) if proc is not None and proc.poll() is None]
        for proc in started:
            proc.send_signal(signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        sweep(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)

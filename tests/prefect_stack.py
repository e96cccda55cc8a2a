"""Test helpers for a real local Prefect stack (server + process worker) in a temporary home.

Everything waits with a deadline: a hung server or worker fails the test with the log tail instead
of hanging CI.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.settings import Settings
from esteira.stack import StackInfo, start_stack, stop_stack, use_stack


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_stack(home: Path, *, project: Path | None = None, timeout: float = 150.0
                  ) -> Iterator[tuple[Settings, StackInfo]]:
    """Start a stack of ``project`` under ``home`` on a free port, without the scheduler (no surprise runs),
    and always stop it, even if the start failed half-way."""
    settings = Settings(home=home, project=project, prefect_port=free_port())
    try:
        info = start_stack(settings, scheduler=False, timeout=timeout)
        with use_stack(settings):
            yield settings, info
    finally:
        stop_stack(settings)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    """Poll until ``predicate()`` returns something truthy; return it, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def flow_runs_of(deployment_name: str) -> list[Any]:
    """Flow runs of ``flow/deployment`` on the current (``use_stack``) server, newest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(deployment_name)
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        )

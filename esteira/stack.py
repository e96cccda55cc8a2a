"""The local stack of a project: a Prefect server, the ``esteira-local`` process work pool, a worker, the
deployments of ``deployments.yaml``, a Ray head and the gateway, all under the project's ``ESTEIRA_HOME``.

Why a stack and not ephemeral mode: in ephemeral mode every process starts its own temporary server
(~10 s each) and nothing stays up to run schedules, evaluate automations (the drift -> retrain
trigger) or show the UI. ``esteira up`` starts one persistent server that all of that shares.

Isolation: the server's ``PREFECT_HOME`` (its SQLite database, profiles, memo files) lives under
``<home>/prefect`` and it binds ``127.0.0.1`` on ``settings.prefect_port`` (4242 by default), so a
user's own ``~/.prefect`` and a server on Prefect's default port 4200 are left alone. Children get an
environment from which any inherited variable that would point them at another server, home or
profile has been removed.

State: pids, URLs and log paths go to ``<home>/stack.json``; logs to ``<home>/logs/``. Processes
are started in their own session (process group) so that ``stop_stack`` can end exactly them and
their children, by id, and they outlive the ``esteira up`` command that started them.

Project: the worker, the Ray head and the gateway get ``ESTEIRA_PROJECT`` (absolute), so every flow run the
worker starts, from a schedule, the UI or an event trigger, acts on that project unless its ``project``
parameter says otherwise.

Exposure: the Ray head requires Ray's token authentication (a token under ``<home>/ray/``, passed to the worker
and through it to every flow run) and listens on loopback only (:func:`core.ray_runtime.stack_ray_env`). The
gateway off loopback needs its tokens (:mod:`gateway.exposure`), checked before anything starts.

The same functions serve the CLI (:mod:`esteira.commands.stack`), the end-to-end demo and the tests.
POSIX only (process groups, ``fcntl``), like the rest of the local tooling.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from core.network import client_host
from core.ray_runtime import stack_ray_env, use_ray_env
from core.settings import ESTEIRA_ROOT, Settings, get_settings
from gateway.launch import HAPROXY_ENV

WORK_POOL = "esteira-local"
"""The process work pool every deployment in ``deployments.yaml`` targets."""

DEPLOYMENTS_FILE = "deployments.yaml"

STACK_FILE = "stack.json"

# Inherited variables that would point a child at another server, database, home or profile.
# Anything else (logging level, timeouts...) passes through so a user can still tune Prefect.
_FOREIGN_PREFECT_VARS: frozenset[str] = frozenset(
    {
        "PREFECT_HOME",
        "PREFECT_PROFILE",
        "PREFECT_PROFILES_PATH",
        "PREFECT_API_URL",
        "PREFECT_API_KEY",
        "PREFECT_API_AUTH_STRING",
        "PREFECT_SERVER_API_AUTH_STRING",
        "PREFECT_UI_URL",
        "PREFECT_UI_API_URL",
        "PREFECT_SERVER_API_HOST",
        "PREFECT_SERVER_API_PORT",
        "PREFECT_API_DATABASE_CONNECTION_URL",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL",
        "PREFECT_LOCAL_STORAGE_PATH",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH",
    }
)


class StackError(RuntimeError):
    """The stack could not be started or reached; the message says what to do."""


@dataclass
class StackInfo:
    """What ``esteira up`` started, as written to ``<home>/stack.json``."""

    api_url: str
    ui_url: str
    prefect_home: str
    work_pool: str
    project_dir: str  # where deployments.yaml was deployed from (esteira's own folder)
    project: str | None = None  # the user's project the flows act on
    server_pid: int | None = None
    worker_pid: int | None = None
    scheduler: bool = True
    deployments: list[str] = field(default_factory=list)
    skipped_deployments: list[str] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)
    started_at: str = ""
    timings_s: dict[str, float] = field(default_factory=dict)
    ray_pid: int | None = None
    ray_address: str | None = None
    gateway_url: str | None = None
    console_pid: int | None = None
    console_url: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StackInfo:
        data = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class StackStatus:
    """A snapshot for ``esteira status``: what runs, what answers."""

    info: StackInfo | None
    server_running: bool
    server_healthy: bool
    worker_running: bool
    workers_online: list[str]
    deployments: list[str]

    @property
    def up(self) -> bool:
        return self.server_healthy and self.worker_running


# -- locations and environment --------------------------------------------------------------------


def _settings(settings: Settings | None) -> Settings:
    return settings or get_settings()


def prefect_home(settings: Settings | None = None) -> Path:
    """The stack's own ``PREFECT_HOME``: never the user's ``~/.prefect``."""
    return _settings(settings).home / "prefect"


def logs_dir(settings: Settings | None = None) -> Path:
    return _settings(settings).home / "logs"


def stack_file(settings: Settings | None = None) -> Path:
    return _settings(settings).home / STACK_FILE


def api_url(settings: Settings | None = None) -> str:
    s = _settings(settings)
    return f"http://{client_host(s.prefect_host)}:{s.prefect_port}/api"


def ui_url(settings: Settings | None = None) -> str:
    s = _settings(settings)
    return f"http://{client_host(s.prefect_host)}:{s.prefect_port}"


def stack_env(settings: Settings | None = None) -> dict[str, str]:
    """The variables that point a Prefect client, worker or flow run at this stack.

    Export them (``eval "$(esteira status --env)"``) to use plain ``prefect`` commands against the
    stack; pass them to ``subprocess`` for anything else. ``ESTEIRA_HOME`` is absolute so that
    flow runs, whose working directory is the project, use the same data folder as the caller.
    """
    s = _settings(settings)
    env = {
        "PREFECT_HOME": str(prefect_home(s)),
        "PREFECT_API_URL": api_url(s),
        "PREFECT_UI_URL": ui_url(s),
        "PREFECT_SERVER_API_HOST": s.prefect_host,
        "PREFECT_SERVER_API_PORT": str(s.prefect_port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
        # The worker asks for runs every 5 s instead of 10 s: a local server can afford it, and a
        # triggered retrain or a run started from the UI begins sooner.
        "PREFECT_WORKER_QUERY_SECONDS": "5",
        "ESTEIRA_HOME": str(s.home),
    }
    if s.project is not None:
        env["ESTEIRA_PROJECT"] = str(s.project)
    if s.prefect_database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = s.prefect_database_url
    return env


def child_env(settings: Settings | None = None) -> dict[str, str]:
    """The full environment for the stack's processes: ours, minus foreign Prefect locations."""
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_PREFECT_VARS}
    env.update(stack_env(settings))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@contextlib.contextmanager
def use_stack(settings: Settings | None = None) -> Iterator[None]:
    """Point in-process Prefect calls (``run_deployment``, ``emit_event``, ``get_client``) at the stack.

    Uses ``prefect.settings.temporary_settings`` rather than ``os.environ`` because Prefect reads
    its settings once at import; the override is undone on exit.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url(settings), PREFECT_UI_URL: ui_url(settings)}):
        yield


# -- process helpers ------------------------------------------------------------------------------


# What the command line of each process we start contains (after `python -m prefect`).
SERVER_MARK = "server start"
WORKER_MARK = "worker start"
RAY_MARK = "ray start --head"
CONSOLE_MARK = "esteira.cli console"


def _cmdline(pid: int) -> str:
    """The command line of ``pid`` ("" if unknown): /proc on Linux, ``ps`` elsewhere (macOS)."""
    proc = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self").exists():
        try:
            return proc.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return ""
    try:
        return subprocess.run(["ps", "-p", str(pid), "-o", "command="], capture_output=True, text=True,
                              timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def pid_running(pid: int | None, mark: str = "") -> bool:
    """True if ``pid`` runs, leads its own process group (as every process we start does), and its
    command line contains ``mark`` (and names prefect, for the server and worker).

    ``stack.json`` can outlive its processes (a reboot, a kill -9): the group and command-line checks
    keep a recycled pid, say a login shell, from being taken for the server and signalled by
    ``esteira down``. A zombie child of this very process is reaped and counts as dead.
    """
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
        if os.getpgid(pid) != pid:
            return False
    except (ProcessLookupError, PermissionError):
        return False
    cmd = _cmdline(pid)
    return mark in cmd and ("prefect" in cmd or mark in (RAY_MARK, CONSOLE_MARK))


def _session_members(sid: int) -> list[int]:
    """Pids in session ``sid`` (Linux /proc; empty elsewhere)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and int(fields[3]) == sid:
            members.append(int(stat.parent.name))
    return members


def _kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid``. Ray's workers leave the head's process group (and
    HAProxy with them) but stay in the session ``_spawn`` gave the head, so this ends exactly that cluster."""
    for pid in _session_members(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _terminate(pid: int, mark: str, timeout: float) -> bool:
    """SIGTERM the process group led by ``pid``, SIGKILL what is left of it after ``timeout``.

    The whole group, not just the leader: flow runs started by the worker are in its group, and a
    run's own children (a local Ray) share their fate. True if the process was running.
    """
    if not pid_running(pid, mark):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    for grace, sig in ((timeout, signal.SIGKILL), (5.0, None)):
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            pid_running(pid)  # reaps the leader if it is our own child
            if not _group_alive(pid):
                return True
            time.sleep(0.2)
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
    return True


def _open_log(path: Path, title: str) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    log = path.open("ab")
    log.write(f"\n===== {title} at {datetime.now(UTC).isoformat()} =====\n".encode())
    log.flush()
    return log


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""Processes this process spawned: their own exit status beats any guess from /proc."""


def _spawn(args: list[str], *, log_path: Path, title: str, env: dict[str, str], cwd: Path) -> int:
    """Start a long-lived process in its own session, output to ``log_path``; return its pid."""
    with _open_log(log_path, title) as log:
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    return proc.pid


def _alive(pid: int | None, mark: str) -> bool:
    """For a process we spawned, whether it has not exited; otherwise :func:`pid_running`."""
    proc = _CHILDREN.get(pid) if pid else None
    if proc is not None:
        return proc.poll() is None
    return pid_running(pid, mark)


def _exit_note(pid: int | None) -> str:
    proc = _CHILDREN.get(pid) if pid else None
    return f" (exit status {proc.returncode})" if proc is not None and proc.returncode is not None else ""


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((client_host(host), port), timeout=1):
            return True
    except OSError:
        return False


def _healthy(api: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _prefect(*args: str) -> list[str]:
    """The ``prefect`` CLI of this interpreter's environment (no reliance on ``PATH``)."""
    return [sys.executable, "-m", "prefect", *args]


@contextlib.contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """Serialise ``up``/``down`` of one home: two ``esteira up`` at once must not start two servers."""
    import fcntl

    settings.home.mkdir(parents=True, exist_ok=True)
    with (settings.home / "stack.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_stack(settings: Settings | None = None) -> StackInfo | None:
    """The recorded stack, or None if ``esteira up`` never ran (or ``esteira down`` cleaned up)."""
    path = stack_file(settings)
    try:
        return StackInfo.from_json(path.read_text())
    except (OSError, ValueError, TypeError):
        return None


def _write_stack(settings: Settings, info: StackInfo) -> None:
    path = stack_file(settings)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(info.to_json())
    tmp.replace(path)


# -- deployments file -----------------------------------------------------------------------------


def find_project_dir(project_dir: Path | None = None) -> Path:
    """The folder holding ``deployments.yaml`` (esteira's own, whose flow files the entrypoints name):
    given, else esteira's source folder, else the current folder."""
    candidates = [project_dir] if project_dir else [ESTEIRA_ROOT, Path.cwd()]
    for candidate in candidates:
        if candidate is not None and (candidate / DEPLOYMENTS_FILE).is_file():
            return candidate.resolve()
    raise StackError(f"{DEPLOYMENTS_FILE} not found in {', '.join(str(c) for c in candidates if c)}")


def load_deployments(project_dir: Path | None = None) -> list[dict[str, Any]]:
    """The ``deployments:`` list of ``deployments.yaml``."""
    path = find_project_dir(project_dir) / DEPLOYMENTS_FILE
    data = yaml.safe_load(path.read_text()) or {}
    return list(data.get("deployments") or [])


def deployable(project_dir: Path | None = None) -> tuple[list[str], list[str]]:
    """Deployment names whose entrypoint file exists, and those whose file does not (yet)."""
    root = find_project_dir(project_dir)
    ready, missing = [], []
    for spec in load_deployments(root):
        path = str(spec.get("entrypoint", "")).rsplit(":", 1)[0]
        (ready if path and (root / path).is_file() else missing).append(spec["name"])
    return ready, missing


def deploy(
    settings: Settings | None = None, *, project_dir: Path | None = None, timeout: float = 180.0
) -> tuple[list[str], list[str]]:
    """Register the deployments (and their trigger automations) with the stack's server.

    Runs ``prefect deploy --all --prefect-file deployments.yaml`` from the project folder, so the
    working directory recorded for the runs is this checkout (no ``pull:`` step in the file: deploy then
    records the folder it ran from, and a committed absolute path would not be portable). Upserts: running it again updates the deployments and replaces their automations.
    Deployments whose flow file does not exist yet are skipped with a note rather than failing the
    rest. Returns (deployed, skipped).
    """
    s = _settings(settings)
    root = find_project_dir(project_dir)
    ready, missing = deployable(root)
    if not ready:
        return [], missing
    selection = ["--all"] if not missing else [arg for name in ready for arg in ("--name", name)]
    log_path = logs_dir(s) / "prefect-deploy.log"
    with _open_log(log_path, "prefect deploy") as log:
        try:
            result = subprocess.run(
                _prefect("--no-prompt", "deploy", *selection, "--prefect-file", str(root / DEPLOYMENTS_FILE)),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env(s), cwd=root,
                timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"prefect deploy took more than {timeout:.0f}s; see {log_path}") from exc
    if result.returncode != 0:
        raise StackError(
            f"prefect deploy failed (exit {result.returncode}); see {log_path}:\n{_tail(log_path)}"
        )
    return ready, missing


# -- Prefect API helpers (in-process, pointed explicitly at the stack) ----------------------------


def _client(settings: Settings) -> Any:
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(api_url(settings))


def ensure_work_pool(settings: Settings | None = None) -> None:
    """Create the ``esteira-local`` process pool with Prefect's default job template, if absent."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with _client(_settings(settings)) as client:
        try:
            client.read_work_pool(WORK_POOL)
            return
        except ObjectNotFound:
            pass
        with contextlib.suppress(ObjectAlreadyExists):  # a concurrent worker created it first
            client.create_work_pool(
                WorkPoolCreate(
                    name=WORK_POOL,
                    type="process",
                    description="esteira: flow runs as local processes of this machine.",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )


def online_workers(settings: Settings | None = None) -> list[str]:
    """Names of the pool's workers whose heartbeat is current."""
    from prefect.exceptions import ObjectNotFound

    with _client(_settings(settings)) as client:
        try:
            workers = client.read_workers_for_work_pool(WORK_POOL)
        except ObjectNotFound:
            return []
    return [w.name for w in workers if str(getattr(w.status, "value", w.status)).upper() == "ONLINE"]


def registered_deployments(settings: Settings | None = None) -> list[str]:
    """``flow-name/deployment-name`` of every deployment the server knows."""
    with _client(_settings(settings)) as client:
        deployments = client.read_deployments()
        flows = {f.id: f.name for f in client.read_flows()}
    return sorted(f"{flows.get(d.flow_id, '?')}/{d.name}" for d in deployments)


# -- lifecycle ------------------------------------------------------------------------------------


def _wait(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    alive: Callable[[], bool] | None = None,
    log_path: Path | None = None,
    pid: int | None = None,
) -> None:
    """Poll ``predicate`` until true; fail early with the log's tail if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if alive is not None and not alive():
            tail = _tail(log_path) if log_path else ""
            raise StackError(f"{what}: the process exited{_exit_note(pid)}; see {log_path}:\n{tail}")
        time.sleep(0.25)
    raise StackError(f"{what}: not ready after {timeout:.0f}s; see {log_path}")


def _start_server(s: Settings, env: dict[str, str], root: Path, *, scheduler: bool) -> int:
    if _port_open(s.prefect_host, s.prefect_port):
        raise StackError(
            f"port {s.prefect_port} is in use by a process esteira did not start "
            f"(another Prefect server?); stop it or set ESTEIRA_PREFECT_PORT"
        )
    args = ["server", "start", "--host", s.prefect_host, "--port", str(s.prefect_port), "--analytics-off"]
    if not scheduler:
        args.append("--no-scheduler")
    return _spawn(_prefect(*args), log_path=logs_dir(s) / "prefect-server.log", title="prefect server start",
                  env=env, cwd=root)


def _start_worker(s: Settings, env: dict[str, str], root: Path) -> int:
    args = ["worker", "start", "--pool", WORK_POOL, "--type", "process",
            "--name", f"{WORK_POOL}-{socket.gethostname()}", "--limit", str(s.prefect_worker_limit)]
    return _spawn(_prefect(*args), log_path=logs_dir(s) / "prefect-worker.log", title="prefect worker start",
                  env=env, cwd=root)


def _start_console(s: Settings, env: dict[str, str], root: Path) -> int:
    if _port_open(s.console_host, s.console_port):
        raise StackError(f"port {s.console_port} is in use by a process esteira did not start; stop it or set "
                         "ESTEIRA_CONSOLE_PORT")
    args = [sys.executable, "-m", "esteira.cli", "console", "--host", s.console_host, "--port", str(s.console_port)]
    return _spawn(args, log_path=logs_dir(s) / "console.log", title="esteira console", env=env, cwd=root)


def console_url(settings: Settings | None = None) -> str:
    s = _settings(settings)
    return f"http://{client_host(s.console_host)}:{s.console_port}"


def local_ray_address(settings: Settings | None = None) -> str:
    return f"127.0.0.1:{_settings(settings).stack_ray_port}"


def gateway_url(settings: Settings | None = None) -> str:
    s = _settings(settings)
    return f"http://{client_host(s.gateway_host)}:{s.gateway_port}"


# Ray Serve's HAProxy ingress with direct ingress and its retry policy: see gateway/launch.py for what they
# give and cost. Serve reads these in its controller, so they must be in the Ray head's environment.
RAY_HEAD_ENV = {"RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", **HAPROXY_ENV, "RAY_USAGE_STATS_ENABLED": "0"}


def ray_client_env(settings: Settings | None = None) -> dict[str, str]:
    """What a process needs to join the stack's Ray head: its token and loopback-only mode
    (:func:`core.ray_runtime.stack_ray_env`), and no ``uv run`` worker environment (the head shares this
    interpreter). The worker gets it, so every flow run it starts does too."""
    return {**stack_ray_env(_settings(settings)), "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}


def start_ray_head(settings: Settings | None = None, *, env: dict[str, str] | None = None,
                   root: Path | None = None) -> int:
    """Start the stack's Ray head; returns the pid of ``ray start``, the leader of its session.

    In the foreground of its own session (``--block``), so that stopping it stops exactly this cluster, never
    another Ray on the machine (``ray stop`` would kill them all). Token authentication on, loopback only
    (:func:`ray_client_env`). Logical CPUs are one more than the cores: the gateway's replica reserves none,
    and Tune trials should be able to use every core while it serves.
    """
    s = _settings(settings)
    env = env if env is not None else child_env(s)
    root = root or find_project_dir()
    if _port_open("127.0.0.1", s.stack_ray_port):
        raise StackError(f"port {s.stack_ray_port} is in use by a process esteira did not start; "
                         "stop it or set ESTEIRA_STACK_RAY_PORT")
    ray_cli = str(Path(sys.executable).with_name("ray"))
    temp_dir = ray_temp_dir(s)
    args = [ray_cli, "start", "--head", "--block", f"--port={s.stack_ray_port}", "--node-ip-address=127.0.0.1",
            f"--temp-dir={temp_dir}",
            f"--num-cpus={(os.cpu_count() or 1) + 1}", "--include-dashboard=false", "--disable-usage-stats"]
    # HAProxy's stats and metrics listeners default to fixed ports (8404, 9101) on every interface;
    # free ones keep a second stack (or a test's) from failing to start.
    # (Its config and admin socket already live under /tmp/haproxy-serve/<node id>/: per node. A
    # longer base breaks HAProxy's 97-byte limit on the socket path.)
    haproxy_ports = {"RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()),
                     "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port())}
    head_env = {**env, **RAY_HEAD_ENV, **ray_client_env(s), **haproxy_ports}
    head_env.pop("RAY_AUTH_TOKEN", None)  # it would take precedence over the token file
    return _spawn(args, log_path=logs_dir(s) / "ray-head.log", title="ray start --head", env=head_env, cwd=root)


def ray_temp_dir(settings: Settings | None = None) -> Path:
    """The stack's Ray temp dir (sessions, logs, sockets). Its own: `ray start` records itself in
    <temp dir>/ray_current_cluster, and every later bare `ray.init()` on the machine would join the default
    one's (/tmp/ray) cluster instead of starting its own. Short, because Ray's socket paths must fit in 107
    bytes."""
    return Path(tempfile.gettempdir()) / f"esteira-ray-{_settings(settings).stack_ray_port}"


def stop_ray_head(pid: int | None) -> bool:
    """Stop the Ray head :func:`start_ray_head` started (True if it ran). ``ray start --block`` does not act on
    SIGTERM, and Ray's workers leave its process group but not its session: the session is killed."""
    if not (pid and pid_running(pid, RAY_MARK)):
        return False
    _kill_session(pid)
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_gateway_exposure(settings: Settings | None = None) -> str | None:
    """:func:`gateway.exposure.check_settings` for the stack's gateway, as a :class:`StackError`; the warning
    to show when ``ESTEIRA_GATEWAY_INSECURE`` allows open routes off loopback."""
    from gateway.exposure import ExposureError, check_settings

    s = _settings(settings)
    try:
        return check_settings(s.gateway_host, settings=s)
    except ExposureError as exc:
        raise StackError(str(exc)) from None


def deploy_gateway(settings: Settings | None = None, *, timeout: float = 120.0) -> str:
    """Deploy the gateway on the stack's Ray cluster from this process; returns its URL.

    Serve applications outlive the driver that deployed them, so this process may exit afterwards.
    Two replicas at least (``gateway.launch.default_replicas``), so that one that dies has another to fail
    over to; they reserve no CPU: on a laptop the cores are shared with training.
    """
    import ray

    from core.ray_runtime import ensure_ray
    from gateway.launch import default_replicas, deploy

    s = _settings(settings)
    if not ray.is_initialized():
        ensure_ray(local_ray_address(s))  # with the stack's token (core.ray_runtime.is_stack_address)
    url = deploy(host=s.gateway_host, port=s.gateway_port, replicas=default_replicas(), replica_cpus=0)
    _wait(lambda: _http_ok(f"{url}/v2/health/live"), timeout, f"gateway at {url}")
    return url


_BACKGROUND = ThreadPoolExecutor(max_workers=1, thread_name_prefix="esteira-up")


def _timed(fn: Callable[..., str], *args: Any, **kwargs: Any) -> tuple[str, float]:
    """``fn``'s result and the monotonic time it finished (a step's timing when it ran in the background)."""
    result = fn(*args, **kwargs)
    return result, time.monotonic()


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _start_serving(s: Settings, info: StackInfo, env: dict[str, str], root: Path, timeout: float) -> None:
    """Ray head (reused if it runs) and the gateway on it; the worker's flows then train on this cluster."""
    if not (info.ray_pid and pid_running(info.ray_pid, RAY_MARK)):
        info.ray_pid = start_ray_head(s, env=env, root=root)
        info.ray_address = local_ray_address(s)
        info.logs["ray"] = str(logs_dir(s) / "ray-head.log")
        _write_stack(s, info)
    ray_pid = info.ray_pid
    _wait(lambda: _port_open("127.0.0.1", s.stack_ray_port), timeout, "Ray head",
          lambda: _alive(ray_pid, RAY_MARK), logs_dir(s) / "ray-head.log", ray_pid)
    env["ESTEIRA_RAY_ADDRESS"] = info.ray_address or local_ray_address(s)
    env.update(ray_client_env(s))
    env.pop("RAY_AUTH_TOKEN", None)  # it would take precedence over the token file
    use_ray_env(ray_client_env(s))  # this process deploys the gateway as a client of that cluster


def start_stack(
    settings: Settings | None = None,
    *,
    deploy_flows: bool = True,
    scheduler: bool = True,
    project_dir: Path | None = None,
    timeout: float = 120.0,
    serving: bool = False,
    console: bool = False,
) -> StackInfo:
    """Start (or find running) the server, the work pool, a worker; deploy; record it all.

    ``serving=True`` also starts a Ray head (flows the worker runs train on it) and deploys the
    gateway on it: the whole loop, as ``esteira up`` and the demo run it. ``console=True`` also starts the
    web console (``esteira console``) on ``settings.console_port``.

    Idempotent: a server or worker recorded in ``stack.json`` that still runs is reused, and the
    deploy is an upsert. ``scheduler=False`` starts the server without its scheduler service, so
    deployment schedules create no runs (tests); triggers and manual runs still work. Each process
    is recorded as soon as it is spawned, so ``stop_stack`` can clean up after a start that failed
    half-way. Raises :class:`StackError` if the port is taken by a process this home did not start,
    or a step does not become ready within ``timeout`` seconds.
    """
    s = _settings(settings)
    root = find_project_dir(project_dir)
    if serving:
        check_gateway_exposure(s)
    if console:
        from console.server import ConsoleExposureError, check_exposure

        try:
            check_exposure(s.console_host, s)
        except ConsoleExposureError as exc:
            raise StackError(str(exc)) from None
    t0 = time.monotonic()
    with _locked(s):
        previous = read_stack(s)
        server_reused = bool(previous and pid_running(previous.server_pid, SERVER_MARK))
        if previous and server_reused and previous.api_url != api_url(s):
            raise StackError(f"a stack of this home already runs at {previous.ui_url}; "
                             "run `esteira down` before changing its port")
        for folder in (prefect_home(s), logs_dir(s)):
            folder.mkdir(parents=True, exist_ok=True)
        env = child_env(s)
        info = StackInfo(
            api_url=api_url(s), ui_url=ui_url(s), prefect_home=str(prefect_home(s)), work_pool=WORK_POOL,
            project_dir=str(root), project=str(s.project) if s.project else None,
            server_pid=previous.server_pid if previous and server_reused else None,
            worker_pid=(previous.worker_pid if previous and pid_running(previous.worker_pid, WORKER_MARK)
                        else None),
            scheduler=previous.scheduler if previous and server_reused else scheduler,
            logs={role: str(logs_dir(s) / f"prefect-{role}.log") for role in ("server", "worker", "deploy")},
            started_at=previous.started_at if previous and server_reused
            else datetime.now(UTC).isoformat(timespec="seconds"),
            ray_pid=previous.ray_pid if previous and pid_running(previous.ray_pid, RAY_MARK) else None,
            ray_address=previous.ray_address if previous else None,
            console_pid=previous.console_pid if previous and pid_running(previous.console_pid, CONSOLE_MARK)
            else None,
        )
        if console:  # first: it needs nothing else, and its imports overlap the rest
            info.logs["console"] = str(logs_dir(s) / "console.log")
            if info.console_pid is None:
                info.console_pid = _start_console(s, env, root)
                _write_stack(s, info)
        gateway: Future[str] | None = None
        if serving:
            _start_serving(s, info, env, root, timeout)
            info.timings_s["ray"] = round(time.monotonic() - t0, 2)
            # The gateway deploys while Prefect boots: each is a chain of process starts and imports that
            # waits on nothing of the other's (measured by bench/bench_cold_start.py: `esteira up` went
            # from the sum of the two chains to about the longer one).
            gateway = _BACKGROUND.submit(_timed, deploy_gateway, s, timeout=timeout)
        if info.server_pid is None:
            info.server_pid = _start_server(s, env, root, scheduler=scheduler)
            _write_stack(s, info)
        server_pid = info.server_pid
        _wait(lambda: _healthy(info.api_url), timeout, f"Prefect server at {info.api_url}",
              lambda: _alive(server_pid, SERVER_MARK), Path(info.logs["server"]), server_pid)
        info.timings_s["server"] = round(time.monotonic() - t0, 2)

        ensure_work_pool(s)
        if info.worker_pid is None:
            info.worker_pid = _start_worker(s, env, root)
            _write_stack(s, info)
        # Deploy while the worker boots: both spend seconds importing, and need only the server.
        if deploy_flows:
            info.deployments, info.skipped_deployments = deploy(s, project_dir=root, timeout=timeout)
            info.timings_s["deploy"] = round(time.monotonic() - t0, 2)
        worker_pid = info.worker_pid
        _wait(lambda: bool(online_workers(s)), timeout, "Prefect worker",
              lambda: _alive(worker_pid, WORKER_MARK), Path(info.logs["worker"]), worker_pid)
        info.timings_s["worker"] = round(time.monotonic() - t0, 2)
        if gateway is not None:
            info.gateway_url, finished = gateway.result()
            info.timings_s["gateway"] = round(finished - t0, 2)
        if info.console_pid is not None and console:
            url, pid = console_url(s), info.console_pid
            _wait(lambda: _http_ok(f"{url}/healthz"), timeout, f"console at {url}",
                  lambda: _alive(pid, CONSOLE_MARK), Path(info.logs["console"]), pid)
            info.console_url = url
            info.timings_s["console"] = round(time.monotonic() - t0, 2)
        info.timings_s["total"] = round(time.monotonic() - t0, 2)
        _write_stack(s, info)
    return info


def stop_stack(settings: Settings | None = None, *, timeout: float = 20.0) -> list[str]:
    """Stop the worker, then the server (SIGTERM to each process group, SIGKILL after ``timeout``).

    The worker goes first so it does not spend its last seconds retrying a vanished server.
    Returns what was stopped ("worker", "server"); an empty list if nothing ran. Data stays.
    """
    s = _settings(settings)
    stopped: list[str] = []
    with _locked(s):
        info = read_stack(s)
        if info is None:
            return stopped
        processes = (("console", info.console_pid, CONSOLE_MARK), ("worker", info.worker_pid, WORKER_MARK),
                     ("server", info.server_pid, SERVER_MARK), ("ray", info.ray_pid, RAY_MARK))
        for role, pid, mark in processes:
            if role == "ray":
                if stop_ray_head(pid):
                    stopped.append(role)
            elif pid and _terminate(pid, mark, timeout):
                stopped.append(role)
        stack_file(s).unlink(missing_ok=True)
    return stopped


def stack_status(settings: Settings | None = None) -> StackStatus:
    """What the recorded stack looks like right now (never starts anything)."""
    s = _settings(settings)
    info = read_stack(s)
    api = info.api_url if info else api_url(s)
    healthy = _healthy(api)
    workers: list[str] = []
    deployments: list[str] = []
    if healthy:
        with contextlib.suppress(Exception):  # a status display must not fail on a flaky API
            workers = online_workers(s)
            deployments = registered_deployments(s)
    return StackStatus(
        info=info,
        server_running=bool(info and pid_running(info.server_pid, SERVER_MARK)),
        server_healthy=healthy,
        worker_running=bool(info and pid_running(info.worker_pid, WORKER_MARK)),
        workers_online=workers,
        deployments=deployments,
    )

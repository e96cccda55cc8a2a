"""Connect to Ray the same way everywhere: a cluster when one is configured, else a quiet local one.

Training, batch scoring and the gateway call :func:`ensure_ray` instead of ``ray.init`` so that
``ESTEIRA_RAY_ADDRESS`` (or Ray's own ``RAY_ADDRESS``) moves the work to a cluster with no code
change, and a second call (or a test session that already started Ray) is a no-op.

The Ray head of the local stack (``esteira up``) requires Ray's token authentication and listens on loopback
only; :func:`stack_ray_env` is what a process needs to join it, and :func:`ensure_ray` applies it by itself when
the address is the stack's.
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.settings import Settings

_LOCK = threading.Lock()


def ray_address(explicit: str | None = None) -> str | None:
    """The cluster to join: the argument, ``settings.ray_address``, then ``RAY_ADDRESS``; None = local."""
    if explicit:
        return explicit
    from core.settings import get_settings

    return get_settings().ray_address or os.environ.get("RAY_ADDRESS") or None


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> dict[str, Any]:
    """Initialise Ray once per process; returns the cluster's resources.

    Local Ray is sized to the machine (or ``num_cpus``), without the dashboard, and with driver
    log forwarding off so that a flow's log is not flooded with worker output.
    """
    import ray

    with _LOCK:
        if not ray.is_initialized():
            target = ray_address(address)
            env = {"env_vars": {"WHYLOGS_NO_ANALYTICS": "1"}}
            if target and is_stack_address(target):
                use_ray_env(stack_ray_env())
            skip_uv_worker_env()
            if target:
                ray.init(address=target, log_to_driver=False, runtime_env=env)
            else:
                # "local", not None: a bare ray.init() joins any `ray start` cluster on the machine.
                ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                         log_to_driver=False, runtime_env=env)
    return dict(ray.cluster_resources())


def skip_uv_worker_env() -> None:
    """Start workers with the cluster's own interpreter, not through Ray's ``uv run`` propagation.

    Ray 2.60 notices a driver started by ``uv run`` (``RAY_ENABLE_UV_RUN_RUNTIME_ENV``, on by default) and
    runs every worker through ``uv run`` in a packaged copy of the driver's working directory: it zips and
    uploads the folder, then builds a second virtualenv of the whole lock for the job ("Installed 229
    packages ... Bytecode compiled 18132 files in 27.26s" in ``esteira serve``'s log, 45-54 s to the first
    answer; training's first tasks 9.9 s instead of 2.1 s). A cluster on this machine already shares this
    interpreter and its virtualenv. A remote cluster gets esteira from its image (``uv sync --frozen`` or
    ``pip install`` of this package, as Ray's own images are built) and the project folder as the job's working
    directory (:func:`job_runtime_env`), so the propagation would only redo that, on every node, per job.
    An explicit ``RAY_ENABLE_UV_RUN_RUNTIME_ENV`` in the environment is respected.
    """
    if "RAY_ENABLE_UV_RUN_RUNTIME_ENV" in os.environ:
        return
    from ray._private import ray_constants

    ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False



# -- the local stack's Ray head: token authentication, loopback only --------------------------------------------

RAY_TOKEN_FILE = Path("ray") / "auth_token"
"""Where, under ``ESTEIRA_HOME``, the stack's Ray token lives (mode 0600, kept across restarts)."""


def ray_token_file(path: Path) -> Path:
    """A Ray token file at ``path``, created on first use (64 hex characters, readable by its owner only) and
    kept after: a restarted head and the clients of the previous one agree.

    Ray 2.60 reads the token from the file ``RAY_AUTH_TOKEN_PATH`` names (Ray's token authentication guide,
    docs.ray.io/en/latest/ray-security/token-auth.html); a file keeps it out of process listings.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    path.chmod(0o600)
    return path


def token_auth_env(token_file: Path) -> dict[str, str]:
    """The variables of a Ray cluster, and of its clients, that require the token in ``token_file``: Ray then
    refuses a driver or node without it ("Authentication token is missing or incorrect")."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}


def stack_ray_token(settings: Settings | None = None) -> Path:
    """The stack's Ray token file, ``<ESTEIRA_HOME>/ray/auth_token`` (:func:`ray_token_file`)."""
    from core.settings import get_settings

    return ray_token_file((settings or get_settings()).home / RAY_TOKEN_FILE)


def stack_ray_env(settings: Settings | None = None) -> dict[str, str]:
    """The variables of the stack's Ray head and of every process that joins it.

    Token authentication (:func:`token_auth_env`), and ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: Ray then treats
    this machine as a single-node cluster, as on macOS. Its node address is 127.0.0.1 instead of the machine's
    network address (which ``--node-ip-address=127.0.0.1`` alone gives), and every port of the head listens on
    loopback only (measured with ``ss -ltnp``: the GCS, the raylet, the client server, the agents, the metrics
    servers). The cost: no other machine can join this cluster, which is the point. Joining processes need it
    too, or they resolve 127.0.0.1 to the network address and find nothing listening there.
    """
    return {**token_auth_env(stack_ray_token(settings)), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def is_stack_address(address: str, settings: Settings | None = None) -> bool:
    """Whether ``address`` is the local stack's Ray head (loopback, the settings' ``stack_ray_port``) and the stack
    has a token (``esteira up`` started it under this ``ESTEIRA_HOME``)."""
    from core.settings import get_settings

    s = settings or get_settings()
    port = address.split("://", 1)[-1].rpartition(":")[2]
    return is_local_address(address) and port == str(s.stack_ray_port) and (s.home / RAY_TOKEN_FILE).is_file()


def use_ray_env(env: Mapping[str, str]) -> None:
    """Put Ray's client variables into this process's environment (its children inherit them), and make a Ray
    already imported here read them before it connects.

    Ray reads ``RAY_AUTH_MODE`` into its native configuration at import and ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``
    into a module constant; Ray's own ``_enable_token_auth`` refreshes the first the same way
    (``ray/_private/authentication/authentication_token_setup.py``). ``RAY_AUTH_TOKEN`` is dropped: it would take
    precedence over the token file.
    """
    os.environ.update(env)
    if "RAY_AUTH_TOKEN_PATH" in env:
        os.environ.pop("RAY_AUTH_TOKEN", None)
    if "ray" not in sys.modules:
        return
    from ray._private import ray_constants
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    if "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" in env:
        ray_constants.ENABLE_RAY_CLUSTER = env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "1"


FORWARDED_SETTINGS = ("ESTEIRA_HOME", "ESTEIRA_DATABASE_URL", "ESTEIRA_ARTIFACT_ROOT", "ESTEIRA_INFERENCE_LOG_URI",
                      "ESTEIRA_FEAST_ONLINE_STORE", "ESTEIRA_FEAST_REGISTRY", "ESTEIRA_FEAST_PROJECT",
                      "ESTEIRA_GATEWAY_INSECURE", "ESTEIRA_GATEWAY_HEARTBEAT_S", "ESTEIRA_CONSOLE_URL",
                      "ESTEIRA_CONSOLE_HOST", "ESTEIRA_CONSOLE_PORT", "ESTEIRA_WEBHOOK_URLS",
                      "ESTEIRA_WEBHOOK_MAX_ATTEMPTS", "ESTEIRA_WEBHOOK_BACKOFF_S", "ESTEIRA_WEBHOOK_TIMEOUT_S")
"""Settings a Serve replica needs to find the same stores as the process that deployed it (and to report to
them, send the registry's webhooks, and link to the console, as it does), and the operator's choice to serve
without tokens off loopback. Tokens and the webhook secret are not forwarded: Ray shows runtime environments
in its state API; set them in the cluster's environment (a replica without the secret sends unsigned)."""

PROJECT_EXCLUDES = [".esteira/", "data/", ".git/", ".venv/", "__pycache__/", "*.pyc"]
"""What stays behind when a project folder travels to a cluster: local state and local data. On a cluster
the stores (registry, Feast registry and online store, artifacts) are shared services, not files."""


def is_local_address(address: str | None) -> bool:
    """True when Ray runs on this machine (a local instance, or a cluster reached through loopback)."""
    if not address or address in ("local", "auto"):
        return True
    host = address.split("://", 1)[-1].rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "::1")


def ships_project(address: str | None, ship: str = "auto") -> bool:
    """Whether the project folder travels to the cluster (``ship``: auto = only to a remote cluster)."""
    return ship == "always" or (ship == "auto" and not is_local_address(address))


def job_runtime_env(project: str | os.PathLike[str] | None, address: str | None, *, ship: str = "auto"
                    ) -> dict[str, Any]:
    """The runtime environment of a driver that deploys project-bound work (the gateway) on ``address``.

    On this machine the folder is shared and nothing travels. On a remote cluster Ray uploads the project
    folder, without :data:`PROJECT_EXCLUDES`, as the job's working directory; Ray Serve makes it the
    working directory of every replica the driver deploys (a Serve deployment's own runtime environment
    may only name remote URIs). esteira itself must be installed on the cluster (its image or ``pip``); the
    project is the user's part.
    """
    env: dict[str, Any] = {"env_vars": {"WHYLOGS_NO_ANALYTICS": "1"}}
    if project is not None and ships_project(address, ship):
        env.update({"working_dir": str(project), "excludes": list(PROJECT_EXCLUDES)})
    return env


def replica_env_vars(project: str | os.PathLike[str] | None, *, shipped: bool) -> dict[str, str]:
    """Environment of a replica: the project (its folder here, or ``.`` when it travelled as the working
    directory) and the settings that locate the shared stores."""
    env = {name: os.environ[name] for name in FORWARDED_SETTINGS if os.environ.get(name)}
    if project is not None:
        env["ESTEIRA_PROJECT"] = "." if shipped else str(project)
    return env

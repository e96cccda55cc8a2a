"""Putting the gateway on Ray Serve: used by ``esteira serve`` (blocking, its own Ray or a cluster) and by the
local stack (``esteira up``, on the stack's Ray head).

For production, ``serve deploy gateway/serve_config.yaml`` against a running cluster is the other way in:
replicas, autoscaling and actor options then live in that file.

Ray Serve's HAProxy ingress with direct ingress (Ray >= 2.55): HAProxy (C) listens on the HTTP port and
forwards to each replica's own HTTP server, instead of every request crossing the Python proxy actor.
Measured on 2 cores with a small model: ~130-210 req/s through the proxy against ~520 (c=1) and ~900 (c=32,
one replica) / ~1470 (c=32, two replicas). What it gives up: replicas take ~35 s to drain on shutdown or
redeploy, and on multi-node clusters replica ports listen on all interfaces. Only effective when Ray is
started here; a cluster must be started with these set.
"""

from __future__ import annotations

import os
from typing import Any

from core.ray_runtime import job_runtime_env, replica_env_vars
from gateway.config import GatewayConfig

HAPROXY_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
APP_NAME = "esteira"


def default_replicas() -> int:
    """One replica per core but one: HAProxy, Ray's own processes and each replica's profiler need a core.

    Measured on 2 cores (bench_gateway.py, 20 s points): two replicas gave 1.48x the floor at c=32 against
    1.28x for one, the same p99, but +0.63 ms at c=1 against +0.49, and with entity keys +2.23 ms against
    +1.27 ms at c=1 (the target is 2 ms); one replica meets every target there.
    """
    return max(1, (os.cpu_count() or 2) - 1)


def serving_config(models: list[str] | None = None, shadow_alias: str | None = "challenger", *,
                   shipped: bool = False) -> GatewayConfig:
    """The gateway's config resolved from settings in this process, without the tokens: deployment arguments
    show in Ray's state API, so replicas read the tokens from their own settings. When the project travels
    as the replicas' working directory (``shipped``), they find it there, not at this machine's path."""
    config = GatewayConfig(models=models or None, shadow_alias=shadow_alias or None).resolved()
    return config.model_copy(update={"predict_token": None, "admin_token": None,
                                     **({"project": None} if shipped else {})})


def deploy(*, host: str, port: int, replicas: int = 1, replica_cpus: float = 1.0, models: list[str] | None = None,
           shadow_alias: str | None = "challenger", access_log: bool = False) -> str:
    """Deploy the gateway application on the Ray this process is connected to; returns its URL.

    Serve applications outlive the driver that deployed them. The project reaches the replicas as this
    driver's job working directory when it travelled (:func:`connect_for_serving`), else by its path.
    """
    import ray
    from ray import serve

    from core.settings import get_settings
    from gateway.deployment import DEFAULT_ACTOR_OPTIONS, Gateway

    settings = get_settings()
    shipped = bool(ray.get_runtime_context().runtime_env.get("working_dir"))
    env_vars = {**DEFAULT_ACTOR_OPTIONS["runtime_env"]["env_vars"],
                **replica_env_vars(settings.project, shipped=shipped)}
    actor_options: dict[str, Any] = {**DEFAULT_ACTOR_OPTIONS, "num_cpus": replica_cpus,
                                     "runtime_env": {"env_vars": env_vars}}
    serve.start(http_options={"host": host, "port": port}, logging_config={"enable_access_log": access_log})
    config = serving_config(models, shadow_alias, shipped=shipped)
    application = Gateway.options(num_replicas=replicas, ray_actor_options=actor_options  # type: ignore[attr-defined]
                                  ).bind(config.to_args())
    serve.run(application, name=APP_NAME, route_prefix="/")  # returns once the replicas are running
    client_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{client_host}:{port}"


def connect_for_serving() -> None:
    """Join the configured cluster, or start a Ray of our own in HAProxy mode with one OpenMP thread per
    process ("local": a bare ``ray.init()`` would silently join any cluster a ``ray start`` left running).
    A remote cluster receives the project folder as this job's working directory."""
    import ray

    from core.settings import get_settings

    for key, value in HAPROXY_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if not ray.is_initialized():
        settings = get_settings()
        address = settings.ray_address or os.environ.get("RAY_ADDRESS") or "local"
        runtime_env = job_runtime_env(settings.project, address, ship=settings.ray_ship_project)
        ray.init(address=address, include_dashboard=False, log_to_driver=True, runtime_env=runtime_env)

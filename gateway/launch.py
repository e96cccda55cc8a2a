"""Putting the gateway on Ray Serve: used by ``esteira serve`` (blocking, its own Ray or a cluster) and by the
local stack (``esteira up``, on the stack's Ray head).

For production, ``serve deploy gateway/serve_config.yaml`` against a running cluster is the other way in:
replicas, autoscaling and actor options then live in that file.

Ray Serve's HAProxy ingress with direct ingress (Ray >= 2.55): HAProxy (C) listens on the HTTP port and
forwards to each replica's own HTTP server, instead of every request crossing the Python proxy actor.
Measured on 2 cores with a small model: ~130-210 req/s through the proxy against ~520 (c=1) and ~900 (c=32,
one replica) / ~1470 (c=32, two replicas). What it gives up: replicas take ~35 s to drain on shutdown or
redeploy, and on multi-node clusters replica ports listen on all interfaces. A prediction that a dying
replica dropped is sent once more, to another replica (:data:`HAPROXY_RETRY_ENV`), which is why
:func:`default_replicas` is two at least. Only effective when Ray is started here; a cluster must be started
with these set (``HAPROXY_ENV``).
"""

from __future__ import annotations

import os
from typing import Any

from core.ray_runtime import (
    is_stack_address,
    job_runtime_env,
    replica_env_vars,
    skip_uv_worker_env,
    stack_ray_env,
    use_ray_env,
)
from gateway.config import GatewayConfig

# HAProxy's retry policy. Ray 2.60 renders these two variables into the `defaults` section of the HAProxy
# config it generates, after `option redispatch 1` (every retry goes to another replica); its own default
# retries connect failures only (RAY_SERVE_HAPROXY_RETRY_ON in ray/serve/_private/constants.py), so a
# replica that dies drops the requests it holds. A prediction is idempotent: one that got no answer
# (`empty-response`, `junk-response`) is sent once more, to another replica. `retries 1` bounds what a
# request that kills its replica can do: two replicas at most.
# `option http-buffer-request`: HAProxy reads the whole body before it picks a replica. A request whose
# body arrives in a second TCP write (httpx sends headers and body apart) is otherwise forwarded in parts
# and cannot be replayed; HAProxy then closes the client's connection without an answer (haproxy/haproxy
# #2751, #3414). Ray has no setting for it: it rides on the line Ray copies verbatim from
# RAY_SERVE_HAPROXY_RETRY_ON (ray/serve/_private/haproxy_templates.py, `retry-on {{ config.retry_on }}`).
# Bodies over tune.bufsize (16 kB, RAY_SERVE_HAPROXY_TUNE_BUFSIZE) are forwarded in parts and never retried.
HAPROXY_RETRY_ENV = {
    "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response junk-response\n    option http-buffer-request",
    "RAY_SERVE_HAPROXY_RETRIES": "1",
}
HAPROXY_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", **HAPROXY_RETRY_ENV}
APP_NAME = "esteira"


def default_replicas() -> int:
    """Two replicas at least, so that one that dies leaves another to fail over to; beyond two, one per core
    but one (HAProxy, Ray's own processes and each replica's profiler need a core).

    Measured on 2 cores (``bench/bench_faults.py``: 16 httpx clients, one replica killed with SIGKILL): one
    replica failed 16 requests and answered nothing for 5.6 s, until Serve had replaced it; two, with
    :data:`HAPROXY_RETRY_ENV`, failed none, longest gap 0.24 s. What the second replica costs: 369 MB more
    resident memory, and in the same run c=32 989 -> 1017 req/s, c=1 p50 2.10 -> 2.30 ms (between runs c=1
    p50 moved from 1.6 to 3.6 ms with either count). Earlier ``bench_gateway.py`` 20 s points: 1.48x the
    floor at c=32 against 1.28x for one replica, +0.63 ms at c=1 against +0.49, and with entity keys
    +2.23 ms against +1.27 ms at c=1 (the target is 2 ms): ``--replicas 1`` buys that back, without failover.
    """
    return max(2, (os.cpu_count() or 2) - 1)


def default_replica_cpus(replicas: int) -> float:
    """One CPU per replica, less when the replicas outnumber the cores (a local Ray has one CPU per core and
    would never place the rest). Only Ray's placement reads it: a replica is not held to it."""
    return min(1.0, (os.cpu_count() or 1) / replicas)


def serving_config(models: list[str] | None = None, shadow_alias: str | None = "challenger", *,
                   shipped: bool = False) -> GatewayConfig:
    """The gateway's config resolved from settings in this process, without the tokens: deployment arguments
    show in Ray's state API, so replicas read the tokens from their own settings. When the project travels
    as the replicas' working directory (``shipped``), they find it there, not at this machine's path."""
    config = GatewayConfig(models=models or None, shadow_alias=shadow_alias or None).resolved()
    return config.model_copy(update={"predict_token": None, "admin_token": None, "feedback_token": None,
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
        if is_stack_address(address):  # `esteira up`'s head takes only clients with its token
            use_ray_env(stack_ray_env())
        runtime_env = job_runtime_env(settings.project, address, ship=settings.ray_ship_project)
        skip_uv_worker_env()
        ray.init(address=address, include_dashboard=False, log_to_driver=True, runtime_env=runtime_env)

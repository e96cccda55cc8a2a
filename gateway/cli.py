"""``esteira serve``: start the gateway on Ray Serve (local Ray by default, a cluster with ``RAY_ADDRESS``).

The lead mounts this Typer app (``app.add_typer(gateway.cli.app)`` or ``app.command("serve")(serve)``).
For production, prefer ``serve deploy gateway/serve_config.yaml`` against a running cluster: replicas,
autoscaling and actor options then live in that file.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Annotated

import typer

app = typer.Typer(help="The serving gateway.", no_args_is_help=True)

# Ray Serve's HAProxy ingress with direct ingress (Ray >= 2.55): HAProxy (C) listens on the HTTP port
# and forwards to each replica's own HTTP server, instead of every request crossing the Python proxy
# actor. Measured on 2 cores with a small model: ~130-210 req/s through the proxy against ~520 (c=1) and
# ~900 (c=32, one replica) / ~1470 (c=32, two replicas). What it gives up: replicas take ~35 s to drain
# on shutdown or redeploy, and on multi-node clusters replica ports listen on all interfaces. Only
# effective when this command starts Ray; a cluster (RAY_ADDRESS) must be started with these set.
HAPROXY_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def default_replicas() -> int:
    """One replica per core but one: HAProxy, Ray's own processes and each replica's profiler need a core.

    Measured on 2 cores (bench_gateway.py, 20 s points): two replicas gave 1.48x the floor at c=32 against
    1.28x for one, the same p99, but +0.63 ms at c=1 against +0.49, and with entity keys +2.23 ms against
    +1.27 ms at c=1 (the target is 2 ms); one replica meets every target there.
    """
    return max(1, (os.cpu_count() or 2) - 1)


@app.command("serve")
def serve_command(
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings.gateway_host).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default: settings.gateway_port).")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", "-m",
                                                    help="Serve only these models (repeatable).")] = None,
    replicas: Annotated[int, typer.Option(min=1, help="Gateway replicas (default: one per core but one).")] = (
        default_replicas()),
    replica_cpus: Annotated[float, typer.Option(min=0.0, help="CPUs reserved per replica.")] = 1.0,
    shadow_alias: Annotated[str, typer.Option(help="Alias scored in shadow ('' turns it off).")] = "challenger",
    haproxy: Annotated[bool, typer.Option(help="HAProxy + direct ingress instead of the Python proxy.")] = True,
    access_log: Annotated[bool, typer.Option(help="Ray Serve per-request access log.")] = False,
) -> None:
    """Start the gateway and block until interrupted."""
    import ray
    from ray import serve

    from esteira.settings import get_settings
    from gateway.config import GatewayConfig
    from gateway.deployment import DEFAULT_ACTOR_OPTIONS, Gateway

    settings = get_settings()
    host = host or settings.gateway_host
    port = port or settings.gateway_port
    if haproxy:
        for key, value in HAPROXY_ENV.items():
            os.environ.setdefault(key, value)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if not ray.is_initialized():
        # "local" starts a Ray of our own: a bare ray.init() would silently join any cluster a
        # `ray start` left running on this machine. A cluster is used only when asked for.
        address = settings.ray_address or os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    serve.start(http_options={"host": host, "port": port}, logging_config={"enable_access_log": access_log})
    # Resolve paths here (the embedded home is relative to where the command runs) but leave tokens
    # out of the deployment args, which Ray shows in its state API: replicas read them from settings.
    config = GatewayConfig(models=model or None, shadow_alias=shadow_alias or None).resolved().model_copy(
        update={"predict_token": None, "admin_token": None})
    actor_options = {**DEFAULT_ACTOR_OPTIONS, "num_cpus": replica_cpus}
    deployment = Gateway.options(num_replicas=replicas, ray_actor_options=actor_options)  # type: ignore[attr-defined]
    application = deployment.bind(config.to_args())
    serve.run(application, name="esteira", route_prefix="/")
    typer.echo(f"esteira gateway on http://{host}:{port}  (docs: /docs, health: /v2/health/ready)")
    stop = threading.Event()
    # SIGTERM (systemd, Kubernetes) and SIGINT both shut Serve down cleanly: exiting without it would
    # leave HAProxy and the replicas running after the driver is gone.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    finally:
        typer.echo("stopping (replicas drain in-flight requests first)")
        serve.shutdown()

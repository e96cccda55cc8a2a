"""``esteira serve``: the gateway on Ray Serve (its own local Ray, or a cluster with ``ESTEIRA_RAY_ADDRESS``)."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from esteira.commands.common import InsecureOption, allow_gateway_exposure
from gateway.launch import default_replica_cpus, default_replicas


def serve_command(
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings.gateway_host).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default: settings.gateway_port).")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", "-m",
                                                    help="Serve only these models (repeatable).")] = None,
    replicas: Annotated[int, typer.Option(
        min=1, help="Gateway replicas (default: one per core but one, two at least: a replica that dies "
                    "has another to fail over to).")] = default_replicas(),
    replica_cpus: Annotated[float | None, typer.Option(
        min=0.0, help="CPUs reserved per replica (default: one, less when replicas outnumber cores).")] = None,
    shadow_alias: Annotated[str, typer.Option(help="Alias scored in shadow ('' turns it off).")] = "challenger",
    access_log: Annotated[bool, typer.Option(help="Ray Serve per-request access log.")] = False,
    insecure: InsecureOption = False,
) -> None:
    """Start the gateway and block until interrupted (SIGINT or SIGTERM shut Serve down cleanly)."""
    allow_gateway_exposure(host, insecure)  # before Ray is even imported: off loopback, no tokens, no gateway
    from ray import serve

    from core.settings import get_settings
    from gateway.launch import connect_for_serving, deploy

    settings = get_settings()
    connect_for_serving()
    cpus = default_replica_cpus(replicas) if replica_cpus is None else replica_cpus
    url = deploy(host=host or settings.gateway_host, port=port or settings.gateway_port, replicas=replicas,
                 replica_cpus=cpus, models=model, shadow_alias=shadow_alias, access_log=access_log)
    typer.echo(f"esteira gateway on {url}  (docs: {url}/docs, health: {url}/v2/health/ready)")
    stop = threading.Event()
    # exiting without serve.shutdown() would leave HAProxy and the replicas running after the driver is gone
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    finally:
        typer.echo("stopping (replicas drain in-flight requests first)")
        serve.shutdown()

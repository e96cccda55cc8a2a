"""``esteira up | down | status``: the local stack (Prefect, a Ray head, the gateway) from the command line.

Thin wrappers over :mod:`esteira.stack`, which the demo and the tests call directly; :func:`register` adds
them to the root command at top level. The stack belongs to a project: its state lives under the project's
``ESTEIRA_HOME`` and its worker runs the project's flows.
"""

from __future__ import annotations

import shlex
from typing import Annotated

import typer
from rich.table import Table

from esteira.commands.common import InsecureOption, allow_gateway_exposure, console, fail

app = typer.Typer(help="The local Prefect stack (server, work pool, worker, deployments).",
                  no_args_is_help=True)


@app.command("up")
def up(
    deploy: Annotated[bool, typer.Option("--deploy/--no-deploy", help="Register deployments.yaml.")] = True,
    scheduler: Annotated[bool, typer.Option("--scheduler/--no-scheduler",
                                            help="Let schedules create runs.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each step.")] = 120.0,
    serving: Annotated[bool, typer.Option("--serving/--no-serving",
                                          help="Also start a Ray head and the gateway on it.")] = True,
    console_: Annotated[bool, typer.Option("--console/--no-console", help="Also start the web console.")] = True,
    insecure: InsecureOption = False,
) -> None:
    """Start the local stack: Prefect server, work pool, worker and deployments; a Ray head and the
    gateway; the web console (idempotent)."""
    from esteira.stack import StackError, start_stack

    if serving:
        allow_gateway_exposure(None, insecure)
    try:
        with console.status("starting the local Prefect stack..."):
            info = start_stack(deploy_flows=deploy, scheduler=scheduler, timeout=timeout, serving=serving,
                               console=console_)
    except StackError as exc:
        fail(str(exc))
        return
    console.print(f"Prefect UI:  [bold green]{info.ui_url}[/]")
    if info.console_url:
        console.print(f"Console:     [bold green]{info.console_url}[/]  (models, runs, monitoring, audit)")
    console.print(f"Prefect API: {info.api_url}  (server pid {info.server_pid}, "
                  f"worker pid {info.worker_pid})")
    console.print(f"Work pool:   {info.work_pool}")
    if info.gateway_url:
        console.print(f"Gateway:     [bold green]{info.gateway_url}[/]  (docs: {info.gateway_url}/docs)")
        console.print(f"Ray:         {info.ray_address} (head pid {info.ray_pid})")
    if info.deployments:
        console.print(f"Deployed:    {', '.join(info.deployments)}")
    if info.skipped_deployments:
        console.print(f"[yellow]Skipped (flow file missing):[/] {', '.join(info.skipped_deployments)}")
    console.print(f"Logs:        {info.logs.get('server', '')} (and worker, deploy)")
    console.print(f"Ready in {info.timings_s.get('total', 0):.1f}s. "
                  "Use `eval \"$(esteira status --env)\"` for plain prefect commands.")


@app.command("down")
def down(timeout: Annotated[float, typer.Option(help="Seconds before SIGKILL.")] = 20.0) -> None:
    """Stop what `esteira up` started: worker, server, Ray head and gateway (data and logs stay)."""
    from esteira.stack import stop_stack

    stopped = stop_stack(timeout=timeout)
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command("status")
def status(
    env: Annotated[bool, typer.Option("--env", help="Print `export` lines for PREFECT_API_URL etc.")] = False,
) -> None:
    """Show whether the stack runs, its URLs, workers and deployments. Exit 1 if it is not up."""
    from esteira.stack import stack_status

    if env:
        print_env()
        return
    state = stack_status()
    info = state.info
    table = Table(show_header=False)
    table.add_column("what", style="bold")
    table.add_column("state")

    def mark(ok: bool, text: str) -> str:
        return f"[green]{text}[/]" if ok else f"[red]{text}[/]"

    server = "healthy" if state.server_healthy else "down"
    if info and state.server_running:
        server += f" (pid {info.server_pid})"
    worker = "running" if state.worker_running else "stopped"
    if info and state.worker_running:
        worker += f" (pid {info.worker_pid})"
    if state.workers_online:
        worker += f", online: {', '.join(state.workers_online)}"
    table.add_row("server", mark(state.server_healthy, server))
    table.add_row("worker", mark(state.worker_running, worker))
    if info:
        table.add_row("UI", info.ui_url)
        if info.console_url:
            table.add_row("console", info.console_url)
        table.add_row("API", info.api_url)
        table.add_row("PREFECT_HOME", info.prefect_home)
        table.add_row("started", info.started_at)
        table.add_row("logs", "\n".join(f"{k}: {v}" for k, v in info.logs.items()))
    table.add_row("deployments", "\n".join(state.deployments) or "-")
    console.print(table)
    if not state.up:
        raise typer.Exit(1)


SERVER_ONLY = frozenset({"PREFECT_API_DATABASE_CONNECTION_URL"})
"""Variables only the Prefect server reads: shown masked, as a comment, never exported (a password)."""


def print_env() -> None:
    """``export`` lines that point a shell's ``prefect`` commands and Python at the stack, and its Ray head's
    client variables (token file, loopback mode) when the stack runs one."""
    from core.settings import redact_urls
    from esteira.stack import ray_client_env, read_stack, stack_env

    variables = stack_env()
    info = read_stack()
    if info is not None and info.ray_address:
        variables.update({"ESTEIRA_RAY_ADDRESS": info.ray_address, **ray_client_env()})
    for key, value in variables.items():
        if key in SERVER_ONLY:
            typer.echo(f"# {key}={redact_urls(value)}  (the server's own setting; not exported)")
        else:
            typer.echo(f"export {key}={shlex.quote(value)}")


def register(root: typer.Typer) -> None:
    """Add ``up``, ``down`` and ``status`` as top-level commands of ``root`` (``esteira up``)."""
    for command in app.registered_commands:
        root.registered_commands.append(command)

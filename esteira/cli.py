"""The ``esteira`` command. Sub-commands live with the part they drive and are mounted here.

Errors the user can fix (unknown model, bad alias, unreachable database) print one red line and exit 1;
nothing is changed. Tracebacks are for bugs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from esteira import __version__

app = typer.Typer(help="esteira: a self-hosted MLOps loop.", no_args_is_help=True, pretty_exceptions_enable=False)
models_app = typer.Typer(help="Browse and manage the model registry.", no_args_is_help=True)
app.add_typer(models_app, name="models")

console = Console()
err_console = Console(stderr=True)


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"esteira {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version_callback, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """esteira: Feast features, Ray training, a model registry, a Ray Serve gateway, whylogs monitoring."""


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can act on into one clear line and exit code 1."""
    from registry.errors import RegistryError

    try:
        yield
    except RegistryError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _registry(database_url: str | None) -> Any:
    from registry import Registry

    return Registry.from_url(database_url)


DbOption = Annotated[str | None, typer.Option("--database-url", envvar="ESTEIRA_DATABASE_URL",
                                              help="Registry database URL (default: SQLite under ESTEIRA_HOME).")]


def _fmt_metrics(metrics: dict[str, Any], limit: int = 4) -> str:
    items = list(metrics.items())[:limit]
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items)


@models_app.command("list")
def models_list(database_url: DbOption = None) -> None:
    """List registered models with their latest version and aliases."""
    with user_errors():
        reg = _registry(database_url)
        table = Table(title="Registered models")
        for column in ("model", "latest", "aliases", "created"):
            table.add_column(column)
        for model in reg.list_models():
            latest = reg.list_versions(model.name, limit=1)
            aliases = ", ".join(f"{a}→v{v}" for a, v in reg.aliases(model.name).items())
            table.add_row(model.name, f"v{latest[0].version}" if latest else "-", aliases or "-",
                          f"{model.created_at:%Y-%m-%d %H:%M}")
        console.print(table)


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS")],
    database_url: DbOption = None,
) -> None:
    """Show a model's versions, or one version's lineage."""
    from registry import ModelRef

    with user_errors():
        reg = _registry(database_url)
        parsed = ModelRef.parse(ref)
        if parsed.version is None and parsed.alias is None:
            aliases = reg.aliases(parsed.name)
            by_version: dict[int, list[str]] = {}
            for alias, version in aliases.items():
                by_version.setdefault(version, []).append(alias)
            table = Table(title=f"Versions of {parsed.name}")
            for column in ("version", "aliases", "status", "flavor", "metrics", "feature service", "created"):
                table.add_column(column)
            for mv in reg.list_versions(parsed.name):
                table.add_row(str(mv.version), ", ".join(by_version.get(mv.version, [])) or "-", mv.status,
                              mv.flavor, _fmt_metrics(mv.metrics), mv.feature_service or "-",
                              f"{mv.created_at:%Y-%m-%d %H:%M:%S}")
            console.print(table)
            return
        mv = reg.get(parsed)
        table = Table(title=f"{mv.model_name} v{mv.version}", show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value")
        for field in ("status", "flavor", "artifact_uri", "artifact_sha256", "feature_service", "training_set_uri",
                      "training_set_sha256", "reference_profile_uri", "code_version", "flow_run_id",
                      "training_run_id", "created_at"):
            table.add_row(field, str(getattr(mv, field)))
        table.add_row("params", _fmt_metrics(mv.params, limit=50))
        table.add_row("metrics", _fmt_metrics(mv.metrics, limit=50))
        table.add_row("inputs", ", ".join(f"{c['name']}:{c.get('dtype', '?')}" for c in mv.signature.get("inputs", [])))
        console.print(table)


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="Model name")],
    version: Annotated[int, typer.Argument(help="Version number to point the alias at")],
    alias: Annotated[str, typer.Option("--alias", "-a", help="Alias to move")] = "production",
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit log)")] = "",
    actor: Annotated[str, typer.Option("--actor", envvar="USER", help="Who (kept in the audit log)")] = "cli",
    database_url: DbOption = None,
) -> None:
    """Point ALIAS at VERSION (one transaction, audited)."""
    with user_errors():
        event = _registry(database_url).promote(name, version, alias=alias, reason=reason, actor=actor)
        was = f"v{event.from_version}" if event.from_version is not None else "nothing"
        console.print(f"{name}@{alias}: {was} → [bold green]v{event.to_version}[/]")


@models_app.command("rollback")
def models_rollback(
    name: Annotated[str, typer.Argument(help="Model name")],
    alias: Annotated[str, typer.Option("--alias", "-a", help="Alias to roll back")] = "production",
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit log)")] = "",
    actor: Annotated[str, typer.Option("--actor", envvar="USER", help="Who (kept in the audit log)")] = "cli",
    database_url: DbOption = None,
) -> None:
    """Point ALIAS back at the version that held it before the current one."""
    with user_errors():
        event = _registry(database_url).rollback(name, alias=alias, reason=reason, actor=actor)
        console.print(f"{name}@{alias}: v{event.from_version} → [bold yellow]v{event.to_version}[/] (rollback)")


@models_app.command("history")
def models_history(
    name: Annotated[str, typer.Argument(help="Model name")],
    alias: Annotated[str | None, typer.Option("--alias", "-a", help="Only this alias")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Most recent N events")] = 50,
    database_url: DbOption = None,
) -> None:
    """The model's audit log: registrations, promotions, rollbacks, refused loads."""
    with user_errors():
        events = _registry(database_url).history(name, alias=alias, limit=limit)
        table = Table(title=f"Audit log of {name}")
        for column in ("#", "when", "action", "alias", "from", "to", "actor", "reason"):
            table.add_column(column)
        for e in events:
            table.add_row(str(e.id), f"{e.created_at:%Y-%m-%d %H:%M:%S}", e.action, e.alias or "-",
                          "-" if e.from_version is None else f"v{e.from_version}",
                          "-" if e.to_version is None else f"v{e.to_version}", e.actor, e.reason)
        console.print(table)


def _mount_parts() -> None:
    from esteira import stack_cli
    from flows.cli import score_app, train_app
    from gateway.cli import serve_command

    app.add_typer(train_app, name="train")
    app.add_typer(score_app, name="score")
    app.command("serve")(serve_command)
    stack_cli.register(app)


@app.command("materialize")
def materialize_command(
    generate: Annotated[bool, typer.Option(help="Generate an example batch first.")] = False,
    batch: Annotated[str, typer.Option(help="Example batch: history or recent.")] = "history",
    drift: Annotated[bool, typer.Option(help="Generate the batch in drift mode.")] = False,
    customers: Annotated[int, typer.Option(help="Customers in a generated batch.")] = 5_000,
) -> None:
    """Apply the Feast definitions and materialize features into the online store."""
    from flows.materialize import run_materialize

    with user_errors():
        result = run_materialize(generate=generate, batch=batch, drift=drift, n_customers=customers)  # type: ignore[arg-type]
    console.print_json(data=result, default=str)


@app.command("monitor")
def monitor_command(
    model: Annotated[str, typer.Argument(help="Model name")] = "churn",
    batch_uri: Annotated[str | None, typer.Option(help="Judge a parquet batch instead of gateway traffic.")] = None,
    trigger: Annotated[str | None, typer.Option(help="auto | event | direct | off")] = None,
) -> None:
    """Compare traffic (or a batch) with the production model's reference profile; decide."""
    from flows.monitor import run_monitor

    with user_errors():
        outcome = run_monitor(model, batch_uri=batch_uri, trigger=trigger)  # type: ignore[arg-type]
    console.print_json(data=outcome.to_dict(), default=str)


@app.command("demo")
def demo_command(
    customers: Annotated[int, typer.Option(help="Customers in the generated example data.")] = 3_000,
    keep_up: Annotated[bool, typer.Option("--keep-up/--down", help="Leave the stack running afterwards.")] = False,
    summary_json: Annotated[str | None, typer.Option(help="Also write the summary to this JSON file.")] = None,
) -> None:
    """The whole loop end to end: data, training on Ray, gateway, traffic, drift, event-triggered retraining."""
    import json
    from pathlib import Path

    from esteira.demo import DemoFailed, Demo

    demo = Demo(customers=customers, keep_up=keep_up, console=console)
    try:
        summary = demo.run()
    except DemoFailed as exc:
        err_console.print(f"[bold red]demo failed:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        if summary_json and demo.last_summary is not None:
            Path(summary_json).write_text(json.dumps(demo.last_summary.to_dict(), default=str, indent=2))
    if not summary.ok:
        raise typer.Exit(1)


_mount_parts()

if __name__ == "__main__":  # pragma: no cover
    app()

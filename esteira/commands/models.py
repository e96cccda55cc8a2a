"""``esteira models ...``: browse and manage the model registry (list, show, promote, rollback, history, and
the webhook deliveries of its events)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from core.settings import url_origin
from esteira.commands.common import DbOption, console, open_registry, user_errors

app = typer.Typer(help="Browse and manage the model registry.", no_args_is_help=True)


def _fmt_metrics(metrics: dict[str, Any], limit: int = 4) -> str:
    items = list(metrics.items())[:limit]
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items)


@app.command("list")
def models_list(database_url: DbOption = None) -> None:
    """List registered models with their latest version and aliases."""
    with user_errors(), open_registry(database_url) as reg:
        table = Table(title="Registered models")
        for column in ("model", "latest", "aliases", "created"):
            table.add_column(column)
        for model in reg.list_models():
            latest = reg.list_versions(model.name, limit=1)
            aliases = ", ".join(f"{a}→v{v}" for a, v in reg.aliases(model.name).items())
            table.add_row(model.name, f"v{latest[0].version}" if latest else "-", aliases or "-",
                          f"{model.created_at:%Y-%m-%d %H:%M}")
        console.print(table)


@app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS")],
    database_url: DbOption = None,
) -> None:
    """Show a model's versions, or one version's lineage."""
    from registry import ModelRef

    with user_errors(), open_registry(database_url) as reg:
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


@app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="Model name")],
    version: Annotated[int, typer.Argument(help="Version number to point the alias at")],
    alias: Annotated[str, typer.Option("--alias", "-a", help="Alias to move")] = "production",
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit log)")] = "",
    actor: Annotated[str, typer.Option("--actor", envvar="USER", help="Who (kept in the audit log)")] = "cli",
    database_url: DbOption = None,
) -> None:
    """Point ALIAS at VERSION (one transaction, audited)."""
    with user_errors(), open_registry(database_url) as reg:
        event = reg.promote(name, version, alias=alias, reason=reason, actor=actor)
        was = f"v{event.from_version}" if event.from_version is not None else "nothing"
        console.print(f"{name}@{alias}: {was} → [bold green]v{event.to_version}[/]")


@app.command("rollback")
def models_rollback(
    name: Annotated[str, typer.Argument(help="Model name")],
    alias: Annotated[str, typer.Option("--alias", "-a", help="Alias to roll back")] = "production",
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit log)")] = "",
    actor: Annotated[str, typer.Option("--actor", envvar="USER", help="Who (kept in the audit log)")] = "cli",
    database_url: DbOption = None,
) -> None:
    """Point ALIAS back at the version that held it before the current one."""
    with user_errors(), open_registry(database_url) as reg:
        event = reg.rollback(name, alias=alias, reason=reason, actor=actor)
        console.print(f"{name}@{alias}: v{event.from_version} → [bold yellow]v{event.to_version}[/] (rollback)")


@app.command("history")
def models_history(
    name: Annotated[str, typer.Argument(help="Model name")],
    alias: Annotated[str | None, typer.Option("--alias", "-a", help="Only this alias")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Most recent N events")] = 50,
    database_url: DbOption = None,
) -> None:
    """The model's audit log: registrations, promotions, rollbacks, refused loads."""
    with user_errors(), open_registry(database_url) as reg:
        events = reg.history(name, alias=alias, limit=limit)
        table = Table(title=f"Audit log of {name}")
        for column in ("#", "when", "action", "alias", "from", "to", "actor", "reason"):
            table.add_column(column)
        for e in events:
            table.add_row(str(e.id), f"{e.created_at:%Y-%m-%d %H:%M:%S}", e.action, e.alias or "-",
                          "-" if e.from_version is None else f"v{e.from_version}",
                          "-" if e.to_version is None else f"v{e.to_version}", e.actor, e.reason)
        console.print(table)


@app.command("deliveries")
def models_deliveries(
    name: Annotated[str | None, typer.Argument(help="Only this model's events")] = None,
    status: Annotated[str | None, typer.Option("--status", "-s", help="pending, delivered or failed")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Most recent N deliveries")] = 50,
    retry: Annotated[bool, typer.Option("--retry", help="Send again the failed deliveries and those left "
                                        "pending by a process that died (one try each), then list them")] = False,
    database_url: DbOption = None,
) -> None:
    """Webhook deliveries of registry events: where each went, how many tries, how it ended."""
    with user_errors(), open_registry(database_url) as reg:
        if retry:
            rows = reg.redeliver(model_name=name, limit=limit)
            title = f"Redelivered ({sum(r.status == 'delivered' for r in rows)} of {len(rows)} delivered)"
        else:
            rows = reg.deliveries(name, status=status, limit=limit)
            title = "Webhook deliveries"
        table = Table(title=title)
        for column in ("#", "event", "url", "status", "tries", "code", "updated", "error"):
            table.add_column(column)
        for row in rows:
            table.add_row(str(row.id), str(row.event_id), url_origin(row.url), row.status, str(row.attempts),
                          "-" if row.response_code is None else str(row.response_code),
                          f"{row.updated_at:%Y-%m-%d %H:%M:%S}", (row.error or "")[:80])
        console.print(table)

"""``esteira canary ...``: start a canary, change its traffic share, judge it, or end it by hand."""

from __future__ import annotations

from typing import Annotated

import typer

from esteira.commands.common import DbOption, console, open_registry, user_errors

app = typer.Typer(help="Canary releases: a share of live traffic, judged by evidence.", no_args_is_help=True)

Reason = Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit log)")]
Actor = Annotated[str, typer.Option("--actor", envvar="USER", help="Who (kept in the audit log)")]


@app.command("start")
def canary_start(
    name: Annotated[str, typer.Argument(help="Model name")],
    version: Annotated[int, typer.Argument(help="The version to send a share of traffic to")],
    share: Annotated[float | None, typer.Option(help="Share of requests, 0 < share <= 1 (default: the "
                                                     "model's last share, else 0.1)")] = None,
    reason: Reason = "",
    actor: Actor = "cli",
    database_url: DbOption = None,
) -> None:
    """Point the canary alias at VERSION with a share of traffic (audited); the gateway routes it at its
    next poll and the canary flow judges it."""
    with user_errors(), open_registry(database_url) as reg:
        reg.start_canary(name, version, share=share, reason=reason, actor=actor)
        console.print(f"{name}@canary → [bold]v{version}[/] with {reg.canary_share(name):.0%} of requests")


@app.command("share")
def canary_share(
    name: Annotated[str, typer.Argument(help="Model name")],
    share: Annotated[float, typer.Argument(help="New share of requests, 0 < share <= 1")],
    reason: Reason = "",
    actor: Actor = "cli",
    database_url: DbOption = None,
) -> None:
    """Change the canary's traffic share at run time (audited)."""
    with user_errors(), open_registry(database_url) as reg:
        event = reg.set_canary_share(name, share, reason=reason, actor=actor)
        was = event.details.get("from_share")
        console.print(f"{name}@canary share: {'-' if was is None else f'{was:.0%}'} → [bold]{share:.0%}[/]")


@app.command("judge")
def canary_judge(
    name: Annotated[str | None, typer.Argument(help="Model name (default: every model of the project with "
                                                    "a canary)")] = None,
    act: Annotated[bool, typer.Option("--act/--no-act", help="Conclude the canary on a final verdict")] = True,
) -> None:
    """Judge the canary on the traffic so far: promote, rollback or continue (what the canary flow does)."""
    from core.project import current_project
    from flows.canary import run_canary
    from flows.spec import models_with_alias

    with user_errors(), open_registry() as registry:
        names = [name] if name else models_with_alias(registry, current_project(), "canary")
        if not names:
            raise ValueError("no model of this project has a canary")
        outcomes = {}
        for model in names:
            outcome = run_canary(model, registry=registry, act=act)
            outcomes[model] = outcome.to_dict() if outcome else {"action": "none", "reason": "no canary"}
    console.print_json(data=outcomes[name] if name else outcomes, default=str)


@app.command("end")
def canary_end(
    name: Annotated[str, typer.Argument(help="Model name")],
    promote: Annotated[bool, typer.Option("--promote/--rollback", help="Promote the canary to production, or "
                                                                       "roll it back")] = False,
    reason: Reason = "",
    actor: Actor = "cli",
    database_url: DbOption = None,
) -> None:
    """End the canary by hand: promote it to production or roll it back (one audited transaction)."""
    with user_errors(), open_registry(database_url) as reg:
        events = reg.end_canary(name, promote=promote, reason=reason, actor=actor)
        version = events[0].to_version
        verb = "[bold green]promoted to production[/]" if promote else "[bold yellow]rolled back[/]"
        console.print(f"{name}@canary v{version}: {verb}")

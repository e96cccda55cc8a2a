"""``esteira features plan|apply`` and ``esteira materialize``: the project's Feast definitions and online store.

``plan`` is ``feast plan`` (what would be added, changed, removed); ``apply`` is ``feast apply``: the
registry ends up holding exactly what the project defines. ``materialize`` applies first, then loads the
online store, for every online view or the ones named, up to now or over a given range.
"""

from __future__ import annotations

from typing import Annotated

import typer

from esteira.commands.common import JsonOption, console, user_errors

app = typer.Typer(help="The project's Feast definitions: plan and apply (a sync: removals included).",
                  no_args_is_help=True)


def _project_store():  # noqa: ANN202 - (Project, FeatureStore)
    from core.project import current_project
    from feature_repo.store import open_store

    project = current_project()
    return project, open_store(project)


@app.command("plan")
def plan_command(as_json: JsonOption = False) -> None:
    """Show what `esteira features apply` would add, change and remove in Feast's registry."""
    from feature_repo.sync import plan

    with user_errors():
        project, store = _project_store()
        result = plan(store, project)
    if as_json:
        console.print_json(data=result.to_dict())
    else:
        console.print(result.to_text(), highlight=False)


@app.command("apply")
def apply_command(as_json: JsonOption = False) -> None:
    """Make Feast's registry hold exactly the project's definitions (what they dropped is removed)."""
    from feature_repo.sync import sync

    with user_errors():
        project, store = _project_store()
        result = sync(store, project)
    if as_json:
        console.print_json(data=result.to_dict())
    else:
        console.print(result.to_text(), highlight=False)


def materialize_command(
    view: Annotated[list[str] | None, typer.Option("--view", "-v", help="Only this feature view (repeatable).")] = None,
    start: Annotated[str | None, typer.Option(help="From this moment: ISO datetime or relative (-7d). Default: "
                                                   "where each view stopped, or its source's beginning.")] = None,
    end: Annotated[str | None, typer.Option(help="Up to this moment: ISO datetime or relative (-1h). Default: now."
                                            )] = None,
    apply: Annotated[bool, typer.Option("--apply/--no-apply", help="Apply the definitions first.")] = True,
) -> None:
    """Apply the project's Feast definitions, then load the online store."""
    from flows.materialize import run_materialize

    with user_errors():
        result = run_materialize(views=view, start=start, end=end, apply=apply)
    console.print_json(data=result, default=str)

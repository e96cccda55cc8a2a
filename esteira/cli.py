"""The ``esteira`` command: the application shell over esteira's parts, acting on one project.

The project is ``--project DIR``, else ``ESTEIRA_PROJECT``, else the current folder when it holds a
``feature_store.yaml``. Sub-commands live in :mod:`esteira.commands`, one module per part they drive.
Errors the user can fix print one red line and exit 1; nothing is changed. Tracebacks are for bugs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from esteira.commands import canary, console_cmd, features, models, monitor, serve, stack, train
from esteira.commands.common import console, fail

app = typer.Typer(help="esteira: a self-hosted MLOps loop over your project (Feast features, Ray training, a "
                       "model registry, a Ray Serve gateway, whylogs monitoring, Prefect flows).",
                  no_args_is_help=True, pretty_exceptions_enable=False)


def _version_callback(value: bool) -> None:
    if value:
        from esteira import __version__

        console.print(f"esteira {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    project: Annotated[Path | None, typer.Option(
        "--project", "-p", help="The project folder (default: ESTEIRA_PROJECT, else the current folder when it "
        "holds a feature_store.yaml).", show_default=False)] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version_callback, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """esteira: Feast features, Ray training, a model registry, a Ray Serve gateway, whylogs monitoring."""
    if project is not None:
        from core.project import is_project
        from core.settings import get_settings

        root = project.expanduser().resolve()
        if not is_project(root):
            fail(f"{root} is not an esteira project: it has no feature_store.yaml (`esteira init {project}` "
                 "makes one)")
        # The environment, not a global: child processes (the stack, flow runs, Ray) see the same project.
        os.environ["ESTEIRA_PROJECT"] = str(root)
        get_settings.cache_clear()


app.add_typer(models.app, name="models")
app.add_typer(canary.app, name="canary")
app.add_typer(features.app, name="features")
app.add_typer(train.train_app, name="train")
app.add_typer(train.score_app, name="score")
app.command("materialize")(features.materialize_command)
app.command("monitor")(monitor.monitor_command)
app.command("serve")(serve.serve_command)
app.command("console")(console_cmd.console_command)
stack.register(app)


@app.command("init")
def init_command(
    folder: Annotated[Path, typer.Argument(help="The folder to create (or an empty one to fill).")],
    name: Annotated[str | None, typer.Option(help="Feast project and model name (default: the folder's name).")
                    ] = None,
) -> None:
    """Create a project: feature_store.yaml, feature definitions, a model spec and sample data that
    materialize, train and serve as they are. Then replace the sample with your own."""
    from esteira.scaffold import ScaffoldError, scaffold

    try:
        created = scaffold(folder, name=name)
    except ScaffoldError as exc:
        fail(str(exc))
        return
    console.print(f"[bold green]created[/] {created.root}", highlight=False)
    for path in created.files:
        console.print(f"  {path}", highlight=False)
    console.print(f"\nNext: cd {folder} && esteira materialize && esteira train run {created.model} && "
                  "esteira serve", highlight=False)


@app.command("demo")
def demo_command(
    project: Annotated[Path, typer.Argument(help="A project with a scenario.py (as the examples have).")],
    scale: Annotated[float, typer.Option(min=0.05, max=10.0, help="Data size relative to the scenario's default.")
                     ] = 1.0,
    keep_up: Annotated[bool, typer.Option("--keep-up/--down", help="Leave the stack running afterwards.")] = False,
    summary_json: Annotated[str | None, typer.Option(help="Also write the summary to this JSON file.")] = None,
) -> None:
    """The whole loop end to end on a project: data, training on Ray, gateway, traffic, drift,
    event-triggered retraining, hot swap under load."""
    import json

    from core.project import ProjectError, current_project
    from core.settings import get_settings
    from esteira.demo import Demo, DemoFailed

    try:
        resolved = current_project(project)
    except ProjectError as exc:
        fail(str(exc))
        return
    os.environ["ESTEIRA_PROJECT"] = str(resolved.root)
    get_settings.cache_clear()
    demo = Demo(resolved, keep_up=keep_up, console=console, scale=scale)
    try:
        summary = demo.run()
    except DemoFailed as exc:
        fail(f"demo failed: {exc}")
        return
    finally:
        if summary_json and demo.last_summary is not None:
            Path(summary_json).write_text(json.dumps(demo.last_summary.to_dict(), default=str, indent=2))
    if not summary.ok:
        raise typer.Exit(1)


if __name__ == "__main__":  # pragma: no cover
    app()

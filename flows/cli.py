"""``esteira train ...`` and ``esteira score ...``: the training-side commands.

Each command calls the same plain function a test calls; ``--flow`` runs it as a Prefect flow run
instead (artifacts in the UI; without ``PREFECT_API_URL`` Prefect starts a temporary server).
Errors the user can fix (bad spec, unknown feature service, failed validation, unknown model)
print one red line and exit 1; nothing was registered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

train_app = typer.Typer(help="Train, check and reproduce models from model specs.", no_args_is_help=True)
score_app = typer.Typer(help="Score entities in batch with a registered model.", no_args_is_help=True)

console = Console()
err_console = Console(stderr=True)

DbOption = Annotated[str | None, typer.Option("--database-url", envvar="ESTEIRA_DATABASE_URL",
                                              help="Registry database URL (default: SQLite under ESTEIRA_HOME).")]
FlowOption = Annotated[bool, typer.Option("--flow", help="Run as a Prefect flow run (artifacts in the UI).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


@contextmanager
def _user_errors() -> Iterator[None]:
    from pydantic import ValidationError

    from flows.errors import DataValidationError, ReproductionMismatch, SearchFailed, TrainingInputError
    from registry.errors import RegistryError

    try:
        yield
    except DataValidationError as exc:
        err_console.print(exc.report.to_markdown(), highlight=False)
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except (TrainingInputError, SearchFailed, ReproductionMismatch, RegistryError, ValidationError,
            FileNotFoundError, ValueError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _registry(database_url: str | None) -> Any:
    from registry import Registry

    return Registry.from_url(database_url)


def _print(result: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        console.print_json(json.dumps(result, default=str))
        return
    table = Table(title=title, show_header=False)
    for key, value in result.items():
        table.add_row(key, json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value))
    console.print(table)


@train_app.command("run")
def run(
    spec: Annotated[str, typer.Argument(help="A shipped spec name (churn) or a YAML path.")] = "churn",
    sequential: Annotated[bool, typer.Option("--sequential", help="Run trials in this process, not on Ray.")] = False,
    database_url: DbOption = None,
    as_flow: FlowOption = False,
    as_json: JsonOption = False,
) -> None:
    """Train the model a spec describes: features, validation, search on Ray, evaluation, registration."""
    with _user_errors():
        if as_flow:
            from flows.train import train_flow

            result = train_flow(spec=spec, parallel=not sequential, database_url=database_url)
        else:
            from flows.train import train

            registry = _registry(database_url)
            try:
                result = train(spec, registry=registry, parallel=not sequential, actor="cli").to_dict()
            finally:
                registry.close()
    _print(result, as_json, f"{result['model_name']} v{result['version']} -> {result['alias']}")


@train_app.command("check-spec")
def check_spec(spec: Annotated[str, typer.Argument(help="A shipped spec name or a YAML path.")] = "churn") -> None:
    """Validate a spec (estimators, parameter names, metric) and list the trials it expands to."""
    with _user_errors():
        from flows.train import resolve_spec

        parsed = resolve_spec(spec)
        table = Table(title=f"{parsed.name}: {len(parsed.trial_configs())} trials")
        table.add_column("#")
        table.add_column("family")
        table.add_column("params")
        for i, (family, params) in enumerate(parsed.trial_configs()):
            table.add_row(str(i), family, ", ".join(f"{k}={v}" for k, v in params.items()))
    console.print(table)


@train_app.command("reproduce")
def reproduce_cmd(
    ref: Annotated[str, typer.Argument(help="name:version or name@alias")],
    database_url: DbOption = None,
    as_flow: FlowOption = False,
    as_json: JsonOption = False,
) -> None:
    """Retrain a registered version from its lineage; exit 1 unless data, params and metrics match."""
    with _user_errors():
        if as_flow:
            from flows.reproduce import reproduce_flow

            result = reproduce_flow(ref=ref, database_url=database_url)
        else:
            from flows.reproduce import reproduce

            registry = _registry(database_url)
            try:
                outcome = reproduce(ref, registry=registry)
            finally:
                registry.close()
            if not as_json:
                console.print(outcome.to_markdown(), highlight=False)
            result = outcome.to_dict()
            if not outcome.matches:
                raise typer.Exit(1)
    if as_json:
        _print(result, True, "")


@score_app.command("batch")
def score_batch(
    model: Annotated[str, typer.Argument(help="name@alias or name:version")] = "churn@production",
    entities: Annotated[str, typer.Option(help="Parquet path/URI of entities, or 'labels'.")] = "labels",
    output: Annotated[str | None, typer.Option(help="Parquet path or fsspec URI (default under ESTEIRA_HOME).")] = None,
    mode: Annotated[str, typer.Option(help="offline (point-in-time) or online (latest values).")] = "offline",
    database_url: DbOption = None,
    as_flow: FlowOption = False,
    as_json: JsonOption = False,
) -> None:
    """Score entities with a registered model; predictions name the model and version."""
    if mode not in ("offline", "online"):
        err_console.print(f"[bold red]error:[/] --mode must be offline or online, not {mode!r}")
        raise typer.Exit(1)
    with _user_errors():
        if as_flow:
            from flows.batch_score import batch_score_flow

            result = batch_score_flow(model=model, entities=entities, output=output, mode=mode,
                                      database_url=database_url)
        else:
            from flows.batch_score import batch_score

            registry = _registry(database_url)
            try:
                result = batch_score(model, entities, output=output, mode=mode,  # type: ignore[arg-type]
                                     registry=registry).to_dict()
            finally:
                registry.close()
    _print(result, as_json, f"{result['model_name']} v{result['version']}: {result['rows']} rows scored")


app = typer.Typer(no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(score_app, name="score")

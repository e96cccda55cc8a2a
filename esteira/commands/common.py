"""What every command shares: the consoles, the one way user errors are printed, registry options.

Errors a user can fix (an unknown model, a bad spec, a missing source file, no project here) print one red
line and exit 1, having changed nothing. Tracebacks are for bugs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

DbOption = Annotated[str | None, typer.Option("--database-url", envvar="ESTEIRA_DATABASE_URL",
                                              help="Registry database URL (default: SQLite under ESTEIRA_HOME).")]
FlowOption = Annotated[bool, typer.Option("--flow", help="Run as a Prefect flow run (artifacts in the UI).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can act on into one clear line and exit code 1."""
    from pydantic import ValidationError

    from core.project import ProjectError
    from flows.errors import DataValidationError, ReproductionMismatch, SearchFailed, TrainingInputError
    from registry.errors import RegistryError

    try:
        yield
    except DataValidationError as exc:
        err_console.print(exc.report.to_markdown(), highlight=False)
        fail(str(exc))
    except (RegistryError, ProjectError, TrainingInputError, SearchFailed, ReproductionMismatch, ValidationError,
            FileNotFoundError, ValueError) as exc:
        fail(" ".join(str(exc).split()) if isinstance(exc, ValidationError) else str(exc))


@contextmanager
def open_registry(database_url: str | None = None) -> Iterator[Any]:
    """The registry for one command, closed when it is done."""
    from registry import Registry

    registry = Registry.from_url(database_url)
    try:
        yield registry
    finally:
        registry.close()


def print_result(result: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        console.print_json(json.dumps(result, default=str))
        return
    table = Table(title=title, show_header=False)
    for key, value in result.items():
        table.add_row(key, json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value))
    console.print(table)

"""What every command shares: the consoles, the one way user errors are printed, registry options.

Errors a user can fix (an unknown model, a bad spec, a missing source file, no project here) print one red
line and exit 1, having changed nothing. Tracebacks are for bugs. Nothing a command prints shows a password:
every error line goes through :func:`core.settings.redact_urls`.
"""

from __future__ import annotations

import json
import os
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
InsecureOption = Annotated[bool, typer.Option(
    "--insecure", help="Let the gateway listen off 127.0.0.1 without ESTEIRA_GATEWAY_PREDICT_TOKEN and "
    "ESTEIRA_GATEWAY_ADMIN_TOKEN: anyone who reaches it can predict, send labels and read metrics.")]


def fail(message: str) -> None:
    from core.settings import redact_urls

    err_console.print(f"[bold red]error:[/] {redact_urls(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def allow_gateway_exposure(host: str | None, insecure: bool) -> None:
    """Before anything starts: refuse a gateway off loopback without tokens (one red line, exit 1), or warn when
    ``--insecure`` allows it. The choice is put in the environment, so the replicas (:mod:`gateway.exposure`
    checks again in each) and the stack's processes see the same one."""
    from gateway.exposure import INSECURE_VARIABLE, ExposureError, check_settings

    if insecure:
        from core.settings import get_settings

        os.environ[INSECURE_VARIABLE] = "1"
        get_settings.cache_clear()
    with user_errors():
        try:
            warning = check_settings(host)
        except ExposureError as exc:
            fail(str(exc))
            return
    if warning:
        err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


@contextmanager
def registry_in_environment(database_url: str | None) -> Iterator[None]:
    """Name a registry for a ``--flow`` run through ``ESTEIRA_DATABASE_URL`` rather than as a flow parameter.

    Prefect stores a run's parameters and shows them in the UI and the API; a database URL carries a password.
    The flow reads the registry from its settings, which read this process's environment (the run is in this
    process). A deployment run gets it from the worker's environment the same way.
    """
    if database_url is None:
        yield
        return
    from core.settings import get_settings

    before = os.environ.get("ESTEIRA_DATABASE_URL")
    os.environ["ESTEIRA_DATABASE_URL"] = database_url
    get_settings.cache_clear()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("ESTEIRA_DATABASE_URL", None)
        else:
            os.environ["ESTEIRA_DATABASE_URL"] = before
        get_settings.cache_clear()


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

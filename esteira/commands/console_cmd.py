"""``esteira console``: the web console on its own (``esteira up`` starts it with the rest of the stack)."""

from __future__ import annotations

from typing import Annotated

import typer

from esteira.commands.common import InsecureOption, fail


def console_command(
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings.console_host).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default: settings.console_port).")] = None,
    insecure: InsecureOption = False,
) -> None:
    """Serve the web console (models, versions, training runs, monitoring, audit; promote and roll back)."""
    import os

    from console.server import ConsoleExposureError, serve
    from core.settings import get_settings, redact_urls
    from gateway.exposure import INSECURE_VARIABLE

    if insecure:
        os.environ[INSECURE_VARIABLE] = "1"
        get_settings.cache_clear()
    settings = get_settings()
    url = f"http://{host or settings.console_host}:{port or settings.console_port}"
    typer.echo(f"esteira console on {url}  (registry: {redact_urls(settings.resolved_database_url)})")
    try:
        serve(host, port, settings)
    except ConsoleExposureError as exc:
        fail(str(exc))

"""Run the console: one uvicorn process, on loopback unless told otherwise.

Off loopback the pages are readable by whoever reaches the port (as MLflow's UI is), so the console refuses to
listen there unless the admin token guards its two actions, or ``ESTEIRA_GATEWAY_INSECURE=1`` says open
actions are meant.
"""

from __future__ import annotations

import logging

from core.network import is_loopback
from core.settings import Settings, get_settings

log = logging.getLogger("esteira.console")


class ConsoleExposureError(ValueError):
    """The console would listen off loopback with promote and rollback open to anyone."""


def check_exposure(host: str, settings: Settings) -> None:
    if is_loopback(host) or settings.gateway_admin_token is not None:
        return
    if settings.gateway_insecure:
        log.warning("the console listens on %s without an admin token: anyone who reaches it can promote and "
                    "roll back models", host)
        return
    raise ConsoleExposureError(
        f"the console would listen on {host} with promote and rollback open to anyone: set "
        "ESTEIRA_GATEWAY_ADMIN_TOKEN (the console's actions then need it), bind 127.0.0.1, or pass --insecure")


def serve(host: str | None = None, port: int | None = None, settings: Settings | None = None) -> None:
    """Serve the console until interrupted."""
    import uvicorn

    from console.app import Console, create_app

    s = settings or get_settings()
    host = host or s.console_host
    check_exposure(host, s)
    app = create_app(Console(s))
    uvicorn.run(app, host=host, port=port or s.console_port, log_level="warning", access_log=False)

"""Whether the gateway may listen where it is asked to: one rule for every way it starts.

On loopback (``127.0.0.0/8``, ``::1``, ``localhost``) only this machine's processes reach the gateway, and it
may run without tokens: the embedded default. Anywhere else (``0.0.0.0``, ``::``, a network address, a host
name) it needs both bearer tokens, predict and admin (feedback falls back to the admin one), or an explicit
opt-out (``--insecure``, ``ESTEIRA_GATEWAY_INSECURE=1``) that makes it say, every time it starts, that anyone
who reaches the port can predict, send labels that decide retraining, and read the metrics.

Who asks: ``esteira serve`` and ``esteira up`` before anything starts (:func:`check_settings`); and every
replica in its constructor (:func:`check_replica`), against the HTTP host Serve was started with. The replica's
check is the only one on the ``serve deploy gateway/serve_config.yaml`` path (``gateway.deployment:build``),
and it reads the tokens from the replica's own environment: a cluster whose nodes lack them refuses to serve
(the deployment fails with this module's message) instead of serving everyone.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from core.network import is_loopback  # the rule the console binds by too

if TYPE_CHECKING:
    from core.settings import Settings
    from gateway.config import GatewayConfig

__all__ = ["ExposureError", "INSECURE_VARIABLE", "check_exposure", "check_replica", "check_settings", "is_loopback",
           "open_scopes"]

log = logging.getLogger("esteira.gateway.exposure")

INSECURE_VARIABLE = "ESTEIRA_GATEWAY_INSECURE"


class ExposureError(ValueError):
    """The gateway would listen off loopback with routes open to anyone; the message says how to close them."""


def open_scopes(predict_token: str | None, admin_token: str | None) -> list[str]:
    """The classes of routes left open: ``predict`` (and feedback, when no admin token), ``admin`` (and
    ``/metrics``)."""
    return [scope for scope, token in (("predict", predict_token), ("admin", admin_token)) if not token]


def check_exposure(host: str | None, *, predict_token: str | None, admin_token: str | None, insecure: bool
                   ) -> str | None:
    """The rule. None when the gateway may start as asked; the warning to show when it may only because of
    ``insecure``. Raises :class:`ExposureError` when it must not start."""
    scopes = open_scopes(predict_token, admin_token)
    if is_loopback(host) or not scopes:
        return None
    where = f"the gateway would listen on {host or 'every interface'} with its {' and '.join(scopes)} routes open"
    if insecure:
        return (f"{where}: anyone who reaches this port can predict, send labels that decide retraining and read "
                "the metrics (allowed by --insecure / ESTEIRA_GATEWAY_INSECURE=1)")
    raise ExposureError(
        f"{where}. Set ESTEIRA_GATEWAY_PREDICT_TOKEN and ESTEIRA_GATEWAY_ADMIN_TOKEN, bind 127.0.0.1, or accept "
        "open routes with --insecure (ESTEIRA_GATEWAY_INSECURE=1 for `esteira up` and `serve deploy`)")


def _secret(value: object) -> str | None:
    return value.get_secret_value() if value is not None else None  # type: ignore[attr-defined]


def check_settings(host: str | None = None, *, insecure: bool = False, settings: Settings | None = None
                   ) -> str | None:
    """:func:`check_exposure` for a gateway this process is about to start on ``host`` (default: the settings'),
    with the settings' tokens; ``insecure`` or ``ESTEIRA_GATEWAY_INSECURE`` allow open routes."""
    from core.settings import get_settings

    s = settings or get_settings()
    return check_exposure(host if host is not None else s.gateway_host,
                          predict_token=_secret(s.gateway_predict_token), admin_token=_secret(s.gateway_admin_token),
                          insecure=insecure or s.gateway_insecure)


def serve_http_host() -> str | None:
    """The host Serve's HTTP ingress listens on, asked of the Serve controller (None if it cannot be asked).

    Ray Serve has no public call for it; its replicas read the same ``get_http_config`` of the controller to
    start their direct-ingress servers (``ray/serve/_private/replica.py``)."""
    try:
        from ray.serve.context import _get_global_client

        client = _get_global_client()
        return str(client.http_config.host) if client is not None else None
    except Exception:  # noqa: BLE001 - any failure means "unknown", which the rule treats as exposed
        log.warning("could not ask the Serve controller for its HTTP host", exc_info=True)
        return None


def check_replica(config: GatewayConfig) -> None:
    """The check of a replica starting, with its own tokens (config, else its environment's settings). An unknown
    host counts as exposed: the replica cannot tell, and an open gateway is the costlier mistake."""
    from core.settings import get_settings

    resolved = config.resolved()
    warning = check_exposure(serve_http_host(), predict_token=resolved.predict_token,
                             admin_token=resolved.admin_token, insecure=get_settings().gateway_insecure)
    if warning:
        log.warning(warning)

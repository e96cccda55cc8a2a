"""Optional bearer-token checks, one token for predictions and one for admin routes.

Tokens are compared in constant time. A ``None`` token leaves that class of routes open (the embedded
default on 127.0.0.1); production sets both (``ESTEIRA_GATEWAY_PREDICT_TOKEN``, ``..._ADMIN_TOKEN``).
Routes that take a body check the token before reading it, so a client without one costs a header read.
"""

from __future__ import annotations

import hmac

from gateway.errors import Unauthorized


def bearer_matches(header: str | None, expected: str) -> bool:
    """Whether ``header`` is ``Bearer <expected>`` (for routes that answer more to a token, not only with one)."""
    scheme, _, token = (header or "").partition(" ")
    return scheme.lower() == "bearer" and bool(token) and hmac.compare_digest(token.strip().encode(), expected.encode())


def check_bearer(header: str | None, expected: str | None, *, scope: str) -> None:
    """Raise :class:`Unauthorized` unless ``header`` is ``Bearer <expected>`` (or no token is required)."""
    if not expected:
        return
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(f"{scope} routes need an 'Authorization: Bearer <token>' header", field="authorization")
    if not bearer_matches(header, expected):
        raise Unauthorized(f"invalid {scope} token", field="authorization")

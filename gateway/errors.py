"""Errors the gateway answers with. Each carries its HTTP status and, where one is to blame, the field.

Request handling raises these and nothing else for anything a client did wrong, so the HTTP layer maps
them to a 4xx in one place and a client's mistake can never surface as a 500.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base: a refusal with an HTTP status and a one-line message."""

    status_code = 500

    def __init__(self, message: str, *, field: str | None = None, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str] | None:
        """``Retry-After`` when the refusal is temporary and the client may try again later."""
        return {"Retry-After": str(self.retry_after_s)} if self.retry_after_s is not None else None

    def body(self) -> dict[str, str]:
        """The JSON error body. ``error`` is the Open Inference Protocol's key; ``field`` is ours."""
        out = {"error": self.message}
        if self.field:
            out["field"] = self.field
        return out


class InvalidInput(GatewayError):
    """The request does not match the model's signature (missing, extra or mistyped feature)."""

    status_code = 422


class ModelNotFound(GatewayError):
    """No such model, version or alias is served."""

    status_code = 404


class VersionRefused(GatewayError):
    """The asked-for version exists but the gateway refused to load it (hash mismatch, untrusted types)."""

    status_code = 409


class Unavailable(GatewayError):
    """A dependency the request needs (registry for a cold pinned version, feature store) is down."""

    status_code = 503


class Unauthorized(GatewayError):
    status_code = 401


class BodyTooLarge(GatewayError):
    """The body is larger than the gateway reads (``GatewayConfig.max_body_bytes``); nothing past the cap is read."""

    status_code = 413

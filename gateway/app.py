"""The HTTP surface: a FastAPI app around a :class:`ModelService`.

The same app runs under Ray Serve (as the deployment's ASGI ingress) and, in tests, under
``fastapi.testclient`` with injected predictors. Routes return ready-made responses (no
``response_model`` re-validation on the hot path); the pydantic response models are still declared
for the OpenAPI docs. Every refusal is ``{"error": ..., "field": ...}`` with a 4xx status, which is
also the Open Inference Protocol's error shape.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Header, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.auth import check_bearer
from gateway.errors import GatewayError
from gateway.schemas import (
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    InferRequest,
    InferResponse,
    ModelMetadata,
    PredictRequest,
    PredictResponse,
)
from gateway.service import ModelService

log = logging.getLogger(__name__)

NAME = Path(min_length=1, max_length=128, description="Registered model name.")
VERSION = Path(ge=1, le=2**31 - 1, description="A model version number (pins that version).")
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 404, 409, 422, 503)}
bearer = HTTPBearer(auto_error=False, description="Bearer token (when the gateway is configured with one).")


class FastJSON(Response):
    """JSON without Starlette's ``allow_nan=False`` failure mode: a NaN output becomes null, not a 500."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        try:
            return json.dumps(content, separators=(",", ":"), allow_nan=False).encode()
        except ValueError:
            return json.dumps(_finite(content), separators=(",", ":")).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _first_error(exc: RequestValidationError) -> tuple[str, str]:
    errors = exc.errors()
    if not errors:
        return "invalid request", "body"
    first = errors[0]
    field = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    return f"{field}: {first.get('msg', 'invalid')}", field


def build_app(service: ModelService, *, title: str = "esteira gateway") -> FastAPI:
    """The gateway's routes bound to ``service``. Starting the app starts the service's poll loop and log writer."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title=title, version="1", lifespan=lifespan, default_response_class=FastJSON,
                  description="Serves registered models over plain JSON and the Open Inference Protocol v2.")

    @app.exception_handler(GatewayError)
    async def _gateway_error(_request: Request, exc: GatewayError) -> Response:
        return FastJSON(exc.body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        message, field = _first_error(exc)
        return FastJSON({"error": message, "field": field}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return FastJSON({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    config = service.config

    def predict_auth(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        check_bearer(_header(credentials), config.predict_token, scope="prediction")

    def admin_auth(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        check_bearer(_header(credentials), config.admin_token, scope="admin")

    # -- Open Inference Protocol v2 ------------------------------------------------------------------------

    @app.get("/v2/health/live", tags=["v2"])
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["v2"], responses={503: {"description": "Not ready; body says why."}})
    async def ready() -> Response:
        ok, detail = service.ready()
        return FastJSON(detail, status_code=200 if ok else 503)

    @app.get("/v2", tags=["v2"])
    async def server_metadata() -> dict[str, Any]:
        return {"name": "esteira", "version": "1", "extensions": []}

    @app.get("/v2/models/{name}", tags=["v2"], response_model=ModelMetadata, responses=ERRORS,
             dependencies=[Depends(predict_auth)])
    async def model_metadata(name: str = NAME) -> Response:
        return FastJSON(await service.metadata(name))

    @app.get("/v2/models/{name}/versions/{version}", tags=["v2"], response_model=ModelMetadata, responses=ERRORS,
             dependencies=[Depends(predict_auth)])
    async def version_metadata(name: str = NAME, version: int = VERSION) -> Response:
        return FastJSON(await service.metadata(name, version))

    @app.get("/v2/models/{name}/ready", tags=["v2"], responses={404: {"model": ErrorResponse}})
    async def model_ready(name: str = NAME) -> Response:
        ok = service.model_ready(name)
        return FastJSON({"name": name, "ready": ok}, status_code=200 if ok else 404)

    @app.get("/v2/models/{name}/versions/{version}/ready", tags=["v2"], responses={404: {"model": ErrorResponse}})
    async def version_ready(name: str = NAME, version: int = VERSION) -> Response:
        ok = service.model_ready(name, version)
        return FastJSON({"name": name, "version": str(version), "ready": ok}, status_code=200 if ok else 404)

    @app.post("/v2/models/{name}/infer", tags=["v2"], response_model=InferResponse, responses=ERRORS,
              dependencies=[Depends(predict_auth)])
    async def infer(body: InferRequest, name: str = NAME) -> Response:
        return FastJSON(await service.infer(name, body))

    @app.post("/v2/models/{name}/versions/{version}/infer", tags=["v2"], response_model=InferResponse,
              responses=ERRORS, dependencies=[Depends(predict_auth)])
    async def infer_version(body: InferRequest, name: str = NAME, version: int = VERSION) -> Response:
        return FastJSON(await service.infer(name, body, version=version))

    # -- plain JSON ----------------------------------------------------------------------------------------

    @app.post("/v1/models/{name}/predict", tags=["v1"], response_model=PredictResponse, responses=ERRORS,
              dependencies=[Depends(predict_auth)])
    async def predict(body: PredictRequest, name: str = NAME,
                      x_request_id: str | None = Header(default=None, max_length=128)) -> Response:
        return FastJSON(await service.predict(name, body, request_id=x_request_id))

    @app.post("/v1/models/{name}/versions/{version}/predict", tags=["v1"], response_model=PredictResponse,
              responses=ERRORS, dependencies=[Depends(predict_auth)])
    async def predict_version(body: PredictRequest, name: str = NAME, version: int = VERSION,
                              x_request_id: str | None = Header(default=None, max_length=128)) -> Response:
        return FastJSON(await service.predict(name, body, version=version, request_id=x_request_id))

    @app.post("/v1/models/{name}/feedback", tags=["v1"], response_model=FeedbackResponse, responses=ERRORS,
              dependencies=[Depends(predict_auth)])
    async def feedback(body: FeedbackRequest, name: str = NAME) -> Response:
        return FastJSON(await service.feedback(name, body), status_code=202)

    @app.get("/v1/models", tags=["v1"], dependencies=[Depends(predict_auth)])
    async def list_models() -> Response:
        return FastJSON(service.models())

    # -- operations ----------------------------------------------------------------------------------------

    @app.get("/metrics", tags=["admin"], dependencies=[Depends(admin_auth)],
             responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        service.ready()  # refreshes the registry gauge
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    @app.get("/v1/admin/status", tags=["admin"], dependencies=[Depends(admin_auth)])
    async def admin_status() -> Response:
        return FastJSON(service.ready()[1])

    @app.post("/v1/admin/reload", tags=["admin"], dependencies=[Depends(admin_auth)])
    async def admin_reload() -> Response:
        """Poll the registry now instead of waiting for the next tick."""
        await service.manager.poll_now()
        return FastJSON(service.ready()[1])

    return app


def _header(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return f"{credentials.scheme} {credentials.credentials}" if credentials else None

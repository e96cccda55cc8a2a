"""The HTTP surface: a FastAPI app around a :class:`ModelService`.

The same app runs under Ray Serve (as the deployment's ASGI ingress) and, in tests, under
``fastapi.testclient`` with injected predictors. Routes return ready-made responses (no
``response_model`` re-validation on the hot path); the pydantic response models are still declared
for the OpenAPI docs. Every refusal is ``{"error": ..., "field": ...}`` with a 4xx status, which is
also the Open Inference Protocol's error shape.
"""

from __future__ import annotations

import email.message
import json
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

try:
    from orjson import JSONDecodeError as _OrjsonDecodeError
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson comes with several dependencies; json is the same, slower
    _fast_loads, _OrjsonDecodeError = json.loads, json.JSONDecodeError

from fastapi import Depends, FastAPI, Header, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import TypeAdapter, ValidationError

from gateway.auth import check_bearer
from gateway.errors import GatewayError
from gateway.openapi import model_documents
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


# -- the predict body without FastAPI's per-request body machinery -------------------------------------------
#
# The predict routes read the body themselves: orjson, then a check of the envelope by hand for the
# common, valid shape (a few type checks, then ``model_construct``). Anything else (other content types,
# JSON orjson refuses, a body the hand check does not accept) goes through exactly what FastAPI does for a
# ``body: PredictRequest`` parameter (stdlib json, the content-type rules, pydantic validation with the
# same error locations), so every refusal keeps its message and field. The OpenAPI document still
# describes the body (``PREDICT_BODY_DOC``); ``tests/test_gateway_predict_body.py`` checks both paths agree.

_PREDICT_KEYS = frozenset(("inputs", "entities", "request_data", "request_id"))
_PREDICT_ADAPTER: TypeAdapter[PredictRequest] = TypeAdapter(PredictRequest)
PREDICT_BODY_DOC: dict[str, Any] = {"requestBody": {
    "required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}}}}


def _rows_or_row(value: Any) -> bool:
    """``dict[str, Any] | list[dict[str, Any]] | None`` for a decoded JSON value (keys are always strings)."""
    if value is None or type(value) is dict:
        return True
    if type(value) is list:
        for item in value:
            if type(item) is not dict:
                return False
        return True
    return False


def _fast_predict_body(data: Any) -> PredictRequest | None:
    """The envelope checks pydantic would make, for the shapes it accepts unchanged; None means 'ask pydantic'."""
    if type(data) is not dict or not _PREDICT_KEYS.issuperset(data):
        return None
    get = data.get
    if not (_rows_or_row(get("inputs")) and _rows_or_row(get("entities")) and _rows_or_row(get("request_data"))):
        return None
    rid = get("request_id")
    if rid is not None and (type(rid) is not str or not 1 <= len(rid) <= 128):
        return None
    return PredictRequest.model_construct(**data)


async def read_predict_body(request: Request) -> PredictRequest | RequestValidationError:
    """The request's :class:`PredictRequest`, or the validation error FastAPI would report for it.

    Raises only for a body that is not JSON (FastAPI refuses those before any dependency runs); envelope
    errors are returned, for the route to raise after auth and header checks, FastAPI's order.
    """
    raw = await request.body()
    content_type = request.headers.get("content-type")
    if raw and content_type == "application/json":
        try:
            body = _fast_predict_body(_fast_loads(raw))
        except _OrjsonDecodeError:
            body = None  # stdlib json below decides (it accepts a few things orjson does not) and words the error
        if body is not None:
            return body
    return _slow_predict_body(raw, content_type)


def _slow_predict_body(raw: bytes, content_type: str | None) -> PredictRequest | RequestValidationError:
    """FastAPI's own steps for a required, non-embedded JSON body (fastapi.routing.get_request_handler,
    strict content type, then ``request_body_to_args``), with the same error locations and messages."""
    value: Any = None
    if raw:
        value = raw
        if content_type:
            message = email.message.Message()
            message["content-type"] = content_type
            subtype = message.get_content_subtype()
            if message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json")):
                try:
                    value = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise RequestValidationError([{"type": "json_invalid", "loc": ("body", exc.pos),
                                                   "msg": "JSON decode error", "input": {},
                                                   "ctx": {"error": exc.msg}}], body=exc.doc) from exc
    if value is None:
        return RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    try:
        return _PREDICT_ADAPTER.validate_python(value, from_attributes=True)
    except ValidationError as exc:
        return RequestValidationError([{**err, "loc": ("body", *err.get("loc", ()))}
                                       for err in exc.errors(include_url=False)], body=value)


def _predict_request_schema() -> dict[str, Any]:
    """PredictRequest as FastAPI documents a body model (its generator differs from pydantic's default)."""
    from fastapi.openapi.utils import get_openapi

    probe = FastAPI()

    @probe.post("/")
    async def _probe(body: PredictRequest) -> None:  # pragma: no cover - never called
        return None

    doc = get_openapi(title="probe", version="1", routes=probe.routes)
    return doc["components"]["schemas"]["PredictRequest"]


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

    default_openapi = app.openapi
    documented: dict[str, Any] = {"key": None, "schema": None}

    def openapi() -> dict[str, Any]:
        """FastAPI's document, plus the PredictRequest schema the predict routes' ``openapi_extra`` refers to
        (no route takes it as a body parameter any more, so FastAPI would not list it), plus one documented
        path per served model (:mod:`gateway.openapi`), rebuilt when the served versions change."""
        if app.openapi_schema is None:
            schema = default_openapi()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            if "PredictRequest" not in schemas:
                schemas["PredictRequest"] = _predict_request_schema()
                schema["components"]["schemas"] = dict(sorted(schemas.items()))
        served = sorted(service.manager.served().values(), key=lambda m: m.name)
        key = tuple((m.name, m.version) for m in served)
        if documented["key"] != key:
            base = app.openapi_schema or {}
            paths, schemas = model_documents(served)
            documented["schema"] = {**base, "paths": {**paths, **base.get("paths", {})},
                                    "components": {**base.get("components", {}), "schemas": dict(sorted(
                                        {**base.get("components", {}).get("schemas", {}), **schemas}.items()))}}
            documented["key"] = key
        return documented["schema"]  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]

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

    # async: a sync dependency is run in a worker thread per request (FastAPI's threadpool hop, ~3.6% of a
    # replica's CPU in the profile). No token configured: nothing to check.
    async def predict_auth(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if config.predict_token:
            check_bearer(_header(credentials), config.predict_token, scope="prediction")

    async def predict_input(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
                            ) -> PredictRequest | RequestValidationError:
        """Body and auth of the predict routes in one dependency (each dependency level costs FastAPI a
        solve per request), in FastAPI's order of refusals: body not JSON, then auth; the envelope's own
        errors are raised by the route, after FastAPI's header checks."""
        body = await read_predict_body(request)
        if config.predict_token:
            check_bearer(_header(credentials), config.predict_token, scope="prediction")
        return body

    async def admin_auth(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if config.admin_token:
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

    # The hot routes: the body is read by read_predict_body (see above), not by a FastAPI body parameter.
    @app.post("/v1/models/{name}/predict", tags=["v1"], response_model=PredictResponse, responses=ERRORS,
              openapi_extra=PREDICT_BODY_DOC)
    async def predict(body: PredictRequest | RequestValidationError = Depends(predict_input), name: str = NAME,
                      x_request_id: str | None = Header(default=None, max_length=128)) -> Response:
        if isinstance(body, RequestValidationError):
            raise body
        return FastJSON(await service.predict(name, body, request_id=x_request_id))

    @app.post("/v1/models/{name}/versions/{version}/predict", tags=["v1"], response_model=PredictResponse,
              responses=ERRORS, openapi_extra=PREDICT_BODY_DOC)
    async def predict_version(body: PredictRequest | RequestValidationError = Depends(predict_input),
                              name: str = NAME, version: int = VERSION,
                              x_request_id: str | None = Header(default=None, max_length=128)) -> Response:
        if isinstance(body, RequestValidationError):
            raise body
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

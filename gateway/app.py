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
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

try:
    from orjson import JSONDecodeError as _OrjsonDecodeError
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson comes with several dependencies; json is the same, slower
    _fast_loads, _OrjsonDecodeError = json.loads, json.JSONDecodeError

from fastapi import Depends, FastAPI, Header, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from gateway.auth import bearer_matches, check_bearer
from gateway.config import GatewayConfig
from gateway.errors import BodyTooLarge, GatewayError, InvalidInput
from gateway.openapi import INFER_BODY_DOC, body_schemas, model_documents, open_routes, responses
from gateway.schemas import (
    FeedbackRequest,
    FeedbackResponse,
    GatewayStatus,
    InferRequest,
    InferResponse,
    ModelList,
    ModelMetadata,
    ModelReady,
    PredictRequest,
    PredictResponse,
    Readiness,
    ServerLive,
    ServerMetadata,
)
from gateway.service import ModelService
from gateway.v2_binary import (
    EXTENSION,
    HEADER,
    MEDIA_TYPE,
    binary_outputs,
    encode_response,
    parse_infer_request,
)
from registry.names import MODEL_NAME_PATTERN

log = logging.getLogger(__name__)

# The registry's naming rule, whole: a name it could never hold is refused here (422), not looked up.
NAME = Path(min_length=1, max_length=128, pattern=f"^{MODEL_NAME_PATTERN}$", description="Registered model name.")
MAX_VERSION = 2**31 - 1
VERSION = Path(ge=1, le=MAX_VERSION, description="A model version number (pins that version).")
MAX_REQUEST_ID_CHARS = 128
ERRORS = responses(401, 404, 409, 413, 422, 503)
bearer = HTTPBearer(auto_error=False, description="Bearer token (when the gateway is configured with one).")


class FastJSON(JSONResponse):
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


# -- request bodies: read by the routes themselves, after auth -----------------------------------------------
#
# No route takes a FastAPI body parameter: FastAPI reads and decodes such a body before any dependency runs,
# so a client without a token could make the gateway read and parse anything. Each body route checks its token
# first (a dependency), then reads at most ``max_body_bytes`` (read_body), decodes JSON whatever content type
# the client declared (decode_json: ``curl -d`` declares a form, tritonclient declares nothing), and refuses
# strings longer than ``max_string_chars`` (check_strings) before any array is built. Every refusal is a
# GatewayError, answered in the ``{"error", "field"}`` shape.
#
# The predict routes then check the envelope by hand for the common, valid shape (a few type checks, then
# ``model_construct``); anything else goes through pydantic with FastAPI's error locations, so every refusal
# keeps its message and field. The OpenAPI document still describes the bodies (``PREDICT_BODY_DOC``,
# ``FEEDBACK_BODY_DOC``); ``tests/test_gateway_predict_body.py`` checks both paths agree.

_PREDICT_KEYS = frozenset(("inputs", "entities", "request_data", "request_id"))
_PREDICT_ADAPTER: TypeAdapter[PredictRequest] = TypeAdapter(PredictRequest)
_FEEDBACK_ADAPTER: TypeAdapter[FeedbackRequest] = TypeAdapter(FeedbackRequest)
PREDICT_BODY_DOC: dict[str, Any] = {"requestBody": {
    "required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}}}}
FEEDBACK_BODY_DOC: dict[str, Any] = {"requestBody": {
    "required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FeedbackRequest"}}}}}


async def read_body(request: Request, limit: int) -> bytes:
    """The body, of at most ``limit`` bytes: a larger Content-Length is refused (413) before anything is read;
    a body without one (chunked) is read until it passes the cap, then refused."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit():
        if len(declared) > 18 or int(declared) > limit:
            raise BodyTooLarge(f"the body is {declared[:24]} bytes; this gateway reads at most {limit}", field="body")
        return await request.body()
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise BodyTooLarge(f"the body is larger than {limit} bytes, the most this gateway reads", field="body")
    return bytes(received)


def decode_json(raw: bytes) -> Any:
    """The body as JSON, or a 422 naming ``body``. orjson first; stdlib json then takes what orjson refuses
    but other JSON writers produce (NaN, integers past 64 bits, UTF-16). Either one's failure (bad syntax,
    bytes that are not UTF-8, nesting deeper than 1,024) is the client's: never a 500."""
    if not raw:
        raise InvalidInput("the body is empty: send a JSON object", field="body")
    try:
        return _fast_loads(raw)
    except _OrjsonDecodeError as exc:
        reason = str(exc)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidInput(f"the body is not JSON: {reason}", field="body") from None


def check_strings(value: Any, limit: int, where: str = "") -> None:
    """A 422 naming the first string (object key or value) longer than ``limit`` characters in a decoded body.

    Depth-first with a stack of iterators, so it holds one entry per level (a body may nest 1,024 levels),
    not one per object. A string of n characters takes at least n bytes of JSON, so callers skip bodies of
    at most ``limit`` bytes: small requests never pay for this walk.
    """
    if type(value) is not dict and type(value) is not list:
        if type(value) is str and len(value) > limit:
            raise InvalidInput(f"a string of {len(value)} characters (at most {limit})", field=where or "body")
        return
    keys: list[str | int] = []
    stack: list[Iterator[tuple[Any, Any]]] = [_entries(value)]
    while stack:
        for key, child in stack[-1]:
            if type(key) is str and len(key) > limit:
                raise InvalidInput(f"an object key of {len(key)} characters (at most {limit})",
                                   field=_field(where, keys))
            kind = type(child)
            if kind is str:
                if len(child) > limit:
                    raise InvalidInput(f"a string of {len(child)} characters (at most {limit})",
                                       field=_field(where, [*keys, key]))
            elif (kind is dict or kind is list) and child:
                keys.append(key)
                stack.append(_entries(child))
                break
        else:
            stack.pop()
            if keys:
                keys.pop()


def _entries(container: Any) -> Iterator[tuple[Any, Any]]:
    return iter(container.items()) if type(container) is dict else enumerate(container)


def _field(where: str, keys: list[str | int]) -> str:
    """``inputs[1].plan``: the location style of the signature checks."""
    field = where
    for key in keys:
        field = f"{field}[{key}]" if type(key) is int else (f"{field}.{key}" if field else str(key))
    return field or "body"


async def read_json(request: Request, config: GatewayConfig) -> Any:
    """The decoded body within the configured caps (size, then string length)."""
    raw = await read_body(request, config.max_body_bytes)
    value = decode_json(raw)
    if len(raw) > config.max_string_chars:
        check_strings(value, config.max_string_chars)
    return value


def check_tensor_strings(request: InferRequest, body_size: int, config: GatewayConfig) -> None:
    """A v2 request's ``BYTES`` strings (also those decoded from binary tensors) held to ``max_string_chars``
    before its tensors become arrays (the schema caps every dimension at ``MAX_ROWS``). Strings in a numeric
    tensor are refused by the signature check anyway, without being echoed or stored."""
    if body_size > config.max_string_chars:
        check_strings([{"data": tensor.data} if tensor.datatype == "BYTES" else {} for tensor in request.inputs],
                      config.max_string_chars, "inputs")


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


async def read_predict_body(request: Request, config: GatewayConfig) -> PredictRequest | RequestValidationError:
    """The request's :class:`PredictRequest`, or the validation error FastAPI would report for it.

    Raises for a body it does not read or decode (too large, not JSON, a string too long); envelope errors
    are returned, for the route to raise after FastAPI's header checks, FastAPI's order.
    """
    raw = await read_body(request, config.max_body_bytes)
    value = decode_json(raw)
    if len(raw) > config.max_string_chars:
        check_strings(value, config.max_string_chars)
    body = _fast_predict_body(value)
    return body if body is not None else _validate_predict_body(value)


def _validate_predict_body(value: Any) -> PredictRequest | RequestValidationError:
    """pydantic's verdict on a decoded body, with the error locations FastAPI gives a body parameter."""
    try:
        return _PREDICT_ADAPTER.validate_python(value, from_attributes=True)
    except ValidationError as exc:
        return _body_error(exc, value)


def validate_feedback_body(value: Any) -> FeedbackRequest:
    try:
        return _FEEDBACK_ADAPTER.validate_python(value)
    except ValidationError as exc:
        raise _body_error(exc, value) from None


def _body_error(exc: ValidationError, value: Any) -> RequestValidationError:
    return RequestValidationError([{**err, "loc": ("body", *err.get("loc", ()))}
                                   for err in exc.errors(include_url=False)], body=value)


# -- the predict routes' direct path ---------------------------------------------------------------------------
#
# FastAPI's per-request machinery (middleware stack, route matching over every route, dependency solving with
# pydantic validation of the path and header parameters) cost about 200 us of CPU of a one-row prediction
# (a direct ASGI loop over the app in one process, bench's 20-feature HistGradientBoosting model, CPU per
# request: 1040-1090 us through FastAPI, 850-910 us with this path, 730-760 us for the bare FastAPI floor app).
# So the two predict routes are answered directly when FastAPI would accept their path and headers as they
# are: the same functions in FastAPI's order (token, body, then the route), the same exception handlers.
# Everything else (another route, a name or version FastAPI would refuse, an over-long X-Request-ID, a root
# path, user middleware, FastAPI's native OpenTelemetry switched on) goes to FastAPI before a byte of the body
# is read, so its answer is FastAPI's own (tests/test_gateway_direct_path.py sends every case both ways). The
# routes stay declared in FastAPI for the OpenAPI document and for those requests.

_PREDICT_PATH = re.compile(r"/v1/models/([^/]+)/(?:versions/([^/]+)/)?predict")
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
_PLAIN_VERSION = re.compile(r"[1-9][0-9]{0,9}")  # what pydantic reads as the same int; anything else: FastAPI

DirectRoute = Callable[[Scope, Receive, Send], Awaitable[bool]]


class GatewayAPI(FastAPI):
    """FastAPI with :attr:`direct` tried first for HTTP requests (see the comment above :func:`build_app`)."""

    direct: DirectRoute | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.direct is not None and self._plain():
            scope["app"] = self
            if await self.direct(scope, receive, send):
                return
        await super().__call__(scope, receive, send)

    def _plain(self) -> bool:
        """No root path, no user middleware, FastAPI's native telemetry off: nothing the direct path would skip."""
        if self.root_path or self.user_middleware:
            return False
        telemetry = getattr(self, "_native_telemetry", None)  # FastAPI >= 0.150
        return telemetry is None or not telemetry.enabled()


def _direct_target(scope: Scope) -> tuple[str, int | None] | None:
    """(model name, version or None) of a predict route whose path parameters FastAPI accepts as they are."""
    if scope["method"] != "POST" or scope.get("root_path"):
        return None
    match = _PREDICT_PATH.fullmatch(scope["path"])
    if match is None:
        return None
    name, version = match.groups()
    if _MODEL_NAME.fullmatch(name) is None:
        return None
    if version is None:
        return name, None
    if _PLAIN_VERSION.fullmatch(version) is None or int(version) > MAX_VERSION:
        return None
    return name, int(version)


def build_app(service: ModelService, *, title: str = "esteira gateway") -> FastAPI:
    """The gateway's routes bound to ``service``. Starting the app starts the service's poll loop and log writer."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    from core.settings import get_settings

    console = get_settings().resolved_console_url
    app = GatewayAPI(title=title, version="1", lifespan=lifespan, default_response_class=FastJSON,
                     description="Serves registered models over plain JSON and the Open Inference Protocol v2. "
                     f"Their versions, lineage, training runs and monitoring: [the web console]({console}).")

    default_openapi = app.openapi
    documented: dict[str, Any] = {"key": None, "schema": None}

    def openapi() -> dict[str, Any]:
        """FastAPI's document, plus the body schemas the predict and infer routes' ``openapi_extra`` refer to
        (those routes read their body themselves, so FastAPI would not list them), without the bearer scheme
        on routes whose token is not configured, plus one documented path per served model
        (:mod:`gateway.openapi`), rebuilt when the served versions change."""
        if app.openapi_schema is None:
            schema = default_openapi()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schema["components"]["schemas"] = dict(sorted({**body_schemas(PredictRequest, InferRequest,
                                                                        FeedbackRequest), **schemas}.items()))
            open_routes(schema["paths"], predict=bool(config.predict_token), admin=bool(config.admin_token))
        served = sorted(service.manager.served().values(), key=lambda m: m.name)
        key = tuple((m.name, m.version) for m in served)
        if documented["key"] != key:
            base = app.openapi_schema or {}
            paths, schemas = model_documents(served, lookups=service.features is not None)
            open_routes(paths, predict=bool(config.predict_token), admin=bool(config.admin_token))
            documented["schema"] = {**base, "paths": {**paths, **base.get("paths", {})},
                                    "components": {**base.get("components", {}), "schemas": dict(sorted(
                                        {**base.get("components", {}).get("schemas", {}), **schemas}.items()))}}
            documented["key"] = key
        return documented["schema"]  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(GatewayError)
    async def _gateway_error(_request: Request, exc: GatewayError) -> Response:
        return FastJSON(exc.body(), status_code=exc.status_code, headers=exc.headers())

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """Starlette's own refusals (no such route, method not allowed) in the gateway's error shape."""
        if exc.status_code == 404:
            body = {"error": "no such route (see /docs for the routes)", "field": "path"}
        elif exc.status_code == 405:
            body = {"error": f"method {request.method} is not allowed on this route", "field": "method"}
        else:
            body = {"error": str(exc.detail)}
        return FastJSON(body, status_code=exc.status_code, headers=exc.headers)

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
        """Auth and body of the predict routes in one dependency (each dependency level costs FastAPI a
        solve per request): the token first, so nothing of a refused request's body is read; the envelope's
        own errors are raised by the route, after FastAPI's header checks."""
        if config.predict_token:
            check_bearer(_header(credentials), config.predict_token, scope="prediction")
        return await read_predict_body(request, config)

    async def admin_auth(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if config.admin_token:
            check_bearer(_header(credentials), config.admin_token, scope="admin")

    async def feedback_auth(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
        """The scope that lets a label in (stored with it): labels decide retraining, so the feedback token or
        the admin token, never the predict token alone; with neither configured, the predict token as for
        predictions, and with no token at all, open (the embedded default on 127.0.0.1)."""
        tokens = [(scope, token) for scope, token in (("feedback", config.feedback_token),
                                                       ("admin", config.admin_token)) if token]
        if not tokens:
            if config.predict_token:
                check_bearer(_header(credentials), config.predict_token, scope="feedback")
                return "predict"
            return "open"
        refusal: GatewayError | None = None
        for scope, token in tokens:
            try:
                check_bearer(_header(credentials), token, scope="feedback")
                return scope
            except GatewayError as exc:
                refusal = exc
        raise refusal  # type: ignore[misc]

    async def feedback_body(request: Request, _scope: str = Depends(feedback_auth)) -> FeedbackRequest:
        """The feedback body, read once the token is checked (FastAPI solves ``feedback_auth`` once per
        request and hands the route the same scope)."""
        return validate_feedback_body(await read_json(request, config))

    # -- Open Inference Protocol v2 ------------------------------------------------------------------------

    @app.get("/v2/health/live", tags=["v2"], response_model=ServerLive)
    async def live() -> Response:
        return FastJSON({"live": True})

    @app.get("/v2/health/ready", tags=["v2"], response_model=Readiness,
             responses={503: {"model": Readiness, "description": "Not ready."}},
             openapi_extra={"security": [{}]})  # the bearer is optional here (it adds the admin detail)
    async def ready(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Response:
        """Open to probes: ``ready`` and ``status`` (ok, degraded, not_ready) only. With the admin token, the
        detail of ``/v1/admin/status`` (served versions, refused loads and why, the registry's error)."""
        admin = bool(config.admin_token) and bearer_matches(_header(credentials), config.admin_token)
        ok, status = service.ready(detail=admin)
        return FastJSON(status, status_code=200 if ok else 503)

    @app.get("/v2", tags=["v2"], response_model=ServerMetadata)
    async def server_metadata() -> Response:
        return FastJSON({"name": "esteira", "version": "1", "extensions": [EXTENSION]})

    @app.get("/v2/models/{name}", tags=["v2"], response_model=ModelMetadata,
             responses=responses(401, 404, 409, 422, 503), dependencies=[Depends(predict_auth)])
    async def model_metadata(name: str = NAME) -> Response:
        return FastJSON(await service.metadata(name))

    @app.get("/v2/models/{name}/versions/{version}", tags=["v2"], response_model=ModelMetadata,
             responses=responses(401, 404, 409, 422, 503), dependencies=[Depends(predict_auth)])
    async def version_metadata(name: str = NAME, version: int = VERSION) -> Response:
        return FastJSON(await service.metadata(name, version))

    @app.get("/v2/models/{name}/ready", tags=["v2"], response_model=ModelReady, responses=responses(404, 422))
    async def model_ready(name: str = NAME) -> Response:
        return _readiness(name, None)

    @app.get("/v2/models/{name}/versions/{version}/ready", tags=["v2"], response_model=ModelReady,
             responses=responses(404, 422))
    async def version_ready(name: str = NAME, version: int = VERSION) -> Response:
        return _readiness(name, version)

    def _readiness(name: str, version: int | None) -> Response:
        body: dict[str, Any] = {"name": name, **({"version": str(version)} if version is not None else {}),
                                "ready": service.model_ready(name, version)}
        if body["ready"]:
            return FastJSON(body)
        known = version is not None and service.model_ready(name)
        what = f"model {name!r}" + (f" version {version}" if known else "")
        return FastJSON({"error": f"{what} is not served", "field": "version" if known else "name", **body},
                        status_code=404)

    # The infer routes read their body themselves, after auth: JSON, or JSON followed by binary tensors
    # (gateway.v2_binary), with or without a content-type (tritonclient sends none).
    async def infer_body(request: Request) -> InferRequest:
        raw = await read_body(request, config.max_body_bytes)
        body = parse_infer_request(raw, request.headers.get(HEADER))
        check_tensor_strings(body, len(raw), config)
        return body

    def infer_answer(result: dict[str, Any], body: InferRequest) -> Response:
        binary = binary_outputs(body)
        if not binary:
            return FastJSON(result)
        content, header_size = encode_response(result, binary)
        return Response(content, media_type=MEDIA_TYPE, headers={"Inference-Header-Content-Length": str(header_size)})

    @app.post("/v2/models/{name}/infer", tags=["v2"], response_model=InferResponse,
              responses=responses(400, 401, 404, 409, 413, 422, 503), dependencies=[Depends(predict_auth)],
              openapi_extra=INFER_BODY_DOC)
    async def infer(request: Request, name: str = NAME) -> Response:
        body = await infer_body(request)
        return infer_answer(await service.infer(name, body), body)

    @app.post("/v2/models/{name}/versions/{version}/infer", tags=["v2"], response_model=InferResponse,
              responses=responses(400, 401, 404, 409, 413, 422, 503), dependencies=[Depends(predict_auth)],
              openapi_extra=INFER_BODY_DOC)
    async def infer_version(request: Request, name: str = NAME, version: int = VERSION) -> Response:
        body = await infer_body(request)
        return infer_answer(await service.infer(name, body, version=version), body)

    # -- plain JSON ----------------------------------------------------------------------------------------

    # The hot routes: the body is read by read_predict_body (see above), not by a FastAPI body parameter.
    @app.post("/v1/models/{name}/predict", tags=["v1"], response_model=PredictResponse, responses=ERRORS,
              openapi_extra=PREDICT_BODY_DOC)
    async def predict(body: PredictRequest | RequestValidationError = Depends(predict_input), name: str = NAME,
                      x_request_id: str | None = Header(default=None, max_length=MAX_REQUEST_ID_CHARS)
                      ) -> Response:
        if isinstance(body, RequestValidationError):
            raise body
        return FastJSON(await service.predict(name, body, request_id=x_request_id))

    @app.post("/v1/models/{name}/versions/{version}/predict", tags=["v1"], response_model=PredictResponse,
              responses=ERRORS, openapi_extra=PREDICT_BODY_DOC)
    async def predict_version(body: PredictRequest | RequestValidationError = Depends(predict_input),
                              name: str = NAME, version: int = VERSION,
                              x_request_id: str | None = Header(default=None, max_length=MAX_REQUEST_ID_CHARS)
                              ) -> Response:
        if isinstance(body, RequestValidationError):
            raise body
        return FastJSON(await service.predict(name, body, version=version, request_id=x_request_id))

    async def predict_direct(scope: Scope, receive: Receive, send: Send) -> bool:
        """Both predict routes as FastAPI runs them (``predict_input``, then ``predict`` or ``predict_version``,
        errors through the app's own handlers), for a request whose path and headers FastAPI accepts as they
        are; False, before reading anything, for any other request."""
        target = _direct_target(scope)
        if target is None:
            return False
        request = Request(scope, receive)
        request_id = request.headers.get("x-request-id")
        if request_id is not None and len(request_id) > MAX_REQUEST_ID_CHARS:
            return False
        name, version = target
        try:
            body = await predict_input(request, await bearer(request))
            if isinstance(body, RequestValidationError):
                response = await _validation_error(request, body)
            else:
                response = FastJSON(await service.predict(name, body, version=version, request_id=request_id))
        except GatewayError as exc:
            response = await _gateway_error(request, exc)
        except StarletteHTTPException as exc:
            response = await _http_error(request, exc)
        except Exception as exc:  # ServerErrorMiddleware's contract: answer 500, then re-raise to the server
            await (await _unexpected(request, exc))(scope, receive, send)
            raise
        await response(scope, receive, send)
        return True

    app.direct = predict_direct

    @app.post("/v1/models/{name}/feedback", tags=["v1"], response_model=FeedbackResponse, responses=ERRORS,
              status_code=202, openapi_extra=FEEDBACK_BODY_DOC)
    async def feedback(request: Request, body: FeedbackRequest = Depends(feedback_body), name: str = NAME,
                       scope: str = Depends(feedback_auth),
                       x_feedback_source: str | None = Header(default=None, max_length=64)) -> Response:
        client = request.client.host if request.client else None
        return FastJSON(await service.feedback(name, body, scope=scope, client=client, source=x_feedback_source),
                        status_code=202)

    @app.get("/v1/models", tags=["v1"], response_model=ModelList, responses=responses(401),
             dependencies=[Depends(predict_auth)])
    async def list_models() -> Response:
        return FastJSON(service.models())

    # -- operations ----------------------------------------------------------------------------------------

    @app.get("/metrics", tags=["admin"], dependencies=[Depends(admin_auth)], response_class=Response,
             responses={200: {"description": "Prometheus text format", "content": {"text/plain": {
                 "schema": {"type": "string"}}}}, **responses(401)})
    async def metrics() -> Response:
        service.ready(detail=False)  # refreshes the registry gauge
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    @app.get("/v1/admin/status", tags=["admin"], response_model=GatewayStatus, responses=responses(401),
             dependencies=[Depends(admin_auth)])
    async def admin_status() -> Response:
        return FastJSON(service.ready()[1])

    @app.post("/v1/admin/reload", tags=["admin"], response_model=GatewayStatus, responses=responses(401),
              dependencies=[Depends(admin_auth)])
    async def admin_reload() -> Response:
        """Poll the registry now instead of waiting for the next tick."""
        await service.manager.poll_now()
        return FastJSON(service.ready()[1])

    return app


def _header(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return f"{credentials.scheme} {credentials.credentials}" if credentials else None

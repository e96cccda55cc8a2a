"""What ``/docs`` shows for each served model: exactly what to send and what comes back.

The generic routes (``/v1/models/{name}/predict``) take any model's request, so their schema alone cannot
say which features a model reads. This module adds, for each version the gateway serves, a concrete path
(``/v1/models/<name>/predict``) whose request schema is built from the version's signature: the input
features with their types (nullable ones accept null), the entity keys and request data of an entity-key
request, and ready-to-send examples (typical values recorded at training from the training set's profile).
The document is rebuilt when the served versions change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.schemas import MAX_ROWS, ErrorResponse
from gateway.signature import input_dtype

JSON_TYPES = {"float64": "number", "float32": "number", "double": "number", "float": "number",
              "int64": "integer", "int32": "integer", "int": "integer", "bool": "boolean"}
PLACEHOLDERS = {"number": 0.0, "integer": 0, "boolean": False, "string": ""}

# What each refusal means, for every route that can answer it (all in the ``{"error", "field"}`` shape).
ERROR_DESCRIPTIONS = {
    400: "Malformed body: binary tensor framing that does not add up, or a protocol extension not implemented",
    401: "Missing or wrong bearer token (when the gateway is configured with one)",
    404: "Unknown model or version (or, for an entity-key request, an entity the feature store does not know)",
    409: "The version exists but the gateway refused to load it (hash mismatch, untrusted types)",
    413: "Body too large",
    422: "The request does not match the schema or the model's signature; `field` names the part at fault",
    503: "A dependency the request needs (registry, feature store) is unavailable",
}
ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}


PREDICT_ERRORS = (401, 404, 409, 413, 422, 503)


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses=`` for the refusals a route can answer with."""
    return {code: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[code]} for code in codes}


# The v2 infer routes read their body themselves (JSON, or JSON followed by binary tensors): this documents
# the JSON form (the binary form has no JSON schema; a generated octet-stream body could not be valid).
INFER_BODY_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/InferRequest"}}},
        "description": "An Open Inference Protocol v2 request. With the binary tensor data extension, the body is "
        "this JSON followed by the raw tensors, the `Inference-Header-Content-Length` header gives the JSON part's "
        "size and each such input has `parameters.binary_data_size`."},
    "responses": {"200": {
        "description": "The outputs: JSON, or (when an output asks for `binary_data`, or the request for "
        "`binary_data_output`) this JSON followed by the raw tensors.",
        "headers": {"Inference-Header-Content-Length": {
            "description": "With binary outputs: the byte size of the JSON part", "schema": {"type": "integer"}}},
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
}


def body_schemas(*models: type) -> dict[str, Any]:
    """Component schemas of request body models as FastAPI documents a body parameter (its generator
    differs from pydantic's default), for routes that read their body themselves and refer to them."""
    from fastapi import FastAPI
    from fastapi.openapi.utils import get_openapi

    probe = FastAPI()
    for index, model in enumerate(models):
        async def _probe(body: Any) -> None:  # pragma: no cover - never called
            return None

        _probe.__annotations__ = {"body": model, "return": None}
        probe.post(f"/{index}")(_probe)
    doc = get_openapi(title="probe", version="1", routes=probe.routes)
    return {name: schema for name, schema in doc["components"]["schemas"].items()
            if name not in ("HTTPValidationError", "ValidationError")}


def _component(name: str, suffix: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{name}_{suffix}")


def _type(item: Mapping[str, Any], nullable: bool | None = None) -> dict[str, Any]:
    dtype = str(item.get("dtype", "string")).lower()
    kind = JSON_TYPES.get(dtype, "string")
    schema: dict[str, Any] = {"type": kind}
    if kind == "integer":
        bits = 31 if dtype == "int32" else 63
        schema.update(minimum=-(2**bits), maximum=2**bits - 1)
    if item.get("nullable", False) if nullable is None else nullable:
        schema = {"anyOf": [schema, {"type": "null"}], "description": "null: missing, imputed as in training"}
    return schema


def _object(items: Iterable[Mapping[str, Any]], examples: Mapping[str, Any], *, nullable: bool | None = None
            ) -> dict[str, Any]:
    items = list(items)
    properties = {}
    for item in items:
        prop = _type(item, nullable)
        if item["name"] in examples:
            prop["examples"] = [examples[item["name"]]]
        properties[str(item["name"])] = prop
    return {"type": "object", "properties": properties, "required": [str(i["name"]) for i in items],
            "additionalProperties": False}


def example_inputs(signature: Mapping[str, Any]) -> dict[str, Any]:
    """Inline inputs to show: the signature's recorded example, else a placeholder of each input's type."""
    recorded = (signature.get("example") or {}).get("inputs") or {}
    out = {}
    for item in signature.get("inputs", []) or []:
        name = str(item["name"])
        out[name] = recorded.get(name, PLACEHOLDERS[JSON_TYPES.get(str(item.get("dtype", "")).lower(), "string")])
    return out


def _outputs(signature: Mapping[str, Any]) -> dict[str, Any]:
    task = str(signature.get("task") or "binary")
    classes = signature.get("classes") or []
    class_type = "string" if any(isinstance(c, str) for c in classes) else "integer"
    if task == "regression":
        row = {"prediction": {"type": "number"}}
    elif task.startswith("multiclass"):
        row = {"label": {"type": class_type, "enum": classes},
               "probabilities": {"type": "object", "description": "probability of each class",
                                 "properties": {str(c): {"type": "number"} for c in classes}}}
    else:
        row = {"label": {"type": class_type, "enum": classes},
               "probability": {"type": "number", "description": f"probability of class {classes[-1]!r}"
                               if classes else "probability of the positive class"}}
    return {"type": "object", "properties": {
        "model": {"type": "string"}, "version": {"type": "integer"}, "request_id": {"type": "string"},
        "predictions": {"type": "array", "items": {"type": "object", "properties": row}}}}


def model_documents(models: Iterable[Any], *, lookups: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) documenting each served model (``LoadedModel``s); ``lookups``: whether
    this gateway answers entity-key requests (then models with a feature service document that form too)."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for model in models:
        signature = model.signature
        recorded = signature.get("example") or {}
        inputs_name = _component(model.name, "inputs")
        schemas[inputs_name] = {**_object(signature.get("inputs", []) or [], example_inputs(signature)),
                                "title": f"{model.name} v{model.version}: inputs"}
        request_id = {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 128}, {"type": "null"}]}
        inline = {"type": "object", "title": "features inline", "required": ["inputs"], "additionalProperties": False,
                  "properties": {"inputs": {"anyOf": [
                      {"$ref": f"#/components/schemas/{inputs_name}"},
                      {"type": "array", "items": {"$ref": f"#/components/schemas/{inputs_name}"}, "minItems": 1,
                       "maxItems": MAX_ROWS}]}, "request_id": request_id}}
        forms = [inline]
        examples: dict[str, Any] = {"inline": {"summary": "features inline",
                                               "value": {"inputs": example_inputs(signature)}}}
        keys = signature.get("entity_keys") or []
        if model.feature_service and keys and lookups:
            request_items = [*(signature.get("request_fields") or []),
                             *({"name": n, "dtype": input_dtype(signature, n)} for n in signature.get("request_features")
                               or [])]
            entity_example = recorded.get("entities") or {k["name"]: PLACEHOLDERS[_type(k, False)["type"]]
                                                          for k in keys}
            request_example = recorded.get("request_data") or {}
            entity: dict[str, Any] = {"entities": _object(keys, entity_example, nullable=False),
                                      "request_id": request_id}
            if request_items:
                entity["request_data"] = _object(request_items, request_example, nullable=False)
            forms.append({"type": "object", "title": "entity keys", "properties": entity, "required": sorted(
                {"entities", "request_data"}.intersection(entity)), "additionalProperties": False})
            example = {"entities": entity_example, **({"request_data": request_example} if request_items else {})}
            examples["entity"] = {"summary": f"entity keys: features from feature service {model.feature_service}",
                                  "value": example}
        request_name = _component(model.name, "predict_request")
        schemas[request_name] = {"title": f"{model.name} v{model.version}: request", "oneOf": forms,
                                 "description": "Give `inputs` (features inline) or `entities` (keys to look up)."}
        response_name = _component(model.name, "predict_response")
        schemas[response_name] = {**_outputs(signature), "title": f"{model.name} v{model.version}: response"}
        task = signature.get("task") or "binary"
        paths[f"/v1/models/{model.name}/predict"] = {"post": {
            "tags": ["served models"], "operationId": _component(model.name, "predict"),
            "summary": f"Score with {model.name} (v{model.version}, {task})",
            "description": (f"Version {model.version} of `{model.name}` answers (the `production` alias). Inputs: "
                            + ", ".join(f"`{i['name']}` ({i.get('dtype')})" for i in signature.get("inputs", []))
                            + (f". Entity keys: {', '.join(k['name'] for k in keys)} (feature service "
                               f"`{model.feature_service}`)." if keys else ".")),
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{request_name}"}, "examples": examples}}},
            "security": [{"HTTPBearer": []}],
            "responses": {
                "200": {"description": "Predictions", "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{response_name}"}}}},
                **{str(code): {"description": ERROR_DESCRIPTIONS[code], "content": ERROR_CONTENT}
                   for code in PREDICT_ERRORS},
            }}}
    return paths, schemas


def open_routes(paths: dict[str, Any], *, predict: bool, admin: bool) -> None:
    """Drop the bearer requirement (and its 401) from the operations whose token is not configured, so the
    document says what this gateway asks for."""
    for operations in paths.values():
        for operation in operations.values():
            if "security" in operation and not (admin if "admin" in operation.get("tags", ()) else predict):
                del operation["security"]
                operation.get("responses", {}).pop("401", None)

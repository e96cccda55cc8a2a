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

from gateway.signature import input_dtype

JSON_TYPES = {"float64": "number", "float32": "number", "double": "number", "float": "number",
              "int64": "integer", "int32": "integer", "int": "integer", "bool": "boolean"}
PLACEHOLDERS = {"number": 0.0, "integer": 0, "boolean": False, "string": ""}


def _component(name: str, suffix: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{name}_{suffix}")


def _type(item: Mapping[str, Any], nullable: bool | None = None) -> dict[str, Any]:
    kind = JSON_TYPES.get(str(item.get("dtype", "string")).lower(), "string")
    schema: dict[str, Any] = {"type": kind}
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


def model_documents(models: Iterable[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) documenting each served model (``LoadedModel``s)."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for model in models:
        signature = model.signature
        recorded = signature.get("example") or {}
        inputs_name = _component(model.name, "inputs")
        schemas[inputs_name] = {**_object(signature.get("inputs", []) or [], example_inputs(signature)),
                                "title": f"{model.name} v{model.version}: inputs"}
        body: dict[str, Any] = {"inputs": {"anyOf": [{"$ref": f"#/components/schemas/{inputs_name}"},
                                                     {"type": "array",
                                                      "items": {"$ref": f"#/components/schemas/{inputs_name}"}}]},
                                "request_id": {"type": "string", "maxLength": 128}}
        examples: dict[str, Any] = {"inline": {"summary": "features inline",
                                               "value": {"inputs": example_inputs(signature)}}}
        keys = signature.get("entity_keys") or []
        if model.feature_service and keys:
            request_items = [*(signature.get("request_fields") or []),
                             *({"name": n, "dtype": input_dtype(signature, n)} for n in signature.get("request_features")
                               or [])]
            entity_example = recorded.get("entities") or {k["name"]: PLACEHOLDERS[_type(k, False)["type"]]
                                                          for k in keys}
            request_example = recorded.get("request_data") or {}
            body["entities"] = _object(keys, entity_example, nullable=False)
            if request_items:
                body["request_data"] = _object(request_items, request_example, nullable=False)
            example = {"entities": entity_example, **({"request_data": request_example} if request_items else {})}
            examples["entity"] = {"summary": f"entity keys: features from feature service {model.feature_service}",
                                  "value": example}
        request_name = _component(model.name, "predict_request")
        schemas[request_name] = {"title": f"{model.name} v{model.version}: request", "type": "object",
                                 "properties": body, "additionalProperties": False,
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
            "responses": {
                "200": {"description": "Predictions", "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{response_name}"}}}},
                "404": {"description": "Unknown model, or an entity the feature store knows nothing about"},
                "422": {"description": "A field does not match the signature; `field` names it"},
            }}}
    return paths, schemas

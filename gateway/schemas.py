"""Request and response bodies: pydantic models that are at once validation, error messages and OpenAPI docs.

Feature values are typed ``Any`` here on purpose: their types come from each model version's signature,
which the service checks (naming the feature at fault). What pydantic checks is the envelope.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scalar = str | int | float | bool | None
MAX_ROWS = 10_000
"""Most rows (or entities) one request may score."""
V2Datatype = Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
                     "FP32", "FP64", "BYTES"]


class PredictRequest(BaseModel):
    """Features inline (``inputs``), or entity keys (``entities``) whose features come from the online store."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"inputs": {"feature_a": 12, "feature_b": "red"}},
        {"inputs": [{"feature_a": 12, "feature_b": "red"}, {"feature_a": 3, "feature_b": "blue"}]},
        {"entities": {"item_id": 42}, "request_data": {"quantity": 5}},
    ]})

    inputs: dict[str, Any] | list[dict[str, Any]] | None = Field(
        default=None, description="One row as {feature: value}, or a list of rows.")
    entities: dict[str, Any] | list[dict[str, Any]] | None = Field(
        default=None, description="Entity keys (one object or a list); features are read from the online store.")
    request_data: dict[str, Any] | list[dict[str, Any]] | None = Field(
        default=None, description="Request-time values the model's on-demand features need (with `entities`).")
    request_id: str | None = Field(default=None, min_length=1, max_length=128,
                                   description="Your id for this request (default: generated); feedback refers to it.")


class PredictResponse(BaseModel):
    model: str
    version: int
    request_id: str
    predictions: list[dict[str, Any]]


class ErrorResponse(BaseModel):
    error: str
    field: str | None = None


class InferInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=256)
    shape: list[Annotated[int, Field(ge=0, le=MAX_ROWS)]] = Field(
        min_length=1, max_length=8, description=f"Each dimension at most {MAX_ROWS} (the rows a request may carry).")
    datatype: V2Datatype
    data: list[Any]
    parameters: dict[str, Any] | None = None


class InferRequestedOutput(BaseModel):
    name: str = Field(min_length=1, max_length=256)
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    """Open Inference Protocol v2 inference request."""

    id: str | None = Field(default=None, min_length=1, max_length=128)
    parameters: dict[str, Any] | None = None
    inputs: list[InferInput] = Field(min_length=1, max_length=1024)
    outputs: list[InferRequestedOutput] | None = None


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any] = Field(description="Row-major values.")
    parameters: dict[str, Any] | None = Field(
        default=None, description="`classes` of a per-class output; `binary_data_size` when sent as binary data.")


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str
    outputs: list[InferOutput]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    """Open Inference Protocol v2 server metadata; ``extensions`` names the protocol extensions served."""

    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    live: bool


class ModelReady(BaseModel):
    """A served model (or version) is ready. A 404 answers with the same fields plus ``error``."""

    name: str
    version: str | None = None
    ready: bool


class RegistryHealth(BaseModel):
    ok: bool
    error: str | None = None
    last_ok_at: float | None = None
    degraded_since: float | None = None


class ServedVersion(BaseModel):
    version: int
    flavor: str
    loaded_at: float | None = None


class Readiness(BaseModel):
    """The open readiness probe's answer. With the admin token ``/v2/health/ready`` answers :class:`GatewayStatus`,
    which has these two fields too."""

    ready: bool
    status: Literal["ok", "degraded", "not_ready"]


class GatewayStatus(BaseModel):
    """Readiness (``/v2/health/ready``): ``ready`` and ``status``; with the admin token (and on the admin
    routes) also the registry's health, what is served and what was refused."""

    ready: bool
    status: Literal["ok", "degraded", "not_ready"]
    registry: RegistryHealth | None = None
    models: dict[str, ServedVersion] | None = Field(default=None, description="`name@alias`: the version serving it.")
    refused: dict[str, str] | None = Field(default=None, description="`name:version`: why the gateway refused to "
                                           "load it.")
    project: str | None = None
    missing: list[str] | None = Field(default=None, description="Configured models not served yet.")


class ServedModel(BaseModel):
    version: int
    flavor: str
    task: str | None = None
    feature_service: str | None = None
    inputs: list[dict[str, Any]]
    entity_keys: list[dict[str, Any]]
    request_data: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    classes: list[Any] | None = None
    shadow_version: int | None = None
    canary_version: int | None = Field(default=None, description="The canary answering a share of the requests "
                                       "that name no version, if any.")
    canary_share: float | None = Field(default=None, description="The canary's share of those requests (0 to 1].")


class ModelList(BaseModel):
    models: dict[str, ServedModel] = Field(description="Each served model's production version and signature.")


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=128)
    row: int = Field(default=0, ge=0, le=1_000_000)
    label: str | int | float | bool


class FeedbackRequest(BaseModel):
    """Ground truth for earlier predictions: one (``request_id`` + ``label``) or many (``items``)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"request_id": "3f0c...", "label": 1},
        {"items": [{"request_id": "3f0c...", "row": 0, "label": 1}, {"request_id": "9a1d...", "label": 0}]},
    ], "oneOf": [  # the two forms _one_form accepts, so the OpenAPI document refuses what it refuses
        {"title": "one label", "required": ["request_id", "label"], "properties": {
            "request_id": {"type": "string"}, "label": {"type": ["string", "integer", "number", "boolean"]},
            "items": {"type": "null"}}},
        {"title": "many labels", "required": ["items"], "properties": {
            "items": {"type": "array"}, "request_id": {"type": "null"}}},
    ]})

    request_id: str | None = Field(default=None, min_length=1, max_length=128)
    row: int = Field(default=0, ge=0, le=1_000_000)
    label: str | int | float | bool | None = None
    items: list[FeedbackItem] | None = Field(default=None, min_length=1, max_length=10_000)

    @model_validator(mode="after")
    def _one_form(self) -> FeedbackRequest:
        if self.items is None and (self.request_id is None or self.label is None):
            raise ValueError("give request_id and label, or items")
        if self.items is not None and self.request_id is not None:
            raise ValueError("give request_id and label, or items, not both")
        return self

    def all_items(self) -> list[FeedbackItem]:
        if self.items is not None:
            return self.items
        return [FeedbackItem(request_id=self.request_id or "", row=self.row, label=self.label)]  # type: ignore[arg-type]


class FeedbackResponse(BaseModel):
    """What became of the labels (answered with 202: they are written within the log's flush interval)."""

    model: str
    accepted: int = Field(description="Labels queued for the inference log, each as the model's class.")
    dropped: int = Field(description="Labels lost because the log's buffer was full (or logging is off).")
    rejected: int = Field(default=0, description="Labels left out: their request id is not an answer this gateway "
                          "knows of within the feedback horizon (an answer from another replica becomes known once "
                          "that replica has written its log: retry these after the flush interval).")
    rejected_request_ids: list[str] = Field(default_factory=list, description="The request ids of `rejected`.")

"""Request and response bodies: pydantic models that are at once validation, error messages and OpenAPI docs.

Feature values are typed ``Any`` here on purpose: their types come from each model version's signature,
which the service checks (naming the feature at fault). What pydantic checks is the envelope.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scalar = str | int | float | bool | None
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
    shape: list[int] = Field(min_length=1, max_length=8)
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
    data: list[Any]


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
    model: str
    accepted: int
    dropped: int

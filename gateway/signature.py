"""Requests in, columns out, and back: validation against a model version's signature.

The signature stored with a version (``{"inputs": [{"name", "dtype"}], "outputs": [...]}``) is the one
source of truth for what a request must carry. Both the plain JSON rows and the Open Inference
Protocol v2 tensors are turned into ``{feature: 1-D numpy array}`` here, and every refusal names the
field at fault. This runs for every request, so it uses plain loops over small lists and builds numpy
arrays once per column: no pandas on the hot path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.errors import InvalidInput

# Signature dtype -> numpy dtype. "string" columns are object arrays of str (what sklearn encoders take).
NUMPY_DTYPES: dict[str, Any] = {
    "float64": np.float64, "float32": np.float32, "double": np.float64, "float": np.float64,
    "int64": np.int64, "int32": np.int32, "int": np.int64,
    "bool": np.bool_, "string": object, "str": object,
}
FLOAT_KINDS = frozenset({"float64", "float32", "double", "float"})
INT_KINDS = frozenset({"int64", "int32", "int"})

# Open Inference Protocol v2 datatypes accepted for each signature dtype family.
V2_NUMERIC = frozenset({"FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16",
                        "UINT8"})
V2_INTEGER = frozenset({"INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8"})


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: str
    nullable: bool = False  # a missing value (null) is accepted and left to the model, which imputes it

    @property
    def v2_datatype(self) -> str:
        return v2_datatype_for(self.dtype)


def v2_datatype_for(dtype: str) -> str:
    """The v2 datatype a signature dtype is advertised as in model metadata."""
    if dtype in FLOAT_KINDS:
        return "FP32" if dtype == "float32" else "FP64"
    if dtype in INT_KINDS:
        return "INT32" if dtype == "int32" else "INT64"
    if dtype == "bool":
        return "BOOL"
    return "BYTES"


def input_specs(signature: Mapping[str, Any]) -> tuple[InputSpec, ...]:
    """The signature's inputs; unknown dtypes are treated as strings (validated as such, never guessed)."""
    return typed_specs(signature.get("inputs", []) or [])


def input_dtype(signature: Mapping[str, Any], name: str) -> str:
    """The dtype the signature gives input ``name`` (request features are inputs too); ``string`` if absent."""
    for item in signature.get("inputs", []) or []:
        if item.get("name") == name:
            return str(item.get("dtype", "string"))
    return "string"


def typed_specs(items: Sequence[Mapping[str, Any]], *, nullable: bool | None = None) -> tuple[InputSpec, ...]:
    """``[{"name", "dtype", "nullable"}]`` as specs (also for entity keys and request data, never nullable)."""
    specs = []
    for item in items:
        dtype = str(item.get("dtype", "string")).lower()
        specs.append(InputSpec(name=str(item["name"]), dtype=dtype if dtype in NUMPY_DTYPES else "string",
                               nullable=bool(item.get("nullable", False)) if nullable is None else nullable))
    return tuple(specs)


def check_value(spec: InputSpec, value: Any, where: str) -> Any:
    """One JSON value, checked against its column's dtype; returns what goes into the array.

    A null is a missing value where the input is nullable (Feast returns one for a feature with no stored
    value): NaN for numbers, None for strings, imputed by the model as in training. Elsewhere it is refused.
    """
    dtype = spec.dtype
    if value is None:
        if not spec.nullable:
            raise InvalidInput(f"{spec.name!r} must not be null", field=where)
        return None if dtype in ("string", "str") else math.nan
    if dtype in FLOAT_KINDS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"feature {spec.name!r} must be a number, got {type(value).__name__}", field=where)
        if isinstance(value, int) and abs(value) > 2**63:
            raise InvalidInput(f"feature {spec.name!r} is out of range", field=where)
        return value
    if dtype in INT_KINDS:
        if isinstance(value, float) and math.isnan(value) and spec.nullable:
            return math.nan
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"feature {spec.name!r} must be an integer, got {type(value).__name__}", field=where)
        if isinstance(value, float):
            if not value.is_integer():
                raise InvalidInput(f"feature {spec.name!r} must be an integer, got {value!r}", field=where)
            if abs(value) >= 2**63:  # orjson reads an integer past 64 bits as the nearest float: -2**63 - 1 too
                raise InvalidInput(f"feature {spec.name!r} is out of range for {dtype}", field=where)
            value = int(value)
        limit = 2**31 if dtype == "int32" else 2**63
        if not -limit <= value < limit:
            raise InvalidInput(f"feature {spec.name!r} is out of range for {dtype}", field=where)
        return value
    if dtype == "bool":
        if not isinstance(value, bool):
            raise InvalidInput(f"feature {spec.name!r} must be a boolean, got {type(value).__name__}", field=where)
        return value
    if not isinstance(value, str):
        raise InvalidInput(f"feature {spec.name!r} must be a string, got {type(value).__name__}", field=where)
    return value


def _column(spec: InputSpec, values: list[Any]) -> np.ndarray:
    dtype = NUMPY_DTYPES[spec.dtype]
    if dtype is object:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array
    if spec.nullable and dtype is not np.float64 and dtype is not np.float32 and any(
            isinstance(v, float) and v != v for v in values):
        return np.asarray(values, dtype=np.float64)  # an integer or boolean column with a missing value
    return np.asarray(values, dtype=dtype)


def rows_to_columns(rows: Sequence[Mapping[str, Any]], specs: Sequence[InputSpec], *,
                    field_prefix: str = "inputs") -> dict[str, np.ndarray]:
    """``[{feature: value}, ...]`` -> ``{feature: array}``; refuses missing, extra and mistyped features."""
    if not rows:
        raise InvalidInput(f"{field_prefix!r} has no rows to score", field=field_prefix)
    names = {spec.name for spec in specs}
    single = len(rows) == 1
    collected: dict[str, list[Any]] = {spec.name: [] for spec in specs}
    for index, row in enumerate(rows):
        where = field_prefix if single else f"{field_prefix}[{index}]"
        if not isinstance(row, Mapping):
            raise InvalidInput("each row must be an object of feature: value", field=where)
        if len(row) != len(names) or not names.issuperset(row):
            extra = sorted(k for k in row if k not in names)
            if extra:
                raise InvalidInput(f"unexpected feature {extra[0]!r} (the model takes {sorted(names)})",
                                   field=f"{where}.{extra[0]}")
        for spec in specs:
            try:
                value = row[spec.name]
            except KeyError:
                raise InvalidInput(f"missing feature {spec.name!r}", field=f"{where}.{spec.name}") from None
            collected[spec.name].append(check_value(spec, value, f"{where}.{spec.name}"))
    return {spec.name: _column(spec, collected[spec.name]) for spec in specs}


def _flatten(data: Any, name: str) -> list[Any]:
    """v2 ``data`` may be flat or nested row-major; either way one flat list."""
    if not isinstance(data, list):
        return [data]
    if data and isinstance(data[0], list):
        flat: list[Any] = []
        stack = [data]
        while stack:  # iterative, so a deeply nested body cannot blow the recursion limit
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(reversed(item))
            else:
                flat.append(item)
        return flat
    return data


def _v2_value_check(spec: InputSpec, datatype: str, where: str) -> None:
    if spec.dtype in FLOAT_KINDS and datatype not in V2_NUMERIC:
        raise InvalidInput(f"input {spec.name!r} takes a numeric datatype (FP64), got {datatype}", field=where)
    if spec.dtype in INT_KINDS and datatype not in V2_INTEGER:
        raise InvalidInput(f"input {spec.name!r} takes an integer datatype (INT64), got {datatype}", field=where)
    if spec.dtype == "bool" and datatype != "BOOL":
        raise InvalidInput(f"input {spec.name!r} takes datatype BOOL, got {datatype}", field=where)
    if spec.dtype in ("string", "str") and datatype != "BYTES":
        raise InvalidInput(f"input {spec.name!r} takes datatype BYTES, got {datatype}", field=where)


def tensors_to_columns(tensors: Sequence[Any], specs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
    """v2 input tensors -> columns.

    One tensor per feature (shape ``[N]`` or ``[N, 1]``), named as in the signature; or, for models whose
    inputs are all numeric, a single ``[N, F]`` tensor whose columns follow the signature order (what
    generic v2 clients send).
    """
    by_name = {spec.name: spec for spec in specs}
    if len(tensors) == 1 and tensors[0].name not in by_name and len(specs) > 1:
        return _matrix_to_columns(tensors[0], specs)
    columns: dict[str, np.ndarray] = {}
    rows: int | None = None
    for index, tensor in enumerate(tensors):
        where = f"inputs[{index}]"
        spec = by_name.get(tensor.name)
        if spec is None:
            raise InvalidInput(f"unexpected input {tensor.name!r} (the model takes {sorted(by_name)})",
                               field=f"{where}.name")
        if spec.name in columns:
            raise InvalidInput(f"input {spec.name!r} given twice", field=f"{where}.name")
        _v2_value_check(spec, tensor.datatype, f"{where}.datatype")
        data = _flatten(tensor.data, spec.name)
        shape = list(tensor.shape)
        if not shape or any(dim < 0 for dim in shape) or math.prod(shape) != len(data):
            raise InvalidInput(f"input {spec.name!r}: shape {shape} does not match {len(data)} values",
                               field=f"{where}.shape")
        if len(shape) > 1 and math.prod(shape[1:]) != 1:
            raise InvalidInput(f"input {spec.name!r}: one value per row expected, shape {shape}",
                               field=f"{where}.shape")
        if rows is None:
            rows = shape[0]
        elif shape[0] != rows:
            raise InvalidInput(f"input {spec.name!r} has {shape[0]} rows, others have {rows}", field=f"{where}.shape")
        if shape[0] == 0:
            raise InvalidInput("no rows to score", field=f"{where}.shape")
        values = [check_value(spec, value, f"{where}.data") for value in data]
        columns[spec.name] = _column(spec, values)
    for spec in specs:
        if spec.name not in columns:
            raise InvalidInput(f"missing input {spec.name!r}", field=f"inputs.{spec.name}")
    return columns


def _matrix_to_columns(tensor: Any, specs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
    where = "inputs[0]"
    if any(spec.dtype not in FLOAT_KINDS | INT_KINDS for spec in specs):
        raise InvalidInput(f"unexpected input {tensor.name!r}: this model takes one tensor per feature "
                           f"({[spec.name for spec in specs]})", field=f"{where}.name")
    if tensor.datatype not in V2_NUMERIC:
        raise InvalidInput(f"input {tensor.name!r} must be numeric, got {tensor.datatype}", field=f"{where}.datatype")
    shape = list(tensor.shape)
    data = _flatten(tensor.data, tensor.name)
    if len(shape) != 2 or shape[1] != len(specs) or shape[0] < 1 or shape[0] * shape[1] != len(data):
        raise InvalidInput(f"input {tensor.name!r}: expected shape [N, {len(specs)}] with N*{len(specs)} values, "
                           f"got shape {shape} and {len(data)} values", field=f"{where}.shape")
    width = shape[1]
    return {spec.name: _column(spec, [check_value(spec, v, f"{where}.data") for v in data[i::width]])
            for i, spec in enumerate(specs)}


def to_python(value: np.ndarray) -> list[Any]:
    """A numpy output column as JSON-ready Python values."""
    return value.tolist()


def output_rows(outputs: Mapping[str, np.ndarray], classes: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    """``{output: array}`` -> one dict per row (the plain JSON response shape). A multi-class model's
    ``probabilities`` become ``{class: probability}`` when the classes are known (the signature's)."""
    lists = {name: to_python(array) for name, array in outputs.items()}
    probabilities = lists.get("probabilities")
    if probabilities and classes and len(probabilities[0]) == len(classes):
        keys = [str(c) for c in classes]
        lists["probabilities"] = [dict(zip(keys, row, strict=True)) for row in probabilities]
    n = len(next(iter(lists.values()))) if lists else 0
    return [{name: values[i] for name, values in lists.items()} for i in range(n)]


def v2_output_tensor(name: str, array: np.ndarray, classes: Sequence[Any] | None = None) -> dict[str, Any]:
    """One v2 output tensor; per-class probabilities (``[N, C]``) name their classes in ``parameters``."""
    kind = array.dtype.kind
    datatype = {"f": "FP64" if array.dtype.itemsize == 8 else "FP32", "i": "INT64" if array.dtype.itemsize == 8
                else "INT32", "u": "UINT64", "b": "BOOL"}.get(kind, "BYTES")
    data = array.reshape(-1).tolist()
    if datatype == "BYTES":
        data = [str(v) for v in data]
    tensor = {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}
    if classes is not None and array.ndim == 2:
        tensor["parameters"] = {"classes": list(classes)}
    return tensor

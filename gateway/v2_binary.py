"""The Open Inference Protocol's binary tensor data extension (HTTP/REST), in both directions.

A v2 client may send its tensors as raw bytes after the JSON request: the ``Inference-Header-Content-Length``
header gives the size of the JSON part, each such input carries ``parameters.binary_data_size``, and the
raw parts follow in input order (little-endian, row-major; a BOOL is one byte; a BYTES element is a 4-byte
little-endian length and then its bytes). It may also ask for outputs in that form (``parameters.binary_data``
on a requested output, or ``binary_data_output`` in the request's parameters). tritonclient's HTTP client
does both by default and sends no ``content-type``. The format is Triton's, also documented by KServe:
https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md

This module only turns bytes into the JSON form and back: the decoded request is validated by the same
:class:`~gateway.schemas.InferRequest` model and signature checks as a plain JSON request, so both forms
refuse the same things with the same fields. A body whose framing is wrong (header length, sizes, element
counts) is a 400 naming the header or parameter at fault; BYTES that are not UTF-8 text are a 422.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from gateway.errors import GatewayError, InvalidInput
from gateway.schemas import InferRequest

try:
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson comes with several dependencies; json is the same, slower
    _fast_loads = json.loads

EXTENSION = "binary_tensor_data"  # the name Triton reports in its server metadata
HEADER = "inference-header-content-length"
MEDIA_TYPE = "application/octet-stream"

# Fixed-size datatypes as little-endian numpy dtypes. BYTES is length-prefixed and decoded on its own.
NUMPY_WIRE: dict[str, np.dtype[Any]] = {name: np.dtype(code) for name, code in {
    "BOOL": "?", "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "i1", "INT16": "<i2",
    "INT32": "<i4", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}.items()}
# Triton's shared-memory and classification extensions: https://github.com/triton-inference-server/server/tree/main/docs/protocol
UNSUPPORTED_PARAMETERS = frozenset({"shared_memory_region", "shared_memory_byte_size", "shared_memory_offset",
                                    "classification"})
_LENGTH = struct.Struct("<I")
_ADAPTER: TypeAdapter[InferRequest] = TypeAdapter(InferRequest)


class MalformedBody(GatewayError):
    """The body's binary framing is wrong: it cannot be cut into a JSON header and tensors."""

    status_code = 400


class Unsupported(GatewayError):
    """A parameter of a protocol extension the gateway does not implement."""

    status_code = 400


# -- request ----------------------------------------------------------------------------------------------------


def parse_infer_request(raw: bytes, header_length: str | None) -> InferRequest:
    """The v2 request in ``raw``: plain JSON, or (with ``Inference-Header-Content-Length``) a JSON header
    followed by binary tensors, whose values become each input's ``data``. Whatever a client sends, the
    only exceptions are refusals: a :class:`~gateway.errors.GatewayError` (400 for the framing or an
    extension not implemented, 422 for the values), or FastAPI's ``RequestValidationError`` for a body that
    does not fit :class:`InferRequest` (answered like every other body the gateway validates)."""
    size = len(raw) if header_length is None else _header_size(header_length, len(raw))
    document = _json(raw[:size])
    if size < len(raw) or _has_binary_inputs(document):
        _attach_binary(document, memoryview(raw)[size:])
    try:
        request = _ADAPTER.validate_python(document)
    except ValidationError as exc:
        raise RequestValidationError([{**err, "loc": ("body", *err.get("loc", ()))}
                                      for err in exc.errors(include_url=False)], body=document) from None
    _refuse_other_extensions(request)
    return request


def _refuse_other_extensions(request: InferRequest) -> None:
    """Parameters of protocol extensions the gateway does not implement: a clear refusal, not a wrong answer."""
    for kind, tensors in (("inputs", request.inputs), ("outputs", request.outputs or [])):
        for index, tensor in enumerate(tensors):
            for name in UNSUPPORTED_PARAMETERS.intersection(tensor.parameters or {}):
                raise Unsupported(f"parameter {name!r} belongs to a protocol extension this gateway does not "
                                  f"implement (it implements {EXTENSION})", field=f"{kind}[{index}].parameters.{name}")


def _header_size(value: str, body_size: int) -> int:
    value = value.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 20) or not 0 < int(value) <= body_size:
        raise MalformedBody(f"Inference-Header-Content-Length must be the byte size of the JSON header (1 to "
                            f"{body_size}, the body's size), got {value[:32]!r}", field=HEADER)
    return int(value)


def _json(raw: bytes) -> Any:
    """orjson first; stdlib json then takes what orjson refuses but other JSON writers produce (NaN, UTF-16).
    Either one's failure (bad syntax, bytes that are not UTF-8, nesting deeper than 1,024) is a 422."""
    if not raw:
        raise InvalidInput("the body is empty: send a JSON object", field="body")
    try:
        return _fast_loads(raw)
    except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
        reason = str(exc)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidInput(f"the body is not JSON: {reason}", field="body") from None


def _has_binary_inputs(document: Any) -> bool:
    return isinstance(document, dict) and isinstance(document.get("inputs"), list) and any(
        isinstance(item, dict) and isinstance(item.get("parameters"), dict)
        and "binary_data_size" in item["parameters"] for item in document["inputs"])


def _attach_binary(document: Any, tail: memoryview) -> None:
    """Give every input that declares ``binary_data_size`` its slice of ``tail`` as ``data``."""
    if not _has_binary_inputs(document):
        raise MalformedBody(f"{len(tail)} bytes follow the JSON header but no input declares "
                            "parameters.binary_data_size", field=HEADER)
    offset = 0
    for index, item in enumerate(document["inputs"]):
        parameters = item.get("parameters") if isinstance(item, dict) else None
        if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
            continue
        where = f"inputs[{index}]"
        size = parameters["binary_data_size"]
        if type(size) is not int or size < 0:
            raise MalformedBody(f"binary_data_size must be a byte count, got {size!r}",
                                field=f"{where}.parameters.binary_data_size")
        if "data" in item:
            raise MalformedBody("an input gives either data or binary_data_size, not both", field=f"{where}.data")
        if offset + size > len(tail):
            raise MalformedBody(f"binary_data_size of the inputs add up to more than the {len(tail)} bytes after "
                                "the JSON header", field=f"{where}.parameters.binary_data_size")
        item["data"] = decode_tensor(item.get("datatype"), tail[offset:offset + size], item.get("shape"), where)
        offset += size
    if offset != len(tail):
        raise MalformedBody(f"the inputs' binary_data_size add up to {offset} bytes, but {len(tail)} follow the "
                            "JSON header", field=HEADER)


def decode_tensor(datatype: Any, chunk: memoryview, shape: Any, where: str) -> list[Any]:
    """Raw bytes of one tensor -> its flat list of values (checked against ``shape`` when it is well formed)."""
    if datatype == "BYTES":
        values: list[Any] = _decode_bytes(chunk, where)
    elif isinstance(datatype, str) and datatype in NUMPY_WIRE:
        dtype = NUMPY_WIRE[datatype]
        if len(chunk) % dtype.itemsize:
            raise MalformedBody(f"{len(chunk)} bytes is not a whole number of {datatype} values "
                                f"({dtype.itemsize} bytes each)", field=f"{where}.parameters.binary_data_size")
        values = np.frombuffer(chunk, dtype=dtype).tolist()
    else:
        raise InvalidInput(f"unknown datatype {datatype!r}", field=f"{where}.datatype")
    if isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape) and math.prod(shape) != len(values):
        raise MalformedBody(f"shape {shape} needs {math.prod(shape)} values, the binary data holds {len(values)}",
                            field=f"{where}.parameters.binary_data_size")
    return values


def _decode_bytes(chunk: memoryview, where: str) -> list[str]:
    """BYTES elements (4-byte little-endian length, then the bytes) as str: the gateway's string features."""
    values, offset, end = [], 0, len(chunk)
    while offset < end:
        if offset + 4 > end:
            raise MalformedBody("a BYTES element is cut short (its 4-byte length is incomplete)",
                                field=f"{where}.parameters.binary_data_size")
        (length,) = _LENGTH.unpack_from(chunk, offset)
        offset += 4
        if offset + length > end:
            raise MalformedBody(f"a BYTES element of {length} bytes runs past the tensor's binary data",
                                field=f"{where}.parameters.binary_data_size")
        try:
            values.append(str(chunk[offset:offset + length], "utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput(f"BYTES element {len(values)} is not UTF-8 text", field=f"{where}.data") from None
        offset += length
    return values


# -- response ---------------------------------------------------------------------------------------------------


def binary_outputs(request: InferRequest) -> set[str]:
    """The outputs the client wants as binary: ``binary_data`` on a requested output, else the request's
    ``binary_data_output`` (which covers every output when none is named)."""
    default = (request.parameters or {}).get("binary_data_output") is True
    if request.outputs is None:
        return {"*"} if default else set()
    wanted = set()
    for output in request.outputs:
        parameters = output.parameters or {}
        if parameters.get("binary_data", default) is True:
            wanted.add(output.name)
    return wanted


def encode_response(result: Mapping[str, Any], binary: set[str]) -> tuple[bytes, int]:
    """A JSON inference response with the ``binary`` outputs (``"*"``: all) moved after the JSON header.
    Returns the body and the JSON header's byte size (the ``Inference-Header-Content-Length`` value)."""
    outputs, parts = [], []
    for tensor in result["outputs"]:
        if "*" in binary or tensor["name"] in binary:
            data = encode_tensor(tensor["datatype"], tensor["data"])
            parts.append(data)
            tensor = {k: v for k, v in tensor.items() if k != "data"}
            tensor["parameters"] = {**tensor.get("parameters", {}), "binary_data_size": len(data)}
        outputs.append(tensor)
    header = json.dumps({**result, "outputs": outputs}, separators=(",", ":")).encode()
    return b"".join([header, *parts]), len(header)


def encode_tensor(datatype: str, data: list[Any]) -> bytes:
    """One tensor's flat values as the extension's raw bytes."""
    if datatype == "BYTES":
        encoded = [str(value).encode() for value in data]
        return b"".join(_LENGTH.pack(len(item)) + item for item in encoded)
    return np.asarray(data, dtype=NUMPY_WIRE[datatype]).tobytes()

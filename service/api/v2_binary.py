"""Tensors of the V2 protocol: JSON data or the binary tensor extension, in and out.

Binary extension: the header `Inference-Header-Content-Length: L` says the body's first L bytes
are the JSON request; the rest holds, in input order, the raw little-endian row-major bytes of
each input whose parameters carry `binary_data_size`. Responses do the same for outputs the
client asked to receive as binary.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic_core import to_json

from service.api.json_types import not_a_number
from service.api.v2_schemas import INPUT_DTYPES, OUTPUT_DTYPES, InferInput

HEADER = "inference-header-content-length"

# JSON numbers as the parser gives them (bool is a type of its own here, so refused).
_INTEGER_TYPES = frozenset({int})
_NUMBER_TYPES = frozenset({int, float})
_ALL = np.logical_and.reduce


class ProtocolError(Exception):
    """The request breaks the V2 protocol or mcdrop's use of it (answered with a 400)."""


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON part and the binary part of a request body."""
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        raise ProtocolError("Inference-Header-Content-Length: expected an integer") from None
    if not 0 < n <= len(body):
        raise ProtocolError(
            f"Inference-Header-Content-Length: {n} is outside the body of {len(body)} bytes"
        )
    return body[:n], body[n:]


def decode_inputs(inputs: list[InferInput], binary: bytes) -> list[NDArray[np.float64]]:
    """Each input as a float64 array of its declared shape."""
    out, offset = [], 0
    for i, tensor in enumerate(inputs):
        where = f"inputs.{i}"
        dtype = INPUT_DTYPES.get(tensor.datatype)
        if dtype is None:
            raise ProtocolError(
                f"{where}.datatype: expected one of {sorted(INPUT_DTYPES)}, got "
                f"'{tensor.datatype[:16]}'"
            )
        if any(d < 0 for d in tensor.shape):
            raise ProtocolError(f"{where}.shape: dimensions must be >= 0")
        count = math.prod(tensor.shape)
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is not None:
            if tensor.data is not None:
                raise ProtocolError(f"{where}: has both data and binary_data_size")
            if (
                not isinstance(size, int)
                or isinstance(size, bool)
                or size != count * dtype.itemsize
            ):
                raise ProtocolError(
                    f"{where}.parameters.binary_data_size: expected {count * dtype.itemsize} "
                    f"bytes for shape {tensor.shape} of {tensor.datatype}"
                )
            if offset + size > len(binary):
                raise ProtocolError(f"{where}: the binary part ends before its {size} bytes")
            arr = np.frombuffer(binary, dtype, count, offset).astype(np.float64)
            offset += size
        elif tensor.data is None:
            raise ProtocolError(f"{where}: expected data (or parameters.binary_data_size)")
        else:
            arr = _json_data(tensor.data, dtype, count, where)
        out.append(arr.reshape(tensor.shape))
    if offset != len(binary):
        raise ProtocolError(f"body: {len(binary) - offset} binary bytes belong to no input")
    return out


def _json_data(data: list[Any], dtype: np.dtype[Any], count: int, where: str) -> NDArray[Any]:
    flat = _flatten(data)
    if len(flat) != count:
        raise ProtocolError(f"{where}.data: expected {count} values for its shape, got {len(flat)}")
    integer = dtype.kind in "iu"
    allowed = _INTEGER_TYPES if integer else _NUMBER_TYPES
    # One pass of type() in C over the values; the Python loop only runs to name a bad one.
    if not set(map(type, flat)) <= allowed:
        for i, v in enumerate(flat):
            if type(v) not in allowed:
                kind = "an integer" if integer else "a finite number"
                raise ProtocolError(f"{where}.data: value {i}: expected {kind}{not_a_number(v)}")
    if integer:
        info = np.iinfo(dtype)
        if flat and not (info.min <= min(flat) and max(flat) <= info.max):
            raise ProtocolError(f"{where}.data: values outside the range of its datatype")
    return np.asarray(flat, np.float64)


def _flatten(data: list[Any]) -> list[Any]:
    """Row-major flattening of nested lists; the protocol allows flat or nested data."""
    if not any(isinstance(v, list) for v in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            flat.append(v)
        else:
            stack.pop()
    return flat


def encode_response(
    head: dict[str, Any], tensors: list[tuple[str, str, NDArray[Any], bool]]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON length when some output travels as binary.

    tensors: (name, datatype, array, as_binary) for each output, in the order given.
    """
    outputs, chunks = [], []
    for name, datatype, arr, as_binary in tensors:
        typed = np.ascontiguousarray(arr, OUTPUT_DTYPES[datatype])
        # The outputs are finite, but a float64 value may overflow FP32 here. JSON has no
        # Infinity, so refuse it as json.dumps(allow_nan=False) would (to_json writes it).
        if typed.dtype.kind == "f" and not _ALL(np.isfinite(typed), axis=None):
            raise ValueError(f"Out of range float values are not JSON compliant: output {name}")
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if as_binary:
            raw = typed.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = typed.reshape(-1).tolist()
        outputs.append(entry)
    # pydantic's Rust encoder, as the REST routes use, is several times faster than json.dumps.
    text = to_json({**head, "outputs": outputs})
    if not chunks:
        return text, None
    return text + b"".join(chunks), len(text)

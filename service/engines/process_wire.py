"""The messages between the server and an engine process: a JSON header, then raw arrays.

A message is an 8-byte little-endian header length, the UTF-8 JSON header, then each array's
bytes in C order; the header lists every array's dtype and shape, so the receiver allocates each
array once and reads the socket straight into it. Nothing is pickled: only the dtypes below
travel, and a header naming any other is refused.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import numpy as np
from numpy.typing import NDArray

_LENGTH = struct.Struct("<Q")
_DTYPES: dict[str, type[np.generic]] = {"<f4": np.float32, "<f8": np.float64, "<i8": np.int64}
_MAX_HEADER = 1 << 24


class WireError(ConnectionError):
    """The other end closed the connection or sent something that is not a message."""


def send(sock: socket.socket, header: dict[str, Any], arrays: list[NDArray[Any]]) -> None:
    """One message: the header (with each array's dtype and shape added) and the arrays, in one
    gathered write where the socket takes it whole, so the receiver wakes once, not per part."""
    packed = [np.ascontiguousarray(a, dtype=_wire_dtype(a.dtype)) for a in arrays]
    head = json.dumps({**header, "arrays": [[a.dtype.str, list(a.shape)] for a in packed]})
    data = head.encode()
    parts = [memoryview(_LENGTH.pack(len(data)) + data)]
    parts += [a.data.cast("B") for a in packed if a.nbytes]
    while parts:
        sent = sock.sendmsg(parts)
        while parts and sent >= len(parts[0]):
            sent -= len(parts[0])
            parts.pop(0)
        if parts:
            parts[0] = parts[0][sent:]


def receive(sock: socket.socket) -> tuple[dict[str, Any], list[NDArray[Any]]]:
    """The next message's header (without the array list) and its arrays."""
    (length,) = _LENGTH.unpack(_read(sock, _LENGTH.size))
    if length > _MAX_HEADER:
        raise WireError(f"header of {length} bytes: not a message")
    header = json.loads(_read(sock, length))
    arrays = []
    for dtype, shape in header.pop("arrays"):
        if dtype not in _DTYPES:
            raise WireError(f"array dtype '{dtype}' is not one the engine process exchanges")
        a = np.empty(shape, _DTYPES[dtype])
        if a.nbytes:
            _read_into(sock, a.data.cast("B"))
        arrays.append(a)
    return header, arrays


def _wire_dtype(dtype: np.dtype[Any]) -> type[np.generic]:
    for kind in _DTYPES.values():
        if dtype == kind:
            return kind
    raise TypeError(f"arrays of {dtype} do not travel to the engine process")


def _read(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    _read_into(sock, memoryview(buf))
    return bytes(buf)


def _read_into(sock: socket.socket, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if n == 0:
            raise WireError("the engine process connection closed")
        got += n

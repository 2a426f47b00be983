"""JSON values to numpy arrays, checked: numbers where numbers are declared, sizes that add up."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from canarygate.errors import BadRequest
from canarygate.runtime.tensors import DATATYPES

# The kinds of numpy array a JSON value may become for each family of datatypes.
_ACCEPTED_KINDS = {"f": "iuf", "i": "iu", "u": "iu", "b": "b"}
_KIND_NAMES = {"U": "strings", "S": "strings", "O": "mixed values", "f": "fractional numbers",
               "b": "booleans", "i": "integers", "u": "integers"}


def shape_of(name: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers")
    return tuple(value)


def json_array(
    name: str, datatype: str, shape: tuple[int, ...] | None, data: Any
) -> np.ndarray:
    """A tensor from JSON ``data`` (flat or nested, row-major) with the declared shape.

    With ``shape`` None the data's own nesting is the shape (KServe V1 instances).
    """
    dtype = DATATYPES[datatype]
    try:
        if datatype == "BYTES":
            array = np.array(_flatten(data), dtype=np.object_)
            if shape is None:
                array = np.array(data, dtype=np.object_)
        else:
            with np.errstate(all="ignore"):
                raw = np.asarray(data)
            accepted = _ACCEPTED_KINDS[dtype.kind]
            if raw.dtype.kind not in accepted:
                found = _KIND_NAMES.get(raw.dtype.kind, "other values")
                raise BadRequest(f"input {name!r}: datatype {datatype} needs numbers of that type, "
                                 f"but data holds {found}")
            with np.errstate(all="ignore"):
                array = raw.astype(dtype, copy=False)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequest(f"input {name!r}: data cannot be read as {datatype}: {exc}") from None
    if shape is None:
        return array
    expected = math.prod(shape)
    if array.size != expected:
        raise BadRequest(f"input {name!r}: shape {list(shape)} needs {expected} values, "
                         f"but data has {array.size}")
    return array.reshape(shape)


def binary_array(
    name: str, datatype: str, shape: tuple[int, ...], raw: memoryview
) -> np.ndarray:
    """A tensor from the binary tensor extension's raw little-endian bytes."""
    expected = math.prod(shape)
    if datatype == "BYTES":
        items = _unpack_bytes(name, raw)
        if len(items) != expected:
            raise BadRequest(f"input {name!r}: shape {list(shape)} needs {expected} values, "
                             f"but binary data has {len(items)}")
        return np.array(items, dtype=np.object_).reshape(shape)
    dtype = DATATYPES[datatype]
    if len(raw) != expected * dtype.itemsize:
        raise BadRequest(f"input {name!r}: shape {list(shape)} of {datatype} needs "
                         f"{expected * dtype.itemsize} bytes, but binary_data_size is {len(raw)}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def bytes_payload(array: np.ndarray) -> bytes:
    """BYTES tensors in binary form: each element as a 4-byte little-endian length, then bytes."""
    parts = []
    for item in array.ravel():
        data = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)


def _unpack_bytes(name: str, raw: memoryview) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest(f"input {name!r}: BYTES binary data is truncated")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise BadRequest(f"input {name!r}: BYTES binary data is truncated")
        items.append(bytes(raw[offset:offset + length]))
        offset += length
    return items


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    for item in data:
        out.extend(_flatten(item))
    return out

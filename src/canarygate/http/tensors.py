"""Request bodies to numpy arrays, checked: JSON that can be read, numbers where numbers are
declared, values that fit their datatype, sizes that add up. Shared by both protocols."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np
import orjson

from canarygate.errors import BadRequest, UnsupportedMediaType
from canarygate.http.asgi import Headers
from canarygate.runtime.tensors import DATATYPES

# The kinds of numpy array a JSON value may become for each family of datatypes.
_ACCEPTED_KINDS = {"f": "iuf", "i": "iu", "u": "iu", "b": "b"}
_KIND_NAMES = {"U": "strings", "S": "strings", "O": "mixed values", "f": "fractional numbers",
               "b": "booleans", "i": "integers", "u": "integers"}
# numpy arrays have at most 64 dimensions; deeper nesting is refused before numpy sees it.
MAX_DIMS = 64

# Media types a prediction body may be sent as. Form-encoded is curl's default for `-d`, which
# KServe's own examples use; the body is read as JSON whatever the label says.
_MEDIA_TYPES = frozenset({
    b"", b"application/json", b"application/octet-stream", b"application/x-www-form-urlencoded",
    b"text/plain",
})


def check_content_type(headers: Headers) -> None:
    """415 for a body labelled as something that is neither JSON nor the binary extension."""
    value = headers.get(b"content-type")
    if value is None:
        return
    media = value.partition(b";")[0].strip().lower()
    if media in _MEDIA_TYPES or media.endswith(b"+json"):
        return
    raise UnsupportedMediaType(
        f"content-type {value.decode('latin-1')!r} is not supported: send application/json "
        "(or the binary tensor extension as application/octet-stream)")


def parse_json(body: bytes | memoryview) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        error = exc
    # Python's json module writes NaN and Infinity, which strict JSON (orjson) refuses. Read
    # them on this error path only, so the model's own non-finite rule decides.
    raw = bytes(body)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise BadRequest("request body is not valid JSON: arrays and objects are nested "
                         "too deeply") from None
    except ValueError:
        raise BadRequest(f"request body is not valid JSON: {error}") from None
    if b"\\u" in raw:
        _refuse_lone_surrogates(doc)
    return doc


def _refuse_lone_surrogates(doc: Any) -> None:
    """Python's json reads ``"\\ud800"`` as a string no encoder can write; orjson refuses it."""
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                raise BadRequest("request body is not valid JSON: a string holds a lone UTF-16 "
                                 "surrogate escape") from None
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())


def shape_of(name: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers")
    if len(value) > MAX_DIMS:
        raise BadRequest(f"input {name!r}: shape has {len(value)} dimensions, over the "
                         f"maximum of {MAX_DIMS}")
    return tuple(value)


def json_array(
    name: str, datatype: str, shape: tuple[int, ...] | None, data: Any
) -> np.ndarray:
    """A tensor from JSON ``data`` (flat or nested, row-major) with the declared shape.

    With ``shape`` None the data's own nesting is the shape (KServe V1 instances).
    """
    if datatype == "BYTES":
        items, nested = _nested(name, data)
        for item in items:
            if not isinstance(item, str):
                raise BadRequest(f"input {name!r}: datatype BYTES needs strings, but data holds "
                                 f"{type(item).__name__ if item is not None else 'null'}")
        array = np.empty(len(items), dtype=np.object_)
        array[:] = items
        if shape is None:
            return array.reshape(nested)
    else:
        array = _numbers(name, datatype, data)
        if shape is None:
            return array
    expected = math.prod(shape)
    if array.size != expected:
        raise BadRequest(f"input {name!r}: shape {list(shape)} needs {expected} values, "
                         f"but data has {array.size}")
    return _reshape(name, array, shape)


def _numbers(name: str, datatype: str, data: Any) -> np.ndarray:
    dtype = DATATYPES[datatype]
    try:
        raw = np.asarray(data)  # Python numbers to an array: no numpy warning can arise here
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequest(f"input {name!r}: data cannot be read as {datatype}: {exc}") from None
    if raw.size == 0:  # [] reads as float64: no values, nothing of the wrong kind
        return raw.astype(dtype)
    if raw.dtype.kind not in _ACCEPTED_KINDS[dtype.kind]:
        found = _KIND_NAMES.get(raw.dtype.kind, "other values")
        if raw.dtype.kind == "f" and np.abs(raw).max() >= 2.0**63:
            found = "integers beyond 64 bits"  # orjson reads those as floats
        wanted = "booleans" if dtype.kind == "b" else "numbers of that type"
        raise BadRequest(f"input {name!r}: datatype {datatype} needs {wanted}, "
                         f"but data holds {found}")
    if dtype.kind in "iu":
        info = np.iinfo(dtype.str)
        low, high = int(raw.min()), int(raw.max())
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise BadRequest(f"input {name!r}: value {bad} is out of range for {datatype} "
                             f"({info.min} to {info.max})")
    if raw.dtype.kind == "f" and dtype.kind == "f" and dtype.itemsize < raw.dtype.itemsize:
        with np.errstate(over="ignore"):  # too large for FP32 becomes inf, refused later
            return raw.astype(dtype)
    return raw.astype(dtype, copy=False)


def _nested(name: str, data: Any) -> tuple[list[Any], tuple[int, ...]]:
    """Nested lists, level by level (no recursion): the leaves in row-major order and the
    shape of the nesting, which must be rectangular."""
    level: list[Any] = [data]
    shape: list[int] = []
    while level and isinstance(level[0], list):
        width = len(level[0])
        if any(not isinstance(x, list) or len(x) != width for x in level):
            raise BadRequest(f"input {name!r}: data is ragged: its lists at depth "
                             f"{len(shape) + 1} differ in length or mix lists and values")
        shape.append(width)
        if len(shape) > MAX_DIMS:
            raise BadRequest(f"input {name!r}: data is nested deeper than {MAX_DIMS} levels")
        level = [x for row in level for x in row]
    if any(isinstance(x, list) for x in level):
        raise BadRequest(f"input {name!r}: data is ragged: its lists at depth {len(shape) + 1} "
                         "mix lists and values")
    return level, tuple(shape)


def _reshape(name: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    try:
        return array.reshape(shape)
    except ValueError as exc:  # an empty tensor with a dimension numpy cannot index
        raise BadRequest(f"input {name!r}: shape {list(shape)} is not possible: {exc}") from None


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
        array = np.empty(len(items), dtype=np.object_)
        array[:] = items
        return _reshape(name, array, shape)
    dtype = DATATYPES[datatype]
    if len(raw) != expected * dtype.itemsize:
        raise BadRequest(f"input {name!r}: shape {list(shape)} of {datatype} needs "
                         f"{expected * dtype.itemsize} bytes, but binary_data_size is {len(raw)}")
    array = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL" and array.size and int(array.view(np.uint8).max()) > 1:
        raise BadRequest(f"input {name!r}: BOOL binary data holds bytes other than 0 and 1")
    return _reshape(name, array, shape)


def bytes_payload(array: np.ndarray) -> bytes:
    """BYTES tensors in binary form: each element as a 4-byte little-endian length, then bytes."""
    parts = []
    for item in array.ravel():
        data = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)


def _unpack_bytes(name: str, raw: memoryview) -> list[str]:
    """Length-prefixed elements, as text: onnxruntime's string tensors hold UTF-8."""
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest(f"input {name!r}: BYTES binary data is truncated")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise BadRequest(f"input {name!r}: BYTES binary data is truncated")
        try:
            items.append(str(raw[offset:offset + length], "utf-8"))
        except UnicodeDecodeError:
            raise BadRequest(f"input {name!r}: BYTES element {len(items)} is not valid "
                             "UTF-8 text") from None
        offset += length
    return items

"""Tensors in the Open Inference Protocol's vocabulary, and their numpy counterparts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# V2 datatype name -> numpy dtype (little-endian, as the binary extension sends them).
DATATYPES: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
}

# onnxruntime's type strings -> V2 datatype names.
ONNX_TYPES: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

# numpy dtype (either byte order) -> V2 datatype name: one dict lookup per output encoded.
_DTYPE_TO_DATATYPE = {
    **{dtype.newbyteorder(">"): name for name, dtype in DATATYPES.items()},
    **{dtype: name for name, dtype in DATATYPES.items()},
}


def datatype_of(array: np.ndarray) -> str:
    found = _DTYPE_TO_DATATYPE.get(array.dtype)
    if found is None:
        if array.dtype.kind not in "SU":
            raise ValueError(f"numpy dtype {array.dtype} has no V2 datatype")
        found = "BYTES"  # fixed-width strings of any length
    return found


def tensor_json(name: str, array: np.ndarray, with_data: bool = True) -> dict[str, Any]:
    """A tensor as the V2 protocol writes it in JSON: name, datatype, shape and (unless the
    caller sends it another way) its data, flat in row-major order. Text (BYTES) is decoded as
    UTF-8, an undecodable byte replaced rather than failing the answer."""
    entry: dict[str, Any] = {"name": name, "datatype": datatype_of(array), "shape": array.shape}
    if not with_data:
        return entry
    if array.dtype == np.object_:
        entry["data"] = [x.decode(errors="replace") if isinstance(x, bytes) else str(x)
                         for x in array.ravel()]
    else:
        entry["data"] = array.ravel()  # a view of C-ordered rows (orjson writes it); a copy else
    return entry


def rows_of(tensors: dict[str, np.ndarray] | None) -> int:
    """Rows in a request: the first tensor's first axis (1 for a scalar, 0 for no tensor)."""
    first = next(iter(tensors.values()), None) if tensors else None
    return 0 if first is None else first.shape[0] if first.ndim else 1


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model's declared input or output: ``-1`` in ``shape`` is a free dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class Tensor:
    """A decoded request tensor: the datatype the caller declared, and its data as numpy."""

    name: str
    datatype: str
    data: np.ndarray

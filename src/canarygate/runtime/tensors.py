"""Tensors in the Open Inference Protocol's vocabulary, and their numpy counterparts."""

from __future__ import annotations

from dataclasses import dataclass

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

_KIND_TO_DATATYPE = {np.dtype(v).str: k for k, v in DATATYPES.items() if k != "BYTES"}


_BY_DTYPE: dict[np.dtype[np.generic], str] = {}  # filled as dtypes are met: a dict lookup


def datatype_of(array: np.ndarray) -> str:
    dtype = array.dtype
    found = _BY_DTYPE.get(dtype)
    if found is None:
        found = ("BYTES" if dtype == np.object_ or dtype.kind in "SU"
                 else _KIND_TO_DATATYPE[dtype.newbyteorder("<").str])
        _BY_DTYPE[dtype] = found
    return found


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model's declared input or output: ``-1`` in ``shape`` is a free dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype[np.generic]:
        return DATATYPES[self.datatype]

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class Tensor:
    """A decoded request tensor: the datatype the caller declared, and its data as numpy."""

    name: str
    datatype: str
    data: np.ndarray

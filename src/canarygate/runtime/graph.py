"""What loading an ONNX model would make before it runs, checked before onnxruntime sees it.

A few hundred bytes of ONNX can make gigabytes at load: onnxruntime folds every node whose
inputs are all constants into a new constant when it creates the session, so a
``ConstantOfShape`` of a constant shape, an ``Expand``, a ``Tile`` or a ``Range`` of constants
is computed then, and a sparse tensor is made dense. Here the model is parsed with the ``onnx``
package (no tensor is built), ONNX's shape inference sizes every node computed from constants
alone, and the bytes the file does not hold itself are summed against a budget:

- a tensor stored in the file (an initializer, a ``Constant``'s value, any tensor attribute)
  counts by how much its declared size exceeds the bytes it stores (a sparse one: its dense
  size beyond its values and indices);
- a node whose inputs are all constants counts its outputs' full size; one whose outputs
  shape inference cannot size is refused (its size cannot be bounded);
- a tensor whose data lives in another file (external data) is refused: it would be read from
  outside the checked folder.

Not checked: what a graph makes at run time from its inputs (``max_body_bytes`` and
``max_batch_size`` bound the inputs, not what a graph does with them).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from canarygate.errors import ConfigError

_STRING = 8  # TensorProto.STRING
_EXTERNAL = 1  # TensorProto.EXTERNAL
_ONNX_DOMAINS = ("", "ai.onnx")


class _Budget:
    def __init__(self, limit: int, where: str) -> None:
        self.limit = limit
        self.where = where
        self.total = 0

    def add(self, size: int, what: str) -> None:
        if size <= 0:
            return
        self.total += size
        if self.total > self.limit:
            raise ConfigError(
                f"{self.where}: model.onnx would make {self.total} bytes of constants when "
                f"loaded ({what}: {size} bytes), over the budget of {self.limit} bytes "
                "(model_files.max_constant_bytes)")

    def refuse(self, why: str) -> NoReturn:
        raise ConfigError(f"{self.where}: model.onnx {why}")


def check_model(data: bytes, limit: int, where: str) -> None:
    """Parse ``data`` as an ONNX model and refuse it (ConfigError naming the reason) when
    loading it would make more than ``limit`` bytes of constants beyond what it stores, or
    when it refers to external data."""
    import onnx  # at load time only: the request path never needs it
    from onnx import shape_inference

    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and whatever else a bad file raises
        raise ConfigError(f"{where}: model.onnx is not an ONNX model ({exc})") from None
    # What inference cannot size is refused below, where it matters.
    with contextlib.suppress(Exception):
        model = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    budget = _Budget(limit, where)
    _graph(model.graph, set(), budget)
    for function in model.functions:
        _nodes(function.node, set(), {}, budget)


def _graph(graph: Any, outer: set[str], budget: _Budget) -> None:
    constants = set(outer)
    for tensor in graph.initializer:
        _literal(tensor, budget, f"initializer {tensor.name!r}")
        constants.add(tensor.name)
    for sparse in graph.sparse_initializer:
        _sparse(sparse, budget, f"sparse initializer {sparse.values.name!r}")
        constants.add(sparse.values.name)
    types = {v.name: v.type for v in (*graph.value_info, *graph.output, *graph.input)}
    _nodes(graph.node, constants, types, budget)


def _nodes(nodes: Iterable[Any], constants: set[str], types: dict[str, Any],
           budget: _Budget) -> None:
    for node in nodes:
        what = f"node {node.name or node.op_type!r} ({node.op_type})"
        _attributes(node.attribute, constants, budget, what)
        if node.op_type == "Constant" and node.domain in _ONNX_DOMAINS:
            constants.update(o for o in node.output if o)  # its value is counted above
            continue
        if not all(not name or name in constants for name in node.input):
            continue
        for out in node.output:
            if not out:
                continue
            size = _size(types.get(out))
            if size is None:
                budget.refuse(f"computes {out!r} from constants alone in {what}, and its size "
                              "cannot be inferred, so what loading it makes cannot be bounded")
            budget.add(size, f"{out!r} computed by {what}")
            constants.add(out)


def _attributes(attributes: Iterable[Any], constants: set[str], budget: _Budget,
                what: str) -> None:
    for attr in attributes:
        if attr.HasField("t"):
            _literal(attr.t, budget, f"attribute {attr.name!r} of {what}")
        for tensor in attr.tensors:
            _literal(tensor, budget, f"attribute {attr.name!r} of {what}")
        if attr.HasField("sparse_tensor"):
            _sparse(attr.sparse_tensor, budget, f"attribute {attr.name!r} of {what}")
        for sparse in attr.sparse_tensors:
            _sparse(sparse, budget, f"attribute {attr.name!r} of {what}")
        if attr.HasField("g"):
            _graph(attr.g, constants, budget)
        for sub in attr.graphs:
            _graph(sub, constants, budget)


def _literal(tensor: Any, budget: _Budget, what: str) -> None:
    if tensor.data_location == _EXTERNAL or tensor.external_data:
        budget.refuse(f"keeps {what} in an external file; canarygate reads only model.onnx "
                      "(save the model with its tensors inside)")
    declared = _declared(tensor.dims, tensor.data_type, budget, what)
    if tensor.data_type == _STRING:
        return  # a string tensor holds its bytes: nothing to expand
    budget.add(declared - _stored(tensor), what)


def _sparse(sparse: Any, budget: _Budget, what: str) -> None:
    for part in (sparse.values, sparse.indices):
        if part.data_location == _EXTERNAL or part.external_data:
            budget.refuse(f"keeps {what} in an external file; canarygate reads only "
                          "model.onnx")
    dense = _declared(sparse.dims, sparse.values.data_type, budget, what)
    budget.add(dense - _stored(sparse.values) - _stored(sparse.indices), f"{what} made dense")


def _declared(dims: Sequence[int], data_type: int, budget: _Budget, what: str) -> int:
    if any(d < 0 for d in dims):
        budget.refuse(f"declares a negative dimension in {what}")
    return math.prod(dims) * _itemsize(data_type)


def _stored(tensor: Any) -> int:
    """The bytes a tensor holds in the file."""
    return (len(tensor.raw_data) + 4 * (len(tensor.float_data) + len(tensor.int32_data))
            + 8 * (len(tensor.int64_data) + len(tensor.double_data) + len(tensor.uint64_data))
            + sum(len(s) for s in tensor.string_data))


def _size(type_proto: Any) -> int | None:
    """Bytes of a tensor of this (inferred) type, or None when its shape is not fully known."""
    if type_proto is None or not type_proto.HasField("tensor_type"):
        return None
    tensor = type_proto.tensor_type
    if not tensor.HasField("shape"):
        return None
    dims: list[int] = []
    for dim in tensor.shape.dim:
        if not dim.HasField("dim_value") or dim.dim_value < 0:
            return None
        dims.append(int(dim.dim_value))
    return math.prod(dims) * _itemsize(int(tensor.elem_type))


def _itemsize(data_type: int) -> int:
    from onnx import helper

    if data_type == _STRING:
        return 8  # a pointer at least; computed strings are sized by count
    try:
        return max(int(helper.tensor_dtype_to_np_dtype(data_type).itemsize), 1)
    except (KeyError, ValueError, TypeError):
        return 1

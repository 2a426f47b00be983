"""KServe V1: ``POST /v1/models/{name}:predict`` with ``{"instances": [...]}``.

For a model with one input, each instance is one row. For several inputs, each instance is an
object mapping input names to that row's values. The answer is ``{"predictions": [...]}``: one
value per row when one output is returned, else one object per row (TF Serving's row format).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from canarygate.errors import BadRequest
from canarygate.http.asgi import JSON, Headers
from canarygate.http.protocol import Decoded, Encoded
from canarygate.http.tensors import check_content_type, json_array, parse_json
from canarygate.runtime import ModelVersion, Tensor
from canarygate.runtime.tensors import TensorSpec


class V1Codec:
    name = "v1"

    def __init__(self, outputs_by_model: dict[str, list[str] | None]) -> None:
        self._outputs = outputs_by_model

    def decode(self, body: bytes, headers: Headers, version: ModelVersion) -> Decoded:
        check_content_type(headers)
        doc = parse_json(body)
        instances = doc.get("instances") if isinstance(doc, dict) else None
        if not isinstance(instances, list) or not instances:
            raise BadRequest("request must be an object with a non-empty 'instances' list")
        if len(version.inputs) == 1:
            spec = version.inputs[0]
            tensors = [self._tensor(spec, instances)]
        else:
            if not all(isinstance(row, dict) for row in instances):
                names = ", ".join(s.name for s in version.inputs)
                raise BadRequest(f"model {version.model!r} has several inputs ({names}): each "
                                 "instance must be an object keyed by input name")
            known = {s.name for s in version.inputs}
            for row in instances:
                unknown = next((k for k in row if k not in known), None)
                if unknown is not None:
                    raise BadRequest(f"an instance has unknown input {unknown!r}; model "
                                     f"{version.model!r} expects: {', '.join(known)}")
            tensors = []
            for spec in version.inputs:
                if any(spec.name not in row for row in instances):
                    raise BadRequest(f"an instance lacks input {spec.name!r}")
                tensors.append(self._tensor(spec, [row[spec.name] for row in instances]))
        return Decoded(tensors, self._outputs.get(version.model))

    @staticmethod
    def _tensor(spec: TensorSpec, rows: list[Any]) -> Tensor:
        return Tensor(spec.name, spec.datatype, json_array(spec.name, spec.datatype, None, rows))

    def encode(
        self,
        version: ModelVersion,
        names: tuple[str, ...],
        results: list[np.ndarray],
        decoded: Decoded,
        request_id: str,
    ) -> Encoded:
        columns = [_squeeze(r) for r in results]
        if len(columns) == 1:
            only = columns[0]
            predictions: Any = only if only.ndim and only.dtype != np.object_ else only.tolist()
        elif all(c.ndim and len(c) == len(columns[0]) for c in columns):
            lists = [c.tolist() for c in columns]
            predictions = [{n: col[i] for n, col in zip(names, lists, strict=True)}
                           for i in range(len(columns[0]))]
        else:  # outputs without a common batch axis cannot be split into rows
            predictions = {n: c.tolist() for n, c in zip(names, columns, strict=True)}
        body = orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)
        return Encoded(body, JSON, [])


def _squeeze(array: np.ndarray) -> np.ndarray:
    """A ``[N, 1]`` output reads better as N scalars."""
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    return np.ascontiguousarray(array)

"""Open Inference Protocol V2 over REST: request decoding and response encoding.

Supports the binary tensor data extension (``Inference-Header-Content-Length``), which stock
clients such as ``tritonclient.http`` use by default.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from canarygate.errors import BadRequest
from canarygate.http.asgi import JSON, Headers
from canarygate.http.protocol import MAX_REQUEST_ID, Decoded, Encoded, usable_request_id
from canarygate.http.tensors import (
    binary_array,
    bytes_payload,
    check_content_type,
    json_array,
    parse_json,
    shape_of,
)
from canarygate.runtime import ModelVersion, Tensor
from canarygate.runtime.tensors import DATATYPES, tensor_json

HEADER_LENGTH = b"inference-header-content-length"
OCTET_STREAM = b"application/octet-stream"
_DATATYPE_LIST = ", ".join(DATATYPES)


class V2Codec:
    name = "v2"

    def decode(self, body: bytes, headers: Headers, version: ModelVersion) -> Decoded:
        check_content_type(headers)
        header_length = headers.get(HEADER_LENGTH)
        binary: memoryview | None = None
        if header_length is None:
            doc = parse_json(body)
        else:
            if (not header_length.isdigit() or len(header_length) > 20
                    or int(header_length) > len(body)):
                raise BadRequest("inference-header-content-length must be a number no larger "
                                 "than the body")
            split = int(header_length)
            view = memoryview(body)
            doc, binary = parse_json(view[:split]), view[split:]
        if not isinstance(doc, dict):
            raise BadRequest("request body must be a JSON object with an 'inputs' list")
        inputs = doc.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise BadRequest("request must have a non-empty 'inputs' list")
        if len(inputs) > len(version.inputs):
            raise BadRequest(f"request has {len(inputs)} inputs, but model {version.model!r} "
                             f"takes {len(version.inputs)}: "
                             + ", ".join(s.name for s in version.inputs))
        tensors, offset = [], 0
        for item in inputs:
            tensor, used = self._tensor(item, binary, offset)
            tensors.append(tensor)
            offset += used
        if binary is not None and offset != len(binary):
            raise BadRequest(f"binary data has {len(binary)} bytes but the inputs declare {offset}")
        body_id = doc.get("id")
        if body_id is not None and not (isinstance(body_id, str) and usable_request_id(body_id)):
            raise BadRequest(f"request 'id' must be a string of at most {MAX_REQUEST_ID} "
                             "printable ASCII characters")
        outputs, binary_outputs = self._outputs(doc, version)
        return Decoded(tensors, outputs, body_id or None, binary_outputs)

    def _tensor(
        self, item: Any, binary: memoryview | None, offset: int
    ) -> tuple[Tensor, int]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest("each input must be an object with a 'name'")
        name = item["name"]
        datatype = item.get("datatype")
        if not isinstance(datatype, str) or datatype not in DATATYPES:
            raise BadRequest(
                f"input {name!r}: datatype {datatype!r} is not one of {_DATATYPE_LIST}"
            )
        shape = shape_of(name, item.get("shape"))
        params = item.get("parameters") or {}
        if not isinstance(params, dict):
            raise BadRequest(f"input {name!r}: parameters must be an object")
        size = params.get("binary_data_size")
        if size is not None:
            if binary is None:
                raise BadRequest(f"input {name!r} has binary_data_size but the request has no "
                                 "inference-header-content-length header")
            if (not isinstance(size, int) or isinstance(size, bool) or size < 0
                    or offset + size > len(binary)):
                raise BadRequest(f"input {name!r}: binary_data_size {size!r} does not fit the "
                                 "binary data sent")
            raw = binary[offset:offset + size]
            return Tensor(name, datatype, binary_array(name, datatype, shape, raw)), size
        if "data" not in item:
            raise BadRequest(f"input {name!r} has no 'data'")
        return Tensor(name, datatype, json_array(name, datatype, shape, item["data"])), 0

    def _outputs(
        self, doc: dict[str, Any], version: ModelVersion
    ) -> tuple[list[str] | None, frozenset[str]]:
        params = doc.get("parameters") or {}
        if not isinstance(params, dict):
            raise BadRequest("request parameters must be an object")
        all_binary = params.get("binary_data_output") is True
        requested = doc.get("outputs")
        if requested is None:
            return None, frozenset(version.output_names if all_binary else ())
        if not isinstance(requested, list):
            raise BadRequest("request 'outputs' must be a list")
        names: list[str] = []
        seen: set[str] = set()
        binary: set[str] = set()
        for out in requested:
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise BadRequest("each requested output must be an object with a 'name'")
            name = out["name"]
            if name in seen:
                raise BadRequest(f"output {name!r} is requested more than once")
            seen.add(name)
            out_params = out.get("parameters") or {}
            if not isinstance(out_params, dict):
                raise BadRequest(f"output {name!r}: parameters must be an object")
            names.append(name)
            if out_params.get("binary_data", all_binary) is True:
                binary.add(name)
        return names or None, frozenset(binary)

    def encode(
        self,
        version: ModelVersion,
        names: tuple[str, ...],
        results: list[np.ndarray],
        decoded: Decoded,
        request_id: str,
    ) -> Encoded:
        outputs: list[dict[str, Any]] = []
        chunks: list[bytes] = []
        for name, array in zip(names, results, strict=True):
            binary = name in decoded.binary_outputs
            entry = tensor_json(name, array, with_data=not binary)
            if binary:
                raw = (bytes_payload(array) if array.dtype == np.object_
                       else np.ascontiguousarray(array).tobytes())
                entry["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            outputs.append(entry)
        doc = {
            "model_name": version.model,
            "model_version": version.version,
            "id": decoded.body_id or request_id,
            "outputs": outputs,
        }
        head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
        if not chunks:
            return Encoded(head, JSON, [])
        return Encoded(b"".join([head, *chunks]), OCTET_STREAM,
                       [(HEADER_LENGTH, str(len(head)).encode())])

"""Reference servers for the bench: the same V2 request through as little code as possible.

``bare``: Starlette parses the V2 JSON with orjson and returns a constant V2 reply (the HTTP
stack's own cost). ``make_minimal``: the smallest honest gateway: parse, numpy, ORT
``session.run`` inline on the event loop, V2 reply (env ``LOADTEST_MODEL`` names the
model.onnx). Both on one Uvicorn worker with uvloop and httptools, like canarygate::

    uvicorn loadtests.apps:bare --port 8100 --loop uvloop --http httptools --no-access-log
    LOADTEST_MODEL=models/breast-cancer/1/model.onnx \\
        uvicorn --factory loadtests.apps:make_minimal --port 8101 --loop uvloop --http httptools
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

JSON = "application/json"
DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64",
             np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32"}

CONSTANT = orjson.dumps({
    "model_name": "bare", "model_version": "1", "id": "0",
    "outputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [0]},
                {"name": "probabilities", "datatype": "FP32", "shape": [1, 2],
                 "data": [0.5, 0.5]}],
})


async def ready(request: Request) -> Response:
    return Response(b"", 200)


async def bare_infer(request: Request) -> Response:
    doc = orjson.loads(await request.body())
    if not doc["inputs"][0]["data"]:
        return Response(b'{"error":"no data"}', 400, media_type=JSON)
    return Response(CONSTANT, media_type=JSON)


bare = Starlette(routes=[
    Route("/v2/health/ready", ready),
    Route("/v2/models/{name}/infer", bare_infer, methods=["POST"]),
])


def make_minimal() -> Starlette:
    import onnxruntime as ort

    path = Path(os.environ.get("LOADTEST_MODEL", "models/breast-cancer/1/model.onnx"))
    options = ort.SessionOptions()
    # One thread: below batch 128 a second ORT thread buys nothing and fights the event loop.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    output_names = [o.name for o in session.get_outputs()]
    model, version = path.parent.parent.name, path.parent.name
    version_header = {"x-model-version": version}

    async def infer(request: Request) -> Response:
        doc = orjson.loads(await request.body())
        item = doc["inputs"][0]
        x = np.asarray(item["data"], dtype=np.float32).reshape(item["shape"])
        results = session.run(output_names, {item["name"]: x})
        outputs: list[dict[str, Any]] = [
            {"name": name, "datatype": DATATYPES.get(a.dtype, str(a.dtype)),
             "shape": list(a.shape), "data": a.ravel()}
            for name, a in zip(output_names, results, strict=True)]
        reply = {"model_name": model, "model_version": version, "id": doc.get("id", ""),
                 "outputs": outputs}
        return Response(orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type=JSON, headers=version_header)

    return Starlette(routes=[
        Route("/v2/health/ready", ready),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
    ])

"""A slow model runs off the event loop: other requests are answered while it works, and a
client that leaves while it works is recorded as gone (499)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from canarygate.recorder import reader
from canarygate.runtime import ModelVersion
from canarygate.runtime.runner import Runner
from conftest import GOOD_ROW_BODY, MODELS


def slow_model(folder: Path, width: int = 1024, layers: int = 24) -> None:
    """A chain of large matrix products: seconds of CPU for a few hundred rows."""
    rng = np.random.default_rng(0)
    w_in = numpy_helper.from_array(rng.normal(0, 0.05, (30, width)).astype(np.float32), "w_in")
    w = numpy_helper.from_array(rng.normal(0, 0.03, (width, width)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["input", "w_in"], ["h0"])]
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"]))
    nodes.append(helper.make_node("ReduceMean", [f"h{layers}"], ["prediction"], axes=[1]))
    graph = helper.make_graph(
        nodes, "slow",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 30])],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, [None, 1])],
        [w_in, w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what opset 17 needs; newer onnx writes an IR onnxruntime may not read
    folder.mkdir(parents=True)
    onnx.save(model, folder / "model.onnx")


def test_slow_model_does_not_stall_other_requests(launch: Any, tmp_path: Path) -> None:
    slow_model(tmp_path / "slow" / "1")
    shutil.copytree(MODELS / "breast-cancer" / "1", tmp_path / "breast-cancer" / "1")
    config = tmp_path / "gateway.yaml"
    config.write_text(f"""
server: {{inference_threads: 2}}
models_dir: {tmp_path}
models:
  - {{name: slow, versions: {{"1": {{path: slow/1}}}}, baseline: "1"}}
  - {{name: breast-cancer, versions: {{"1": {{path: breast-cancer/1}}}}, baseline: "1"}}
""")
    server = launch(config)
    rows = np.ones((512, 30), dtype=np.float32)
    slow_body = {"inputs": [{"name": "input", "shape": [512, 30], "datatype": "FP32",
                             "data": rows.ravel().tolist()}]}
    slow_result: dict[str, Any] = {}

    def call_slow() -> None:
        started = time.perf_counter()
        r = httpx.post(f"{server.url}/v2/models/slow/infer", json=slow_body, timeout=120)
        slow_result.update(status=r.status_code, seconds=time.perf_counter() - started)

    worker = threading.Thread(target=call_slow)
    worker.start()
    answered_meanwhile = 0
    with server.client() as http:
        while worker.is_alive():
            health = http.get("/v2/health/live")
            fast = http.post("/v2/models/breast-cancer/infer", content=GOOD_ROW_BODY)
            assert health.status_code == 200 and fast.status_code == 200
            if worker.is_alive():
                answered_meanwhile += 1
    worker.join()
    assert slow_result["status"] == 200
    # The slow request took long enough for this to mean something, and the gateway kept
    # answering health checks and another model's predictions all the while.
    assert slow_result["seconds"] > 0.3, slow_result
    assert answered_meanwhile >= 10, (answered_meanwhile, slow_result)


BIG = {"input": np.ones((512, 30), dtype=np.float32)}
SMALL = {"input": np.ones((1, 30), dtype=np.float32)}


def slow_runner(tmp_path: Path) -> tuple[ModelVersion, Runner]:
    """The slow model loaded in-process, and a runner with one thread."""
    slow_model(tmp_path / "slow" / "1")
    return ModelVersion.load("slow", "1", tmp_path / "slow" / "1"), Runner(1)


def test_runner_timeout_raises_and_leaves_the_pool_usable(tmp_path: Path) -> None:
    version, runner = slow_runner(tmp_path)
    big, small = BIG, SMALL

    async def main() -> Any:
        with pytest.raises(TimeoutError, match="10 ms"):
            await runner.run(version, big, ("prediction",), timeout=0.01)
        return await runner.run(version, small, ("prediction",), timeout=30)

    try:
        out = asyncio.run(main()).outputs
    finally:
        runner.close()
    assert out[0].shape == (1, 1)


def test_waiting_for_a_thread_does_not_count_against_a_timeout(tmp_path: Path) -> None:
    """Only the run itself is timed: a short run queued behind a long one still succeeds."""
    version, runner = slow_runner(tmp_path)
    big, small = BIG, SMALL

    async def main() -> tuple[Any, Any]:
        long = asyncio.ensure_future(runner.run(version, big, ("prediction",)))
        await asyncio.sleep(0.05)  # the long run holds the only thread
        short = await runner.run(version, small, ("prediction",), timeout=0.25)
        return await long, short

    try:
        long, short = asyncio.run(main())
    finally:
        runner.close()
    assert long.run_seconds > 0.25  # the wait was longer than the timeout...
    assert short.queue_seconds > 0.2  # ...and the short run waited it out, then ran in time
    assert short.run_seconds < 0.25


def test_a_client_gone_while_its_model_runs_is_recorded_as_499(launch: Any,
                                                                 tmp_path: Path) -> None:
    """Issue 11, finding 6: a client that cuts its connection (a reset) while the model works
    gets nothing, so the dataset and /metrics say 499, never the 200 nobody received; a
    client that waits is recorded as 200 (the record follows what was sent)."""
    slow_model(tmp_path / "slow" / "1")
    config = tmp_path / "gateway.yaml"
    config.write_text(f"""
models_dir: {tmp_path}
dataset: {{dir: {tmp_path / "dataset"}, flush_interval_seconds: 0.05}}
models:
  - {{name: slow, versions: {{"1": {{path: slow/1}}}}, baseline: "1"}}
""")
    server = launch(config)
    rows = np.ones((512, 30), dtype=np.float32)
    body = json.dumps({"inputs": [{"name": "input", "shape": [512, 30], "datatype": "FP32",
                                   "data": rows.ravel().tolist()}]}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    request = (f"POST /v2/models/slow/infer HTTP/1.1\r\nhost: x\r\nx-request-id: gone-1\r\n"
               f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
               ).encode() + body
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        time.sleep(0.15)  # the model is running (it takes over 0.3 s: see above)
        # A reset rather than a FIN: a FIN alone may be a half close, which is answered.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    waited = httpx.post(f"{server.url}/v2/models/slow/infer", content=body, timeout=60,
                        headers={"x-request-id": "stayed-1", "content-type": "application/json"})
    assert waited.status_code == 200
    deadline = time.monotonic() + 10
    found: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline and len(found) < 2:
        found = {r["request_id"]: r for r in reader.read_all(tmp_path / "dataset")
                 if r.get("request_id") in ("gone-1", "stayed-1")}
        time.sleep(0.1)
    assert found["stayed-1"]["status"] == 200
    gone = found["gone-1"]
    assert gone["status"] == 499 and "went away" in gone["error"], gone
    assert server.metric("canarygate_requests_total", model="slow", code="499") == 1
    assert server.metric("canarygate_requests_total", model="slow", code="200") == 1

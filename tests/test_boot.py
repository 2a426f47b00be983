"""Warm start, against the real CLI: the process answers ``live`` while its models load,
refuses predictions with 503 and ``Retry-After`` meanwhile, and calls itself ready only after
every version ran its warm-up batches."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import MODELS, Server, free_port, v2_body

pytestmark = pytest.mark.serial  # timing: run alone (see the Makefile's test target)

ROW = np.full((1, 30), 0.5, dtype=np.float32)


def config(tmp: Path, runs: int) -> Path:
    path = tmp / "gateway.yaml"
    path.write_text(f"""
models_dir: {MODELS}
state_dir: {tmp / "state"}
dataset: {{enabled: false}}
server: {{warmup_rows: 16, warmup_runs: {runs}}}
models:
  - name: breast-cancer
    versions: {{"1": {{path: breast-cancer/1}}, "2": {{path: breast-cancer/2}}}}
    baseline: "1"
  - name: diabetes
    versions: {{"1": {{path: diabetes/1}}}}
    baseline: "1"
""")
    return path


def test_live_while_loading_ready_after_warm_up(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "canarygate", "serve", "--config", str(config(tmp_path, 3)),
             "--port", str(port), "--log-level", "info"], stdout=out, stderr=subprocess.STDOUT)
    server = Server(url, process, log)
    try:
        live_at = ready_at = None
        loading: list[httpx.Response] = []  # answers seen while live but not ready
        with httpx.Client(base_url=url, timeout=5) as client:
            while time.monotonic() - started < 60 and ready_at is None:
                assert process.poll() is None, log.read_text()
                try:
                    live = client.get("/v2/health/live")
                    ready = client.get("/v2/health/ready")
                    if ready.status_code == 503:
                        loading += [ready, client.post("/v2/models/breast-cancer/infer",
                                                       json=v2_body(ROW))]
                except httpx.TransportError:  # not listening yet
                    time.sleep(0.01)
                    continue
                assert live.status_code == 200 and live.json() == {"live": True}
                live_at = live_at or time.monotonic() - started
                if ready.status_code == 200:
                    ready_at = time.monotonic() - started
            assert ready_at is not None, log.read_text()
            # The window between live and ready was seen, and every route in it said why.
            assert loading, "ready as soon as live: no loading window was observed"
            for answer in loading:
                assert answer.status_code == 503
                assert answer.headers["retry-after"] == "1"
                assert "loading its models" in answer.json()["error"]
            # Ready means warm: each version's runs went through its batcher before any
            # request, and the first request is answered like any other.
            for model, version in (("breast-cancer", "1"), ("breast-cancer", "2"),
                                   ("diabetes", "1")):
                assert server.metric("canarygate_batches_total", model=model,
                                     version=version) == 3
            first = client.post("/v2/models/breast-cancer/infer", json=v2_body(ROW))
            assert first.status_code == 200
            assert server.metric("canarygate_requests_total", model="breast-cancer") == 1
        text = log.read_text()
        assert "canarygate ready in" in text
        print(f"live after {live_at:.2f} s, ready after {ready_at:.2f} s")
    finally:
        server.stop()


def test_no_warm_up_when_switched_off(launch: object, tmp_path: Path) -> None:
    server: Server = launch(config(tmp_path, 0))  # type: ignore[operator]
    assert server.metric("canarygate_batches_total", model="breast-cancer") == 0


def test_a_model_that_fails_to_load_ends_the_process(tmp_path: Path) -> None:
    """Found after the server listens: the process still exits 2 with the problem."""
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    path = tmp_path / "broken.yaml"
    path.write_text(f"models_dir: {tmp_path}\nmodels:\n  - name: broken\n    versions: "
                    "{'1': {path: broken/1}}\n    baseline: '1'\n")
    result = subprocess.run(
        [sys.executable, "-m", "canarygate", "serve", "--config", str(path),
         "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "model.onnx is not an ONNX model" in result.stderr
    assert "Traceback" not in result.stderr

"""The command line: help, and a clear exit on a bad config or model folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from conftest import MODELS, ROOT, demo_config, free_port, wait_ready


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "canarygate", *args],
                          capture_output=True, text=True, timeout=60)


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "serve" in result.stdout and "start the gateway" in result.stdout
    serve = run("serve", "--help")
    assert "--config" in serve.stdout and "--port" in serve.stdout and "--host" in serve.stdout


def test_bad_config_exits_with_the_problem(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(f"models_dir: {MODELS}\nmodels:\n  - name: m\n    versions: "
                      "{'1': {path: breast-cancer/1}}\n    baseline: '3'\n")
    result = run("serve", "--config", str(config))
    assert result.returncode == 2
    assert "models[0] (m)" in result.stderr and "baseline '3'" in result.stderr
    assert "Traceback" not in result.stderr


def test_model_folder_outside_models_dir_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "escape.yaml"
    config.write_text(f"models_dir: {MODELS / 'diabetes'}\nmodels:\n  - name: m\n    versions: "
                      "{'1': {path: ../breast-cancer/1}}\n    baseline: '1'\n")
    result = run("serve", "--config", str(config))
    assert result.returncode == 2
    assert "outside the models directory" in result.stderr


def test_unloadable_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    config = tmp_path / "broken.yaml"
    config.write_text(f"models_dir: {tmp_path}\nmodels:\n  - name: broken\n    versions: "
                      "{'1': {path: broken/1}}\n    baseline: '1'\n")
    result = run("serve", "--config", str(config))
    assert result.returncode == 2
    assert "model 'broken' version '1': model.onnx is not an ONNX model" in result.stderr


def test_make_serve_answers_ready(tmp_path: Path) -> None:
    """The README's first command: the Makefile's serve target starts the demo gateway.
    The demo config is copied so that its state and dataset go to a temporary folder."""
    config, port = demo_config(tmp_path), free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:  # a file, not a pipe nobody drains
        process = subprocess.Popen(
            ["make", "--no-print-directory", "serve", f"CONFIG={config}", f"PORT={port}"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, log_path)
        models = httpx.get(f"http://127.0.0.1:{port}/v2/models/breast-cancer").json()
        assert models["versions"] == ["1", "2"]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)

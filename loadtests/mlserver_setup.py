"""MLServer in its own virtualenv (``loadtests/.venv-mlserver``) and a model repository that
serves ``models/<model>/1/model.onnx`` through the custom ORT runtime.

Versions follow perf.md: mlserver 1.7.1 does not start models with uvloop 0.23 (each inference
worker dies with "There is no current event loop"), so uvloop is pinned to 0.21.0. httptools is
added (pip install mlserver leaves Uvicorn on h11), which is MLServer's faster setting. The
settings are MLServer's defaults (parallel_workers=1: inference in a separate process) except
``debug: false``, which turns off the per-request access log, like canarygate's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-mlserver"
REPO = HERE / ".mlserver-repo"
REQUIREMENTS = ["mlserver==1.7.1", "uvloop==0.21.0", "httptools", "onnxruntime==1.31.1", "numpy"]
STAMP = VENV / ".installed"


def ensure_venv() -> Path:
    """The mlserver command, installing MLServer first when missing."""
    mlserver = VENV / "bin" / "mlserver"
    wanted = "\n".join(REQUIREMENTS)
    if mlserver.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return mlserver
    print(f"setting up MLServer in {VENV} ({', '.join(REQUIREMENTS)})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *REQUIREMENTS], check=True)
    STAMP.write_text(wanted)
    return mlserver


def write_repo(model_dir: Path, name: str, port: int) -> Path:
    """A fresh repository: settings.json (ports, debug off) and one model folder."""
    if REPO.exists():
        shutil.rmtree(REPO)
    folder = REPO / name
    folder.mkdir(parents=True)
    settings = {"debug": False, "http_port": port, "grpc_port": port + 1,
                "metrics_port": port + 2, "host": "127.0.0.1"}
    (REPO / "settings.json").write_text(json.dumps(settings, indent=2))
    model_settings = {
        "name": name,
        "implementation": "ort_runtime.OnnxRuntime",
        "parameters": {"uri": str((model_dir / "model.onnx").resolve()),
                       "version": model_dir.name},
    }
    (folder / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    shutil.copy(HERE / "mlserver_runtime.py", folder / "ort_runtime.py")
    return REPO

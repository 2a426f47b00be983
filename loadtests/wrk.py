"""Run wrk (closed loop) with ``v2_infer.lua`` and read the JSON line its ``done()`` prints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LUA = HERE / "v2_infer.lua"


def ensure_wrk() -> str:
    """wrk's path, installing Debian's package when missing (needs root)."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: installing Debian's package (apt-get install -y wrk)", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("apt-get install wrk did not give a wrk command")
    return found


def run_timed(cmd: list[str], **popen: Any) -> tuple[int, float]:
    """Run ``cmd`` to its end: its exit code and the CPU seconds it used (wait4 rather than
    wait gives both)."""
    proc = subprocess.Popen(cmd, **popen)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def run_wrk(url: str, *, model: str, path: str, bodies: Path | None, connections: int,
            seconds: float, cpu: int | None = 0) -> dict[str, Any]:
    """One wrk run; the result has wrk's figures plus its own CPU seconds (``loader_cpu``)."""
    cmd = [ensure_wrk(), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
           "--timeout=10s", "-s", str(LUA), url, "--", model, path,
           str(bodies) if bodies else ""]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    with tempfile.TemporaryFile("w+") as out:
        code, cpu_seconds = run_timed(cmd, stdout=out, stderr=subprocess.STDOUT)
        out.seek(0)
        text = out.read()
    for line in text.splitlines():
        if line.startswith('{"wrk"'):
            result: dict[str, Any] = json.loads(line)
            break
    else:
        raise RuntimeError(f"wrk printed no result (exit {code}):\n{text[-2000:]}")
    duration = result["duration_us"] / 1e6
    errors = result["errors"]
    result["rps"] = round(result["requests"] / duration, 1) if duration else 0.0
    result["non_2xx_or_transport_errors"] = sum(errors.values())
    result["loader_cpu"] = cpu_seconds
    result["command"] = " ".join(cmd)
    return result

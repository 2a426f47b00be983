"""Start, check and stop the servers under test, each pinned and in its own process group.

A server is started with ``taskset -c CPU`` (its whole process tree inherits the pinning) in a
new session, so stopping it kills every process it made, MLServer's workers included. Before any
measurement it must answer a real request with a correct 200: a server answering errors fast
must not "win" the benchmark.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests import sysstat
from loadtests.payloads import MODELS, ROOT, expected_labels, rows, v2_body

VENV_BIN = Path(sys.executable).parent
ADMIN_TOKEN_ENV = "CANARYGATE_ADMIN_TOKEN"


class ServerFailed(RuntimeError):
    pass


Check = Callable[[int, dict[str, Any], dict[str, str]], str | None]


@dataclass
class ServerSpec:
    name: str
    argv: list[str]
    port: int
    infer_path: str
    check: Check
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/v2/health/ready"
    ready_timeout: float = 60.0
    model: str = "breast-cancer"


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None,
            timeout: float = 10.0) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


class Server:
    def __init__(self, spec: ServerSpec, log: Path, cpu: int | None) -> None:
        self.spec = spec
        self.log_path = log
        self.cpu = cpu
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Server:
        argv = self.spec.argv
        if self.cpu is not None:
            argv = ["taskset", "-c", str(self.cpu), *argv]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **self.spec.env},
                                     stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.spec.ready_timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerFailed(f"{self.spec.name} exited with {self.proc.returncode}:\n"
                                   + self.log_tail())
            try:
                status, _, _ = request(self.spec.port, "GET", self.spec.ready_path, timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise ServerFailed(f"{self.spec.name} not ready after {self.spec.ready_timeout:g} s:\n"
                           + self.log_tail())

    def check(self, count: int = 8) -> None:
        """A few real rows must each get a correct 200 (else ServerFailed)."""
        for i, row in enumerate(rows(self.spec.model, limit=count)):
            body = v2_body(row)
            try:
                status, raw, headers = request(self.spec.port, "POST", self.spec.infer_path, body,
                                               {"content-type": "application/json"})
            except OSError as exc:
                raise ServerFailed(f"{self.spec.name}: request failed: {exc}") from None
            if status != 200:
                raise ServerFailed(f"{self.spec.name} answered {status}: {raw[:300]!r}")
            try:
                doc = json.loads(raw)
            except ValueError:
                raise ServerFailed(f"{self.spec.name} answered non-JSON: {raw[:300]!r}") from None
            problem = self.spec.check(i, doc, headers)
            if problem:
                raise ServerFailed(f"{self.spec.name}: wrong answer for row {i}: {problem}")

    def cpu_seconds(self) -> float:
        return sysstat.tree_cpu(self.pid)

    def rss(self) -> int:
        return sysstat.tree_rss(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the group, then SIGKILL it and any descendant that left it."""
        if self.proc is None:
            return
        members = set(sysstat.tree(self.pid))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=15)
        members |= set(sysstat.tree(self.pid))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        for pid in members - {self.pid}:  # our descendants, by id
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(timeout=5)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- what a correct answer is -----------------------------------------------------------------

def check_any_v2(i: int, doc: dict[str, Any], headers: dict[str, str]) -> str | None:
    outputs = doc.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        return f"no outputs in {doc!r:.200}"
    return None


def check_model(model: str, default_version: str = "1", models: Path = MODELS) -> Check:
    """The label must be what the answering version gives on that row (from its reference.npz
    in ``models``)."""
    labels: dict[str, Any] = {}

    def check(i: int, doc: dict[str, Any], headers: dict[str, str]) -> str | None:
        problem = check_any_v2(i, doc, headers)
        if problem:
            return problem
        version = headers.get("x-model-version") or str(doc.get("model_version") or
                                                       default_version)
        if version not in labels:
            labels[version] = expected_labels(model, version, models)
        expected = labels[version]
        label = next((o for o in doc["outputs"] if o.get("name") == "label"), None)
        if expected is None or label is None:
            return None if expected is None else "no 'label' output"
        if int(label["data"][0]) != int(expected[i]):
            return f"label {label['data'][0]} where version {version} gives {expected[i]}"
        return None

    return check


# -- the servers ------------------------------------------------------------------------------

def uvicorn_argv(app: str, port: int, factory: bool = False) -> list[str]:
    argv = [str(VENV_BIN / "uvicorn"), app, "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning"]
    return [*argv, "--factory"] if factory else argv


def bare_spec(port: int) -> ServerSpec:
    return ServerSpec("bare-starlette", uvicorn_argv("loadtests.apps:bare", port), port,
                      "/v2/models/breast-cancer/infer", check_any_v2)


def minimal_ort_spec(port: int, model: str = "breast-cancer", version: str = "1") -> ServerSpec:
    return ServerSpec("minimal-ort", uvicorn_argv("loadtests.apps:make_minimal", port, True),
                      port, f"/v2/models/{model}/infer", check_model(model),
                      env={"LOADTEST_MODEL": str(MODELS / model / version / "model.onnx")},
                      model=model)


def canarygate_spec(name: str, config: Path, port: int, token: str,
                    model: str = "breast-cancer", check: Check | None = None) -> ServerSpec:
    argv = [str(VENV_BIN / "canarygate"), "serve", "--config", str(config),
            "--port", str(port), "--log-level", "warning"]
    return ServerSpec(name, argv, port, f"/v2/models/{model}/infer",
                      check or check_model(model), env={ADMIN_TOKEN_ENV: token}, model=model)


def mlserver_spec(mlserver: Path, repo: Path, port: int,
                  model: str = "breast-cancer") -> ServerSpec:
    return ServerSpec("mlserver", [str(mlserver), "start", str(repo)], port,
                      f"/v2/models/{model}/infer", check_model(model),
                      ready_path=f"/v2/models/{model}/ready", ready_timeout=180.0, model=model)


def canarygate_config(workdir: Path, port: int, *, recording: bool = True, drift: bool = True,
                      rollout: dict[str, Any] | None = None,
                      batching: dict[str, Any] | None = None) -> dict[str, Any]:
    """A gateway config like the demo's, its state and dataset in ``workdir`` (fresh state:
    a stored rollout from an earlier run must not change what is measured)."""
    breast: dict[str, Any] = {
        "name": "breast-cancer",
        "versions": {"1": {"path": "breast-cancer/1"}, "2": {"path": "breast-cancer/2"}},
        "baseline": "1",
    }
    if rollout is not None:
        breast["candidate"] = "2"
        breast["rollout"] = rollout
    if batching is not None:
        breast["batching"] = batching
    diabetes = {"name": "diabetes",
                "versions": {"1": {"path": "diabetes/1"}, "2": {"path": "diabetes/2"}},
                "baseline": "1"}
    return _gateway(workdir, port, MODELS, [breast, diabetes], recording=recording, drift=drift)


def wide_config(workdir: Path, port: int, models: Path,
                batching: dict[str, Any]) -> dict[str, Any]:
    """The batching bench's second gateway: the run-dominated model (``models/build.py
    --wide``, built into ``models``) alone, recording and drift on, no rollout."""
    wide = {"name": "breast-cancer", "versions": {"wide": {"path": "breast-cancer/wide"}},
            "baseline": "wide", "batching": batching}
    return _gateway(workdir, port, models, [wide], recording=True, drift=True)


def _gateway(workdir: Path, port: int, models_dir: Path, models: list[dict[str, Any]], *,
             recording: bool, drift: bool) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": port},
        "admin": {"token_env": ADMIN_TOKEN_ENV},
        "models_dir": str(models_dir),
        "state_dir": str(workdir / "state"),
        # Retention keeps a long run's dataset bounded on disk; it is part of "everything on".
        "dataset": {"enabled": recording, "dir": str(workdir / "dataset"),
                    "retention_bytes": 512 * 1024 * 1024},
        "drift": {"enabled": drift},
        "models": models,
    }


def write_config(config: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
    return path


def config_problem(config: dict[str, Any]) -> str | None:
    """What canarygate's own validation says about ``config`` (None: it is accepted)."""
    from canarygate.config import parse_config
    from canarygate.errors import ConfigError

    try:
        parse_config(config, source="bench config")
    except ConfigError as exc:
        return str(exc)
    return None


def rollout_view(port: int, token: str, model: str = "breast-cancer") -> dict[str, Any]:
    status, raw, _ = request(port, "GET", f"/admin/rollouts/{model}",
                             headers={"authorization": f"Bearer {token}"})
    if status != 200:
        return {"error": f"{status}: {raw[:200]!r}"}
    view: dict[str, Any] = json.loads(raw)
    return view

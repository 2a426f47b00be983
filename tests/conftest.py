"""Shared fixtures: a real gateway in a subprocess on a free loopback port, and reference data."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_breast_cancer, load_diabetes

from canarygate.metrics import Metrics
from canarygate.rollout.manager import RolloutManager
from canarygate.rollout.persist import Persister
from canarygate.rollout.store import FileStateStore
from canarygate.router import RoutingTable
from canarygate.runtime import ModelRegistry

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
DEMO_CONFIG = ROOT / "config" / "demo.yaml"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in labels.items()):
                    total += sample.value
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(config: Path, tmp: Path, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> Server:
    port = free_port()
    log = tmp / f"server-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "canarygate", "serve", "--config", str(config),
             "--port", str(port), "--log-level", "warning", *args],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_ready(server.url, process, log)
    except RuntimeError:
        server.stop()
        raise
    return server


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path,
               seconds: float = 60) -> None:
    """Until ``url`` answers ready; RuntimeError with the log's tail if the process ends or
    the time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with {process.returncode}:\n"
                               f"{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"gateway did not become ready:\n{log.read_text()[-4000:]}")


class FakeClock:
    """A clock that moves only when a test moves it (``now``)."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def rollout_manager(registry: ModelRegistry, tmp: Path
                    ) -> tuple[RolloutManager, FakeClock, Persister]:
    """A rollout manager on ``registry`` with its state in ``tmp`` and a clock the test moves
    (nothing restored yet)."""
    persister = Persister(FileStateStore(tmp / "rollouts.json"), tmp / "decisions.jsonl")
    clock = FakeClock()
    return (RolloutManager(registry, RoutingTable(), persister, Metrics(), clock=clock), clock,
            persister)


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start gateways for one test; all are stopped afterwards."""
    started: list[Server] = []

    def _launch(config: Path, env: dict[str, str] | None = None,
                args: tuple[str, ...] = ()) -> Server:
        server = start_server(config, tmp_path, env, args)
        started.append(server)
        return server

    yield _launch
    for server in started:
        server.stop()


@contextlib.contextmanager
def open_loop_load(server: Server, rate: float, seconds: float) -> Iterator[None]:
    """The project's open-loop generator (loadtests/openloop.py) sending real rows to
    ``server`` at ``rate`` a second, for at most ``seconds``, stopped on leaving."""
    load = subprocess.Popen(
        [sys.executable, "-m", "loadtests.openloop", "--port", server.url.rsplit(":", 1)[1],
         "--rate", str(rate), "--processes", "1", "--duration", str(seconds), "--warmup", "0",
         "--quiet"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield
    finally:
        os.killpg(load.pid, signal.SIGTERM)  # the generator and its loader processes
        load.wait(timeout=15)


CHROMIUM = "/usr/bin/chromium"  # Debian's; `make test` installs it when missing
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium driven by playwright (which never downloads a browser here)."""
    from playwright.sync_api import sync_playwright  # the dev extra; never skipped

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def watch(page: Any, errors: list[str], requests: list[str] | None = None) -> Any:
    """``page`` with its console errors and uncaught exceptions (and, when asked, every URL
    it requests) collected into the lists given."""
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    if requests is not None:
        page.on("request", lambda q: requests.append(q.url))
    return page


def gateway_config(tmp: Path, versions: dict[str, tuple[str, ...]] | None = None,
                   dataset: dict[str, object] | None = None, **sections: object) -> Path:
    """A gateway config in ``tmp``: the demo models (``versions``: each model's versions, the
    first its baseline), state and dataset in ``tmp``, and any other top-level ``sections``
    (``dataset`` adds to the default one, which writes to ``tmp``)."""
    dataset = dataset or {}
    versions = versions or {"breast-cancer": ("1", "2"), "diabetes": ("1",)}
    raw: dict[str, object] = {
        "models_dir": str(MODELS), "state_dir": str(tmp / "state"),
        "models": [{"name": name, "baseline": vs[0],
                    "versions": {v: {"path": f"{name}/{v}"} for v in vs}}
                   for name, vs in versions.items()],
        **sections,
        "dataset": {"dir": str(tmp / "dataset"), **dataset},
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def demo_config(tmp: Path, **changes: object) -> Path:
    """The demo config with its own state folder (and any top-level changes)."""
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw.update(models_dir=str(MODELS), state_dir=str(tmp / "state"),
               dataset={**raw.get("dataset", {}), "dir": str(tmp / "dataset")}, **changes)
    path = tmp / "demo.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("demo")
    server = start_server(demo_config(tmp), tmp, {"CANARYGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def breast_cancer_rows() -> np.ndarray:
    return load_breast_cancer().data.astype(np.float32)


@pytest.fixture(scope="session")
def diabetes_rows() -> np.ndarray:
    return load_diabetes().data.astype(np.float32)


def ort_outputs(model: str, version: str, rows: np.ndarray) -> dict[str, np.ndarray]:
    """onnxruntime's own answer on ``rows``, the oracle for everything the gateway returns.

    One intra-op thread, as the gateway runs: tree ensembles sum per-thread partial results,
    so another thread count changes the last bit of their scores.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(MODELS / model / version / "model.onnx"),
                                   sess_options=options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input": rows}), strict=True))


def v2_body(rows: np.ndarray, **extra: object) -> dict[str, object]:
    return {"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32",
                        "data": rows.ravel().tolist()}], **extra}


GOOD_ROW_BODY = (
    b'{"inputs":[{"name":"input","shape":[1,30],"datatype":"FP32","data":[17.99,10.38,122.8,'
    b"1001.0,0.1184,0.2776,0.3001,0.1471,0.2419,0.07871,1.095,0.9053,8.589,153.4,0.006399,"
    b"0.04904,0.05373,0.01587,0.03003,0.006193,25.38,17.33,184.6,2019.0,0.1622,0.6656,0.7119,"
    b'0.2654,0.4601,0.1189]}]}'
)


ADMIN_TOKEN = "test-admin-token"
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class LoadResult:
    statuses: list[int]
    versions: list[str]
    fallbacks: int
    state: dict[str, object]


def drive(server: Server, rows: np.ndarray, until: Callable[[dict[str, object]], bool],
          model: str = "breast-cancer", seconds: float = 90, concurrency: int = 16,
          headers: dict[str, str] | None = None) -> LoadResult:
    """Post random rows to the routed endpoint from several workers until ``until`` holds for
    the rollout's state (polled from the admin API) or ``seconds`` pass."""
    import asyncio

    rng = np.random.default_rng(0)
    bodies = [v2_body(rows[i:i + 1]) for i in rng.integers(0, len(rows), 512)]
    result = LoadResult([], [], 0, {})

    async def main() -> None:
        done = asyncio.Event()
        limits = httpx.Limits(max_connections=concurrency + 2)
        async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as http:
            async def worker(k: int) -> None:
                i = k
                while not done.is_set():
                    r = await http.post(f"/v2/models/{model}/infer", json=bodies[i % 512],
                                        headers=headers)
                    i += concurrency
                    result.statuses.append(r.status_code)
                    result.versions.append(r.headers.get("x-model-version", ""))
                    result.fallbacks += "x-canarygate-fallback" in r.headers

            async def watch() -> None:
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    r = await http.get(f"/admin/rollouts/{model}", headers=AUTH)
                    result.state = r.json()
                    if until(result.state):
                        break
                    await asyncio.sleep(0.1)
                done.set()

            await asyncio.gather(watch(), *(worker(k) for k in range(concurrency)))

    asyncio.run(main())
    return result


@dataclass
class RedisServer:
    """A real redis-server on a free loopback port, its data in a folder of the test's (with
    an append-only file, so a restart keeps what it held, as a production Redis does)."""

    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is missing: `make test` installs it (Debian's "
                        "redis-server package)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(free_port(), folder)
    server.start()
    yield server
    server.stop()

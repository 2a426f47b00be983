"""Warm start, against the real CLI: the process answers ``live`` while its models load,
refuses predictions with 503 and ``Retry-After`` meanwhile, and calls itself ready only after
every version ran its warm-up batches. (A model that cannot load is found after the server
listens; ``test_cli.py``'s unloadable-model test shows the process still exits 2.)"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from conftest import ADMIN_TOKEN, AUTH, Server, free_port, gateway_config, v2_body

pytestmark = pytest.mark.serial  # timing: run alone (see the Makefile's test target)

ROW = np.full((1, 30), 0.5, dtype=np.float32)


def config(tmp: Path, runs: int) -> Path:
    return gateway_config(tmp, dataset={"enabled": False},
                          server={"warmup_rows": 16, "warmup_runs": runs})


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
            # (A prediction sent just after a 503 from ready may find the gateway warm.)
            refused = [a for a in loading if a.status_code == 503]
            assert all(a.status_code in (200, 503) for a in loading)
            assert any(a.request.method == "POST" for a in refused), \
                "ready as soon as live: no prediction was refused while loading"
            for answer in refused:
                assert answer.headers["retry-after"] == "1"
                assert "loading its models" in answer.json()["error"]
            # Ready means warm: each version's runs went through its batcher before any
            # request, and the first request is answered like any other.
            served = sum(a.request.method == "POST" and a.status_code == 200 for a in loading)
            for model, version, extra in (("breast-cancer", "1", served),
                                          ("breast-cancer", "2", 0), ("diabetes", "1", 0)):
                assert server.metric("canarygate_batches_total", model=model,
                                     version=version) == 3 + extra
            first = client.post("/v2/models/breast-cancer/infer", json=v2_body(ROW))
            assert first.status_code == 200
            assert server.metric("canarygate_requests_total",
                                 model="breast-cancer") == 1 + served
        text = log.read_text()
        assert "canarygate ready in" in text
        print(f"live after {live_at:.2f} s, ready after {ready_at:.2f} s")
    finally:
        server.stop()


def test_no_warm_up_when_switched_off(launch: object, tmp_path: Path) -> None:
    server: Server = launch(config(tmp_path, 0))  # type: ignore[operator]
    assert server.metric("canarygate_batches_total", model="breast-cancer") == 0


def test_the_request_path_warm_up_leaves_no_trace(launch: object, tmp_path: Path) -> None:
    """Before ready, each model's routed endpoint answered ``warmup_requests`` requests on
    throwaway telemetry (the log says how many answered 200): none of them is counted,
    recorded, in the live statistics or in the rollout step's counters, while the same
    figures do count the requests that come after."""
    rollout = {"steps": [50], "min_step_seconds": 86400, "min_step_requests": 10**9,
               "auto_promote": False}
    path = gateway_config(tmp_path, server={"warmup_requests": 20})
    raw = yaml.safe_load(path.read_text())
    raw["models"][0].update(candidate="2", rollout=rollout)
    path.write_text(yaml.safe_dump(raw))
    server: Server = launch(path, {"CANARYGATE_ADMIN_TOKEN": ADMIN_TOKEN},  # type: ignore[operator]
                            ("--log-level", "info"))
    assert "40 warm-up requests answered" in server.log.read_text()  # 2 models x 20

    def figures() -> tuple[float, float, int, int]:
        with server.client(headers=AUTH) as http:
            counts = http.get("/admin/rollouts/breast-cancer").json()["step_counts"]
            live = http.get("/admin/stats/breast-cancer").json()["variants"]
        return (server.metric("canarygate_requests_total"),
                server.metric("canarygate_dataset_records_total", outcome="captured"),
                counts["baseline"]["requests"] + counts["candidate"]["requests"],
                sum(int(v["requests"]) for v in live))

    assert figures() == (0, 0, 0, 0)
    with httpx.Client(base_url=server.url, timeout=5) as client:
        for _ in range(10):
            assert client.post("/v2/models/breast-cancer/infer",
                               json=v2_body(ROW)).status_code == 200
    assert figures() == (10, 10, 10, 10)


def nice_values(pid: int) -> dict[int, int]:
    """Each thread of ``pid`` and its nice value (field 19 of /proc/PID/task/TID/stat)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        found[int(task.name)] = int(stat[stat.rindex(")") + 2:].split()[16])
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_background_threads_give_the_core_to_the_event_loop(launch: object,
                                                            tmp_path: Path) -> None:
    """The analysis thread and the dataset writer's run at nice 19, so that on a shared core
    the scheduler runs the event loop first, and the writer's catch-up thread at nice 10; the
    loop's thread and the inference threads keep the process's priority."""
    server: Server = launch(gateway_config(tmp_path))  # type: ignore[operator]
    with httpx.Client(base_url=server.url, timeout=5) as client:
        for _ in range(5):  # the inference threads start with their first runs
            assert client.post("/v2/models/breast-cancer/infer",
                               json=v2_body(ROW)).status_code == 200
    deadline = time.monotonic() + 5  # the analysis thread starts with its first pass (1 s)
    while True:
        nice = nice_values(server.process.pid)
        if sum(v == 19 for v in nice.values()) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert nice[server.process.pid] == 0  # the event loop's
    assert list(nice.values()).count(19) == 2, nice  # analysis, dataset writer
    assert list(nice.values()).count(10) == 1, nice  # the dataset writer's catch-up
    assert all(v in (0, 10, 19) for v in nice.values()), nice


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_background_nice_zero_keeps_every_thread_at_the_loops_priority(
        launch: object, tmp_path: Path) -> None:
    server: Server = launch(gateway_config(  # type: ignore[operator]
        tmp_path, server={"background_nice": 0}))
    time.sleep(1.5)  # past the analysis thread's first pass
    nice = nice_values(server.process.pid)
    assert len(nice) > 3 and set(nice.values()) == {0}, nice

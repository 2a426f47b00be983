"""The admin API and the rollout CLI against a real server; bad admin input changes nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import ADMIN_TOKEN, AUTH, MODELS, Server

INFER_ROW = {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32",
                         "data": [17.99, 10.38, 122.8, 1001.0, 0.1184, 0.2776, 0.3001, 0.1471,
                                  0.2419, 0.07871, 1.095, 0.9053, 8.589, 153.4, 0.006399,
                                  0.04904, 0.05373, 0.01587, 0.03003, 0.006193, 25.38, 17.33,
                                  184.6, 2019.0, 0.1622, 0.6656, 0.7119, 0.2654, 0.4601,
                                  0.1189]}]}


def config(tmp: Path) -> Path:
    models = tmp / "models"
    for v in ("1", "2"):
        shutil.copytree(MODELS / "breast-cancer" / v, models / "breast-cancer" / v)
    shutil.copytree(MODELS / "breast-cancer" / "3", models / "spare" / "3")
    (models / "broken").mkdir()
    (models / "broken" / "model.onnx").write_bytes(b"garbage")
    path = tmp / "gateway.yaml"
    path.write_text(f"""
models_dir: {models}
state_dir: {tmp / "state"}
models:
  - name: breast-cancer
    versions: {{"1": {{path: breast-cancer/1}}, "2": {{path: breast-cancer/2}}}}
    baseline: "1"
""")
    return path


@pytest.fixture
def gateway(launch: Any, tmp_path: Path) -> Server:
    server: Server = launch(config(tmp_path), {"CANARYGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    return server


def revision(server: Server) -> int:
    with server.client(headers=AUTH) as http:
        return int(http.get("/admin/rollouts/breast-cancer").json()["revision"])


BAD = [
    ("post", "/admin/rollouts/nope/start", {"candidate": "2"}, 404, "unknown model 'nope'"),
    ("post", "/admin/rollouts/breast-cancer/start", {"candidate": "9"}, 404, "no version '9'"),
    ("post", "/admin/rollouts/breast-cancer/start", {"candidate": "1"}, 400,
     "already the baseline"),
    ("post", "/admin/rollouts/breast-cancer/start", {}, 400, "'candidate'"),
    ("post", "/admin/rollouts/breast-cancer/start",
     {"candidate": "2", "schedule": {"steps": [5, 1]}}, 400, "strictly increasing"),
    ("post", "/admin/rollouts/breast-cancer/start",
     {"candidate": "2", "schedule": {"steps": [5, 120]}}, 400, "(0, 100]"),
    ("post", "/admin/rollouts/breast-cancer/start",
     {"candidate": "2", "schedule": {"stepz": [5]}}, 400, "stepz"),
    ("post", "/admin/rollouts/breast-cancer/weight", {"weight": 50}, 409, "no rollout"),
    ("post", "/admin/rollouts/breast-cancer/promote", {}, 409, "no rollout"),
    ("post", "/admin/rollouts/breast-cancer/explode", {}, 400, "unknown action"),
    ("post", "/admin/models/breast-cancer/versions", {"version": "7", "path": "../../etc"}, 400,
     "outside the models directory"),
    ("post", "/admin/models/breast-cancer/versions", {"version": "7", "path": "broken"}, 400,
     "onnxruntime cannot load"),
    ("post", "/admin/models/breast-cancer/versions", {"version": "2", "path": "spare/3"}, 409,
     "already has a version '2'"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "words"), BAD,
                         ids=[f"{b[1].rsplit('/', 1)[-1]}-{b[3]}-{i}" for i, b in enumerate(BAD)])
def test_bad_admin_input_is_a_clear_4xx_and_changes_nothing(
    gateway: Server, method: str, path: str, body: dict[str, Any], status: int, words: str
) -> None:
    before = revision(gateway)
    with gateway.client(headers=AUTH) as http:
        r = http.request(method.upper(), path, json=body)
        assert r.status_code == status, r.text
        assert words in r.json()["error"]
        assert http.post("/v2/models/breast-cancer/infer", json=INFER_ROW).status_code == 200
    assert revision(gateway) == before


def test_weight_outside_range_changes_nothing(gateway: Server) -> None:
    with gateway.client(headers=AUTH) as http:
        assert http.post("/admin/rollouts/breast-cancer/start",
                         json={"candidate": "2"}).status_code == 200
        before = revision(gateway)
        for bad in (-1, 100.5, "ten", True):
            r = http.post("/admin/rollouts/breast-cancer/weight", json={"weight": bad})
            assert r.status_code == 400 and "weight" in r.json()["error"]
        assert http.post("/admin/rollouts/breast-cancer/start",
                         json={"candidate": "2"}).status_code == 409
    assert revision(gateway) == before


def test_tokens(gateway: Server, launch: Any, tmp_path: Path) -> None:
    with gateway.client() as http:
        r = http.get("/admin/rollouts")
        assert r.status_code == 401 and "Bearer" in r.json()["error"]
        r = http.get("/admin/rollouts", headers={"authorization": "Bearer wrong"})
        assert r.status_code == 403 and "wrong" in r.json()["error"]
        assert http.get("/admin/rollouts", headers=AUTH).status_code == 200
    other = tmp_path / "other"
    other.mkdir()
    closed = launch(config(other))  # no token in its environment
    with closed.client() as http:
        r = http.get("/admin/rollouts", headers=AUTH)
        assert r.status_code == 403 and "CANARYGATE_ADMIN_TOKEN" in r.json()["error"]


def test_register_a_version_without_restart(gateway: Server) -> None:
    with gateway.client(headers=AUTH) as http:
        r = http.post("/admin/models/breast-cancer/versions",
                      json={"version": "3", "path": "spare/3", "reason": "retrained"})
        assert r.status_code == 201, r.text
        assert r.json()["versions"] == ["1", "2", "3"]
        r = http.post("/v2/models/breast-cancer/versions/3/infer", json=INFER_ROW)
        assert r.status_code == 200 and r.headers["x-model-version"] == "3"
        r = http.post("/admin/rollouts/breast-cancer/start", json={"candidate": "3"})
        assert r.status_code == 200 and r.json()["candidate"] == "3"
        log = http.get("/admin/rollouts/breast-cancer/decisions").json()["decisions"]
    assert [d["action"] for d in log][-2:] == ["register_version", "start"]
    assert log[-2]["reason"] == "retrained"


def test_invalid_register_or_limit_changes_nothing(gateway: Server) -> None:
    with gateway.client(headers=AUTH) as http:
        r = http.post("/admin/models/breast-cancer/versions",
                      json={"version": "3", "path": "spare/3", "reason": 5})
        assert r.status_code == 400 and "'reason'" in r.json()["error"]
        r = http.post("/v2/models/breast-cancer/versions/3/infer", json=INFER_ROW)
        assert r.status_code == 404  # not registered
        r = http.get("/admin/rollouts/breast-cancer/decisions?limit=\u00b2")
        assert r.status_code == 400 and "limit" in r.json()["error"]


def test_manual_actions_are_recorded_with_the_callers_reason(
    gateway: Server, tmp_path: Path
) -> None:
    with gateway.client(headers=AUTH) as http:
        http.post("/admin/rollouts/breast-cancer/start", json={"candidate": "2", "reason": "r1"})
        http.post("/admin/rollouts/breast-cancer/weight", json={"weight": 30, "reason": "r2"})
        state = http.post("/admin/rollouts/breast-cancer/resume", json={"reason": "r3"}).json()
        assert state["phase"] == "progressing" and state["weight"] == 30
        http.post("/admin/rollouts/breast-cancer/pause", json={"reason": "r4"})
        state = http.post("/admin/rollouts/breast-cancer/promote", json={"reason": "r5"}).json()
        assert state["phase"] == "promoted" and state["baseline"] == "2"
        log = http.get("/admin/rollouts/breast-cancer/decisions").json()["decisions"]
    manual = [(d["action"], d["reason"]) for d in log if d["actor"] == "admin"]
    assert manual == [("start", "r1"), ("set_weight", "r2"), ("resume", "r3"), ("pause", "r4"),
                      ("promote", "r5")]
    # The same records are appended to the decision log file, and the state file has the
    # promotion (both written off the event loop, so give the writer a moment).
    log_file = tmp_path / "state" / "decisions.jsonl"
    state_file = tmp_path / "state" / "rollouts.json"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "r5" not in (log_file.read_text()
                                                       if log_file.exists() else ""):
        time.sleep(0.05)
    written = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [(d["action"], d["reason"]) for d in written if d["actor"] == "admin"] == manual
    assert json.loads(state_file.read_text())["breast-cancer"]["phase"] == "promoted"


def cli(server: Server, *args: str, token: str | None = ADMIN_TOKEN
        ) -> subprocess.CompletedProcess[str]:
    env_token = ["--token", token] if token else []
    return subprocess.run([sys.executable, "-m", "canarygate", "rollout", "--url", server.url,
                           *env_token, *args], capture_output=True, text=True, timeout=60)


def test_rollout_cli(gateway: Server) -> None:
    started = cli(gateway, "start", "breast-cancer", "2", "--steps", "5,50,100",
                  "--reason", "from the cli")
    assert started.returncode == 0, started.stderr
    status = cli(gateway, "status")
    assert status.returncode == 0
    assert "breast-cancer" in status.stdout and "progressing" in status.stdout
    assert "5 %" in status.stdout
    weight = cli(gateway, "--json", "weight", "breast-cancer", "40")
    assert json.loads(weight.stdout)["weight"] == 40
    one = cli(gateway, "status", "breast-cancer")
    assert "paused" in one.stdout
    assert cli(gateway, "rollback", "breast-cancer", "--reason", "enough").returncode == 0
    log = cli(gateway, "log", "breast-cancer")
    assert "rollback" in log.stdout and "enough" in log.stdout and "from the cli" in log.stdout
    refused = cli(gateway, "status", token=None)
    assert refused.returncode == 1 and "401" in refused.stderr
    bad = cli(gateway, "weight", "breast-cancer", "400")
    assert bad.returncode == 1 and "409" in bad.stderr


def test_demo_starts_a_rollout_of_version_2(demo_server: Server) -> None:
    with demo_server.client(headers=AUTH) as http:
        state = http.get("/admin/rollouts/breast-cancer").json()
        others = http.get("/admin/rollouts").json()["rollouts"]
    assert state["baseline"] == "1" and state["candidate"] == "2"
    assert state["phase"] in ("progressing", "promoted")
    assert state["steps"] == [1, 5, 10, 25, 50, 100]
    assert {r["model"]: r["phase"] for r in others}["diabetes"] == "idle"

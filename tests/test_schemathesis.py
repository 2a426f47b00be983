"""schemathesis against a real gateway: the document the gateway serves at /openapi.json drives
a bounded, seeded run of every operation (schemathesis's examples, coverage and fuzzing
phases, the admin token sent), and every answer must be a documented status with a documented
content type and headers, a body that matches the response's schema, and never a 5xx.

The run has a gateway of its own: it starts, weights, pauses, promotes and rolls back rollouts
and registers versions. Its settings are tests/schemathesis.toml, its hooks tests/st_hooks.py
(which also keep every request on this machine). The gateway's own outgoing HTTP (webhooks,
confirm gates) goes to a proxy address where nothing listens, for the same reason.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import ADMIN_TOKEN, GOOD_ROW_BODY, ROOT, Server, demo_config, start_server

TESTS = ROOT / "tests"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens there
SECONDS = 150  # a bound on a hang (the run takes 20-30 s on a quiet machine), not a budget


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The demo with a drift window that fills within the run, after some traffic: the admin
    views then hold drift scores, judgements and their traffic, not only empty lists."""
    tmp = tmp_path_factory.mktemp("schemathesis")
    drift = {"interval_seconds": 1, "window_intervals": 5, "min_window": 50}
    server = start_server(demo_config(tmp, drift=drift), tmp, {
        "CANARYGATE_ADMIN_TOKEN": ADMIN_TOKEN, "HTTP_PROXY": NOWHERE, "HTTPS_PROXY": NOWHERE,
        "ALL_PROXY": NOWHERE, "NO_PROXY": ""})
    with server.client() as http:
        for _ in range(300):
            assert http.post("/v2/models/breast-cancer/infer",
                             content=GOOD_ROW_BODY).status_code == 200
    yield server
    server.stop()


def run(location: str, base_url: str, calls: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The schemathesis CLI with the project's settings; each call is written to ``calls``."""
    env = {**os.environ, "CANARYGATE_ADMIN_TOKEN": ADMIN_TOKEN, "CANARYGATE_ST_CALLS": str(calls),
           "PYTHONPATH": str(TESTS), "NO_COLOR": "1"}
    return subprocess.run(
        [str(SCHEMATHESIS), "--config-file", str(TESTS / "schemathesis.toml"), "run", location,
         "--url", base_url, "--workers", "1", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=SECONDS * 2)


def test_every_answer_conforms_to_the_document(gateway: Server, tmp_path: Path) -> None:
    calls = tmp_path / "calls.txt"
    started = time.monotonic()
    result = run(f"{gateway.url}/openapi.json", gateway.url, calls)
    elapsed = time.monotonic() - started
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    document = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()
    every = {f"{m.upper()} {p}" for p, item in document["paths"].items() for m in item}
    lines = [line.split(" ") for line in calls.read_text().splitlines()]
    called = collections.Counter(f"{method} {path}" for _, method, path, _ in lines)
    statuses = collections.Counter(status for *_, status in lines)
    phases = collections.Counter(phase for phase, *_ in lines)
    print(f"\nschemathesis: {len(lines)} calls in {elapsed:.1f} s, {len(every)} operations "
          f"(and other methods on their paths); by phase {dict(phases)}; by status "
          f"{dict(sorted(statuses.items()))}")
    # schemathesis leaves out the operation that serves the document it read (tested in
    # tests/test_openapi.py); it calls every other one.
    assert every - {"GET /openapi.json"} <= set(called)
    assert not [s for s in statuses if s.startswith("5")]
    assert elapsed < SECONDS
    # Not only refusals: the examples reach real models and real rollouts.
    assert {"200", "201", "400", "404", "409"} <= set(statuses)
    assert httpx.get(f"{gateway.url}/v2/health/ready", timeout=10).status_code == 200


def test_a_wrong_document_is_caught(gateway: Server, tmp_path: Path) -> None:
    """The run can fail: a document that claims GET /v2 answers a field the gateway does not
    send, and that /v2/health/live answers only 404, is caught on the real server."""
    wrong = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()
    wrong["components"]["schemas"]["ServerMetadata"]["required"].append("uptime")
    responses = wrong["paths"]["/v2/health/live"]["get"]["responses"]
    responses["404"] = responses.pop("200")
    path = tmp_path / "wrong.json"
    path.write_text(json.dumps(wrong))
    result = run(str(path), gateway.url, tmp_path / "calls.txt",
                 "--include-path-regex", "^/v2(/health/live)?$", "--phases", "examples,fuzzing")
    assert result.returncode == 1, result.stdout[-3000:]
    assert '"uptime" is a required property' in result.stdout, result.stdout[-3000:]
    assert "Undocumented status code" in result.stdout, result.stdout[-3000:]

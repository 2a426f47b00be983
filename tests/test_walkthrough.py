"""The README's walk-throughs, run as written: the demo gateway (its own state folder), load
from the open-loop generator, and the README's own `canarygate` lines as CLI subprocesses."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, Server, demo_config, open_loop_load, start_server

pytestmark = pytest.mark.serial  # timing: run alone (see the Makefile's test target)

TOKEN = "secret"  # what the README exports


def readme_block(after: str) -> list[str]:
    """The lines of the first ``sh`` block of the README after the text ``after``."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index(after):].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def cli(server: Server, line: str, token: str | None = TOKEN
        ) -> subprocess.CompletedProcess[str]:
    """One README line ``.venv/bin/canarygate ...`` (any ``VAR=value`` prefix dropped: the
    environment below sets it), as this interpreter's canarygate against ``server``."""
    words = shlex.split(line)
    while "=" in words[0]:
        words.pop(0)
    assert words[0] == ".venv/bin/canarygate", line
    env = {k: v for k, v in os.environ.items() if k != "CANARYGATE_ADMIN_TOKEN"}
    env["CANARYGATE_URL"] = server.url
    if token is not None:
        env["CANARYGATE_ADMIN_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "canarygate", *words[1:]], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def loaded_demo(tmp_path: Path) -> Iterator[Server]:
    """The demo gateway, as `CANARYGATE_ADMIN_TOKEN=secret make serve` starts it, with the
    open-loop load generator sending real rows for the test's length."""
    server = start_server(demo_config(tmp_path), tmp_path, {"CANARYGATE_ADMIN_TOKEN": TOKEN})
    try:
        with open_loop_load(server, rate=150, seconds=150):
            yield server
    finally:
        server.stop()


def test_see_a_rollout_then_watch_a_rollback(loaded_demo: Server) -> None:
    server = loaded_demo
    see = [line for line in readme_block("## See a rollout") if "canarygate rollout" in line]
    assert len(see) == 1
    time.sleep(6)  # a tick of the demo's 5 s interval, so the step has figures
    status = cli(server, see[0])
    assert status.returncode == 0, status.stderr
    assert "progressing" in status.stdout and "waiting for:" in status.stdout
    assert "candidate requests" in status.stdout
    assert max(len(line) for line in status.stdout.splitlines()) <= 100

    lines = readme_block("To watch a rollback")
    assert lines[0] == f"export CANARYGATE_ADMIN_TOKEN={TOKEN}"
    for line in lines[1:-1]:
        done = cli(server, line)
        assert done.returncode == 0, (line, done.stderr)
        if line.endswith("versions list breast-cancer"):
            assert "breast-cancer/4" in done.stdout
    status_line = lines[-1]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status = cli(server, status_line)
        if "rolled_back" in status.stdout:
            break
        time.sleep(1)
    assert "rolled_back" in status.stdout, status.stdout
    assert "errors gate failed" in status.stdout
    assert max(len(line) for line in status.stdout.splitlines()) <= 100

    # A new rollout shows none of the last one's verdicts.
    again = cli(server, ".venv/bin/canarygate rollout --json start breast-cancer 4")
    assert again.returncode == 0, again.stderr
    view = json.loads(again.stdout)
    assert view["last_verdicts"] == [] and view["step_number"] == 1
    assert view["waiting"]["candidate_requests"] == 0


def test_cli_without_a_token_says_what_to_set(demo_server: Server) -> None:
    refused = cli(demo_server, ".venv/bin/canarygate rollout status", token=None)
    assert refused.returncode == 2
    assert "CANARYGATE_ADMIN_TOKEN" in refused.stderr and "--token" in refused.stderr
    wrong = cli(demo_server, ".venv/bin/canarygate versions list breast-cancer", token="nope")
    assert wrong.returncode == 1 and "403" in wrong.stderr

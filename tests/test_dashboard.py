"""The dashboard in a real browser: Debian's Chromium driven by playwright against a real
gateway under open-loop load. Every panel renders without console errors; pause, weight, roll
back and start clicks change the rollout (read back through the API); a viewer's token shows no
actions and is refused writes. Screenshots go to var/artifacts/ (the README shows one)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conftest import ROOT, Server, chromium, demo_config, open_loop_load, watch

pytestmark = pytest.mark.serial  # timing: run alone (see the Makefile's test target)

OPERATOR, VIEWER = "operator-secret", "viewer-secret"
ARTIFACTS = ROOT / "var" / "artifacts"
PANELS = ["status", "actions", "timeline", "split", "qps", "errors", "latency", "agreement",
          "feedback", "gates", "drift", "log"]


def dashboard_config(tmp: Path) -> Path:
    """The demo with a viewer token, a 1 s controller and drift interval, and a step that
    holds for minutes (so the clicks, not the ramp, move the rollout)."""
    path = demo_config(tmp)
    raw = yaml.safe_load(path.read_text())
    raw["admin"]["tokens"] = [{"name": "ci-viewer", "role": "viewer",
                               "env": "CANARYGATE_VIEWER_TOKEN"}]
    raw["models"][0]["rollout"].update(interval_seconds=1, min_step_seconds=600)
    raw["drift"] = {"interval_seconds": 1, "window_intervals": 5, "min_window": 50}
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def gateway(launch: Callable[..., Server], tmp_path: Path) -> Iterator[Server]:
    server = launch(dashboard_config(tmp_path), {"CANARYGATE_ADMIN_TOKEN": OPERATOR,
                                                 "CANARYGATE_VIEWER_TOKEN": VIEWER})
    with open_loop_load(server, rate=120, seconds=300):
        yield server


def state(server: Server, token: str = OPERATOR) -> dict[str, Any]:
    r = httpx.get(f"{server.url}/admin/rollouts/breast-cancer",
                  headers={"authorization": f"Bearer {token}"}, timeout=10)
    r.raise_for_status()
    data: dict[str, Any] = r.json()
    return data


def until(check: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.25)


def test_dashboard_in_chromium(gateway: Server) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with chromium() as browser:
        operator_session(watch(browser.new_page(viewport={"width": 1280, "height": 900}),
                               errors), gateway)
        viewer_session(watch(browser.new_page(), errors), gateway)
    assert errors == []


def sign_in(page: Any, server: Server, token: str) -> None:
    page.goto(f"{server.url}/dashboard")
    page.fill("#token", token)
    page.click("#login button")
    page.wait_for_selector("#overview tr[data-model='breast-cancer']")


def operator_session(page: Any, server: Server) -> None:
    sign_in(page, server, OPERATOR)
    assert page.locator("#overview tr[data-model]").count() == 2
    # The overview shows each model's phase and last decision.
    page.wait_for_selector("#overview tr[data-model='breast-cancer'] .phase.progressing")
    page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)
    page.click("#overview tr[data-model='breast-cancer']")
    for name in PANELS:
        page.wait_for_selector(f"[data-panel='{name}']")
    # Enough ticks for a chart per gate and a drift window.
    # (attached, not visible: a flat line has no height)
    for chart in ("[data-panel='gates'] [data-gate='errors'] svg", "[data-panel='drift'] svg rect",
                  "[data-panel='split'] svg path", "[data-panel='latency'] svg path"):
        page.wait_for_selector(chart, state="attached", timeout=60_000)

    page.fill("#reason", "looking closer")
    page.click("button[data-action='pause']")
    until(lambda: state(server)["phase"] == "paused")
    assert state(server)["reason"] == "looking closer"
    page.fill("#weight", "20")
    page.click("button[data-action='weight']")
    until(lambda: state(server)["weight"] == 20)
    page.click("button[data-action='rollback']")
    until(lambda: state(server)["phase"] == "rolled_back")
    decisions = httpx.get(f"{server.url}/admin/rollouts/breast-cancer/decisions",
                          headers={"authorization": f"Bearer {OPERATOR}"}).json()["decisions"]
    assert [d["actor"] for d in decisions if d["reason"] == "looking closer"] == ["admin"] * 3

    # A bad candidate, started from the page: the controller rolls it back by itself.
    httpx.post(f"{server.url}/admin/models/breast-cancer/versions",
               headers={"authorization": f"Bearer {OPERATOR}"},
               json={"version": "4", "path": "breast-cancer/4"}).raise_for_status()
    page.goto(f"{server.url}/dashboard")  # a reload: the start form lists version 4
    page.click("#overview tr[data-model='breast-cancer']")
    page.wait_for_selector("#start-version option[value='4']", state="attached")
    page.select_option("#start-version", "4")
    page.fill("#start-steps", "10,50,100")
    page.fill("#reason", "version 4, from the dashboard")
    page.click("button[data-action='start']")
    until(lambda: state(server)["candidate"] == "4")
    until(lambda: state(server)["phase"] == "rolled_back", seconds=90)
    page.wait_for_selector("[data-panel='status'] .phase.rolled_back")
    page.wait_for_timeout(2500)  # one more poll, so the charts hold the rollback's ticks
    page.screenshot(path=str(ARTIFACTS / "dashboard-rollback.png"), full_page=True)


def viewer_session(page: Any, server: Server) -> None:
    sign_in(page, server, VIEWER)
    assert "ci-viewer (viewer)" in page.inner_text("#who")
    page.click("#overview tr[data-model='breast-cancer']")
    page.wait_for_selector("[data-panel='log']")
    assert page.locator("[data-panel='actions']").count() == 0
    assert page.locator("button[data-action]").count() == 0
    refused = httpx.post(f"{server.url}/admin/rollouts/breast-cancer/pause",
                         headers={"authorization": f"Bearer {VIEWER}"}, json={})
    assert refused.status_code == 403 and "viewer" in refused.json()["error"]

"""Webhooks and external gates against a real gateway and a real HTTP receiver on loopback:
one that answers, one that fails, one that hangs, one that checks a signature made with
another secret; confirm-rollout and confirm-promotion URLs that say no, then yes."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from canarygate.config import NotificationsConfig, WebhookConfig
from canarygate.drift.report import ColumnScore, DriftReport, VariantReport
from canarygate.metrics import Metrics
from canarygate.notify import Notifier
from conftest import ADMIN_TOKEN, AUTH, Server, demo_config, drive

pytestmark = pytest.mark.serial  # timing: run alone (see the Makefile's test target)

SECRET, OTHER = "shared-secret", "another-secret"


class Receiver:
    """Records every POST; answers by path: /ok 200, /fail 500, /hang after 3 s, /signed 200
    only when the signature is ``SECRET``'s (else 401), /confirm and /promote ``gates[path]``."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.gates = {"/confirm": 503, "/promote": 503}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.received.append((self.path, dict(self.headers.items()), body))
                status = receiver.status(self.path, self.headers, body)
                if status == 0:
                    time.sleep(3)
                    status = 200
                text = b"not yet" if status >= 400 else b"ok"
                self.send_response(status)
                self.send_header("content-length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def status(self, path: str, headers: Any, body: bytes) -> int:
        if path == "/signed":
            good = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            return 200 if hmac.compare_digest(headers.get("x-canarygate-signature", ""),
                                              good) else 401
        return {"/ok": 200, "/fail": 500, "/hang": 0}.get(path) or self.gates[path]

    def events(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(body) for p, _, body in list(self.received) if p == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def until(check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def notifying_gateway(launch: Callable[..., Server], tmp: Path, url: str) -> Server:
    path = demo_config(tmp)
    raw = yaml.safe_load(path.read_text())
    hooks = [{"url": f"{url}/ok", "secret_env": "HOOK_SECRET"},
             {"url": f"{url}/ok-slack", "format": "slack"},
             {"url": f"{url}/fail"}, {"url": f"{url}/hang"},
             {"url": f"{url}/signed", "secret_env": "HOOK_OTHER_SECRET"}]
    raw["notifications"] = {"webhooks": hooks, "timeout_seconds": 0.5, "retries": 2,
                            "backoff_seconds": 0.05}
    path.write_text(yaml.safe_dump(raw))
    return launch(path, {"CANARYGATE_ADMIN_TOKEN": ADMIN_TOKEN, "HOOK_SECRET": SECRET,
                         "HOOK_OTHER_SECRET": OTHER})


def test_webhooks_signed_retried_counted_and_never_in_the_way(
        launch: Callable[..., Server], tmp_path: Path, receiver: Receiver) -> None:
    receiver.gates["/ok-slack"] = 200
    server = notifying_gateway(launch, tmp_path, receiver.url)
    with server.client(headers=AUTH) as http:
        began = time.monotonic()
        paused = http.post("/admin/rollouts/breast-cancer/pause", json={"reason": "a look"})
        assert paused.status_code == 200
        assert time.monotonic() - began < 1.0  # the hanging receiver holds nothing up
    until(lambda: len(receiver.events("/ok")) >= 2)
    start, pause = receiver.events("/ok")[:2]
    assert (start["action"], start["actor"], start["candidate"]) == ("start", "config", "2")
    assert (pause["action"], pause["actor"], pause["reason"]) == ("pause", "admin", "a look")
    assert pause["model"] == "breast-cancer" and pause["baseline"] == "1"
    _, headers, body = next(r for r in receiver.received if r[0] == "/ok")
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-canarygate-signature"] == expected
    until(lambda: len(receiver.events("/ok-slack")) >= 2)
    assert "breast-cancer pause by admin: a look" in receiver.events("/ok-slack")[1]["text"]
    # /fail and /signed (wrong secret) refuse each attempt: 1 + 2 retries per event.
    until(lambda: server.metric("canarygate_notifications_total", outcome="failed") >= 4,
          seconds=60)
    assert len([1 for p, _, _ in receiver.received if p == "/fail"]) >= 3
    assert server.metric("canarygate_notifications_total", outcome="retried") >= 4
    assert server.metric("canarygate_notifications_total", outcome="sent") >= 4
    hold = [e for e in receiver.events("/ok") if e["action"] == "hold"]
    assert hold == []  # a hold changes nothing and is not sent


def test_confirm_rollout_and_promotion_wait_for_2xx(
        launch: Callable[..., Server], tmp_path: Path, receiver: Receiver,
        diabetes_rows: np.ndarray) -> None:
    server = launch(demo_config(tmp_path), {"CANARYGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    # The confirm gates, not the judgement's evidence rules, are what this test is about: a
    # ramp waiting to show non-inferiority would hold past the test's time.
    schedule = {"steps": [50, 100], "interval_seconds": 0.5, "min_step_seconds": 1,
                "min_step_requests": 20, "auto_promote": True, "promote_on_evidence": False,
                "size_steps": False,
                "confirm_rollout": [f"{receiver.url}/confirm"],
                "confirm_promotion": [f"{receiver.url}/promote"]}
    with server.client(headers=AUTH) as http:
        started = http.post("/admin/rollouts/diabetes/start",
                            json={"candidate": "2", "schedule": schedule})
        assert started.status_code == 200 and started.json()["weight"] == 0

        def log() -> list[dict[str, Any]]:
            return http.get("/admin/rollouts/diabetes/decisions").json()["decisions"]

        until(lambda: any("confirm_rollout" in d["reason"] and "503" in d["reason"]
                          for d in log()))
        view = http.get("/admin/rollouts/diabetes").json()
        assert view["weight"] == 0 and view["phase"] == "progressing"
        assert view["last_verdicts"][-1]["gate"] == "confirm_rollout"
        receiver.gates["/confirm"] = 200
        until(lambda: http.get("/admin/rollouts/diabetes").json()["weight"] == 50)
        assert any(d["action"] == "confirm" for d in log())
    drive(server, diabetes_rows, lambda s: any("confirm_promotion" in g["gate"]
                                               for g in s.get("last_verdicts", [])),
          model="diabetes", seconds=60, concurrency=4)
    with server.client(headers=AUTH) as http:
        assert http.get("/admin/rollouts/diabetes").json()["phase"] == "progressing"
        until(lambda: any("waiting for confirm_promotion" in d["reason"] for d in log()))
        receiver.gates["/promote"] = 200
        until(lambda: http.get("/admin/rollouts/diabetes").json()["phase"] == "promoted")
        promoted = log()[-1]
        assert promoted["action"] == "promote" and "confirm_promotion" in promoted["reason"]
    asked = receiver.events("/confirm")
    assert asked and asked[0]["gate"] == "confirm_rollout" and asked[0]["candidate"] == "2"


def drift_report(alerting: list[str]) -> DriftReport:
    columns = tuple(ColumnScore(name, "numeric", 600, 0, "alert" if name in alerting else "ok",
                                {"psi": 0.4 if name in alerting else 0.01})
                    for name in ("mean radius", "mean texture", "mean area"))
    variant = VariantReport("2", "candidate", 600, 500, columns, ())
    return DriftReport("breast-cancer", 1.0e9, (variant,), 0, None)


def test_a_new_drift_alert_is_sent_once(receiver: Receiver) -> None:
    metrics = Metrics()
    notifier = Notifier(NotificationsConfig(webhooks=[WebhookConfig(url=f"{receiver.url}/ok")],
                                            timeout_seconds=1, retries=0), metrics)
    notifier.start()
    for alerting in ([], ["mean radius"], ["mean radius"], ["mean radius", "mean area"]):
        notifier.drift(drift_report(alerting))
    notifier.stop()
    events = receiver.events("/ok")
    assert [e["action"] for e in events] == ["drift_alert", "drift_alert"]
    assert events[0]["figures"]["psi"] == {"mean radius": 0.4}
    assert "mean area, mean radius" in events[1]["reason"]
    assert (events[1]["variant"], events[1]["version"]) == ("candidate", "2")

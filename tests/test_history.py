"""The rollout history: bounded when a day of ticks goes in, and what a real gateway under load
serves at /admin/rollouts/{model}/history and as gate gauges on /metrics."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import numpy as np
import yaml

from canarygate.rollout.history import Series
from conftest import ADMIN_TOKEN, AUTH, Server, demo_config, drive


def test_a_day_of_ticks_stays_bounded_and_spans_the_day() -> None:
    series = Series(deque(maxlen=720), deque(maxlen=1440), every=60.0)
    for i in range(24 * 3600 // 5):  # a day of 5 s ticks
        series.append({"t": float(i * 5)})
    points = series.since(-1.0)
    assert len(points) <= 720 + 1440
    times = [p["t"] for p in points]
    assert times == sorted(times)
    assert times[0] <= 60.0 and times[-1] == 24 * 3600 - 5  # the whole day, newest last
    recent = times[-720:]
    assert all(b - a == 5 for a, b in pairwise(recent))  # the last hour whole
    older = times[:-720]
    assert all(b - a >= 60 for a, b in pairwise(older))  # thinned


def fast_demo(tmp: Path) -> Path:
    """The demo config with a 1 s controller interval, so a test sees many ticks."""
    path = demo_config(tmp)
    raw = yaml.safe_load(path.read_text())
    raw["models"][0]["rollout"].update(interval_seconds=1, min_step_seconds=300)
    raw["drift"] = {"interval_seconds": 1, "window_intervals": 5, "min_window": 50}
    path.write_text(yaml.safe_dump(raw))
    return path


def test_history_and_gate_gauges_of_a_live_rollout(
        launch: Callable[..., Server], tmp_path: Path, breast_cancer_rows: np.ndarray) -> None:
    server = launch(fast_demo(tmp_path), {"CANARYGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    drive(server, breast_cancer_rows, lambda s: False, seconds=8, concurrency=8)
    with server.client(headers=AUTH) as http:
        view = http.get("/admin/rollouts/breast-cancer/history").json()
        points = view["points"]
        assert len(points) >= 4
        last = points[-1]
        assert last["phase"] == "progressing" and last["weight"] == 1
        assert last["observed_share"] is not None and 0 <= last["observed_share"] < 20
        baseline = last["variants"]["baseline"]
        assert baseline["qps"] > 0 and baseline["p50"] <= baseline["p95"] <= baseline["p99"]
        errors = last["gates"]["errors"]
        assert set(errors) == {"verdict", "statistic", "threshold"}
        assert "baseline" in view["drift_features"]
        assert len(last["drift"]["baseline"]["levels"]) == len(view["drift_features"]["baseline"])
        later = http.get("/admin/rollouts/breast-cancer/history",
                         params={"since": last["t"]}).json()["points"]
        assert all(p["t"] > last["t"] for p in later)
        bad = http.get("/admin/rollouts/breast-cancer/history", params={"since": "soon"})
        assert bad.status_code == 400 and "since" in bad.json()["error"]
        assert http.get("/admin/rollouts/nope/history").status_code == 404
    threshold = server.metric("canarygate_rollout_gate_threshold", model="breast-cancer",
                              gate="errors")
    assert threshold > 0

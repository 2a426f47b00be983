"""The label-free accuracy estimate online: the drift monitor feeds each calibrated version's
estimator with the outputs it bins (off the request path), per variant, over its window; the
figures reach /metrics, the rollout view (beside the realised accuracy) and a gate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from canarygate.config import DriftConfig, RolloutConfig
from canarygate.drift import DriftMonitor
from canarygate.estimate.cbpe import AccuracyEstimator, Estimate
from canarygate.rollout.gates import Verdict
from canarygate.rollout.quality import Evidence, estimated_accuracy_gate
from conftest import ADMIN_TOKEN, AUTH, MODELS, Server, ort_outputs, v2_body

pytestmark = pytest.mark.serial  # timing: run alone (see the Makefile's test target)

BC = MODELS / "breast-cancer"


def test_the_windowed_estimate_is_the_estimators_on_the_same_outputs() -> None:
    x = load_breast_cancer().data.astype(np.float32)
    m = DriftMonitor(DriftConfig(min_window=10, max_rows_per_second=1e9))
    for version in ("1", "3"):
        m.add_profile("breast-cancer", version, BC / version)
    outputs = {v: ort_outputs("breast-cancer", v, x) for v in ("1", "3")}
    for lo in range(0, len(x), 50):  # as requests of 50 rows
        for version, variant in (("1", "baseline"), ("3", "candidate")):
            m.observe("breast-cancer", version, variant, {"input": x[lo:lo + 50]},
                      {k: a[lo:lo + 50] for k, a in outputs[version].items()})
    m.tick(0.0)
    report = m.reports["breast-cancer"]
    for version, variant in (("1", "baseline"), ("3", "candidate")):
        direct = AccuracyEstimator.from_folder(BC / version)
        assert direct is not None
        direct.update_outputs(outputs[version])
        found = report.variant(version, variant)
        assert found is not None and found.estimated_accuracy is not None
        assert found.estimated_accuracy.rows == len(x)
        assert found.estimated_accuracy.accuracy == pytest.approx(direct.read().accuracy,
                                                                  rel=1e-12)
    # Version 3 learned from flipped labels: its own scores already say it is worse.
    worse = report.variant("3", "candidate")
    better = report.variant("1", "baseline")
    assert worse and better and worse.estimated_accuracy and better.estimated_accuracy
    assert worse.estimated_accuracy.accuracy < better.estimated_accuracy.accuracy  # type: ignore[operator]


@pytest.mark.parametrize(("action", "verdict"), [("report", Verdict.PASS),
                                                 ("pause", Verdict.PAUSE),
                                                 ("rollback", Verdict.FAIL)])
def test_the_gate_does_what_the_schedule_says(action: str, verdict: Verdict) -> None:
    schedule = RolloutConfig(estimated_accuracy_action=action)  # type: ignore[arg-type]
    worse = Estimate(500, 0.80, 0.77, 0.83, 100.0)
    base = Estimate(500, 0.95, 0.93, 0.97, 25.0)
    gate = estimated_accuracy_gate(schedule, Evidence(candidate_accuracy=worse,
                                                      baseline_accuracy=base))
    assert gate.verdict == verdict and "below the baseline's" in gate.detail
    overlapping = Estimate(500, 0.93, 0.90, 0.95, 35.0)
    assert estimated_accuracy_gate(schedule, Evidence(
        candidate_accuracy=overlapping, baseline_accuracy=base)).verdict == Verdict.PASS
    few = Estimate(50, 0.5, 0.3, 0.7, 25.0)
    assert estimated_accuracy_gate(schedule, Evidence(
        candidate_accuracy=few, baseline_accuracy=base)).verdict == Verdict.NO_DATA


def config(tmp: Path) -> Path:
    path = tmp / "gateway.yaml"
    path.write_text(f"""
models_dir: {MODELS}
state_dir: {tmp / "state"}
dataset: {{enabled: false}}
drift: {{interval_seconds: 0.5, min_window: 50, window_intervals: 120}}
models:
  - name: breast-cancer
    versions: {{"1": {{path: breast-cancer/1}}, "3": {{path: breast-cancer/3}}}}
    baseline: "1"
    candidate: "3"
    rollout: {{steps: [50], interval_seconds: 0.5, min_step_seconds: 3600,
              min_step_requests: 1000000, accuracy_gate: false}}
""")
    return path


def test_estimates_reach_metrics_the_view_and_the_judgement(launch: Any,
                                                           tmp_path: Path) -> None:
    server: Server = launch(config(tmp_path), {"CANARYGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    x, y = load_breast_cancer(return_X_y=True)
    ids = []
    with server.client() as http:
        for i in range(len(x)):
            r = http.post("/v2/models/breast-cancer/infer", json=v2_body(x[i:i + 1]))
            assert r.status_code == 200
            ids.append((r.headers["x-request-id"], int(y[i])))
        http.post("/v2/models/breast-cancer/feedback",
                  json=[{"request_id": rid, "label": label} for rid, label in ids])

    def view() -> dict[str, Any]:
        with server.client(headers=AUTH) as http:
            found: dict[str, Any] = http.get("/admin/rollouts/breast-cancer").json()
        return found

    deadline = time.monotonic() + 30
    while len(view()["estimated_accuracy"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    estimates = {e["version"]: e for e in view()["estimated_accuracy"]}
    assert set(estimates) == {"1", "3"}
    for version, e in estimates.items():
        assert e["rows"] > 50 and e["low"] <= e["accuracy"] <= e["high"]
        assert e["realised_accuracy"] is not None, version  # the labels' own figure beside it
    assert estimates["3"]["accuracy"] < estimates["1"]["accuracy"]
    assert server.metric("canarygate_estimated_accuracy", version="3", bound="estimate") == (
        pytest.approx(estimates["3"]["accuracy"], abs=0.05))
    # The controller judges with the estimates on its next tick (every 0.5 s) after they
    # appear: the last verdicts may still be from a tick before them.
    def gates() -> dict[str, Any]:
        return {g["gate"]: g for g in view()["last_verdicts"]}

    while "estimated_accuracy" not in gates() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert gates()["estimated_accuracy"]["verdict"] in ("pass", "no_data")

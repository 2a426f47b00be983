"""Issue 12, item 5, end to end: a regressor candidate that answers its baseline + 40 (the
black-box review's diabetes case: as fast and as reliable, only its errors are larger) is
rolled back by the accuracy gate's two-sample test on mean squared errors once labels come
back, on a real server; labels of an identical candidate do not roll it back."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from sklearn.datasets import load_diabetes

from conftest import ADMIN_TOKEN, AUTH, MODELS, Server, v2_body

NAME = "diabetes"


def biased_copy(models: Path, version: str, bias: float) -> None:
    """diabetes/1 with ``bias`` added to its prediction, as version ``version``."""
    target = models / NAME / version
    shutil.copytree(MODELS / NAME / "1", target)
    meta = json.loads((target / "metadata.json").read_text())
    meta["version"] = version
    (target / "metadata.json").write_text(json.dumps(meta))
    model = onnx.load(str(target / "model.onnx"))
    graph = model.graph
    output = graph.output[0].name
    for node in graph.node:
        node.output[:] = [f"{o}_raw" if o == output else o for o in node.output]
    graph.initializer.append(numpy_helper.from_array(np.array(bias, dtype=np.float32),
                                                     "bias_const"))
    graph.node.append(helper.make_node("Add", [f"{output}_raw", "bias_const"], [output]))
    onnx.save(model, str(target / "model.onnx"))


@pytest.fixture
def gateway(launch: Any, tmp_path: Path) -> Server:
    models = tmp_path / "models"
    (models / NAME).mkdir(parents=True)
    shutil.copytree(MODELS / NAME / "1", models / NAME / "1")
    biased_copy(models, "3", 40.0)
    biased_copy(models, "4", 0.0)  # version 1's answers exactly
    config = tmp_path / "gateway.yaml"
    config.write_text(f"""
models_dir: {models}
state_dir: {tmp_path / "state"}
models:
  - name: {NAME}
    versions: {{"1": {{path: {NAME}/1}}, "3": {{path: {NAME}/3}}, "4": {{path: {NAME}/4}}}}
    baseline: "1"
""")
    server: Server = launch(config, {"CANARYGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    return server


def state(http: Any) -> dict[str, Any]:
    return dict(http.get(f"/admin/rollouts/{NAME}", headers=AUTH).json())


def serve_and_label(http: Any, rng: np.random.Generator, n: int) -> None:
    """n routed requests on random diabetes rows, then their labels in one feedback call."""
    x, y = load_diabetes(return_X_y=True)
    x = x.astype(np.float32)
    items = []
    for i in rng.integers(0, len(y), n):
        r = http.post(f"/v2/models/{NAME}/infer", json=v2_body(x[i:i + 1]))
        assert r.status_code == 200, r.text
        items.append({"request_id": r.headers["x-request-id"], "label": float(y[i])})
    r = http.post(f"/v2/models/{NAME}/feedback", json=items)
    assert r.status_code == 200, r.text


def roll(gateway: Server, candidate: str, rounds: int) -> dict[str, Any]:
    schedule = {"steps": [50, 100], "interval_seconds": 0.25, "min_step_seconds": 3600,
                "min_step_requests": 100_000}
    rng = np.random.default_rng(5)
    with gateway.client() as http:
        r = http.post(f"/admin/rollouts/{NAME}/start", headers=AUTH,
                      json={"candidate": candidate, "schedule": schedule, "reason": "test"})
        assert r.status_code == 200, r.text
        serve_and_label(http, rng, 200)  # the baseline's errors fix the step's scale
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                g["gate"] == "accuracy" and g["counts"].get("scale")
                for g in state(http)["last_verdicts"]):
            time.sleep(0.1)
        for _ in range(rounds):
            serve_and_label(http, rng, 400)
            time.sleep(1.0)  # a few judgements
            if state(http)["phase"] == "rolled_back":
                break
        return state(http)


def test_a_candidate_biased_by_40_is_rolled_back_on_its_errors(gateway: Server) -> None:
    final = roll(gateway, "3", rounds=5)
    assert final["phase"] == "rolled_back", final["last_verdicts"]
    figures = final["figures"]
    assert figures["gate"] == "accuracy" and figures["verdict"] == "fail"
    counts = figures["counts"]
    assert counts["events"] == "clipped squared errors"
    assert counts["candidate_mean"] > counts["baseline_mean"]
    assert figures["statistic"] >= figures["threshold"]


def test_an_identical_regressor_is_not_rolled_back_on_its_errors(gateway: Server) -> None:
    final = roll(gateway, "4", rounds=2)
    assert final["phase"] == "progressing", final["last_verdicts"]
    accuracy = next(g for g in final["last_verdicts"] if g["gate"] == "accuracy")
    assert accuracy["verdict"] in ("pass", "marginal"), accuracy
    assert accuracy["counts"]["candidate_labelled"] > 200

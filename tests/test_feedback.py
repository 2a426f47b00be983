"""Feedback joins labels to predictions by request id; accuracy and error per version."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.metrics import accuracy_score, mean_absolute_error

from canarygate.recorder import reader
from conftest import MODELS, Server, v2_body


def config(tmp: Path, ttl: float = 3600) -> Path:
    path = tmp / "gateway.yaml"
    path.write_text(f"""
models_dir: {MODELS}
state_dir: {tmp / "state"}
dataset: {{dir: {tmp / "dataset"}, flush_interval_seconds: 0.05}}
feedback: {{ttl_seconds: {ttl}}}
models:
  - name: breast-cancer
    versions: {{"1": {{path: breast-cancer/1}}, "3": {{path: breast-cancer/3}}}}
    baseline: "1"
  - name: diabetes
    versions: {{"1": {{path: diabetes/1}}}}
    baseline: "1"
""")
    return path


@pytest.fixture
def gateway(launch: Any, tmp_path: Path) -> Server:
    server: Server = launch(config(tmp_path))
    return server


def predict(server: Server, model: str, version: str, rows: np.ndarray) -> list[str]:
    ids = []
    with server.client() as http:
        for i in range(len(rows)):
            r = http.post(f"/v2/models/{model}/versions/{version}/infer",
                          json=v2_body(rows[i:i + 1]))
            assert r.status_code == 200
            ids.append(r.headers["x-request-id"])
    return ids


def test_accuracy_per_version_matches_sklearn(gateway: Server, tmp_path: Path) -> None:
    x, y = load_breast_cancer(return_X_y=True)
    x = x.astype(np.float32)[:120]
    y = y[:120]
    scores = {}
    for version in ("1", "3"):
        ids = predict(gateway, "breast-cancer", version, x)
        items = [{"request_id": rid, "label": int(label)} for rid, label in zip(ids, y,
                                                                                 strict=True)]
        with gateway.client() as http:
            r = http.post("/v2/models/breast-cancer/feedback", json={"feedback": items})
        assert r.status_code == 200, r.text
        scores = r.json()["scores"]
        predicted = [int(v) for v in http_labels(gateway, version, x)]
        assert scores[version]["accuracy"] == pytest.approx(accuracy_score(y, predicted))
    # Version 3 learned from flipped labels: its accuracy from feedback shows it.
    assert scores["3"]["accuracy"] < scores["1"]["accuracy"] - 0.05
    assert gateway.metric("canarygate_feedback_labels_total", model="breast-cancer",
                          version="3") == 120
    gateway.stop()
    kinds = [r.get("kind") for r in reader.read_all(tmp_path / "dataset")]
    # 240 single-row predictions, 2 batch ones (http_labels), and 240 labels.
    assert kinds.count("feedback") == 240 and kinds.count("prediction") == 242


def http_labels(server: Server, version: str, x: np.ndarray) -> list[int]:
    with server.client() as http:
        r = http.post(f"/v2/models/breast-cancer/versions/{version}/infer",
                      json=v2_body(x))
    return list(r.json()["outputs"][0]["data"])


def test_regression_error(gateway: Server) -> None:
    x, y = load_diabetes(return_X_y=True)
    x = x.astype(np.float32)[:40]
    ids = predict(gateway, "diabetes", "1", x)
    with gateway.client() as http:
        r = http.post("/v2/models/diabetes/feedback",
                      json=[{"request_id": rid, "label": float(t)} for rid, t in zip(ids, y[:40],
                                                                                     strict=True)])
        batch = http.post("/v2/models/diabetes/versions/1/infer", json=v2_body(x))
    assert r.status_code == 200
    predicted = np.array(batch.json()["outputs"][0]["data"])
    assert r.json()["scores"]["1"]["mae"] == pytest.approx(
        mean_absolute_error(y[:40], predicted), rel=1e-5)


def test_bad_feedback(gateway: Server, launch: Any, tmp_path: Path) -> None:
    x = load_breast_cancer().data.astype(np.float32)
    (rid,) = predict(gateway, "breast-cancer", "1", x[:1])
    with gateway.client() as http:
        post = lambda body: http.post("/v2/models/breast-cancer/feedback", json=body)  # noqa: E731
        r = post({"request_id": "nope", "label": 1})
        assert r.status_code == 404 and "'nope'" in r.json()["error"]
        r = post({"request_id": rid, "label": "malignant"})
        assert r.status_code == 400 and "'label'" in r.json()["error"]
        r = post({"label": 1})
        assert r.status_code == 400 and "'request_id'" in r.json()["error"]
        r = post({"request_id": rid, "label": [1, 0]})
        assert r.status_code == 400 and "1 rows" in r.json()["error"]
        # Nothing is applied when one item of a batch is bad.
        r = post([{"request_id": rid, "label": 1}, {"request_id": "nope", "label": 0}])
        assert r.status_code == 404
        assert post({"request_id": rid, "label": 1}).json()["results"][0]["status"] == "recorded"
        again = post({"request_id": rid, "label": 1}).json()
        assert again["results"][0]["status"] == "duplicate"
        assert again["scores"]["1"]["labelled"] == 1
        r = post({"request_id": rid, "label": 0})
        assert r.status_code == 409 and "different label" in r.json()["error"]
        r = http.post("/v2/models/diabetes/feedback", json={"request_id": rid, "label": 1})
        assert r.status_code == 404  # it was a breast-cancer prediction
        r = http.post("/v2/models/breast-cancer/feedback", content=b"{oops")
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    other = tmp_path / "short"
    other.mkdir()
    short = launch(config(other, ttl=0.2))
    (old,) = predict(short, "breast-cancer", "1", x[:1])
    time.sleep(0.3)
    with short.client() as http:
        r = http.post("/v2/models/breast-cancer/feedback", json={"request_id": old, "label": 1})
    assert r.status_code == 404 and "window has closed" in r.json()["error"]

"""Feedback joins labels to predictions by request id; accuracy and error per version."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.metrics import accuracy_score, mean_absolute_error, root_mean_squared_error

from canarygate.recorder import reader
from conftest import Server, gateway_config, ort_outputs, v2_body


def config(tmp: Path, ttl: float = 3600, max_entries: int = 100_000,
           dataset: dict[str, object] | None = None, body_limit: int = 8_388_608) -> Path:
    return gateway_config(tmp, {"breast-cancer": ("1", "3"), "diabetes": ("1",)},
                          dataset=dataset or {"flush_interval_seconds": 0.05},
                          server={"max_body_bytes": body_limit},
                          feedback={"ttl_seconds": ttl, "max_entries": max_entries})


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
    assert r.status_code == 200
    # The predictions as onnxruntime makes them (a row a run, as they were asked), the errors
    # as scikit-learn scores them.
    predicted = np.array([ort_outputs("diabetes", "1", x[i:i + 1])["prediction"][0, 0]
                          for i in range(len(x))], dtype=np.float64)
    score = r.json()["scores"]["1"]
    assert score["labelled"] == 40
    assert score["mae"] == pytest.approx(mean_absolute_error(y[:40], predicted), rel=1e-9)
    assert score["rmse"] == pytest.approx(root_mean_squared_error(y[:40], predicted), rel=1e-9)
    assert gateway.metric("canarygate_feedback_absolute_error_total", model="diabetes",
                          version="1") == pytest.approx(40 * score["mae"])


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
        first = post({"request_id": rid, "label": 1}).json()
        assert first["results"][0]["status"] == "recorded"
        for again in (post({"request_id": rid, "label": 1}).json(),
                      post([{"request_id": rid, "label": [1]}] * 2).json()):
            assert {r["status"] for r in again["results"]} == {"duplicate"}
            assert again["scores"] == first["scores"]  # counted once, whatever is repeated
        r = post({"request_id": rid, "label": 0})
        assert r.status_code == 409 and "different label" in r.json()["error"]
        r = http.post("/v2/models/diabetes/feedback", json={"request_id": rid, "label": 1})
        assert r.status_code == 404  # it was a breast-cancer prediction
        r = http.post("/v2/models/breast-cancer/feedback", content=b"{oops")
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    assert gateway.metric("canarygate_feedback_labels_total", model="breast-cancer") == 1
    gateway.stop()
    labels = [r for r in reader.read_all(tmp_path / "dataset") if r.get("kind") == "feedback"]
    assert [(r["request_id"], r["feedback"]["label"]) for r in labels] == [(rid, [1.0])]
    other = tmp_path / "short"
    other.mkdir()
    short = launch(config(other, ttl=0.2))
    (old,) = predict(short, "breast-cancer", "1", x[:1])
    time.sleep(0.3)
    with short.client() as http:
        r = http.post("/v2/models/breast-cancer/feedback", json={"request_id": old, "label": 1})
    assert r.status_code == 404 and "window has closed" in r.json()["error"]


def test_the_oldest_predictions_are_evicted_past_max_entries(launch: Any,
                                                            tmp_path: Path) -> None:
    server: Server = launch(config(tmp_path, max_entries=5))
    x = load_breast_cancer().data.astype(np.float32)
    ids = predict(server, "breast-cancer", "1", x[:8])
    with server.client() as http:
        for rid in ids[:3]:
            r = http.post("/v2/models/breast-cancer/feedback", json={"request_id": rid,
                                                                     "label": 1})
            assert r.status_code == 404 and "evicted from the last 5" in r.json()["error"]
        r = http.post("/v2/models/breast-cancer/feedback",
                      json=[{"request_id": rid, "label": 1} for rid in ids[3:]])
    assert r.status_code == 200 and r.json()["scores"]["1"]["labelled"] == 5


def test_body_is_read_with_the_limit_and_may_be_compressed(launch: Any, tmp_path: Path) -> None:
    """The body limit holds for chunked bodies (no content-length to refuse early), and gzip
    bodies are inflated, as on the prediction endpoints."""
    server: Server = launch(config(tmp_path, body_limit=4096))
    x = load_breast_cancer().data.astype(np.float32)
    (rid,) = predict(server, "breast-cancer", "1", x[:1])
    url = "/v2/models/breast-cancer/feedback"
    item = json.dumps({"request_id": rid, "label": 1}).encode()
    with server.client() as http:
        big = b"[" + b",".join([item] * 200) + b"]"  # about 12 KB

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(big), 1000):
                yield big[i:i + 1000]

        r = http.post(url, content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "over the limit of 4096 bytes" in r.json()["error"]
        r = http.post(url, content=gzip.compress(big),  # small compressed, large inflated
                      headers={"content-encoding": "gzip"})
        assert r.status_code == 413
        r = http.post(url, content=gzip.compress(item), headers={"content-encoding": "gzip"})
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["status"] == "recorded"


def test_labels_wait_for_room_under_the_block_policy(launch: Any, tmp_path: Path) -> None:
    """A queue of one and the block policy: each label waits for the writer rather than
    being dropped, so every label is in the dataset and nothing is counted as dropped."""
    server: Server = launch(config(
        tmp_path, dataset={"queue_size": 1, "on_full": "block", "flush_interval_seconds": 0.02}))
    x = load_breast_cancer().data.astype(np.float32)
    ids = predict(server, "breast-cancer", "1", x[:20])
    with server.client() as http:
        r = http.post("/v2/models/breast-cancer/feedback",
                      json=[{"request_id": rid, "label": 1} for rid in ids])
    assert r.status_code == 200
    assert server.metric("canarygate_dataset_records_total", outcome="dropped") == 0
    assert server.metric("canarygate_dataset_blocked_requests_total") > 0
    server.stop()
    kinds = [r.get("kind") for r in reader.read_all(tmp_path / "dataset")]
    assert kinds.count("feedback") == 20 and kinds.count("prediction") == 20


def test_a_huge_label_breaks_no_figure_and_no_view(launch: Any, tmp_path: Path) -> None:
    """Issue 11, finding 1: a label of 1e200 squares past float range. The RMSE it gives is
    written as null (JSON has no infinity); every later view and call still answers."""
    token = "t0ken"
    server: Server = launch(config(tmp_path), {"CANARYGATE_ADMIN_TOKEN": token})
    x, _ = load_diabetes(return_X_y=True)
    ids = predict(server, "diabetes", "1", x.astype(np.float32)[:2])
    auth = {"authorization": f"Bearer {token}"}
    with server.client() as http:
        huge = http.post("/v2/models/diabetes/feedback",
                         json={"request_id": ids[0], "label": 1e200})
        assert huge.status_code == 200, huge.text
        assert huge.json()["scores"]["1"]["rmse"] is None
        later = http.post("/v2/models/diabetes/feedback",
                          json={"request_id": ids[1], "label": 100.0})
        assert later.status_code == 200, later.text
        for path in ("/admin/rollouts", "/admin/rollouts/diabetes"):
            assert http.get(path, headers=auth).status_code == 200, path
        assert "canarygate_feedback_labels_total" in http.get("/metrics").text

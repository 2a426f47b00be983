"""Predictions over both protocols, from a real server, equal onnxruntime's own on the same rows."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton

from conftest import Server, ort_outputs, v2_body

VERSIONS = [("breast-cancer", "1"), ("breast-cancer", "2"), ("diabetes", "1"), ("diabetes", "2")]


@pytest.fixture(scope="module")
def rows(breast_cancer_rows: np.ndarray, diabetes_rows: np.ndarray) -> dict[str, np.ndarray]:
    return {"breast-cancer": breast_cancer_rows[:64], "diabetes": diabetes_rows[:64]}


@pytest.fixture
def triton_client(demo_server: Server) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(demo_server.url.removeprefix("http://"))
    yield client
    client.close()


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for name, expected in want.items():
        assert got[name].shape == expected.shape, name
        if expected.dtype.kind in "iu":
            np.testing.assert_array_equal(got[name], expected)
        else:
            np.testing.assert_allclose(got[name], expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("model", "version"), VERSIONS)
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_pinned_versions_match_onnxruntime(
    triton_client: triton.InferenceServerClient, rows: dict[str, np.ndarray], model: str,
    version: str, binary: bool,
) -> None:
    client = triton_client
    data = rows[model]
    inp = triton.InferInput("input", list(data.shape), "FP32")
    inp.set_data_from_numpy(data, binary_data=binary)
    want = ort_outputs(model, version, data)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in want]
    result = client.infer(model, [inp], model_version=version, outputs=outputs,
                          request_id="triton-1")
    assert_same({name: result.as_numpy(name) for name in want}, want)
    response = result.get_response()
    assert response["model_version"] == version
    assert response["id"] == "triton-1"


def test_tritonclient_defaults_route_to_baseline(
    triton_client: triton.InferenceServerClient, rows: dict[str, np.ndarray]
) -> None:
    client = triton_client
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("breast-cancer")
    assert client.is_model_ready("breast-cancer", "2")
    assert not client.is_model_ready("no-such-model")
    meta = client.get_model_metadata("breast-cancer")
    assert meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}]
    assert client.get_server_metadata()["name"] == "canarygate"
    data = rows["breast-cancer"][:5]
    inp = triton.InferInput("input", list(data.shape), "FP32")
    inp.set_data_from_numpy(data)  # binary input, and no outputs named: all come back binary
    result = client.infer("breast-cancer", [inp])
    # The demo rolls version 2 out over version 1: the routed answer comes from either.
    version = result.get_response()["model_version"]
    assert version in ("1", "2")
    assert_same({n: result.as_numpy(n) for n in ("label", "probabilities")},
                ort_outputs("breast-cancer", version, data))


@pytest.mark.parametrize(("model", "version"), VERSIONS)
def test_v2_json_over_httpx(
    demo_server: Server, rows: dict[str, np.ndarray], model: str, version: str
) -> None:
    data = rows[model]
    with demo_server.client() as http:
        r = http.post(f"/v2/models/{model}/versions/{version}/infer", json=v2_body(data))
    assert r.status_code == 200, r.text
    assert r.headers["x-model-version"] == version
    assert len(r.headers["x-request-id"]) >= 16
    doc = r.json()
    assert doc["model_name"] == model and doc["model_version"] == version
    assert doc["id"] == r.headers["x-request-id"]
    want = ort_outputs(model, version, data)
    got = {o["name"]: np.array(o["data"], dtype=want[o["name"]].dtype).reshape(o["shape"])
           for o in doc["outputs"]}
    assert_same(got, want)


def test_v2_nested_data_and_requested_outputs(
    demo_server: Server, rows: dict[str, np.ndarray]
) -> None:
    data = rows["breast-cancer"][:3]
    body = {"inputs": [{"name": "input", "shape": [3, 30], "datatype": "FP32",
                        "data": data.tolist()}],
            "outputs": [{"name": "probabilities"}]}
    with demo_server.client() as http:
        r = http.post("/v2/models/breast-cancer/infer", json=body)
    assert r.status_code == 200, r.text
    outputs = r.json()["outputs"]
    assert [o["name"] for o in outputs] == ["probabilities"]
    want = ort_outputs("breast-cancer", r.headers["x-model-version"], data)["probabilities"]
    np.testing.assert_allclose(np.array(outputs[0]["data"]).reshape(3, 2), want, rtol=1e-6)


def test_request_id_comes_from_the_client(demo_server: Server, rows: dict[str, np.ndarray]) -> None:
    with demo_server.client() as http:
        r = http.post("/v2/models/diabetes/infer", json=v2_body(rows["diabetes"][:1]),
                      headers={"x-request-id": "order-42"})
        assert r.headers["x-request-id"] == "order-42" and r.json()["id"] == "order-42"
        r = http.post("/v2/models/diabetes/infer", json=v2_body(rows["diabetes"][:1], id="b-7"))
        assert r.headers["x-request-id"] == "b-7" and r.json()["id"] == "b-7"
        ids = {http.post("/v2/models/diabetes/infer",
                         json=v2_body(rows["diabetes"][:1])).headers["x-request-id"]
               for _ in range(20)}
    assert len(ids) == 20


@pytest.mark.parametrize("model", ["breast-cancer", "diabetes"])
def test_kserve_v1_predict(demo_server: Server, rows: dict[str, np.ndarray], model: str) -> None:
    data = rows[model][:10]
    with demo_server.client() as http:
        r = http.post(f"/v1/models/{model}:predict", json={"instances": data.tolist()})
        status = http.get(f"/v1/models/{model}").json()
    assert r.status_code == 200, r.text
    version = r.headers["x-model-version"]
    assert version in ("1", "2")
    assert status == {"name": model, "ready": True}
    predictions = r.json()["predictions"]
    want = ort_outputs(model, version, data)
    assert len(predictions) == 10
    if model == "diabetes":
        np.testing.assert_allclose(predictions, want["prediction"][:, 0], rtol=1e-6)
    else:
        assert [p["label"] for p in predictions] == want["label"].tolist()
        np.testing.assert_allclose([p["probabilities"] for p in predictions],
                                   want["probabilities"], rtol=1e-6, atol=1e-7)


def test_metrics_count_requests_by_model_version_and_code(
    demo_server: Server, rows: dict[str, np.ndarray]
) -> None:
    labels = {"model": "diabetes", "version": "2", "variant": "pinned", "code": "200"}
    before = demo_server.metric("canarygate_requests_total", **labels)
    hist_before = demo_server.metric("canarygate_request_duration_seconds_count",
                                     model="diabetes", version="2")
    with demo_server.client() as http:
        for _ in range(3):
            r = http.post("/v2/models/diabetes/versions/2/infer",
                          json=v2_body(rows["diabetes"][:2]))
            assert r.status_code == 200
    assert demo_server.metric("canarygate_requests_total", **labels) == before + 3
    assert demo_server.metric("canarygate_request_duration_seconds_count",
                              model="diabetes", version="2") == hist_before + 3
    # The histogram resolves sub-millisecond latencies: its first bucket is 50 µs.
    with demo_server.client() as http:
        text = http.get("/metrics").text
    assert 'canarygate_request_duration_seconds_bucket{le="5e-05"' in text


def test_binary_request_with_a_python_json_header(
    demo_server: Server, rows: dict[str, np.ndarray]
) -> None:
    """Python's json writes NaN and escapes non-ASCII; the header of a binary request is read
    like any other body (here with a NaN and an escape in a parameter the model ignores)."""
    data = rows["diabetes"][:3]
    head = json.dumps({"id": "py-1", "parameters": {"note": "é", "score": float("nan")},
                       "inputs": [{"name": "input", "shape": list(data.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": data.nbytes}}]}).encode()
    assert b"NaN" in head and b"\\u00e9" in head
    with demo_server.client() as http:
        r = http.post("/v2/models/diabetes/versions/1/infer", content=head + data.tobytes(),
                      headers={"inference-header-content-length": str(len(head))})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "py-1"
    got = np.array(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(3, 1)
    np.testing.assert_allclose(got, ort_outputs("diabetes", "1", data)["prediction"], rtol=1e-6)

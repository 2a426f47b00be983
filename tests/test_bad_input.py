"""Bad input gets a clear 4xx naming the problem, is counted in /metrics, and harms nothing."""

from __future__ import annotations

import asyncio
import gzip
import socket
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from conftest import DEMO_CONFIG, MODELS, Server, ort_outputs, v2_body

GOOD_ROW = [17.99, 10.38, 122.8, 1001.0, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419, 0.07871,
            1.095, 0.9053, 8.589, 153.4, 0.006399, 0.04904, 0.05373, 0.01587, 0.03003, 0.006193,
            25.38, 17.33, 184.6, 2019.0, 0.1622, 0.6656, 0.7119, 0.2654, 0.4601, 0.1189]
INFER = "/v2/models/breast-cancer/infer"


def tensor(**overrides: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": GOOD_ROW,
                        **overrides}]}


# (id, path, raw body, expected status, words the error must contain)
CASES: list[tuple[str, str, bytes, int, str]] = [
    ("malformed-json", INFER, b'{"inputs": [', 400, "not valid JSON"),
    ("not-an-object", INFER, b"[1, 2, 3]", 400, "JSON object"),
    ("no-inputs", INFER, b'{"outputs": []}', 400, "'inputs'"),
    ("unknown-input", INFER, orjson.dumps(tensor(name="x")), 400, "unknown input 'x'"),
    ("missing-input", "/v2/models/breast-cancer/infer",
     orjson.dumps({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32",
                               "data": GOOD_ROW}, {"name": "input", "shape": [1, 30],
                                                   "datatype": "FP32", "data": GOOD_ROW}]}),
     400, "more than once"),
    ("wrong-datatype", INFER, orjson.dumps(tensor(datatype="FP64")), 400,
     "datatype FP64, model expects FP32"),
    ("unknown-datatype", INFER, orjson.dumps(tensor(datatype="FLOAT")), 400, "'FLOAT'"),
    ("strings-as-fp32", INFER, orjson.dumps(tensor(data=["a"] * 30)), 400, "strings"),
    ("shape-vs-data", INFER, orjson.dumps(tensor(shape=[2, 30])), 400, "needs 60 values"),
    ("shape-vs-model", INFER, orjson.dumps(tensor(shape=[1, 15, 2])), 400,
     "model expects [-1, 30]"),
    ("wrong-width", INFER, orjson.dumps(tensor(shape=[3, 10])), 400, "model expects [-1, 30]"),
    ("negative-shape", INFER, orjson.dumps(tensor(shape=[-1, 30])), 400, "non-negative"),
    ("ragged-data", INFER, orjson.dumps(tensor(data=[[1.0, 2.0], [3.0]])), 400, "input 'input'"),
    ("batch-over-max", INFER, orjson.dumps(tensor(shape=[1025, 30], data=GOOD_ROW * 1025)), 400,
     "over the maximum of 1024"),
    ("empty-batch", INFER, orjson.dumps(tensor(shape=[0, 30], data=[])), 400, "no rows"),
    ("nan-literal", INFER, b'{"inputs":[{"name":"input","shape":[1,30],"datatype":"FP32",'
     b'"data":[NaN' + b",1.0" * 29 + b"]}]}", 400, "NaN or infinity"),
    ("fp32-overflow", INFER, orjson.dumps(tensor(data=[1e39, *GOOD_ROW[1:]])), 400,
     "NaN or infinity"),
    ("unknown-output", INFER, orjson.dumps({**tensor(), "outputs": [{"name": "score"}]}), 400,
     "unknown output 'score'"),
    ("unknown-model", "/v2/models/nope/infer", orjson.dumps(tensor()), 404, "unknown model 'nope'"),
    ("unknown-version", "/v2/models/breast-cancer/versions/9/infer", orjson.dumps(tensor()), 404,
     "no version '9'"),
    ("v1-no-instances", "/v1/models/breast-cancer:predict", b'{"rows": []}', 400, "instances"),
    ("v1-ragged", "/v1/models/breast-cancer:predict",
     orjson.dumps({"instances": [GOOD_ROW, GOOD_ROW[:5]]}), 400, "input 'input'"),
    ("v1-wrong-width", "/v1/models/diabetes:predict", orjson.dumps({"instances": [GOOD_ROW]}),
     400, "model expects [-1, 10]"),
    ("binary-size-without-header", INFER,
     orjson.dumps(tensor(parameters={"binary_data_size": 120})), 400,
     "inference-header-content-length"),
]


@pytest.mark.parametrize(("path", "body", "status", "words"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_counted_4xx(
    demo_server: Server, path: str, body: bytes, status: int, words: str
) -> None:
    model = path.split("/")[3].split(":")[0]
    model_label = model if model in ("breast-cancer", "diabetes") else ""
    before = demo_server.metric("canarygate_requests_total", model=model_label, code=str(status))
    with demo_server.client() as http:
        r = http.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        assert words in r.json()["error"]
        assert "Traceback" not in r.text
        # The server keeps serving.
        ok = http.post(INFER, json=tensor())
        assert ok.status_code == 200
    after = demo_server.metric("canarygate_requests_total", model=model_label, code=str(status))
    assert after == before + 1


def test_wrong_method_and_unknown_route_are_json_and_counted(demo_server: Server) -> None:
    before = demo_server.metric("canarygate_http_errors_total", code="405")
    with demo_server.client() as http:
        r = http.get(INFER)
        assert r.status_code == 405 and "method GET is not allowed" in r.json()["error"]
        r = http.get("/v3/nothing")
        assert r.status_code == 404 and "no route" in r.json()["error"]
        r = http.get("/v2/models/nope")
        assert r.status_code == 404 and "unknown model 'nope'" in r.json()["error"]
    assert demo_server.metric("canarygate_http_errors_total", code="405") == before + 1


def test_oversized_body_by_content_length(demo_server: Server) -> None:
    body = orjson.dumps(tensor(shape=[400_000, 30], data=GOOD_ROW * 400_000))
    assert len(body) > 8 * 1024 * 1024
    with demo_server.client() as http:
        r = http.post(INFER, content=body)
    assert r.status_code == 413 and "over the limit of 8388608 bytes" in r.json()["error"]


def small_limit_config(tmp_path: Path, extra_model: str = "") -> Path:
    config = tmp_path / "small.yaml"
    config.write_text(f"""
server: {{max_body_bytes: 4096, max_batch_size: 8}}
models_dir: {MODELS}
models:
  - name: breast-cancer
    versions: {{"1": {{path: breast-cancer/1}}}}
    baseline: "1"
  - name: diabetes
    versions: {{"1": {{path: diabetes/1}}}}
    baseline: "1"
    allow_non_finite: true
{extra_model}""")
    return config


def test_oversized_chunked_body_is_refused_before_it_ends(launch: Any, tmp_path: Path) -> None:
    """The answer comes while the client is still sending: the server stopped reading."""
    server = launch(small_limit_config(tmp_path))
    port = int(server.url.rsplit(":", 1)[1])
    chunk = b"x" * 1000
    head = (b"POST /v2/models/breast-cancer/infer HTTP/1.1\r\nhost: x\r\n"
            b"transfer-encoding: chunked\r\ncontent-type: application/json\r\n\r\n")
    # 5000 bytes of body, over the 4096 limit, in one write; the closing chunk never comes.
    partial = head + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 5
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(partial)
        answer = b""
        while b"bytes" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"over the limit of 4096 bytes" in answer


def test_decompression_bomb_is_413_and_gzip_works(launch: Any, tmp_path: Path) -> None:
    server = launch(small_limit_config(tmp_path))
    good = orjson.dumps(tensor())
    bomb = gzip.compress(b'{"inputs": "' + b" " * 1_000_000 + b'"}')
    with server.client() as http:
        r = http.post(INFER, content=gzip.compress(good), headers={"content-encoding": "gzip"})
        assert r.status_code == 200, r.text
        r = http.post(INFER, content=bomb, headers={"content-encoding": "gzip"})
        assert r.status_code == 413 and "decompressed" in r.json()["error"]
        r = http.post(INFER, content=good, headers={"content-encoding": "br"})
        assert r.status_code == 415 and "'br'" in r.json()["error"]
        r = http.post(INFER, content=b"not gzip", headers={"content-encoding": "gzip"})
        assert r.status_code == 400 and "not valid gzip" in r.json()["error"]
        r = http.post(INFER, content=orjson.dumps(tensor(shape=[9, 30], data=GOOD_ROW * 9)))
        assert r.status_code == 400 and "maximum of 8" in r.json()["error"]


def test_non_finite_values_allowed_when_the_model_says_so(launch: Any, tmp_path: Path) -> None:
    server = launch(small_limit_config(tmp_path))
    body = b'{"inputs":[{"name":"input","shape":[1,10],"datatype":"FP32","data":[NaN' + \
        b",0.01" * 9 + b"]}]}"
    with server.client() as http:
        r = http.post("/v2/models/diabetes/infer", content=body)
    assert r.status_code == 200, r.text
    # JSON has no NaN: a non-finite output is written as null (binary outputs keep it exact).
    assert r.json()["outputs"][0]["data"] == [None]


def test_bad_request_id_header(demo_server: Server) -> None:
    with demo_server.client() as http:
        r = http.post(INFER, json=tensor(), headers={"x-request-id": "x" * 300})
    assert r.status_code == 400 and "request id" in r.json()["error"]


def test_garbage_never_yields_a_5xx(demo_server: Server) -> None:
    rng = np.random.default_rng(0)
    pieces = [b"{", b"}", b"[", b"]", b'"inputs"', b'"name"', b'"input"', b'"shape"', b'"data"',
              b'"datatype"', b'"FP32"', b":", b",", b"1", b"-3", b"1e400", b"null", b"true",
              b'"x"', b"30", b"[1,30]", b'"BYTES"', b'"parameters"', b'"binary_data_size"']
    bodies = [b"".join(rng.choice(pieces, size=rng.integers(1, 40))) for _ in range(300)]
    # Near-misses of a valid body: each field replaced by a value of the wrong kind.
    for field in ("name", "shape", "datatype", "data", "parameters"):
        for value in (None, 1, "s", [], {}, [[]], [None], True):
            bodies.append(orjson.dumps(tensor(**{field: value})))
    with demo_server.client() as http:
        for body in bodies:
            for path in (INFER, "/v1/models/breast-cancer:predict"):
                r = http.post(path, content=body)
                assert r.status_code < 500, (body, r.text)
                assert "error" in r.json() or r.status_code == 200


def test_concurrent_mix_of_bad_and_good_requests(
    demo_server: Server, breast_cancer_rows: np.ndarray
) -> None:
    rows = breast_cancer_rows[:200]
    # One row per request, so the oracle runs one row at a time too.
    singles = [ort_outputs("breast-cancer", "2", rows[i:i + 1]) for i in range(len(rows))]
    bad_bodies = [c[2] for c in CASES if c[1] == INFER]

    async def fire() -> list[tuple[int, httpx.Response]]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=demo_server.url, limits=limits, timeout=60) as http:
            async def good(i: int) -> tuple[int, httpx.Response]:
                body = v2_body(rows[i:i + 1])
                return i, await http.post("/v2/models/breast-cancer/versions/2/infer", json=body)

            async def bad(i: int) -> tuple[int, httpx.Response]:
                body = bad_bodies[i % len(bad_bodies)]
                return -1, await http.post(INFER, content=body)

            tasks = [good(i) for i in range(len(rows))] + [bad(i) for i in range(200)]
            order = np.random.default_rng(1).permutation(len(tasks))
            return await asyncio.gather(*(tasks[j] for j in order))

    results = asyncio.run(fire())
    assert len(results) == 400
    for i, r in results:
        if i < 0:
            assert 400 <= r.status_code < 500, r.text
            continue
        assert r.status_code == 200, r.text
        out = {o["name"]: o["data"] for o in r.json()["outputs"]}
        assert out["label"] == singles[i]["label"].tolist()
        np.testing.assert_array_equal(np.array(out["probabilities"], dtype=np.float32),
                                      singles[i]["probabilities"][0])


def test_demo_config_is_the_one_served() -> None:
    assert DEMO_CONFIG.is_file()

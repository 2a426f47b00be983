"""Bad input gets a clear 4xx naming the problem, is counted in /metrics, and harms nothing."""

from __future__ import annotations

import asyncio
import gzip
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import orjson
import pytest
from onnx import TensorProto, helper

from canarygate.errors import BadRequest
from canarygate.runtime import ModelVersion, Tensor
from conftest import MODELS, Server, ort_outputs, start_server, v2_body

GOOD_ROW = [17.99, 10.38, 122.8, 1001.0, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419, 0.07871,
            1.095, 0.9053, 8.589, 153.4, 0.006399, 0.04904, 0.05373, 0.01587, 0.03003, 0.006193,
            25.38, 17.33, 184.6, 2019.0, 0.1622, 0.6656, 0.7119, 0.2654, 0.4601, 0.1189]
INFER = "/v2/models/breast-cancer/infer"
PREDICT = "/v1/models/breast-cancer:predict"


def tensor(**overrides: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": GOOD_ROW,
                        **overrides}]}


# (id, path, raw body, expected status, words the error must contain)
CASES: list[tuple[str, str, bytes, int, str]] = [
    ("malformed-json", INFER, b'{"inputs": [', 400, "not valid JSON"),
    ("not-an-object", INFER, b"[1, 2, 3]", 400, "JSON object"),
    ("no-inputs", INFER, b'{"outputs": []}', 400, "'inputs'"),
    ("unknown-input", INFER, orjson.dumps(tensor(name="x")), 400, "unknown input 'x'"),
    # A missing input needs a model with several inputs: see test_missing_input_*.
    ("too-many-inputs", INFER, orjson.dumps({"inputs": tensor()["inputs"] * 2}), 400,
     "request has 2 inputs, but model 'breast-cancer' takes 1: input"),
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
    ("repeated-output", INFER, orjson.dumps({**tensor(), "outputs": [{"name": "label"}] * 2}),
     400, "output 'label' is requested more than once"),
    ("deep-json", INFER, b"[" * 5000, 400, "nested too deeply"),
    ("v1-deep-json", PREDICT, b"[" * 5000, 400, "nested too deeply"),
    ("deep-json-with-nan", INFER, b"[" * 5000 + b"NaN", 400, "nested too deeply"),
    ("deep-bytes", INFER, b'{"inputs":[{"name":"input","shape":[1],"datatype":"BYTES","data":'
     + b"[" * 1000 + b'"a"' + b"]" * 1000 + b"}]}", 400, "nested deeper than 64 levels"),
    ("deep-numbers", INFER, b'{"inputs":[{"name":"input","shape":[1],"datatype":"FP32","data":'
     + b"[" * 1000 + b"1" + b"]" * 1000 + b"}]}", 400, "maximum number of dimension"),
    ("v1-deep-numbers", PREDICT, b'{"instances":' + b"[" * 1000 + b"1" + b"]" * 1000 + b"}", 400,
     "maximum number of dimension"),
    ("too-many-dims", INFER, orjson.dumps(tensor(shape=[1] * 100)), 400,
     "100 dimensions, over the maximum of 64"),
    ("empty-with-huge-dim", INFER, orjson.dumps(tensor(shape=[2**62, 0], data=[])), 400,
     "shape [4611686018427387904, 0] is not possible"),
    ("booleans-as-numbers", INFER, orjson.dumps(tensor(data=[True] * 30)), 400, "booleans"),
    ("lone-surrogate", INFER, b'{"id":"\\ud800","inputs":[{"name":"input","shape":[1,30],'
     b'"datatype":"FP32","data":[NaN' + b",1.0" * 29 + b"]}]}", 400, "lone UTF-16 surrogate"),
    ("not-utf8", INFER, b'{"inputs":"\xff\xfe"}', 400, "not valid UTF-8"),
    ("empty-body", INFER, b"", 400, "not valid JSON"),
    ("id-with-newline", INFER, orjson.dumps({**tensor(), "id": "a\r\nset-cookie: x=1"}), 400,
     "'id' must be a string of at most 256 printable ASCII characters"),
    ("id-too-long", INFER, orjson.dumps({**tensor(), "id": "x" * 257}), 400, "at most 256"),
    ("unknown-model", "/v2/models/nope/infer", orjson.dumps(tensor()), 404, "unknown model 'nope'"),
    ("unknown-version", "/v2/models/breast-cancer/versions/9/infer", orjson.dumps(tensor()), 404,
     "no version '9'"),
    ("v1-no-instances", "/v1/models/breast-cancer:predict", b'{"rows": []}', 400, "instances"),
    ("v1-ragged", "/v1/models/breast-cancer:predict",
     orjson.dumps({"instances": [GOOD_ROW, GOOD_ROW[:5]]}), 400, "input 'input'"),
    ("v1-wrong-width", "/v1/models/diabetes:predict", orjson.dumps({"instances": [GOOD_ROW]}),
     400, "model expects [-1, 10]"),
    ("v1-empty-body", PREDICT, b"", 400, "not valid JSON"),
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
    logged = demo_server.log.stat().st_size
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
    assert b"Traceback" not in demo_server.log.read_bytes()[logged:]


HEADER_CASES: list[tuple[str, str, dict[str, str], int, str]] = [
    (id_ + "-" + name, path, headers, status, words)
    for path, id_ in ((INFER, "v2"), (PREDICT, "v1"))
    for name, headers, status, words in [
        ("xml", {"content-type": "application/xml"}, 415,
         "content-type 'application/xml' is not supported"),
        ("multipart", {"content-type": "multipart/form-data; boundary=x"}, 415,
         "is not supported"),
        ("long-request-id", {"x-request-id": "x" * 300}, 400, "request id"),
    ]
] + [
    ("v2-huge-header-length", INFER, {"inference-header-content-length": "9" * 5000}, 400,
     "inference-header-content-length must be a number"),
    ("v2-negative-header-length", INFER, {"inference-header-content-length": "-1"}, 400,
     "inference-header-content-length must be a number"),
]


@pytest.mark.parametrize(("path", "headers", "status", "words"),
                         [c[1:] for c in HEADER_CASES], ids=[c[0] for c in HEADER_CASES])
def test_bad_headers_are_a_clear_counted_4xx(
    demo_server: Server, path: str, headers: dict[str, str], status: int, words: str
) -> None:
    body = orjson.dumps(tensor()) if path == INFER else orjson.dumps({"instances": [GOOD_ROW]})
    labels = {"model": "breast-cancer", "code": str(status)}
    before = demo_server.metric("canarygate_requests_total", **labels)
    with demo_server.client() as http:
        r = http.post(path, content=body, headers=headers)
        assert r.status_code == status, r.text
        assert words in r.json()["error"]
        # JSON labelled as JSON, curl's default form label, or no label at all are served.
        for label in ("application/json; charset=utf-8", "application/x-www-form-urlencoded",
                      None):
            ok = http.post(path, content=body, headers={"content-type": label} if label else {})
            assert ok.status_code == 200, (label, ok.text)
    assert demo_server.metric("canarygate_requests_total", **labels) == before + 1


def test_lone_surrogate_in_a_binary_request_header(demo_server: Server) -> None:
    """The header of a binary request is checked as a JSON body is (the Python-json path,
    taken for the NaN, must refuse the escape orjson refuses)."""
    head = (b'{"parameters":{"score":NaN},"inputs":[{"name":"\\ud800","shape":[1,30],'
            b'"datatype":"FP32","parameters":{"binary_data_size":120}}]}')
    body = head + np.array(GOOD_ROW, dtype=np.float32).tobytes()
    before = demo_server.metric("canarygate_requests_total", model="breast-cancer", code="400")
    with demo_server.client() as http:
        r = http.post(INFER, content=body,
                      headers={"inference-header-content-length": str(len(head))})
        assert r.status_code == 400, r.text
        assert "lone UTF-16 surrogate" in r.json()["error"]
        ok = http.post(INFER, content=body.replace(b"\\ud800", b"input"),
                       headers={"inference-header-content-length": str(len(head) - 1)})
        assert ok.status_code == 200, ok.text
    assert demo_server.metric("canarygate_requests_total", model="breast-cancer",
                              code="400") == before + 1


def test_wrong_method_on_prediction_routes_is_405_and_counted(demo_server: Server) -> None:
    wrong = [("GET", INFER), ("PUT", INFER), ("GET", "/v2/models/breast-cancer/versions/1/infer"),
             ("GET", PREDICT), ("DELETE", PREDICT), ("GET", "/v1/models/diabetes:predict")]
    before = demo_server.metric("canarygate_http_errors_total", code="405")
    with demo_server.client() as http:
        for method, path in wrong:
            r = http.request(method, path)
            assert r.status_code == 405, (method, path, r.text)
            assert r.json()["error"] == f"method {method} is not allowed on {path}"
            assert r.headers["allow"] == "POST"
        # The V1 metadata route still answers for a model, and only for a model.
        assert http.get("/v1/models/breast-cancer").json() == {"name": "breast-cancer",
                                                               "ready": True}
        r = http.get("/v1/models/breast-cancer:explain")
        assert r.status_code == 404 and "no route" in r.json()["error"]
    assert demo_server.metric("canarygate_http_errors_total", code="405") == before + len(wrong)


def test_unknown_route_and_model_metadata_are_404_and_counted(demo_server: Server) -> None:
    before = demo_server.metric("canarygate_http_errors_total", code="404")
    with demo_server.client() as http:
        r = http.get("/v3/nothing")
        assert r.status_code == 404 and r.json()["error"] == "no route for /v3/nothing"
        r = http.post("/v2/models/breast-cancer/explain", content=b"{}")
        assert r.status_code == 404 and "no route" in r.json()["error"]
        r = http.get("/v2/models/nope")
        assert r.status_code == 404 and "unknown model 'nope'" in r.json()["error"]
        r = http.get("/v2/models/breast-cancer/versions/9")
        assert r.status_code == 404 and "no version '9'" in r.json()["error"]
    assert demo_server.metric("canarygate_http_errors_total", code="404") == before + 4


def test_oversized_body_by_content_length(demo_server: Server) -> None:
    body = orjson.dumps(tensor(shape=[400_000, 30], data=GOOD_ROW * 400_000))
    assert len(body) > 8 * 1024 * 1024
    labels = {"model": "breast-cancer", "code": "413"}
    before = demo_server.metric("canarygate_requests_total", **labels)
    with demo_server.client() as http:
        r = http.post(INFER, content=body)
        assert r.status_code == 413 and "over the limit of 8388608 bytes" in r.json()["error"]
        assert http.post(INFER, json=tensor()).status_code == 200
    assert demo_server.metric("canarygate_requests_total", **labels) == before + 1


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
        assert http.post(INFER, content=good).status_code == 200
        # Header values are case-insensitive; a body cut short or with bytes after its end
        # is not what the client meant to send.
        r = http.post(INFER, content=gzip.compress(good), headers={"content-encoding": "GZip"})
        assert r.status_code == 200, r.text
        for broken in (gzip.compress(good)[:-4], gzip.compress(good) + b"junk"):
            r = http.post(INFER, content=broken, headers={"content-encoding": "gzip"})
            assert r.status_code == 400 and "truncated or followed" in r.json()["error"]
    # A fresh server: each refusal above is on /metrics under its own code.
    for code, count in (("200", 3), ("413", 1), ("415", 1), ("400", 4)):
        assert server.metric("canarygate_requests_total", model="breast-cancer",
                             code=code) == count, code


def test_non_finite_values_allowed_when_the_model_says_so(launch: Any, tmp_path: Path) -> None:
    server = launch(small_limit_config(tmp_path))
    body = b'{"inputs":[{"name":"input","shape":[1,10],"datatype":"FP32","data":[NaN' + \
        b",0.01" * 9 + b"]}]}"
    with server.client() as http:
        r = http.post("/v2/models/diabetes/infer", content=body)
    assert r.status_code == 200, r.text
    # JSON has no NaN: a non-finite output is written as null (binary outputs keep it exact).
    assert r.json()["outputs"][0]["data"] == [None]


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


# A model of several inputs of several datatypes, none of them named "input": the demo models
# each have one FP32 input, which leaves the missing-input, integer-range and BYTES paths unrun.
MIXED_INPUTS = [("x", TensorProto.FLOAT, [None, 2]), ("n", TensorProto.INT8, [None, 2]),
                ("t", TensorProto.STRING, [None])]


def mixed_model(folder: Path) -> None:
    """``sum = x + n`` (FP32) and ``text = t`` (BYTES), every axis batched."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["n"], ["n_float"], to=TensorProto.FLOAT),
         helper.make_node("Add", ["x", "n_float"], ["sum"]),
         helper.make_node("Identity", ["t"], ["text"])],
        "mixed",
        [helper.make_tensor_value_info(*i) for i in MIXED_INPUTS],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, [None, 2]),
         helper.make_tensor_value_info("text", TensorProto.STRING, [None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True)
    onnx.save(model, folder / "model.onnx")


@pytest.fixture(scope="module")
def mixed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("mixed")
    mixed_model(tmp / "models" / "mixed" / "1")
    config = tmp / "mixed.yaml"
    config.write_text(f"""
models_dir: {tmp / "models"}
state_dir: {tmp / "state"}
dataset: {{dir: {tmp / "dataset"}}}
models:
  - {{name: mixed, versions: {{"1": {{path: mixed/1}}}}, baseline: "1"}}
""")
    server = start_server(config, tmp)
    yield server
    server.stop()


def test_missing_input_in_process(tmp_path: Path) -> None:
    mixed_model(tmp_path / "mixed")
    version = ModelVersion.load("mixed", "1", tmp_path / "mixed")
    x = Tensor("x", "FP32", np.zeros((1, 2), dtype=np.float32))
    n = Tensor("n", "INT8", np.zeros((1, 2), dtype=np.int8))
    t = Tensor("t", "BYTES", np.array(["a"], dtype=np.object_))
    assert set(version.feeds([x, n, t])) == {"x", "n", "t"}
    with pytest.raises(BadRequest, match="missing input 'n'; model 'mixed' expects: x, n, t"):
        version.feeds([x, t])
    with pytest.raises(BadRequest, match="unknown input 'input'"):
        version.feeds([Tensor("input", "FP32", x.data), n, t])


def mixed_body(**changes: Any) -> dict[str, Any]:
    inputs = {"x": {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1.5, 2, 3, 4]},
              "n": {"name": "n", "shape": [2, 2], "datatype": "INT8", "data": [-128, 1, 2, 127]},
              "t": {"name": "t", "shape": [2], "datatype": "BYTES", "data": ["é", "b"]}}
    for name, change in changes.items():
        if change is None:
            del inputs[name]
        else:
            inputs[name] = {**inputs[name], **change}
    return {"inputs": list(inputs.values())}


def binary_bytes_body(items: list[bytes], blob: bytes | None = None
                      ) -> tuple[bytes, dict[str, str]]:
    """``t`` in the binary extension: each element a 4-byte length, then its bytes."""
    if blob is None:
        blob = b"".join(struct.pack("<I", len(i)) + i for i in items)
    head = mixed_body(t={"shape": [len(items)], "parameters": {"binary_data_size": len(blob)}})
    del head["inputs"][2]["data"]
    json_part = orjson.dumps(head)
    return json_part + blob, {"inference-header-content-length": str(len(json_part))}


def test_several_inputs_and_bytes_are_served(mixed_server: Server) -> None:
    with mixed_server.client() as http:
        r = http.post("/v2/models/mixed/infer", json=mixed_body())
        assert r.status_code == 200, r.text
        out = {o["name"]: o for o in r.json()["outputs"]}
        assert out["sum"]["data"] == [-126.5, 3.0, 5.0, 131.0]
        assert out["text"] == {"name": "text", "datatype": "BYTES", "shape": [2],
                               "data": ["é", "b"]}
        # Binary BYTES elements are UTF-8 text to the model, not the repr of a bytes object.
        body, headers = binary_bytes_body(["é".encode(), b"b"])
        r = http.post("/v2/models/mixed/infer", content=body, headers=headers)
        assert r.status_code == 200, r.text
        assert {o["name"]: o for o in r.json()["outputs"]}["text"]["data"] == ["é", "b"]
        r = http.post("/v1/models/mixed:predict", json={"instances": [
            {"x": [1, 2], "n": [3, 4], "t": "é"}, {"x": [0, 0], "n": [0, -1], "t": "z"}]})
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": [{"sum": [4.0, 6.0], "text": "é"},
                                            {"sum": [0.0, -1.0], "text": "z"}]}


def deep(value: bytes, depth: int) -> bytes:
    return b"[" * depth + value + b"]" * depth


MIXED_V2 = "/v2/models/mixed/infer"
MIXED_V1 = "/v1/models/mixed:predict"
ROWS = [{"x": [1, 2], "n": [3, 4], "t": "a"}]
MIXED_CASES: list[tuple[str, str, bytes | tuple[bytes, dict[str, str]], str]] = [
    ("missing-input", MIXED_V2, orjson.dumps(mixed_body(n=None)),
     "missing input 'n'; model 'mixed' expects: x, n, t"),
    ("renamed-input", MIXED_V2, orjson.dumps(mixed_body(n={"name": "input"})),
     "unknown input 'input'"),
    ("repeated-input", MIXED_V2, orjson.dumps(
        {"inputs": mixed_body(n=None)["inputs"] + mixed_body(n=None)["inputs"][:1]}),
     "input 'x' is given more than once"),
    ("int8-over", MIXED_V2, orjson.dumps(mixed_body(n={"data": [0, 0, 0, 128]})),
     "value 128 is out of range for INT8 (-128 to 127)"),
    ("int8-under", MIXED_V2, orjson.dumps(mixed_body(n={"data": [0, -129, 0, 0]})),
     "value -129 is out of range for INT8"),
    ("int-beyond-64-bits", MIXED_V2, orjson.dumps(mixed_body(n={"data": [0, 0, 0, 1e30]})),
     "needs numbers of that type, but data holds integers beyond 64 bits"),
    ("fraction-as-int", MIXED_V2, orjson.dumps(mixed_body(n={"data": [0, 0, 0, 0.5]})),
     "holds fractional numbers"),
    ("bytes-of-numbers", MIXED_V2, orjson.dumps(mixed_body(t={"data": [1, 2]})),
     "datatype BYTES needs strings, but data holds int"),
    ("bytes-of-objects", MIXED_V2, orjson.dumps(mixed_body(t={"data": [{}, None]})),
     "datatype BYTES needs strings, but data holds dict"),
    ("bytes-deep", MIXED_V2, orjson.dumps(mixed_body(t={"data": "DEEP"})).replace(
        b'"DEEP"', deep(b'"a"', 1000)), "nested deeper than 64 levels"),
    ("bytes-shape-vs-data", MIXED_V2, orjson.dumps(mixed_body(t={"shape": [3]})),
     "shape [3] needs 3 values, but data has 2"),
    ("binary-bytes-not-utf8", MIXED_V2, binary_bytes_body([b"a", b"\xff"]),
     "BYTES element 1 is not valid UTF-8"),
    ("binary-bytes-truncated", MIXED_V2,
     binary_bytes_body([b"a", b"bc"], struct.pack("<I", 1) + b"a" + struct.pack("<I", 9) + b"bc"),
     "input 't': BYTES binary data is truncated"),
    ("v1-missing-input", MIXED_V1, orjson.dumps({"instances": [{"x": [1, 2], "t": "a"}]}),
     "an instance lacks input 'n'"),
    ("v1-unknown-input", MIXED_V1, orjson.dumps({"instances": [{**ROWS[0], "input": 1}]}),
     "an instance has unknown input 'input'"),
    ("v1-rows-not-objects", MIXED_V1, orjson.dumps({"instances": [[1, 2]]}),
     "each instance must be an object keyed by input name"),
    ("v1-bytes-ragged", MIXED_V1, orjson.dumps({"instances": [{**ROWS[0], "t": ["a"]}, ROWS[0]]}),
     "input 't': data is ragged"),
    ("v1-bytes-deep", MIXED_V1, orjson.dumps({"instances": [ROWS[0]]}).replace(
        b'"t":"a"', b'"t":' + deep(b'"a"', 1000)), "input 't': data is nested deeper than 64"),
    ("v1-int8-over", MIXED_V1, orjson.dumps({"instances": [{**ROWS[0], "n": [1, 300]}]}),
     "value 300 is out of range for INT8"),
]


@pytest.mark.parametrize(("path", "body", "words"), [c[1:] for c in MIXED_CASES],
                         ids=[c[0] for c in MIXED_CASES])
def test_bad_input_to_several_inputs_is_a_clear_counted_400(
    mixed_server: Server, path: str, body: bytes | tuple[bytes, dict[str, str]], words: str
) -> None:
    body, headers = body if isinstance(body, tuple) else (body, {})  # binary: with its header
    before = mixed_server.metric("canarygate_requests_total", model="mixed", code="400")
    logged = mixed_server.log.stat().st_size
    with mixed_server.client() as http:
        r = http.post(path, content=body, headers=headers)
        assert r.status_code == 400, r.text
        assert words in r.json()["error"]
        assert http.post(MIXED_V2, json=mixed_body()).status_code == 200
    assert mixed_server.metric("canarygate_requests_total", model="mixed", code="400") == before + 1
    assert b"Traceback" not in mixed_server.log.read_bytes()[logged:]

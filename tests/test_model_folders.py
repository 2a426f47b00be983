"""Version folders are read only inside the models directory, only as regular files, only up to
their size limits, and an ONNX file that would expand into large constants is refused before
onnxruntime sees it (issue 11, finding 8); model and version names have a documented rule."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from canarygate.config import NAME_RULE, ModelFilesConfig, load_config, parse_config
from canarygate.errors import ConfigError
from canarygate.runtime import ModelRegistry
from canarygate.runtime.graph import check_model
from conftest import (
    ADMIN_TOKEN,
    AUTH,
    DEMO_CONFIG,
    GOOD_ROW_BODY,
    MODELS,
    Server,
    gateway_config,
    start_server,
)

BOMB_BYTES = 256 * 1024 * 1024  # what the small file below expands to


def onnx_bytes(nodes: list[Any], initializers: list[Any] | None = None,
               output: str = "out", out_type: int = TensorProto.FLOAT) -> bytes:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 30])],
        [helper.make_tensor_value_info(output, out_type, None)], initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def constant_of_shape_bomb(via_initializer: bool = False) -> bytes:
    """~400 bytes that make a 256 MiB float tensor when onnxruntime folds constants."""
    shape = np.array([64, 1024, 1024], dtype=np.int64)
    if via_initializer:
        nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"],
                                  value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))]
        inits = [numpy_helper.from_array(shape, "shape")]
    else:
        nodes = [helper.make_node("Constant", [], ["shape"],
                                  value=numpy_helper.from_array(shape, "s")),
                 helper.make_node("ConstantOfShape", ["shape"], ["big"],
                                  value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))]
        inits = []
    nodes += [helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
              helper.make_node("Add", ["input", "total"], ["out"])]
    return onnx_bytes(nodes, inits)


def sparse_bomb() -> bytes:
    """A sparse constant of one value whose dense form is 256 MiB."""
    values = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    indices = helper.make_tensor("i", TensorProto.INT64, [1], [0])
    sparse = helper.make_sparse_tensor(values, indices, [64 * 1024 * 1024])
    nodes = [helper.make_node("Constant", [], ["big"], sparse_value=sparse),
             helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
             helper.make_node("Add", ["input", "total"], ["out"])]
    return onnx_bytes(nodes)


def external_data_model() -> bytes:
    tensor = numpy_helper.from_array(np.ones(30, dtype=np.float32), "w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../../etc/passwd"
    return onnx_bytes([helper.make_node("Add", ["input", "w"], ["out"])], [tensor])


# -- the graph check, in process --------------------------------------------------------------


@pytest.mark.parametrize("make", [constant_of_shape_bomb,
                                  lambda: constant_of_shape_bomb(via_initializer=True),
                                  sparse_bomb])
def test_a_small_file_that_expands_beyond_the_budget_is_refused(make: Any) -> None:
    data = make()
    assert len(data) < 600
    with pytest.raises(ConfigError, match=r"max_constant_bytes") as caught:
        check_model(data, ModelFilesConfig().max_constant_bytes, "model 'm' version '9'")
    assert "model 'm' version '9'" in str(caught.value)
    check_model(data, BOMB_BYTES + 1024, "m")  # the same file within a budget that fits it


def test_external_data_and_garbage_are_refused() -> None:
    with pytest.raises(ConfigError, match="external file"):
        check_model(external_data_model(), 1 << 20, "m")
    with pytest.raises(ConfigError, match="not an ONNX model"):
        check_model(b"garbage", 1 << 20, "m")


def test_a_node_of_constants_whose_size_cannot_be_inferred_is_refused() -> None:
    # Unique's output length depends on the values: shape inference cannot size it.
    nodes = [helper.make_node("Constant", [], ["c"], value_floats=[1.0]),
             helper.make_node("Unique", ["c"], ["u"]),
             helper.make_node("Add", ["input", "u"], ["out"])]
    with pytest.raises(ConfigError, match="cannot be inferred"):
        check_model(onnx_bytes(nodes), 1 << 30, "m")


def test_every_demo_model_passes_the_check_with_the_defaults() -> None:
    budget = ModelFilesConfig().max_constant_bytes
    for path in sorted(MODELS.glob("*/*/model.onnx")):
        check_model(path.read_bytes(), budget, str(path))


def test_the_demo_config_and_models_load_with_the_defaults() -> None:
    config = load_config(DEMO_CONFIG)
    assert config.model_files == ModelFilesConfig()
    registry = ModelRegistry.load(config)
    assert set(registry.models) == {m.name for m in config.models}


def test_names_have_a_rule_in_the_config() -> None:
    base = {"models": [{"name": "m", "versions": {"1": {"path": "m/1"}}, "baseline": "1"}]}
    parse_config(base)
    long = "v" * 3000
    bad = {"models": [{"name": "m", "versions": {long: {"path": "m/1"}}, "baseline": long}]}
    with pytest.raises(ConfigError) as caught:
        parse_config(bad)
    assert NAME_RULE in str(caught.value) and "3000 characters" in str(caught.value)
    assert len(str(caught.value)) < 600  # the name does not come back whole
    with pytest.raises(ConfigError, match="1 to 64 characters"):
        parse_config({"models": [{**base["models"][0], "name": "m" * 65}]})
    for key, value in (("max_model_bytes", 10), ("max_file_bytes", 2 ** 40),
                       ("max_constant_bytes", -1)):
        with pytest.raises(ConfigError, match=f"model_files.{key}"):
            parse_config({**base, "model_files": {key: value}})


# -- through the admin API of a real server ---------------------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    tmp = tmp_path_factory.mktemp("folders")
    models, outside = tmp / "models", tmp / "outside"
    shutil.copytree(MODELS / "breast-cancer" / "1", models / "breast-cancer" / "1")
    outside.mkdir()
    shutil.copy(MODELS / "breast-cancer" / "2" / "model.onnx", outside / "model.onnx")

    def folder(name: str, model: Path | None = MODELS / "breast-cancer" / "2" / "model.onnx"
               ) -> Path:
        path = models / name
        path.mkdir(parents=True)
        if model is not None:
            shutil.copy(model, path / "model.onnx")
        return path

    folder("link-out", None).joinpath("model.onnx").symlink_to(outside / "model.onnx")
    folder("link-in", None).joinpath("model.onnx").symlink_to(
        models / "breast-cancer" / "1" / "model.onnx")
    folder("mem").joinpath("metadata.json").symlink_to("/proc/self/mem")
    os.mkfifo(folder("fifo") / "metadata.json")
    folder("big-meta").joinpath("metadata.json").write_text(" " * 140_000 + "{}")
    folder("profile-out").joinpath("profile.json").symlink_to(
        MODELS / "breast-cancer" / "2" / "profile.json")
    folder("bomb", None).joinpath("model.onnx").write_bytes(constant_of_shape_bomb())
    folder("big-model").joinpath("model.onnx").write_bytes(b"\0" * (2 << 20))
    config = tmp / "gateway.yaml"
    config.write_text(f"""
models_dir: {models}
state_dir: {tmp / "state"}
model_files: {{max_file_bytes: 131072, max_model_bytes: 1048576}}
models:
  - {{name: breast-cancer, versions: {{"1": {{path: breast-cancer/1}}}}, baseline: "1"}}
""")
    server = start_server(config, tmp, {"CANARYGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    yield server, outside
    server.stop()


REFUSED = [
    ("link-out", "model.onnx resolves to", "outside the models directory"),
    ("mem", "metadata.json resolves to", "outside the models directory"),
    ("fifo", "metadata.json is not a regular file", ""),
    ("big-meta", "metadata.json is 140002 bytes", "model_files.max_file_bytes"),
    ("profile-out", "profile.json resolves to", "outside the models directory"),
    ("bomb", "268435456 bytes of constants", "model_files.max_constant_bytes"),
    ("big-model", "model.onnx is 2097152 bytes", "model_files.max_model_bytes"),
]


def peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def register(server: Server, version: str, path: str) -> httpx.Response:
    return httpx.post(f"{server.url}/admin/models/breast-cancer/versions", headers=AUTH,
                      json={"version": version, "path": path}, timeout=60)


@pytest.mark.parametrize(("path", "words", "more"), REFUSED, ids=[r[0] for r in REFUSED])
def test_a_bad_folder_is_refused_with_a_4xx_naming_the_file(
        gateway: tuple[Server, Path], path: str, words: str, more: str) -> None:
    server, _ = gateway
    counted = server.metric("canarygate_http_errors_total", code="400")
    peak = peak_kib(server.process.pid)
    r = register(server, f"v-{path}", path)
    assert r.status_code == 400, r.text
    assert words in r.json()["error"] and more in r.json()["error"], r.text
    assert server.metric("canarygate_http_errors_total", code="400") == counted + 1
    # Refused before anything was built: the server's peak memory did not move by the bomb.
    assert peak_kib(server.process.pid) - peak < 64 * 1024
    versions = httpx.get(f"{server.url}/admin/models/breast-cancer/versions", headers=AUTH)
    assert f"v-{path}" not in [v["version"] for v in versions.json()["versions"]]


def test_a_link_inside_the_models_directory_is_read(gateway: tuple[Server, Path]) -> None:
    server, _ = gateway
    r = register(server, "linked", "link-in")
    assert r.status_code == 201, r.text


def test_a_3000_character_version_name_gets_a_400_naming_the_rule(
        gateway: tuple[Server, Path]) -> None:
    server, _ = gateway
    r = register(server, "v" * 3000, "link-in")
    assert r.status_code == 400
    assert NAME_RULE in r.json()["error"] and "3000 characters" in r.json()["error"]
    assert len(r.text) < 1000


def test_a_stored_version_whose_name_breaks_the_rule_is_not_served(tmp_path: Path) -> None:
    # The state store is a file, or Redis that other workers write: a version name read back
    # from it goes into answers' headers, so a line break in it would inject one.
    state = tmp_path / "state"
    state.mkdir()
    (state / "versions.json").write_text(json.dumps({"breast-cancer": {
        "2\r\nx-injected: 1": {"path": "breast-cancer/2"}, "r2": {"path": "breast-cancer/2"}}}))
    server = start_server(gateway_config(tmp_path, versions={"breast-cancer": ("1",)}),
                          tmp_path, {"CANARYGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    try:
        listed = httpx.get(f"{server.url}/admin/models/breast-cancer/versions", headers=AUTH,
                           timeout=10).json()["versions"]
        assert sorted(v["version"] for v in listed) == ["1", "r2"]
        r = httpx.post(f"{server.url}/v2/models/breast-cancer/versions/r2/infer",
                       content=GOOD_ROW_BODY, timeout=10)
        assert r.status_code == 200 and r.headers["x-model-version"] == "r2"
        assert "x-injected" not in r.headers
        log = server.log.read_text()
        assert "the stored version name '2\\r\\nx-injected: 1' is not" in log, log[-2000:]
    finally:
        server.stop()

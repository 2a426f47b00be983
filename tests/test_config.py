"""A wrong config fails at start with a message naming the key and the problem."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from canarygate.config import GatewayConfig, ModelConfig, load_config
from canarygate.errors import ConfigError
from conftest import DEMO_CONFIG, MODELS, ROOT

GOOD = f"""
models_dir: {MODELS}
models:
  - name: breast-cancer
    versions: {{"1": {{path: breast-cancer/1}}, "2": {{path: breast-cancer/2}}}}
    baseline: "1"
"""


def model(config: GatewayConfig, name: str) -> ModelConfig:
    return next(m for m in config.models if m.name == name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_demo_config_loads_and_resolves_models_dir() -> None:
    config = load_config(DEMO_CONFIG)
    assert config.models_dir == MODELS
    assert [m.name for m in config.models] == ["breast-cancer", "diabetes"]
    assert model(config, "breast-cancer").candidate == "2"


def test_demo_config_writes_under_var_which_the_image_makes_writable() -> None:
    """``make serve`` and the image write state and dataset to ``var/``, not ``config/var``; the
    image runs as a non-root user, so the Dockerfile must hand it exactly that folder."""
    config = load_config(DEMO_CONFIG)
    assert config.state_dir == ROOT / "var" / "state"
    assert config.dataset.dir == ROOT / "var" / "dataset"
    dockerfile = (ROOT / "Dockerfile").read_text()
    lines = dockerfile.splitlines()
    assert "WORKDIR /app" in lines and "USER canarygate" in lines
    mkdir = next(line for line in lines if "mkdir" in line)
    for folder in (config.state_dir, config.dataset.dir):
        assert f"/app/{folder.relative_to(ROOT).as_posix()}" in mkdir.split()
    assert "chown -R canarygate:canarygate /app/var" in mkdir
    # What the image copies from the build context is not left out of it by .dockerignore.
    copied = [word for line in lines if line.startswith("COPY") and "--from" not in line
              for word in line.split()[1:-1] if not word.startswith("--")]
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    assert {"pyproject.toml", readme, "src", "config", "models"} <= set(copied)
    ignore = (ROOT / ".dockerignore").read_text().split()
    star = ignore.index("*")  # an allow-list: everything out, then what the image needs back in
    for source in copied:
        assert f"!{source}" in ignore[star:], source


def test_numeric_version_keys_are_read_as_names(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD.replace('"1"', "1")))
    assert model(config, "breast-cancer").baseline == "1"
    assert set(model(config, "breast-cancer").versions) == {"1", "2"}


@pytest.mark.parametrize(("change", "words"), [
    (("baseline: \"1\"", "baseline: \"7\""), ["models[0] (breast-cancer)", "baseline '7'"]),
    (("baseline: \"1\"", "baseline: \"1\"\n    candidate: \"1\""),
     ["candidate and baseline must be different"]),
    (("baseline: \"1\"", "baseline: \"1\"\n    candidat: \"2\""),
     ["models[0] (breast-cancer).candidat", "unknown key"]),
    (("name: breast-cancer", "name: 'bad name'"), ["models[0] (bad name).name", "bad name"]),
    (("baseline: \"1\"", "baseline: \"1\"\n    rollout: {steps: [5, 1]}"),
     ["rollout.steps", "1.0 follows 5.0"]),
    (("baseline: \"1\"", "baseline: \"1\"\n    rollout: {steps: [50, 150]}"),
     ["rollout.steps", "(0, 100]"]),
    (("models_dir:", "server: {port: 70000}\nmodels_dir:"), ["server.port", "70000"]),
    (("models_dir:", "server: {max_body_bytes: 0}\nmodels_dir:"), ["server.max_body_bytes"]),
])
def test_config_errors_name_the_key(
    tmp_path: Path, change: tuple[str, str], words: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, GOOD.replace(*change, 1)))
    for word in words:
        assert word in str(err.value)


def test_missing_models_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="models: required key is missing"):
        load_config(write(tmp_path, "server: {port: 1}\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "models: [\n"))
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(write(tmp_path, "- 1\n"))

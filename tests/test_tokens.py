"""Named admin tokens in the config: checked at load, each name unique."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from canarygate.config import load_config
from canarygate.errors import ConfigError
from conftest import demo_config


def with_tokens(tmp: Path, tokens: list[dict[str, str]]) -> Path:
    path = demo_config(tmp)
    raw = yaml.safe_load(path.read_text())
    raw["admin"]["tokens"] = tokens
    path.write_text(yaml.safe_dump(raw))
    return path


def test_named_tokens_load(tmp_path: Path) -> None:
    config = load_config(with_tokens(tmp_path, [
        {"name": "alice", "role": "operator", "env": "A"},
        {"name": "grafana", "role": "viewer", "env": "G"}]))
    assert [(t.name, t.role) for t in config.admin.tokens] == [("alice", "operator"),
                                                               ("grafana", "viewer")]


@pytest.mark.parametrize(("tokens", "words"), [
    ([{"name": "a", "role": "operator", "env": "A"}, {"name": "a", "role": "viewer", "env": "B"}],
     "unique"),
    ([{"name": "admin", "role": "viewer", "env": "B"}], "not 'admin'"),
    ([{"name": "a", "role": "root", "env": "A"}], "role"),
    ([{"name": "a", "role": "viewer"}], "env"),
])
def test_bad_tokens_name_the_key(tmp_path: Path, tokens: list[dict[str, str]],
                                 words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(with_tokens(tmp_path, tokens))
    assert "admin.tokens" in str(caught.value) and words in str(caught.value)

"""The request path does not import the control path (read with ast, not by running it)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "canarygate"
HOT = ["router.py", "http/infer.py", "http/asgi.py", "http/codec.py", "http/v1.py",
       "http/v2.py", "runtime/model.py", "runtime/runner.py", "runtime/tensors.py",
       "stats/arm.py", "stats/histogram.py", "protocol.py"]
COLD = ("canarygate.rollout.judge", "canarygate.rollout.manager", "canarygate.rollout.persist",
        "canarygate.rollout.store", "canarygate.http.admin", "scipy")


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_hot_modules_import_nothing_from_the_control_path() -> None:
    for name in HOT:
        bad = [m for m in imports(SRC / name) if m.startswith(COLD)]
        assert not bad, f"{name} imports {bad}"

"""The request path does not import the control path, directly or through anything it imports
(read with ast, not by running it; imports under ``if TYPE_CHECKING:`` are not run, so they do
not count)."""

from __future__ import annotations

import ast
import shutil
from collections import deque
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# The request path: parse -> route -> run -> respond, and the O(1) telemetry it hands over.
HOT = ("canarygate.http", "canarygate.serving", "canarygate.runtime", "canarygate.stats",
       "canarygate.feedback", "canarygate.router", "canarygate.recorder.queue",
       "canarygate.metrics", "canarygate.errors", "canarygate.transport")
# The control path, and what it alone may use.
COLD = ("canarygate.rollout", "canarygate.drift", "canarygate.admin", "canarygate.analysis",
        "canarygate.app", "canarygate.cli", "canarygate.recorder.writer",
        "canarygate.recorder.reader", "scipy")


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def module_names(src: Path) -> dict[str, Path]:
    names = {}
    for path in (src / "canarygate").rglob("*.py"):
        parts = path.relative_to(src).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _run_time(tree: ast.Module) -> list[ast.stmt]:
    """Every statement but the bodies of ``if TYPE_CHECKING:`` blocks."""
    kept: list[ast.stmt] = []
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        kept.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                todo.append(child)
    return kept


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """What importing module ``name`` imports: each module and, for a submodule, its
    packages (importing ``a.b.c`` runs ``a`` and ``a.b`` first)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in _run_time(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1],
                                 *([base] if base else [])])
            targets = [base] + [f"{base}.{a.name}" for a in node.names
                                if f"{base}.{a.name}" in known]
        for target in targets:
            parts = target.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found


def violations(src: Path) -> list[str]:
    """Each hot module that reaches a cold one, with the chain of imports that gets there."""
    known = module_names(src)
    graph = {name: imports(name, path, known) for name, path in known.items()}
    problems = []
    for start in sorted(n for n in known if within(n, HOT)):
        parent: dict[str, str | None] = {start: None}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            if within(node, COLD):
                chain = [node]
                while (step := parent[chain[-1]]) is not None:
                    chain.append(step)
                problems.append(" -> ".join(reversed(chain)))
                break
            for nxt in graph.get(node, ()):
                if nxt not in parent:
                    parent[nxt] = node
                    queue.append(nxt)
    return problems


def test_the_request_path_reaches_nothing_of_the_control_path() -> None:
    assert violations(SRC) == []


def test_hot_and_cold_name_real_modules() -> None:
    """A renamed package must not leave a rule that guards nothing."""
    known = module_names(SRC)
    for prefix in (*HOT, *COLD):
        assert prefix == "scipy" or any(within(n, (prefix,)) for n in known), prefix


def test_a_wrong_import_two_steps_away_is_found(tmp_path: Path) -> None:
    """The check follows imports: a hot module importing an innocent-looking helper that
    imports the judge (and scipy with it) fails, with the chain named."""
    shutil.copytree(SRC / "canarygate", tmp_path / "canarygate")
    (tmp_path / "canarygate" / "helper.py").write_text(
        "from canarygate.rollout.judge import log_e_value\n")
    router = tmp_path / "canarygate" / "router.py"
    router.write_text("from canarygate import helper\n" + router.read_text())
    found = violations(tmp_path)
    chain = "canarygate.router -> canarygate.helper -> canarygate.rollout"
    assert any(p.startswith(chain) for p in found), found
    assert any(p.startswith("canarygate.http.infer -> ") for p in found)


def test_an_import_only_for_type_checking_is_not_one(tmp_path: Path) -> None:
    shutil.copytree(SRC / "canarygate", tmp_path / "canarygate")
    router = tmp_path / "canarygate" / "router.py"
    router.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from canarygate.rollout.manager import RolloutManager\n"
                      + router.read_text())
    assert violations(tmp_path) == []


MAX_FUNCTION_LINES = 60


def long_functions(src: Path) -> list[str]:
    """Functions over ``MAX_FUNCTION_LINES`` lines with no reason given for their length (a
    ``# long: ...`` comment on the line above the ``def``)."""
    found = []
    for path in sorted((src / "canarygate").rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            above = lines[first - 2].strip() if first > 1 else ""
            if size > MAX_FUNCTION_LINES and not above.startswith("# long:"):
                found.append(f"{path.relative_to(src)}:{node.lineno} {node.name} ({size} lines)")
    return found


def test_no_long_function_without_a_reason() -> None:
    assert long_functions(SRC) == []


def test_a_long_function_is_found_and_a_reason_excuses_it(tmp_path: Path) -> None:
    (tmp_path / "canarygate").mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    module = tmp_path / "canarygate" / "m.py"
    module.write_text(f"def f() -> None:\n{body}")
    assert long_functions(tmp_path) == [f"canarygate/m.py:1 f ({MAX_FUNCTION_LINES + 1} lines)"]
    module.write_text(f"# long: a table that reads best whole\ndef f() -> None:\n{body}")
    assert long_functions(tmp_path) == []


def test_the_readme_layout_names_every_module() -> None:
    """The README's Layout has a line for each module: a module added without one fails here
    (a package's modules may share its line, named by file)."""
    readme = (SRC.parent / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    layout = layout[:layout.index("```", layout.index("```") + 3)]
    unnamed = []
    for name, path in module_names(SRC).items():
        if path.name in ("__init__.py", "__main__.py"):
            continue
        package = path.parent.name
        if path.name not in layout or (package != "canarygate" and f"{package}/" not in layout):
            unnamed.append(name)
    assert not unnamed, f"modules missing from the README's Layout: {sorted(unnamed)}"

"""The package's shape: modules of a readable size, no import cycle, methods named in methods/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dpkd_bench.methods import METHODS

PACKAGE = Path(__file__).resolve().parents[1] / "dpkd_bench"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 250


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_classes_fit_in_one_sitting(path):
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.ClassDef):
            assert node.end_lineno - node.lineno + 1 <= MAX_CLASS_LINES, node.name


def imported(path: Path, package: str) -> set[str]:
    """The dpkd_bench modules ``path`` imports anywhere (functions included), except under
    ``if TYPE_CHECKING``."""
    found: set[str] = set()
    skip: set[int] = set()
    module = tree(path)
    for node in ast.walk(module):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(child) for child in ast.walk(node)}
    known = {module_name(p) for p in MODULES}
    for node in ast.walk(module):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else None
            if base is None:
                continue
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name in known and name != package}


def test_no_import_cycle():
    graph = {module_name(p): imported(p, module_name(p)) for p in MODULES}
    # a package's __init__ is imported with any of its modules: an edge to the package
    for name in list(graph):
        graph[name] = {dep for dep in graph[name] if not name.startswith(f"{dep}.")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


OUTSIDE_METHODS = [p for p in MODULES if "methods" not in p.relative_to(PACKAGE).parts]


@pytest.mark.parametrize("path", OUTSIDE_METHODS, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_outside_methods_names_a_method(path):
    names = set(METHODS)
    literals = [
        node.value
        for node in ast.walk(tree(path))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
    ]
    assert literals == []

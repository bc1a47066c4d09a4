"""The code's shape: the import graph has no circles, no private name is imported across modules,
packages depend one way (standalone <- convert <- verify <- bench; standalone <- serve), and no function is over 80 lines.

Every import statement counts, the ones inside functions too: a deferred import hides a circle
from the interpreter, not from the reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "standalone": "q3tts.standalone",
    "convert": "q3tts.convert",
    "verify": "q3tts.verify",
    "bench": "q3tts.bench",
    "serve": "q3tts.serve",
}
# Which packages each may import (the one-way flow).
MAY_IMPORT = {
    "q3tts.standalone": {"q3tts.standalone"},
    "q3tts.convert": {"q3tts.standalone", "q3tts.convert"},
    "q3tts.verify": {"q3tts.standalone", "q3tts.convert", "q3tts.verify"},
    "q3tts.bench": {"q3tts.standalone", "q3tts.convert", "q3tts.verify", "q3tts.bench"},
    "q3tts.serve": {"q3tts.standalone", "q3tts.serve"},
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = list(rel.with_suffix("").parts[1:])
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGES[rel.parts[0]], *parts])


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for d in PACKAGES if (ROOT / d).is_dir() for p in (ROOT / d).rglob("*.py")}


def imports_of(name: str, path: Path, modules: dict[str, Path]):
    """(imported project module, imported name or None, line) for every import statement."""
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                prefix = base[: len(base) - node.level + 1]
                mod = ".".join(prefix + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                if f"{mod}.{alias.name}" in modules:
                    yield f"{mod}.{alias.name}", None, node.lineno
                elif mod in modules:
                    yield mod, alias.name, node.lineno


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for m, path in modules.items():
        graph[m] |= {t for t, _, _ in imports_of(m, path, modules) if t != m}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


MODULES = project_modules()


def test_no_import_circles():
    assert circles(import_graph(MODULES)) == []


def test_the_circle_finder_finds_a_planted_circle():
    graph = import_graph(MODULES)
    a, b = "q3tts.standalone.config", "q3tts.standalone.model"
    assert b not in graph[a]
    graph[a] = graph[a] | {b}  # config -> model, and model -> config already
    assert any({a, b} <= set(c) for c in circles(graph))


def test_no_private_name_is_imported_across_modules():
    private = [
        f"{m}:{line} imports {target}.{name}"
        for m, path in MODULES.items()
        for target, name, line in imports_of(m, path, MODULES)
        if name and name.startswith("_") and not name.startswith("__") and target != m
    ]
    assert private == []


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_packages_depend_one_way(package):
    wrong = [
        f"{m}:{line} imports {target}"
        for m, path in MODULES.items()
        if m.startswith(package + ".") or m == package
        for target, _, line in imports_of(m, path, MODULES)
        if not any(target == p or target.startswith(p + ".") for p in MAY_IMPORT[package])
    ]
    assert wrong == []


# --- function length ---------------------------------------------------------------------------

MAX_FUNCTION_LINES = 80


def long_functions(paths, root: Path = ROOT) -> list[str]:
    out = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    out.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({lines} lines)")
    return out


def test_no_function_over_80_lines():
    assert long_functions([*MODULES.values(), *(ROOT / "tests").rglob("*.py")]) == []


def test_the_length_check_sees_a_long_function(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"def long():\n{body}")
    assert long_functions([tmp_path / "long.py"], root=tmp_path) == ["long.py:1 long (81 lines)"]

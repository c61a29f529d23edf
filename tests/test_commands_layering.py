"""Imports point down: the floor (actorq/) and the services never import the commands."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module or "")
    return names


def test_no_floor_or_service_module_imports_a_command() -> None:
    upward = [
        f"{rel} imports {name}"
        for top in ("actorq", "services")
        for path in sorted((ROOT / top).rglob("*.py"))
        if (rel := str(path.relative_to(ROOT)))
        for name in imported_modules(path)
        if name.split(".")[0] == "commands"
    ]
    assert not upward, upward


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _source_files() -> list[Path]:
    return [
        p
        for top in ("actorq", "services", "commands")
        for p in sorted((ROOT / top).rglob("*.py"))
        if "v1" not in p.relative_to(ROOT).parts  # generated protobuf code
    ]


def test_no_import_circle_between_files() -> None:
    files = _source_files()
    modules = {_module_name(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_modules(path):
            # "from pkg import mod" names a module too: take the longest known prefix.
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        graph[name] = targets
    # Tarjan's strongly connected components: any component of two or more is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, circles


def test_no_source_file_is_over_500_lines() -> None:
    # Every Python file of the project (deploy scripts and tests too), generated code aside.
    files = [
        p
        for top in ("actorq", "services", "commands", "deploy", "scripts", "tests")
        for p in sorted((ROOT / top).rglob("*.py"))
        if "v1" not in p.relative_to(ROOT).parts
    ]
    long = {
        str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > 500
    }
    assert not long, long


# The hot paths: the actor's step loop, the learners' updates and loop, the replay's insert and sample.
HOT_PATH_PACKAGES = ("services/actor", "services/learner", "services/replay")


def test_no_function_on_a_hot_path_is_over_60_lines() -> None:
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})"
        for package in HOT_PATH_PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if not path.name.endswith(("_pb2.py", "_pb2_grpc.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > 60
    ]
    assert not long, long

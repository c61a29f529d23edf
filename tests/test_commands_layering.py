"""Imports point down: the floor (actorq/) and the services never import the commands."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Aliases kept for tests outside the commands' area that still name the old modules
# (actorq.cli, actorq.procs.free_port, actorq.bench.replay); empty this once they are gone.
TRANSITIONAL = {"actorq/cli.py", "actorq/procs.py", "actorq/bench/replay.py"}


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
        if (rel := str(path.relative_to(ROOT))) not in TRANSITIONAL
        for name in imported_modules(path)
        if name.split(".")[0] == "commands"
    ]
    assert not upward, upward

"""Print the requirements of pyproject.toml's extras, one per line: the project's own
dependencies plus each extra named (and the extras those name, as ``actorq[...]``).

    python deploy/requirements.py actor            # what the actor image installs

deploy/Dockerfile installs an image's dependencies from this list before it copies any
code, so a code change rebuilds only the small layer holding the ActorQ wheel, and an
edit to pyproject.toml that leaves an extra's list unchanged rebuilds nothing of it.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def requirements(project: dict, extras: list[str]) -> list[str]:
    """The dependencies plus the named extras, self-references expanded, sorted, unique."""
    name = project["name"]
    optional = project.get("optional-dependencies", {})
    found: set[str] = set(project.get("dependencies", []))
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"{extra!r} is not an extra of {name}: one of {sorted(optional)}")
        seen.add(extra)
        for req in optional[extra]:
            own = re.fullmatch(rf"{re.escape(name)}\[([\w,\s-]+)\]", req.strip())
            if own:
                todo += [e.strip() for e in own.group(1).split(",")]
            else:
                found.add(req)
    return sorted(found)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    print("\n".join(requirements(project, argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

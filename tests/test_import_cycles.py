"""No import cycles among the project's modules (``mel``, ``cli``, ``flows``, ``tasks``, ``deploy``): every import
counts, at the top of a module, inside a function or under ``TYPE_CHECKING`` (a deferred import hides a cycle from
Python, not from a reader). The modules' source is read, not imported; a probe shows the check finds a cycle."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGES = ("mel", "cli", "flows", "tasks", "deploy")


def modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The known modules that ``name`` imports (``from a.b import c`` names ``a.b``, and ``a.b.c`` if a module)."""
    out = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            out |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in out if m in known and m != name}


def cycles(known: dict[str, Path]) -> list[list[str]]:
    """The import graph's strongly connected components of more than one module (Tarjan's algorithm)."""
    graph = {name: sorted(imports(name, path, known)) for name, path in known.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_project_has_no_import_cycle() -> None:
    known = modules(REPO, PACKAGES)
    assert {"cli.main", "mel.verify.sandbox", "mel.experience.show", "tasks.stage"} <= set(known)
    assert cycles(known) == []


def test_a_cycle_through_a_deferred_import_is_found(tmp_path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import helper\n")
    (pkg / "b.py").write_text("def helper():\n    from . import c\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import x\n")
    (pkg / "d.py").write_text("import pkg.a\n")  # imports into the cycle, not part of it
    assert cycles(modules(tmp_path, ("pkg",))) == [["pkg.a", "pkg.b", "pkg.c"]]

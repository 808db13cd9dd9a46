"""No import cycle between civiclake's packages (``lake``, ``config``, ``_private``, ...).

Read from the source with ``ast`` (nothing imported, well under a second): every import counts,
also those inside functions and under ``TYPE_CHECKING``, since a lazy import is a dependency
too (the cycle ``_private -> blocks -> config -> lake -> _private`` went through two of them).
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "civiclake"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str | None:
    """The package (or top-level module) of ``civiclake.x.y``: ``x``."""
    parts = module.split(".")
    return parts[1] if parts[0] == PACKAGE and len(parts) > 1 else None


def _imported(path: Path, module: str) -> list[tuple[str, int]]:
    """Every ``civiclake...`` module ``path`` imports, with the line."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            if base == PACKAGE:  # from civiclake import tables
                found += [(f"{PACKAGE}.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((base, node.lineno))
    return found


def package_graph() -> dict[str, dict[str, list[str]]]:
    """package -> package it imports -> where (``path:line``)."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        module = _module_name(path)
        source = _unit(module)
        if source is None:
            continue
        for name, line in _imported(path, module):
            target = _unit(name)
            if target is not None and target != source:
                where = f"{path.relative_to(SRC)}:{line}"
                graph.setdefault(source, {}).setdefault(target, []).append(where)
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_packages_import_each_other_without_a_cycle() -> None:
    graph = package_graph()
    assert {"lake", "config", "blocks", "warehouse", "_private", "cli"} <= set(graph)
    cycle = find_cycle(graph)
    where = [graph[a][b][0] for a, b in itertools.pairwise(cycle)] if cycle else []
    assert cycle is None, f"import cycle {' -> '.join(cycle or [])} ({', '.join(where)})"


def test_the_check_finds_a_cycle() -> None:
    """The checker itself: a two-package loop and a longer one are found, a chain is not."""
    assert find_cycle({"a": {"b": []}, "b": {"c": []}}) is None
    assert find_cycle({"a": {"b": []}, "b": {"a": []}}) == ["a", "b", "a"]
    loop = {"_private": {"blocks": []}, "blocks": {"config": []}, "config": {"lake": []}}
    loop["lake"] = {"_private": []}
    assert find_cycle(loop) == ["_private", "blocks", "config", "lake", "_private"]

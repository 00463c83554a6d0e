"""No cycle between the package's parts: ``kubectl_offwake.X`` → ``.Y`` → ``.X``.

A part is a subpackage (``k8s``, ``pipeline``, ``analysis``, ...) or a top-level module
(``live``, ``errors``, ...). Every import counts, at the top of a module or inside a
function: a lazy import hides a cycle from the interpreter, not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = "kubectl_offwake"
ROOT = Path(__file__).parents[2] / PACKAGE


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Set[str]:
    """Absolute names of the package's modules that ``path`` imports."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            found.add(stem)
            found.update(f"{stem}.{a.name}" for a in node.names)  # `from . import x`
    return {m for m in found if m.startswith(PACKAGE + ".")}


def _part(module: str) -> str:
    """``kubectl_offwake.k8s.fleet`` → ``k8s``; ``kubectl_offwake.live`` → ``live``."""
    return module.split(".")[1]


def part_graph() -> Dict[str, Set[str]]:
    parts = {p.name if p.is_dir() else p.stem for p in ROOT.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}
    parts -= {"__init__", "__main__"}
    graph: Dict[str, Set[str]] = {part: set() for part in parts}
    for path in ROOT.rglob("*.py"):
        name = _module_name(path)
        if name.count(".") == 0 or _part(name) not in parts:
            continue
        for target in _imports(path):
            if _part(target) in parts and _part(target) != _part(name):
                graph[_part(name)].add(_part(target))
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One cycle per strongly connected group of parts (Tarjan), as a path X → ... → X."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(_path_through(graph, set(group), node))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _path_through(graph: Dict[str, Set[str]], group: Set[str], start: str) -> List[str]:
    """A cycle from ``start`` back to it inside ``group`` (breadth first: the shortest)."""
    paths = [[start]]
    while paths:
        path = paths.pop(0)
        for nxt in sorted(graph[path[-1]] & group):
            if nxt == start:
                return path + [start]
            if nxt not in path:
                paths.append(path + [nxt])
    return [start]


def test_no_cycle_between_the_parts_of_the_package() -> None:
    found = cycles(part_graph())
    assert found == [], "; ".join(" → ".join(cycle) for cycle in found)


def test_the_check_sees_a_cycle() -> None:
    """The finder itself: a cycle of three parts is found, a chain is not."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_graph_sees_what_the_layers_import() -> None:
    """Known edges (relative, nested and lazy imports) are in the graph."""
    graph = part_graph()
    assert {"wire", "analysis", "live", "importers"} <= graph["pipeline"]
    assert "analysis" in graph["k8s"] and "pipeline" not in graph["k8s"]
    assert "pipeline" in graph["cli"]  # cli/local.py imports it inside the command

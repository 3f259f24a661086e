"""The package import graph of `lofibeats`, computed from the source: it only points down.

A package is the first path component under `src/lofibeats` (`generation`, `models`, ...; a
top-level module such as `cli.py` is its own node). Every import counts, including imports
inside functions and under `TYPE_CHECKING`: a deferred import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import REPO

SRC = REPO / "src" / "lofibeats"

# Lower layers never import higher ones; a package may import any package of a lower layer.
# (Same-layer packages are independent of each other.) This is the picture in DESIGN.md.
LAYERS: list[set[str]] = [
    {"errors"},
    {"units", "validate"},
    {"audio"},
    {"data", "models"},
    {"generation", "metrics"},
    {"callbacks", "training", "runs"},
    {"cli"},
    {"commands", "live"},
]


def package_of(path: Path) -> str:
    """`src/lofibeats/generation/engine.py` -> `generation`; `src/lofibeats/cli.py` -> `cli`."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[0]


def imported_modules(path: Path) -> Iterator[str]:
    """Dotted names of every `lofibeats` module or package `path` imports (relative resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own = ("lofibeats", *path.relative_to(SRC).with_suffix("").parts)
    if path.name == "__init__.py":
        own = own[:-1] + ("__init__",)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = own[: len(own) - node.level]
                module = ".".join(base + ((node.module,) if node.module else ()))
            else:
                module = node.module or ""
            yield module
            for alias in node.names:  # `from lofibeats import audio` names a package
                yield f"{module}.{alias.name}"


def package_graph() -> dict[str, set[str]]:
    """{package: the other packages it imports}."""
    graph: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        if path.parent == SRC and path.name == "__init__.py":
            continue
        source = package_of(path)
        graph.setdefault(source, set())
        for name in imported_modules(path):
            parts = name.split(".")
            if parts[0] != "lofibeats" or len(parts) < 2:
                continue
            target = parts[1]
            if target != source and ((SRC / target).is_dir() or (SRC / f"{target}.py").is_file()):
                graph[source].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path [a, b, ..., a], or None."""
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> list[str] | None:
        if node in stack:
            return [*stack[stack.index(node) :], node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            cycle = visit(target, [*stack, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


GRAPH = package_graph()


def test_the_graph_sees_the_packages() -> None:
    assert {"audio", "data", "models", "generation", "metrics", "commands", "cli"} <= set(GRAPH)
    assert "models" in GRAPH["generation"] and "audio" in GRAPH["data"]


def test_nothing_imports_a_command() -> None:
    importers = sorted(p for p, targets in GRAPH.items() if "commands" in targets)
    assert importers == [], f"library packages import lofibeats.commands: {importers}"


def test_no_two_packages_depend_on_each_other() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, f"import cycle between packages: {' -> '.join(cycle or [])}"


def test_every_import_points_down_the_layers() -> None:
    layer = {name: i for i, names in enumerate(LAYERS) for name in names}
    unplaced = sorted(set(GRAPH) - set(layer))
    assert not unplaced, f"add these packages to LAYERS (and DESIGN.md): {unplaced}"
    upward = sorted(
        f"{source} -> {target}"
        for source, targets in GRAPH.items()
        for target in targets
        if layer[target] >= layer[source]
    )
    assert not upward, f"imports that do not point down: {upward}"


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
    ],
)
def test_find_cycle(graph: dict[str, set[str]], cycle: list[str] | None) -> None:
    assert find_cycle(graph) == cycle

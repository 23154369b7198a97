"""The import graph of the library: no module of `tagger` or `label_system` imports itself back.

import-linter's layers contracts (pyproject.toml) keep the stages in order; this closes the gap
inside a stage, where two modules of the same subpackage could still import each other.
"""

from __future__ import annotations

import grimp
import pytest


def strongly_connected(graph: grimp.ImportGraph, modules: list[str]) -> list[list[str]]:
    """Import cycles among `modules` (Tarjan's strongly connected components of size > 1)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    inside = set(modules)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v) & inside:
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
                cycles.append(sorted(component))

    for module in modules:
        if module not in index:
            visit(module)
    return cycles


@pytest.mark.parametrize("package", ["tagger", "label_system", "flows"])
def test_no_import_cycles(package: str) -> None:
    graph = grimp.build_graph(package)
    modules = sorted(graph.modules)
    assert len(modules) > 5
    assert strongly_connected(graph, modules) == []


def test_cycle_finder_sees_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for m in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(m)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.c", imported="p.a")
    assert strongly_connected(graph, ["p.a", "p.b", "p.c"]) == [["p.a", "p.b"]]

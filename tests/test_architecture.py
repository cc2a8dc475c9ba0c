"""The package's shape, checked: no import cycle among batchlab's modules (every import counted, lazy ones inside
functions and TYPE_CHECKING blocks too), and dependencies that point one way down the data flow."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src"

LAYERS = {
    "batchlab.errors": 0, "batchlab._optional": 1, "batchlab.spec": 2, "batchlab.sweep": 3, "batchlab.data": 4,
    "batchlab.analysis": 5, "batchlab.models": 5, "batchlab.train": 6, "batchlab.store": 6, "batchlab.runner": 7,
    "batchlab.study_data": 8, "batchlab.interop": 8, "batchlab.report": 9, "batchlab.results": 10,
    "batchlab.api": 11, "batchlab.cli": 12, "batchlab": 13,
}
"""Rank of each part: a module imports only parts of lower rank, or modules of its own part. Parts of equal rank
know nothing of each other: the engine knows no SQLite and the store no JAX (train, store); the analysis, pure
functions on plain arrays, knows no model (analysis, models)."""


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "batchlab").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(path: Path, known: set[str]) -> set[str]:
    """Every batchlab module `path` imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in known:
            for alias in node.names:  # `from batchlab.report import figures` imports the module batchlab.report.figures
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(path, set(mods)) for name, path in mods.items()}


def part(module: str) -> str:
    return max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)


def strongly_connected(g: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the strongly connected components of the import graph."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g[v]):
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
            out.append(component)

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_planted_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert sorted(map(sorted, (c for c in strongly_connected(g) if len(c) > 1))) == [["a", "b", "c"]]


def test_no_import_cycle_among_batchlab_modules():
    g = graph()
    assert len(g) > 50 and sum(map(len, g.values())) > 100  # the scan sees the package
    cycles = [sorted(c) for c in strongly_connected(g) if len(c) > 1 or c[0] in g[c[0]]]
    assert cycles == []


def test_dependencies_point_one_way_down_the_data_flow():
    wrong = sorted(f"{m} -> {d}" for m, deps in graph().items() for d in deps
                   if part(d) != part(m) and LAYERS[part(d)] >= LAYERS[part(m)])
    assert wrong == []


def test_every_module_belongs_to_a_part_and_subpackages_have_an_init():
    for name in modules():
        assert part(name) in LAYERS, name
    for folder in (SRC / "batchlab").rglob("*/"):
        if folder.name != "__pycache__" and any(folder.glob("*.py")):
            assert (folder / "__init__.py").exists(), folder

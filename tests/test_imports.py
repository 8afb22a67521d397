"""The import graph of the package: no circle, nothing imported from a higher layer.

Every module's imports are read with ``ast`` (imports inside functions included; only those
under ``if TYPE_CHECKING:`` are exempt, they never run). Layers, bottom to top:
metrics, userio | allocator, learner | bridge | studies | benchmarks, cli.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "dmmlkd"
LAYERS = {"metrics": 0, "userio": 0, "allocator": 1, "learner": 1, "bridge": 2, "studies": 3,
          "flower": 3, "benchmarks": 4, "cli": 4}
# Packages of one layer that may import each other's modules (importer, imported).
SAME_LAYER = {("cli", "benchmarks")}
NEVER = {  # the 'Done when', written out
    "learner": {"bridge", "studies", "cli", "benchmarks", "allocator"},
    "allocator": {"learner", "bridge", "studies", "cli"},
}


def test_every_installed_subpackage_has_a_layer() -> None:
    """The packages pyproject.toml installs are exactly the layered ones (a new package cannot
    slip past the checks below)."""
    import tomllib

    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    top = {name.split(".")[1] for name in listed if name.count(".") >= 1}
    assert top == set(LAYERS)


def _modules() -> dict[str, Path]:
    """Module name -> file, for every module of the package (tests and build outputs aside)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] not in LAYERS and rel != Path("__init__.py"):
            continue
        parts = rel.with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join((PACKAGE, *parts))] = path
    return out


MODULES = _modules()


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(module: str, path: Path) -> set[str]:
    """Modules of the package that ``module`` imports anywhere in its file (most specific name:
    ``from a.b import c`` is a.b.c when that is a module, else a.b)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(name: str) -> None:
        if name in MODULES:
            found.add(name)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_only(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = module.split(".") if is_package else module.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in child.names:
                    if f"{base}.{alias.name}" in MODULES:
                        add(f"{base}.{alias.name}")
                    else:
                        add(base)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    found.discard(module)
    return found


GRAPH = {m: _imported(m, p) for m, p in MODULES.items()}


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_parser_sees_imports_inside_functions_and_skips_type_checking() -> None:
    """The checker itself: a known function-level import is found, TYPE_CHECKING ones are not."""
    assert len(MODULES) > 60 and "dmmlkd.learner.loop" in MODULES
    # cli/commands/train.py imports the bridge inside its run() function only.
    assert "dmmlkd.bridge.training" in GRAPH["dmmlkd.cli.commands.train"]
    # learner/evaluate.py names learner.loop.Setup for the type checker only.
    assert "dmmlkd.learner.loop" not in GRAPH["dmmlkd.learner.evaluate"]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_the_cycle_finder_finds_a_circle_and_only_circles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) == []


def test_no_import_circle() -> None:
    assert _cycles(GRAPH) == []


@pytest.mark.parametrize("importer", sorted(LAYERS))
def test_no_import_from_a_higher_layer(importer: str) -> None:
    wrong = []
    for module, imports in GRAPH.items():
        if _package(module) != importer:
            continue
        for target in imports:
            theirs = _package(target)
            if theirs is None or theirs == importer:
                continue
            if theirs in NEVER.get(importer, ()) or LAYERS[theirs] > LAYERS[importer] or (
                    LAYERS[theirs] == LAYERS[importer] and (importer, theirs) not in SAME_LAYER):
                wrong.append(f"{module} imports {target}")
    assert wrong == []

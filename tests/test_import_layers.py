"""Layers point one way: the module import graph of rsd_deploy/ has no cycles, and no module
imports a higher layer (so the runtime backends import no export tooling).

The graph is built from the source with ``ast``: every ``import`` statement counts, at module
level and inside functions (a function-level import hides a cycle, it does not remove one);
only ``if TYPE_CHECKING:`` blocks are skipped (they never run).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rsd_deploy"

#: the layers, bottom first: a module may import its own layer and the layers below, never one above
#: (so a backend cannot import export tooling, the pipeline or the CLI; the models know nothing of
#: what drives them; only the CLI imports the CLI). "rsd_deploy" is the package's public facade.
LAYERS: Tuple[Tuple[str, ...], ...] = (
    ("errors", "fileio", "config", "types", "pixels", "metrics"),
    ("models", "bundle"),
    ("checkpoint", "default_model", "rsd_deploy"),
    ("backends",),
    ("pipeline",),
    ("export",),
    ("bench", "train"),
    ("cli",),
)


def layer_of(module: str) -> int:
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else "rsd_deploy"
    for rank, names in enumerate(LAYERS):
        if name in names:
            return rank
    raise AssertionError(f"{module}: its top-level name {name!r} is in no layer; add it to LAYERS")


def module_files(package: Path = PACKAGE) -> Dict[str, Path]:
    """Dotted module name -> source file, for every module of the package."""
    out = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(module: str, path: Path) -> Set[str]:
    """Every dotted name an import statement of ``path`` may load (TYPE_CHECKING blocks skipped).

    ``from a.b import c`` yields ``a.b.c`` (resolved to ``a.b`` later when c is not a module)."""
    is_package = path.name == "__init__.py"
    names: Set[str] = set()
    stack: List[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"), str(path))]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
            elif isinstance(child, ast.Import):
                names.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[:len(base) - (child.level - 1)]
                    source = ".".join(base + ([child.module] if child.module else []))
                else:
                    source = child.module or ""
                names.update(f"{source}.{a.name}" for a in child.names)
            else:
                stack.append(child)
    return names


def import_graph(package: Path = PACKAGE) -> Dict[str, Set[str]]:
    """Module -> the package modules it imports (a name resolves to its longest module prefix)."""
    files = module_files(package)
    graph: Dict[str, Set[str]] = {}
    for module, path in files.items():
        deps = set()
        for name in imported_names(module, path):
            while name not in files and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in files and name != module:
                deps.add(name)
        graph[module] = deps
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: Set[str] = set()
    stack: List[str] = []
    found: List[List[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


def forbidden_edges(graph: Dict[str, Set[str]]) -> Set[str]:
    """Imports of a module in a higher layer."""
    return {f"{module} -> {d}" for module, deps in graph.items() for d in deps if layer_of(d) > layer_of(module)}


@pytest.fixture(scope="module")
def graph() -> Dict[str, Set[str]]:
    return import_graph()


def test_graph_sees_function_level_and_skips_type_checking(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n"
                              "def f():\n    from pkg.b import thing\n")
    (pkg / "b.py").write_text("from . import a\nthing = 1\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    g = import_graph(pkg)
    assert g["pkg.a"] == {"pkg.b"} and g["pkg.b"] == {"pkg.a"} and g["pkg.c"] == {"pkg.a"}
    assert cycles(g) == [["pkg.a", "pkg.b"]]


def test_no_import_cycles(graph):
    assert cycles(graph) == [], "import cycles (function-level imports count)"


def test_layers_point_one_way(graph):
    assert sorted(forbidden_edges(graph)) == [], "imports of a higher layer (see LAYERS)"


def test_every_module_has_a_layer_and_a_higher_layer_is_refused():
    assert {layer_of(m) for m in module_files()} <= set(range(len(LAYERS)))
    assert forbidden_edges({"rsd_deploy.backends.x": {"rsd_deploy.export.trt_build", "rsd_deploy.bundle.specs"}}) == {
        "rsd_deploy.backends.x -> rsd_deploy.export.trt_build"}

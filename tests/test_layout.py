"""The packages' layers, checked on the source: every module of bench/, reports/ and envcheck/ is parsed with `ast`
(nothing is imported), its imports become edges of a module graph, and the graph must keep the layer order

    envcheck < bench.core < bench.measure < bench.models < bench.runtime < bench.plugin, bench.tools

(bench.plugin and bench.tools share the top layer; ``bench/__init__.py`` counts as bench.core, since it runs before
any bench module does), with reports beside bench: reports may import envcheck and bench.core, nothing else of
bench, and bench never imports reports. Rules:

(a) no import circle among modules (the circle is reported);
(b) no upward import against the order above, in bench and envcheck (reported ``module -> module``);
(c) reports imports nothing from bench but bench.core;
(d) bench never imports reports;
and (e) every import of a bench/reports/envcheck module names a module that exists (a stale path after a move
fails here, not in a GPU-only branch at run time).

What counts as an edge: ``import a.b`` and ``from a.b import c`` at any depth (module level, function bodies, class
bodies, try/except), relative imports resolved against the importing package, and ``from a.b import c`` where
``a.b.c`` is a module is an edge to ``a.b.c`` (else to ``a.b``). Excluded: imports under ``if TYPE_CHECKING:``
(they never run; the else branch still counts), and imports by computed name (``importlib.import_module(name)``),
which no parser can see. An import of a package does not add edges to its submodules, nor does importing a
submodule add an edge to its parent packages' ``__init__`` (those are checked as modules of their own).

Exceptions would sit in ``KNOWN_VIOLATIONS``; it is empty (the last, envcheck's check registry, is gone: the checks
import ``envcheck.check``, the registry imports them). A circle closed by an ``if TYPE_CHECKING:`` import fails too
(its own test)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("envcheck", "bench", "reports")
NAMESPACE = "detbench"

# Layers low to high; a module may import its own layer or any lower one (rule b).
LAYERS = ("envcheck", "bench.core", "bench.measure", "bench.models", "bench.runtime", ("bench.plugin", "bench.tools"))

# (rule, importer, imported): allowed exceptions, none today. The tests fail on any new violation, and on an entry
# once it no longer happens. A "circle" entry names the edge that closes it.
KNOWN_VIOLATIONS: frozenset[tuple[str, str, str]] = frozenset()


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    path: str  # relative to the repository root
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} -> {self.imported}"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the three packages by dotted name."""
    return {module_name(p, root): p for package in PACKAGES for p in sorted((root / package).rglob("*.py"))
            if "__pycache__" not in p.parts}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST, type_only: bool = False):
    """Every Import/ImportFrom at any depth, except under ``if TYPE_CHECKING:`` (its else branch is kept) unless
    ``type_only`` (the imports for type annotations count too)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test) and not type_only:
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest dotted prefix of ``name`` that is a known module."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _is_internal(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _checkout_name(name: str) -> str:
    """``detbench.bench.core`` -> ``bench.core``: installed, the three packages live under the ``detbench`` namespace
    (pyproject.toml); the graph names each module by its folder in the checkout."""
    return name.removeprefix(NAMESPACE + ".")


def imports_of(name: str, source: str, modules: dict[str, Path],
               type_only: bool = False) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(edges, unresolved) of one module: the internal modules it imports, each with its line, and the internal
    import targets that name no existing module."""
    is_package = modules.get(name, Path()).name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    edges: list[tuple[str, int]] = []
    unresolved: list[tuple[str, int]] = []

    def add(target: str, line: int, *, exact: bool) -> None:
        if not _is_internal(target):
            return
        resolved = _resolve(target, modules)
        if resolved is None or (exact and resolved != target):
            unresolved.append((target, line))
        if resolved is not None and resolved != name:
            edges.append((resolved, line))

    for node in _import_nodes(ast.parse(source), type_only):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(_checkout_name(alias.name), node.lineno, exact=True)
            continue
        if node.level:
            base_parts = package.split(".")
            base_parts = base_parts[: len(base_parts) - (node.level - 1)]
            base = ".".join([*base_parts, node.module] if node.module else base_parts)
        else:
            base = _checkout_name(node.module or "")
        if not _is_internal(base):
            continue
        if base not in modules:
            add(base, node.lineno, exact=True)
            continue
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            add(submodule if submodule in modules else base, node.lineno, exact=False)
    return edges, unresolved


@dataclass
class Graph:
    modules: dict[str, Path]
    edges: list[Edge]
    unresolved: list[Edge]

    def adjacency(self) -> dict[str, dict[str, Edge]]:
        out: dict[str, dict[str, Edge]] = {name: {} for name in self.modules}
        for edge in self.edges:
            out[edge.importer].setdefault(edge.imported, edge)
        return out


def build_graph(root: Path = ROOT, type_only: bool = False) -> Graph:
    modules = discover(root)
    edges: list[Edge] = []
    unresolved: list[Edge] = []
    for name, path in modules.items():
        rel = str(path.relative_to(root))
        found, missing = imports_of(name, path.read_text(encoding="utf-8"), modules, type_only)
        edges += [Edge(name, target, rel, line) for target, line in found]
        unresolved += [Edge(name, target, rel, line) for target, line in missing]
    return Graph(modules, edges, unresolved)


def layer_of(module: str) -> int | None:
    """Index in LAYERS of a bench or envcheck module; None for reports."""
    if module == "bench":
        return LAYERS.index("bench.core")
    for index, layer in enumerate(LAYERS):
        for prefix in (layer if isinstance(layer, tuple) else (layer,)):
            if module == prefix or module.startswith(prefix + "."):
                return index
    if module.split(".")[0] == "reports":
        return None
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(graph: Graph) -> dict[str, list[Edge]]:
    """Rule -> offending edges, for the rules that are about single edges (b, c, d, e)."""
    found: dict[str, list[Edge]] = {"upward": [], "reports-imports-bench": [], "bench-imports-reports": [],
                                    "unresolved": list(graph.unresolved)}
    for edge in graph.edges:
        src, dst = edge.importer, edge.imported
        if _in(src, "bench") and _in(dst, "reports"):
            found["bench-imports-reports"].append(edge)
        elif _in(src, "reports"):
            if _in(dst, "bench") and not _in(dst, "bench.core"):
                found["reports-imports-bench"].append(edge)
        elif _in(dst, "reports") or layer_of(dst) > layer_of(src):  # type: ignore[operator]
            found["upward"].append(edge)  # (envcheck -> reports is upward: envcheck is the lowest layer)
    return found


def cycles(graph: Graph, *, without: frozenset[tuple[str, str]] = frozenset()) -> list[list[Edge]]:
    """One import circle per strongly connected component that has one (Tarjan, iterative), leaving out the edges
    ``without`` (importer, imported)."""
    adjacency = graph.adjacency()
    for importer, imported in without:
        adjacency.get(importer, {}).pop(imported, None)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(adjacency):
        if start in index:
            continue
        work = [(start, iter(sorted(adjacency[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(adjacency[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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
                    components.append(sorted(component))
    return [_circle_in(component, adjacency) for component in components]


def _circle_in(component: list[str], adjacency: dict[str, dict[str, Edge]]) -> list[Edge]:
    """A shortest circle through the component's first module (breadth-first inside the component)."""
    members = set(component)
    start = component[0]
    previous: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target, edge in sorted(adjacency[node].items()):
                if target not in members:
                    continue
                if target == start:
                    circle = [edge]
                    while circle[0].importer != start:
                        circle.insert(0, previous[circle[0].importer])
                    return circle
                if target not in previous:
                    previous[target] = edge
                    following.append(target)
        frontier = following
    raise AssertionError(f"no circle in strongly connected component {component}")


def _keys(rule: str, edges: list[Edge]) -> set[tuple[str, str, str]]:
    return {(rule, edge.importer, edge.imported) for edge in edges}


def _check(rule: str, edges: list[Edge]) -> None:
    known = {key for key in KNOWN_VIOLATIONS if key[0] == rule}
    new = [edge for edge in edges if (rule, edge.importer, edge.imported) not in known]
    gone = known - _keys(rule, edges)
    assert not new, f"{rule} imports:\n" + "\n".join(map(str, new))
    assert not gone, f"fixed, remove from KNOWN_VIOLATIONS: {sorted(gone)}"


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph()


def test_the_graph_covers_every_package(graph: Graph):
    # A parser that saw nothing would pass every rule below.
    for package in PACKAGES:
        assert package in graph.modules
        assert any(_in(edge.importer, package) for edge in graph.edges), package
    assert {"bench.core", "bench.measure", "bench.models", "bench.runtime", "bench.plugin", "bench.tools"} <= set(
        graph.modules)
    assert len(graph.edges) > 100


def test_every_module_is_in_a_layer(graph: Graph):
    for module in graph.modules:
        layer_of(module)  # raises for a new package of bench outside LAYERS


def _reaches(adjacency: dict[str, dict[str, Edge]], start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        for target in adjacency[todo.pop()]:
            if target == goal:
                return True
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return False


def test_no_import_circles(graph: Graph):
    known = frozenset((key[1], key[2]) for key in KNOWN_VIOLATIONS if key[0] == "circle")
    circles = cycles(graph, without=known)
    assert not circles, "import circles:\n" + "\n".join(
        " -> ".join([circle[0].importer, *(edge.imported for edge in circle)])
        + "".join(f"\n    {edge}" for edge in circle) for circle in circles)
    adjacency = graph.adjacency()
    gone = sorted((importer, imported) for importer, imported in known
                  if imported not in adjacency.get(importer, {}) or not _reaches(adjacency, imported, importer))
    assert not gone, f"circle broken, remove from KNOWN_VIOLATIONS: {gone}"


def test_no_import_circles_with_the_imports_for_type_annotations_too():
    """A circle closed only by an ``if TYPE_CHECKING:`` import is still two modules that need each other."""
    known = frozenset((key[1], key[2]) for key in KNOWN_VIOLATIONS if key[0] == "circle")
    circles = cycles(build_graph(type_only=True), without=known)
    assert not circles, "import circles (type-only imports included):\n" + "\n".join(
        " -> ".join([circle[0].importer, *(edge.imported for edge in circle)]) for circle in circles)


def test_no_upward_imports(graph: Graph):
    _check("upward", violations(graph)["upward"])


def test_reports_imports_nothing_from_bench_but_bench_core(graph: Graph):
    _check("reports-imports-bench", violations(graph)["reports-imports-bench"])


def test_bench_never_imports_reports(graph: Graph):
    _check("bench-imports-reports", violations(graph)["bench-imports-reports"])


def test_every_internal_import_names_an_existing_module(graph: Graph):
    _check("unresolved", violations(graph)["unresolved"])


def bare_imports(modules: dict[str, Path], root: Path = ROOT) -> list[str]:
    """Absolute imports of the three packages by their bare names (``from bench.core import x``): installed, only
    ``detbench.bench``, ``detbench.envcheck`` and ``detbench.reports`` exist, and a bare name would import whatever
    else is called ``bench`` on the user's path (their own project's package)."""
    found = []
    for path in modules.values():
        for node in _import_nodes(ast.parse(path.read_text()), type_only=True):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if not node.level else [])
            found += [f"{path.relative_to(root)}:{node.lineno}: {n}" for n in names if _is_internal(n)]
    return found


def test_every_import_of_the_packages_goes_through_the_detbench_namespace(graph: Graph):
    assert bare_imports(graph.modules) == []


# The checker itself, on made-up trees: each rule must fail when broken.

def _tree(tmp_path: Path, files: dict[str, str]) -> Graph:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(tmp_path).parents:
            if str(parent) != "." and not (tmp_path / parent / "__init__.py").exists():
                (tmp_path / parent / "__init__.py").write_text("")
        path.write_text(text)
    return build_graph(tmp_path)


def _pairs(edges: list[Edge]) -> set[tuple[str, str]]:
    return {(edge.importer, edge.imported) for edge in edges}


def test_checker_sees_function_level_relative_and_submodule_imports(tmp_path: Path):
    graph = _tree(tmp_path, {
        "bench/core/a.py": "def f():\n    from detbench.bench.runtime import worker\n",
        "bench/core/b.py": "from . import a\nfrom .a import f\nimport detbench.bench.measure.timing as t\n",
        "bench/measure/timing.py": "",
        "bench/runtime/worker.py": "",
        "bench/runtime/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import reports.cli\n"
                              "else:\n    import bench.tools.x\n",
        "bench/tools/x.py": "",
        "reports/cli.py": "",
    })
    assert _pairs(graph.edges) == {
        ("bench.core.a", "bench.runtime.worker"),
        ("bench.core.b", "bench.core.a"),
        ("bench.core.b", "bench.measure.timing"),
        ("bench.runtime.c", "bench.tools.x"),
    }
    found = violations(graph)
    assert _pairs(found["upward"]) == {("bench.core.a", "bench.runtime.worker"),
                                       ("bench.core.b", "bench.measure.timing"),
                                       ("bench.runtime.c", "bench.tools.x")}
    assert not found["bench-imports-reports"]  # the TYPE_CHECKING import is left out
    # the namespace's names and the bare ones make the same edges; the bare ones are flagged, type-only too
    assert sorted(bare_imports(graph.modules, tmp_path)) == ["bench/runtime/c.py:3: reports.cli",
                                                             "bench/runtime/c.py:5: bench.tools.x"]


def test_checker_flags_each_rule(tmp_path: Path):
    graph = _tree(tmp_path, {
        "envcheck/low.py": "import bench.core.x\nimport reports.cli\n",
        "bench/core/x.py": "",
        "bench/models/m.py": "import envcheck.low\nfrom bench.core import x\nfrom reports import cli\n",
        "bench/plugin/p.py": "from bench.tools import t\n",
        "bench/tools/t.py": "def g():\n    from bench.plugin.p import h\n",
        "bench/runtime/gone.py": "from bench.timing import stopwatch\nimport bench.core.nothing\n",
        "envcheck/nvml.py": "",
        "bench/models/n.py": "",
        "reports/cli.py": "from bench.core import x\nfrom bench.models import n\nimport envcheck.nvml\n",
    })
    found = violations(graph)
    assert _pairs(found["upward"]) == {("envcheck.low", "bench.core.x"), ("envcheck.low", "reports.cli")}
    assert _pairs(found["bench-imports-reports"]) == {("bench.models.m", "reports.cli")}
    assert _pairs(found["reports-imports-bench"]) == {("reports.cli", "bench.models.n")}
    assert {(edge.importer, edge.imported) for edge in found["unresolved"]} == {
        ("bench.runtime.gone", "bench.timing"), ("bench.runtime.gone", "bench.core.nothing")}
    circles = cycles(graph)
    assert len(circles) == 1
    assert {(edge.importer, edge.imported) for edge in circles[0]} == {
        ("bench.plugin.p", "bench.tools.t"), ("bench.tools.t", "bench.plugin.p")}
    (tmp_path / "again").mkdir()
    longer = _tree(tmp_path / "again", {"bench/core/a.py": "import bench.core.b\n",
                                        "bench/core/b.py": "def f():\n    import bench.core.c\n",
                                        "bench/core/c.py": "from bench.core import a\n"})
    (circle,) = cycles(longer)
    assert [edge.importer for edge in circle] == ["bench.core.a", "bench.core.b", "bench.core.c"]

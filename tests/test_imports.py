"""The import graph of the suite, read statically: no cycles between modules, none between packages, and
nothing outside ``recsys/cli/`` imports it.

Every ``import x`` / ``from x import y`` of every module under recsys/, features/ and experiments/ counts,
function-level ones included, except those under ``if TYPE_CHECKING:``. Relative imports are resolved; only
edges to modules of these three packages are kept. Importing ``a.b.c`` also runs ``a/__init__`` and
``a/b/__init__``, so an import of ``a.b.c`` is an edge to each of them too, except to the importer's own
parent packages: those are already being imported when the importer runs (a package ``__init__`` that
imports its own submodules to re-export them is not a cycle). Imports by string through ``importlib`` are
invisible here.

The package graph collapses the module graph onto units: each subpackage of ``recsys`` (``recsys.data``,
``recsys.models``, ...), each other top-level package (``features``, ``experiments``) and each module directly
in ``recsys/`` (``recsys.leaderboard``, ...). An import from any module of unit A of any module of unit B is
an edge A -> B; a cycle there (``recsys.data`` -> ``features`` -> ``recsys.data``) is a layering error even
when no two modules import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("recsys", "features", "experiments")
#: the package whose subpackages (and direct modules) are units of the package graph of their own
UMBRELLA = "recsys"
CLI = "recsys.cli"


def _modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the packages (``a/__init__.py`` is ``a``)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST):
    """Every Import / ImportFrom below ``node``, skipping the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _import_nodes_of(other)
            continue
        yield from _import_nodes_of(child)


def _import_nodes_of(node: ast.AST):
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    yield from _import_nodes(node)


def _imported_names(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Dotted names an import statement loads (``from a import b`` may load the submodule ``a.b``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: from the module's package, up level - 1 more
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = package[: len(package) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    # each name is a submodule or an attribute of ``target`` (then the longest known prefix is ``target``)
    return [target if alias.name == "*" else f"{target}.{alias.name}" for alias in node.names]


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is one of ``modules`` (``a.b.func`` -> ``a.b``)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the modules of the suite that importing it runs (directly)."""
    modules = _modules(root, packages)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        own_packages = set(_ancestors(module))
        for node in _import_nodes(tree):
            for name in _imported_names(module, path, node):
                target = _known(name, modules)
                if target is None:
                    continue
                graph[module].add(target)
                graph[module].update(
                    p for p in _ancestors(target) if p in modules and p not in own_packages and p != module
                )
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One cycle through the component's first module, as a path a -> ... -> a."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                frontier.append(nxt)
    return component


def unit_of(module: str, modules: dict[str, Path], umbrella: str = UMBRELLA) -> str:
    """The package-graph unit of a module: ``umbrella.sub`` for a module of a subpackage of the umbrella, the
    module itself for one directly in the umbrella (and the umbrella's ``__init__``), else its top-level
    package."""
    parts = module.split(".")
    if parts[0] != umbrella:
        return parts[0]
    if len(parts) == 1:
        return umbrella
    sub = ".".join(parts[:2])
    return sub if modules[sub].name == "__init__.py" else module


def package_graph(
    root: Path = ROOT, packages: tuple[str, ...] = PACKAGES, umbrella: str = UMBRELLA
) -> dict[str, dict[str, tuple[str, str]]]:
    """Unit -> {unit it imports: one (importing module, imported module) edge that makes it, the first in
    name order}."""
    modules = _modules(root, packages)
    graph: dict[str, dict[str, tuple[str, str]]] = {unit_of(m, modules, umbrella): {} for m in modules}
    for module, targets in sorted(import_graph(root, packages).items()):
        source = unit_of(module, modules, umbrella)
        for target in sorted(targets):
            unit = unit_of(target, modules, umbrella)
            if unit != source:
                graph[source].setdefault(unit, (module, target))
    return graph


def package_cycles(
    root: Path = ROOT, packages: tuple[str, ...] = PACKAGES, umbrella: str = UMBRELLA
) -> list[str]:
    """Each cycle of the package graph, as ``a -> b -> a`` with the module imports that make each edge."""
    graph = package_graph(root, packages, umbrella)
    edges = {unit: set(targets) for unit, targets in graph.items()}
    out = []
    for component in strongly_connected(edges):
        if len(component) > 1:
            cycle = _cycle_in(component, edges)
            why = ", ".join(
                f"{a} imports {b}" for a, b in (graph[x][y] for x, y in zip(cycle, cycle[1:], strict=False))
            )
            out.append(f"{' -> '.join(cycle)} ({why})")
    return out


def test_the_graph_sees_the_packages():
    graph = import_graph()
    assert {"recsys.cli", "recsys.data.dataset", "features.embed", "experiments.tuning"} <= set(graph)
    assert "recsys.data.dataset" in graph["recsys.models.base"]
    assert "recsys.cli.common" in graph["recsys.cli.data"]


def test_no_import_cycles():
    graph = import_graph()
    cycles = [_cycle_in(c, graph) for c in strongly_connected(graph) if len(c) > 1 or c[0] in graph[c[0]]]
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_only_the_cli_imports_the_cli():
    graph = import_graph()
    offenders = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if not (module == CLI or module.startswith(CLI + "."))
        for target in targets
        if target == CLI or target.startswith(CLI + ".")
    )
    assert not offenders, "\n".join(offenders)


def test_no_cycles_between_packages():
    cycles = package_cycles()
    assert not cycles, "import cycles between packages:\n" + "\n".join(cycles)


def test_the_package_graph_has_the_layers():
    graph = package_graph()
    assert {
        "recsys.data",
        "recsys.models",
        "recsys.retrieval",
        "features",
        "experiments",
        "recsys.leaderboard",
    } <= set(graph)
    assert "recsys.data" in graph["recsys.models"] and "recsys.data" in graph["features"]
    assert "recsys.models" in graph["recsys.retrieval"] and "recsys.retrieval" not in graph["recsys.models"]
    # the data layer rests on the leaf modules only: errors, and the one reader of found files
    assert graph["recsys.data"].keys() <= {"recsys.errors", "recsys.files"}
    assert graph["recsys.files"].keys() <= {"recsys.errors"}


def _write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_circle_between_packages_is_caught_even_without_a_module_cycle(tmp_path):
    """app.data.load imports tools.embed inside a function; tools.embed imports app.data.table: no module
    imports itself back, but app.data and tools import each other; app.models -> app.data is a plain layer."""
    _write_tree(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/errors.py": "",
            "app/data/__init__.py": "",
            "app/data/table.py": "from app.errors import *\n",
            "app/data/load.py": "def load():\n    from tools.embed import embed\n    return embed\n",
            "app/models/__init__.py": "from . import base\n",
            "app/models/base.py": "from ..data import table\n",
            "tools/__init__.py": "",
            "tools/embed.py": "from app.data.table import Table\n",
        },
    )
    packages = ("app", "tools")
    graph = import_graph(tmp_path, packages)
    assert not [c for c in strongly_connected(graph) if len(c) > 1]  # no cycle between modules
    units = package_graph(tmp_path, packages, "app")
    assert units["app.data"] == {
        "tools": ("app.data.load", "tools"),
        "app.errors": ("app.data.table", "app.errors"),
    }
    assert units["app.models"] == {"app.data": ("app.models.base", "app.data")}
    assert package_cycles(tmp_path, packages, "app") == [
        "app.data -> tools -> app.data (app.data.load imports tools, tools.embed imports app.data)"
    ]
    (tmp_path / "app/data/load.py").write_text("def load():\n    return None\n")
    assert package_cycles(tmp_path, packages, "app") == []

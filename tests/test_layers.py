"""The import layers of the library, read statically from the source (AST, nothing imported).

Layers: the **core** (``ttc`` and ``ttc.<module>``, except the registry and the bench
layer), the **leaves** (``ttc.strategies``, ``ttc.verifiers``, ``ttc.routers``,
``ttc.engines``, from the folders of the same names), the **registry** (``ttc.registry``:
builds every leaf by name, so it imports them), the **bench layer** (``ttc.bench``) and the
**serve layer** (``ttc.serve``: the OpenAI-compatible server, which builds engines and
strategies like the bench layer, and which the bench layer's command line starts).
The rules:

- the core imports no leaf, not the registry and not the bench layer;
- a leaf imports neither the registry nor the bench layer (leaves may import the core and
  each other);
- the registry does not import the bench layer (servers import it without the bench);
- the serve layer does not import the bench layer, and only the bench layer imports it;
- no library module imports ``benchmarks``, ``tests`` or ``examples``;
- no import cycle between modules.

Every ``import`` statement counts, at module level or inside a function (a
function-level import is a dependency all the same; it only runs later), and so does
``importlib.import_module("literal")``. An edge goes to the module named: ``from
ttc.strategies import stopping`` to ``ttc.strategies.stopping`` (a submodule),
``from ttc.strategies import Greedy`` to the package ``ttc.strategies``; the parent
packages a dotted import also initialises are not edges (else every module would be
in a cycle with ``ttc/__init__``). Imports under ``if TYPE_CHECKING:`` count for the
layer rules but not for cycles: they never run.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"ttc": "ttc", "strategies": "ttc.strategies", "verifiers": "ttc.verifiers",
           "routers": "ttc.routers", "engines": "ttc.engines"}
LEAVES = ("ttc.strategies", "ttc.verifiers", "ttc.routers", "ttc.engines")
OUTSIDE = ("benchmarks", "tests", "conftest", "examples")


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    rel: str  # the path as shown in messages, relative to the repository
    source: str

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    type_only: bool

    def where(self, modules: dict[str, Module]) -> str:
        return f"{modules[self.source].rel}:{self.line}"


def library_modules(root: Path = ROOT) -> dict[str, Module]:
    out: dict[str, Module] = {}
    for folder, package in FOLDERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([package, *parts])
            out[name] = Module(name, path, path.relative_to(root).as_posix(), path.read_text())
    return out


REGISTRY = ("ttc.registry",)


def layer(name: str) -> str:
    if name == "ttc.bench" or name.startswith("ttc.bench."):
        return "bench"
    if name == "ttc.serve" or name.startswith("ttc.serve."):
        return "serve"
    if name in REGISTRY:
        return "registry"
    if any(name == leaf or name.startswith(leaf + ".") for leaf in LEAVES):
        return "leaf"
    return "core"


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers of statements inside ``if TYPE_CHECKING:`` blocks."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                for stmt in node.body:
                    for sub in ast.walk(stmt):
                        if hasattr(sub, "lineno"):
                            lines.add(sub.lineno)
    return lines


def _imported_names(module: Module, node: ast.AST) -> list[str]:
    """Dotted names an import statement (or ``import_module("...")`` call) reaches."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        return [f"{prefix}.{a.name}" for a in node.names] + [prefix]
    if isinstance(node, ast.Call):
        func = node.func
        fname = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if fname in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            return [node.args[0].value]
    return []


def imports(module: Module, modules: dict[str, Module]) -> list[Edge]:
    """Every import of ``module``: to a library module (its deepest existing name) or, for
    names outside the library, to the top-level name when it is one of ``OUTSIDE``."""
    tree = ast.parse(module.source, filename=str(module.path))
    type_only = _type_checking_lines(tree)
    edges: list[Edge] = []
    for node in ast.walk(tree):
        names = _imported_names(module, node)
        if isinstance(node, ast.ImportFrom):
            # ``from pkg import a, b``: each submodule named, else the package itself
            *members, prefix = names
            found = [m for m in members if m in modules]
            names = found if len(found) == len(members) else [*found, prefix]
        for name in names:
            target = name
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules:
                if target != module.name:
                    edges.append(Edge(module.name, target, node.lineno, node.lineno in type_only))
            elif name.split(".")[0] in OUTSIDE:
                edges.append(Edge(module.name, name.split(".")[0], node.lineno, node.lineno in type_only))
    return edges


def import_graph(modules: dict[str, Module], *, runtime_only: bool = False) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for m in modules.values():
        for e in imports(m, modules):
            if e.target in modules and not (runtime_only and e.type_only) and not g.has_edge(e.source, e.target):
                g.add_edge(e.source, e.target, edge=e)
    return g


def cycles(modules: dict[str, Module]) -> list[str]:
    """One readable cycle per strongly connected group of modules, with file:line per step."""
    g = import_graph(modules, runtime_only=True)
    out = []
    for group in sorted((sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1)):
        steps = nx.find_cycle(g.subgraph(group), source=group[0])
        out.append(" -> ".join(f"{a} ({g.edges[a, b]['edge'].where(modules)})" for a, b in steps)
                   + f" -> {steps[0][0]}")
    return out


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return library_modules()


@pytest.fixture(scope="module")
def edges(modules: dict[str, Module]) -> list[Edge]:
    return [e for m in modules.values() for e in imports(m, modules)]


def test_the_walk_sees_the_library(modules: dict[str, Module], edges: list[Edge]) -> None:
    assert {"ttc", "ttc.types", "ttc.bench", "ttc.bench.cli", "ttc.strategies", "ttc.engines.scripted"} <= set(modules)
    assert {"core", "leaf", "bench"} <= {layer(m) for m in modules}
    assert len(modules) > 50 and len(edges) > 200


def test_core_imports_no_leaf_and_not_the_bench_layer(modules: dict[str, Module], edges: list[Edge]) -> None:
    bad = [f"{e.where(modules)}: {e.source} imports {e.target}" for e in edges
           if layer(e.source) == "core" and e.target in modules and layer(e.target) != "core"]
    assert not bad, "the core must not import leaves or the bench layer:\n" + "\n".join(bad)


def test_leaves_do_not_import_the_bench_layer(modules: dict[str, Module], edges: list[Edge]) -> None:
    bad = [f"{e.where(modules)}: {e.source} imports {e.target}" for e in edges
           if layer(e.source) == "leaf" and e.target in modules and layer(e.target) in ("bench", "registry")]
    assert not bad, "leaves must not import the registry or the bench layer:\n" + "\n".join(bad)


def test_the_registry_does_not_import_the_bench_layer(modules: dict[str, Module], edges: list[Edge]) -> None:
    bad = [f"{e.where(modules)}: {e.source} imports {e.target}" for e in edges
           if layer(e.source) == "registry" and e.target in modules and layer(e.target) == "bench"]
    assert not bad, "the registry must not import the bench layer:\n" + "\n".join(bad)


def test_the_serve_layer_imports_no_bench_and_only_the_bench_imports_it(modules: dict[str, Module],
                                                                      edges: list[Edge]) -> None:
    bad = [f"{e.where(modules)}: {e.source} imports {e.target}" for e in edges if e.target in modules and (
           (layer(e.source) == "serve" and layer(e.target) == "bench")
           or (layer(e.target) == "serve" and layer(e.source) not in ("serve", "bench")))]
    assert not bad, "the serve layer must not import the bench layer, nor be imported below it:\n" + "\n".join(bad)


def test_the_library_does_not_import_benchmarks_tests_or_examples(modules: dict[str, Module],
                                                                   edges: list[Edge]) -> None:
    bad = [f"{e.where(modules)}: {e.source} imports {e.target}" for e in edges if e.target in OUTSIDE]
    assert not bad, "library code must not import benchmarks/, tests/ or examples/:\n" + "\n".join(bad)
    loaders = [m.rel for m in modules.values()
               if "spec_from_file_location" in m.source or "run_path(" in m.source]
    assert not loaders, f"library code must not load files by path: {loaders}"


def test_no_import_cycles(modules: dict[str, Module]) -> None:
    found = cycles(modules)
    assert not found, "import cycles:\n" + "\n".join(found)


# -- the walker on made-up modules --------------------------------------------------------------
def _fake(tmp_path: Path, files: dict[str, str]) -> dict[str, Module]:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return library_modules(tmp_path)


def test_a_function_level_cycle_is_reported_with_its_lines(tmp_path: Path) -> None:
    mods = _fake(tmp_path, {
        "ttc/__init__.py": "",
        "ttc/a.py": "from .b import x\n",
        "ttc/b.py": "x = 1\n\ndef f():\n    from ttc import a\n",
        "ttc/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ttc.a import y\n",
        "ttc/d.py": "from ttc.c import z\n",
        "strategies/__init__.py": "", "verifiers/__init__.py": "", "routers/__init__.py": "",
        "engines/__init__.py": "",
    })
    found = cycles(mods)
    assert len(found) == 1 and "ttc.a (ttc/a.py:1) -> ttc.b (ttc/b.py:4) -> ttc.a" in found[0]
    # a TYPE_CHECKING import is a dependency for the layer rules, not a runtime cycle
    c_edges = imports(mods["ttc.c"], mods)
    assert [(e.target, e.type_only) for e in c_edges] == [("ttc.a", True)]


def test_layer_violations_are_seen(tmp_path: Path) -> None:
    mods = _fake(tmp_path, {
        "ttc/__init__.py": "", "ttc/bench/__init__.py": "", "ttc/bench/pool.py": "",
        "ttc/bench/cli.py": "from . import pool\nfrom .pool import Pool\n\ndef f():\n    from ttc.strategies import x, Name\n",
        "ttc/core.py": "def f():\n    import ttc.strategies.x\n",
        "strategies/__init__.py": "", "strategies/x.py": "from ttc.bench.pool import Pool\nimport benchmarks.y\n",
        "verifiers/__init__.py": "", "routers/__init__.py": "", "engines/__init__.py": "",
    })
    es = [e for m in mods.values() for e in imports(m, mods)]
    assert {(e.source, e.target, e.line) for e in es if e.source == "ttc.bench.cli"} == {
        ("ttc.bench.cli", "ttc.bench.pool", 1),  # ``from . import submodule``
        ("ttc.bench.cli", "ttc.bench.pool", 2),  # relative, module level
        ("ttc.bench.cli", "ttc.strategies.x", 5),  # in a function: the submodule named ...
        ("ttc.bench.cli", "ttc.strategies", 5),  # ... and the package, for a name it defines
    }
    assert {(e.source, e.target, layer(e.source), layer(e.target) if e.target in mods else "outside")
            for e in es if e.source != "ttc.bench.cli"} == {
        ("ttc.core", "ttc.strategies.x", "core", "leaf"),
        ("ttc.strategies.x", "ttc.bench.pool", "leaf", "bench"),
        ("ttc.strategies.x", "benchmarks", "leaf", "outside"),
    }


# -- benchmark scripts stay thin ------------------------------------------------------------------
def test_benchmark_scripts_are_thin() -> None:
    """A benchmark script is a command line over the library: no ``main`` over 60 lines, no
    engine of its own (replay is :class:`ttc.bench.replay.ReplayEngine`), and nothing in
    ``tests/`` loads a benchmark by path (what a test needs lives in the library)."""
    long_mains, engines = [], []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.lstrip("_") == "main":
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 60:
                    long_mains.append(f"benchmarks/{path.name}:{node.lineno} {node.name}: {length} lines")
            if isinstance(node, ast.ClassDef) and any(
                    (b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else "") == "Engine"
                    for b in node.bases):
                engines.append(f"benchmarks/{path.name}:{node.lineno} {node.name}")
    assert not long_mains, "benchmark mains over 60 lines:\n" + "\n".join(long_mains)
    assert not engines, "engines defined in benchmark scripts:\n" + "\n".join(engines)
    loaders = [p.name for p in sorted((ROOT / "tests").glob("*.py"))
               if p.name != "test_layers.py" and "benchmarks" in p.read_text() and "spec_from_file_location" in p.read_text()]
    assert not loaders, f"tests loading benchmark scripts by path: {loaders}"

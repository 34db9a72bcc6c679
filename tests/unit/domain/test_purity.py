"""The layers stay what they are. The domain is pure: no broker, database or framework imports,
and no wall clock, so every decision can be replayed from its inputs. The core (the pipeline and
what it exchanges, order_recovery/core) imports no adapter, runtime or driver: it is typed on its
ports, and runs on the in-memory fakes as well as on Postgres and Kafka. Above them, each layer
imports only those below it (domain <- core <- adapters <- bootstrap <- runtimes <- entrypoints),
and no module imports one that imports it back."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import order_recovery
import order_recovery.core as core
import order_recovery.domain as domain

PACKAGE_DIR = Path(order_recovery.__file__).resolve().parent
DOMAIN_DIR = Path(domain.__file__).resolve().parent
CORE_DIR = Path(core.__file__).resolve().parent
FORBIDDEN_MODULES = {"confluent_kafka", "faust", "aiokafka", "psycopg", "psycopg_pool", "kafka"}
# What the adapters wrap: the core reaches them only through its ports.
ADAPTER_LIBRARIES = {"prometheus_client", "tenacity"}
ABOVE_THE_CORE = (
    "order_recovery.adapters",
    "order_recovery.bootstrap",
    "order_recovery.runtimes",
    "order_recovery.entrypoints",
    "order_recovery.ops",
)
# Modules of this project outside the domain: the domain must not depend on its own edges either.
FORBIDDEN_PREFIXES = (*ABOVE_THE_CORE, "order_recovery.config", "order_recovery.core")
#: Each layer, and what it must not import (what is above it).
LAYERS = {
    "order_recovery.adapters": ABOVE_THE_CORE[1:],
    "order_recovery.bootstrap": ABOVE_THE_CORE[2:],
    "order_recovery.runtimes": ABOVE_THE_CORE[3:],
}
WALL_CLOCK = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "monotonic"),
    ("time", "perf_counter"),
}


def _sources(directory: Path = DOMAIN_DIR, at_least: int = 10) -> list[Path]:
    files = sorted(directory.rglob("*.py"))
    assert len(files) > at_least
    return files


def _imports(tree: ast.AST) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_domain_imports_no_kafka_postgres_or_framework():
    for path in _sources():
        for name in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            assert name.split(".")[0] not in FORBIDDEN_MODULES, f"{path.name} imports {name}"
            assert not name.startswith(FORBIDDEN_PREFIXES), f"{path.name} imports {name}"


def test_the_core_imports_no_adapter_runtime_or_driver():
    for path in _sources(CORE_DIR, at_least=8):
        for name in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            top = name.split(".")[0]
            assert top not in FORBIDDEN_MODULES | ADAPTER_LIBRARIES, f"{path.name} imports {name}"
            assert not name.startswith(ABOVE_THE_CORE), f"{path.name} imports {name}"


def test_each_layer_imports_only_the_layers_below_it():
    for layer, above in LAYERS.items():
        paths = sorted(PACKAGE_DIR.rglob("*.py"))
        mine = [p for p in paths if _module_name(p).startswith(layer)]
        assert mine, layer
        for path in mine:
            for name in _imports(ast.parse(path.read_text(encoding="utf-8"))):
                assert not name.startswith(above), f"{_module_name(path)} imports {name}"


def test_no_module_imports_one_that_imports_it_back():
    """No import cycle of any length among the project's modules (a cycle is a strongly
    connected component of the import graph with more than one module)."""
    paths = {_module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m in paths and m != name}
    assert _cycles(graph) == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively; those of two modules or more."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph[step]))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
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
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_cycles():
    """Guards the test above: a cycle through three modules, beside modules in none."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_domain_never_reads_the_wall_clock():
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                assert (node.value.id, node.attr) not in WALL_CLOCK, f"{path.name}: {node.attr}"


def _loaded_after(code: str, forbidden: set[str]) -> list[str]:
    probe = (
        f"import sys; {code};"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(forbidden)!r});"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_importing_the_domain_loads_no_forbidden_module():
    code = "import order_recovery.domain as d; d.default_contract(); d.load_policies()"
    assert _loaded_after(code, FORBIDDEN_MODULES) == []


def test_importing_the_core_loads_no_driver_or_adapter_library():
    code = "import order_recovery.core.pipeline, order_recovery.core.ports"
    assert _loaded_after(code, FORBIDDEN_MODULES | ADAPTER_LIBRARIES) == []

"""The domain stays pure: no broker, database or framework imports, and no wall clock, so every
decision can be replayed from its inputs."""

from __future__ import annotations

import ast
from pathlib import Path

import order_recovery.domain as domain

DOMAIN_DIR = Path(domain.__file__).resolve().parent
FORBIDDEN_MODULES = {"confluent_kafka", "faust", "aiokafka", "psycopg", "psycopg_pool", "kafka"}
# Modules of this project outside the domain: the domain must not depend on its own edges either.
FORBIDDEN_PREFIXES = (
    "order_recovery.adapters",
    "order_recovery.entrypoints",
    "order_recovery.config",
)
WALL_CLOCK = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "monotonic"),
    ("time", "perf_counter"),
}


def _sources() -> list[Path]:
    files = sorted(DOMAIN_DIR.rglob("*.py"))
    assert len(files) > 10
    return files


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_domain_imports_no_kafka_postgres_or_framework():
    for path in _sources():
        for name in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            assert name.split(".")[0] not in FORBIDDEN_MODULES, f"{path.name} imports {name}"
            assert not name.startswith(FORBIDDEN_PREFIXES), f"{path.name} imports {name}"


def test_domain_never_reads_the_wall_clock():
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                assert (node.value.id, node.attr) not in WALL_CLOCK, f"{path.name}: {node.attr}"


def test_importing_the_domain_loads_no_forbidden_module():
    import subprocess
    import sys

    code = (
        "import sys, order_recovery.domain as d; d.default_contract(); d.load_policies();"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN_MODULES)!r});"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

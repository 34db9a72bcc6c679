"""docs/rules.md stays true: it lists every rule id, and every test it cites exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from order_recovery.domain import RULES
from order_recovery.domain.case import CASE_RULES

REPO = Path(__file__).resolve().parents[3]
DOC = (REPO / "docs" / "rules.md").read_text(encoding="utf-8")
ROW = re.compile(r"^\| `([a-z]+(?:\.[a-z0-9_]+)+)` \|(.*)$", re.MULTILINE)
NODE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def test_every_rule_id_has_exactly_one_row_and_no_unknown_rows():
    ids = [m.group(1) for m in ROW.finditer(DOC)]
    assert sorted(ids) == sorted({**RULES, **CASE_RULES})
    assert len(ids) == len(set(ids))


def test_every_row_cites_at_least_one_test():
    for match in ROW.finditer(DOC):
        assert NODE.search(match.group(2)), f"{match.group(1)} cites no test"


def test_every_cited_test_exists():
    cited = NODE.findall(DOC)
    assert cited
    for path, name in cited:
        source = REPO / path
        assert source.is_file(), path
        functions = {
            n.name
            for n in ast.walk(ast.parse(source.read_text()))
            if isinstance(n, ast.FunctionDef)
        }
        assert name in functions, f"{path}::{name}"


def test_every_rule_id_is_emitted_by_some_test_module():
    sources = "".join(p.read_text() for p in (REPO / "tests/unit/domain").glob("test_*.py"))
    for rule_id in RULES:
        assert f'"{rule_id}"' in sources, f"no test asserts {rule_id}"

"""The reference for decisions made by several workers at once: the pure rules applied to every
stored event in the order their decisions were committed.

Workers race; whichever commits first is first. A worker whose history read missed a concurrent
commit must not let that show: what it stored must be what the rules decide for the events in
commit order (decisions of one transaction in the order it decided them). Needs
`track_commit_timestamp` (the local stack turns it on).
"""

from __future__ import annotations

from typing import Any

import orjson
import psycopg

from tests.support.reference import expected_decisions

#: Stored events in commit order; within one transaction, in the order its audit rows were
#: inserted (the stage's decision order). A decision's own audit row, not the case step an
#: exception opened (which shares the event id).
_ORDER = """FROM decisions d JOIN audit_log a USING (event_id) WHERE NOT a.detail ? 'step'
    ORDER BY pg_xact_commit_timestamp(d.xmin), a.id"""
_IN_COMMIT_ORDER = f"SELECT d.event::text {_ORDER}"
#: The decisions' event ids in commit order (the chaos checker's order of case openings).
DECISIONS_IN_COMMIT_ORDER = f"SELECT d.event_id::text {_ORDER}"


def events_in_commit_order(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        return [orjson.loads(row[0]) for row in conn.execute(_IN_COMMIT_ORDER).fetchall()]


def stored_decisions(dsn: str) -> dict[str, tuple[str, tuple[str, ...], tuple[str, int] | None]]:
    """event_id -> (outcome, rule ids, compensation as (kind, fen) or None)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            """SELECT d.event_id::text, d.outcome, d.rule_ids, c.kind, c.amount_fen
               FROM decisions d LEFT JOIN compensations c USING (event_id)"""
        ).fetchall()
    return {e: (o, tuple(r), None if k is None else (k, a)) for e, o, r, k, a in rows}


def assert_decided_like_the_rules_in_commit_order(dsn: str) -> None:
    expected = expected_decisions(events_in_commit_order(dsn))
    want = {}
    for event_id, d in expected.items():
        comp = d.compensation
        money = None if comp is None else (str(comp.kind), comp.amount_fen)
        want[event_id] = (str(d.outcome), d.rule_ids, money)
    assert stored_decisions(dsn) == want

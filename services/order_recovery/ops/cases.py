"""`case show`: one order's story, from every table that records part of it, in time order.

Events sort by event time; what the service did (decisions, actions, compensation, audit, a case's
steps, the resolutions it recorded, the deadlines it set and fired) by the wall time it did it, so
a late-arriving event shows where it happened and where it was decided. Above the timeline, each
case of the order (`ops.case_life`): its state, deadline, held and released actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from order_recovery.ops.case_entry import KIND_ORDER, Entry
from order_recovery.ops.case_life import ActionState, CaseHeader, case_life

__all__ = ["ActionState", "CaseHeader", "CaseShow", "Entry", "show", "timeline"]


@dataclass(frozen=True, slots=True)
class CaseShow:
    order_id: str
    cases: list[CaseHeader]
    timeline: list[Entry]

    @property
    def empty(self) -> bool:
        return not self.cases and not self.timeline

    def to_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "cases": [c.to_json() for c in self.cases],
            "timeline": [e.to_json() for e in self.timeline],
        }


def show(conn: psycopg.Connection[Any], order_id: str) -> CaseShow:
    audit_ids: dict[tuple[str, int], str] = {}
    entries = _decisions(conn, order_id, audit_ids)
    cases, life = case_life(conn, order_id, audit_ids)
    return CaseShow(order_id, cases, _sorted(entries + life))


def timeline(conn: psycopg.Connection[Any], order_id: str) -> list[Entry]:
    """Every entry of the order, in time order (`show` without the case headers)."""
    return show(conn, order_id).timeline


def _decisions(
    conn: psycopg.Connection[Any], order_id: str, audit_ids: dict[tuple[str, int], str]
) -> list[Entry]:
    """Events, decisions, actions, compensation and the decisions' audit rows. A case step's
    audit row is not listed (its step is, from `case_steps`): its event id goes to
    `audit_ids`, by exception type and step."""
    entries: list[Entry] = []
    for row in conn.execute(
        """SELECT event_id::text, exception_type, platform, occurred_at, decided_at, outcome,
                  rule_ids, risk_flags, reason, policy_version, amount_fen, source_topic,
                  source_partition, source_offset
           FROM decisions WHERE order_id = %s""",
        (order_id,),
    ):
        (
            event_id,
            etype,
            platform,
            occurred,
            decided,
            outcome,
            rules,
            flags,
            reason,
            version,
            amount,
            topic,
            partition,
            offset,
        ) = row
        entries.append(
            Entry(
                occurred,
                "event",
                etype,
                event_id,
                f"{etype} on {platform}",
                {
                    "platform": platform,
                    "amount_fen": amount,
                    "source": f"{topic}[{partition}]@{offset}",
                },
            )
        )
        entries.append(
            Entry(
                decided,
                "decision",
                etype,
                event_id,
                f"{outcome}: {', '.join(rules)}",
                {
                    "outcome": outcome,
                    "rule_ids": rules,
                    "risk_flags": flags,
                    "reason": reason,
                    "policy_version": version,
                },
            )
        )
    for event_id, etype, decided, seq, action in conn.execute(
        """SELECT a.event_id::text, d.exception_type, d.decided_at, a.seq, a.action
           FROM actions a JOIN decisions d USING (event_id)
           WHERE d.order_id = %s ORDER BY a.seq""",
        (order_id,),
    ):
        entries.append(Entry(decided, "action", etype, event_id, action, {}, seq))
    for event_id, etype, kind, amount, decided in conn.execute(
        """SELECT event_id::text, exception_type, kind, amount_fen, decided_at
           FROM compensations WHERE order_id = %s""",
        (order_id,),
    ):
        entries.append(
            Entry(
                decided,
                "compensation",
                etype,
                event_id,
                f"{kind} {amount} fen",
                {"kind": kind, "amount_fen": amount},
            )
        )
    for audit_id, at, etype, event_id, from_status, to_status, detail in conn.execute(
        """SELECT id, at, exception_type, event_id::text, from_status, to_status, detail
           FROM audit_log WHERE order_id = %s ORDER BY id""",
        (order_id,),
    ):
        if "step" in detail:  # a case's step (domain.case), listed from case_steps
            audit_ids[(etype, detail["step"])] = event_id
            continue
        entries.append(
            Entry(
                at,
                "audit",
                etype,
                event_id,
                f"{from_status or '(new)'} -> {to_status}",
                {"from_status": from_status, "to_status": to_status, **detail},
                audit_id,
            )
        )
    return entries


def _sorted(entries: list[Entry]) -> list[Entry]:
    """Decisions of one batch share a decided_at, a case's steps of one transaction their
    recorded_at: at one instant, follow event time (the entry's own, else its event's)."""
    occurred = {e.event_id: e.at for e in entries if e.kind == "event"}
    return sorted(
        entries,
        key=lambda e: (
            e.at,
            e.tie or occurred.get(e.event_id, e.at),
            e.event_id,
            KIND_ORDER[e.kind],
            e.seq,
        ),
    )

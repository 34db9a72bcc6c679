"""`case show`: one order's story, from every table that records part of it, in time order.

Events sort by event time; what the service did (decisions, actions, compensation, audit) by the
wall time it did it, so a late-arriving event shows where it happened and where it was decided.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg

# Within one instant, the cause before its effects.
_KIND_ORDER = {"event": 0, "decision": 1, "action": 2, "compensation": 3, "audit": 4, "step": 5}


@dataclass(frozen=True, slots=True)
class Entry:
    at: datetime
    kind: str  # event | decision | action | compensation | audit | step (a case's)
    exception_type: str
    event_id: str
    summary: str
    detail: dict[str, Any]
    seq: int = 0  # action order within a decision, audit row id: the tie-break at one instant

    def to_json(self) -> dict[str, Any]:
        """Every field but the tie-break."""
        out = asdict(self)
        del out["seq"]
        return out


def timeline(conn: psycopg.Connection[Any], order_id: str) -> list[Entry]:
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
        step = "step" in detail  # a case's step (domain.case), else a decision's audit row
        summary = f"{from_status or '(new)'} -> {to_status}"
        entries.append(
            Entry(
                at,
                "step" if step else "audit",
                etype,
                event_id,
                f"{summary}: {detail['rule_id']}" if step else summary,
                {"from_status": from_status, "to_status": to_status, **detail},
                audit_id,
            )
        )
    # Decisions of one batch share a decided_at: at one instant, follow the events' own order.
    occurred = {e.event_id: e.at for e in entries if e.kind == "event"}
    entries.sort(
        key=lambda e: (e.at, occurred.get(e.event_id, e.at), e.event_id, _KIND_ORDER[e.kind], e.seq)
    )
    return entries

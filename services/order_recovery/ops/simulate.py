"""`simulate`: re-decide stored events under another policy set and compare with what was decided.

Nothing is written anywhere: events come from `decisions.event` (the event as received), and the
rules are pure. The window selects events by event time (`occurred_at`). Each order's history
(payment attempts, compensation granted, refunds per buyer and day, revoked recovery rights) is
rebuilt in event-time order with the pipeline's own functions, under the simulated policies: the
earlier events of the window's orders and buyers are re-decided too, as context, and not compared.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from order_recovery.core.stored_history import StoredHistory
from order_recovery.domain.contract import event_from_dict
from order_recovery.domain.errors import InvalidEvent
from order_recovery.domain.policy import Policy
from order_recovery.domain.rules import decide
from order_recovery.ops.output import Advance


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: str
    rule_ids: tuple[str, ...]
    compensation_kind: str | None
    compensation_fen: int
    policy_version: str

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "rule_ids": list(self.rule_ids),
            "compensation_kind": self.compensation_kind,
            "compensation_fen": self.compensation_fen,
            "policy_version": self.policy_version,
        }


@dataclass(frozen=True, slots=True)
class StoredDecision:
    event_id: str
    order_id: str
    platform: str
    exception_type: str
    event: dict[str, Any]
    decided: Verdict
    compared: bool  # in the window; False: an earlier event only there to build history


@dataclass(slots=True)
class Side:
    """The figures of one side of the comparison."""

    outcomes: Counter[str] = field(default_factory=Counter)
    coupon_fen: int = 0
    refund_fen: int = 0
    coupons: int = 0
    refunds: int = 0

    def add(self, v: Verdict) -> None:
        self.outcomes[v.outcome] += 1
        if v.compensation_kind == "coupon":
            self.coupons += 1
            self.coupon_fen += v.compensation_fen
        elif v.compensation_kind == "refund":
            self.refunds += 1
            self.refund_fen += v.compensation_fen

    @property
    def recovery_rate(self) -> float | None:
        n = sum(self.outcomes.values())
        return self.outcomes["recovered"] / n if n else None

    def to_json(self) -> dict[str, Any]:
        return {
            "outcomes": dict(sorted(self.outcomes.items())),
            "recovery_rate": self.recovery_rate,
            "coupon": {"count": self.coupons, "amount_fen": self.coupon_fen},
            "refund": {"count": self.refunds, "amount_fen": self.refund_fen},
            "compensation_fen": self.coupon_fen + self.refund_fen,
        }


@dataclass(slots=True)
class Simulation:
    events: int = 0
    decided: Side = field(default_factory=Side)  # what was decided, for the compared events
    simulated: Side = field(default_factory=Side)
    changes: list[tuple[StoredDecision, Verdict]] = field(default_factory=list)
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    not_decidable: Counter[str] = field(default_factory=Counter)  # reason -> events

    def to_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "compared": sum(self.decided.outcomes.values()),
            "not_decidable": dict(self.not_decidable),
            "decided": self.decided.to_json(),
            "simulated": self.simulated.to_json(),
            "changed": len(self.changes),
            "transitions": [
                {"from": a, "to": b, "count": n} for (a, b), n in sorted(self.transitions.items())
            ],
            "changes": [
                {
                    "event_id": s.event_id,
                    "order_id": s.order_id,
                    "platform": s.platform,
                    "exception_type": s.exception_type,
                    "decided": s.decided.to_json(),
                    "simulated": v.to_json(),
                }
                for s, v in self.changes
            ],
        }


def load(
    conn: psycopg.Connection[Any], since: datetime | None, until: datetime | None
) -> list[StoredDecision]:
    """The window's stored decisions and, before them, the earlier events of the same orders and
    buyers; in event-time order (event id breaks ties, for a stable result)."""
    rows = conn.execute(
        """WITH win AS (
             SELECT order_id, buyer_id FROM decisions
             WHERE (%(since)s::timestamptz IS NULL OR occurred_at >= %(since)s)
               AND (%(until)s::timestamptz IS NULL OR occurred_at < %(until)s))
           SELECT d.event_id::text, d.order_id, d.platform, d.exception_type, d.event,
                  d.outcome, d.rule_ids, c.kind, coalesce(c.amount_fen, 0), d.policy_version,
                  %(since)s::timestamptz IS NULL OR d.occurred_at >= %(since)s
           FROM decisions d LEFT JOIN compensations c ON c.event_id = d.event_id
           WHERE (%(until)s::timestamptz IS NULL OR d.occurred_at < %(until)s)
             AND (%(since)s::timestamptz IS NULL OR d.occurred_at >= %(since)s
                  OR d.order_id IN (SELECT order_id FROM win)
                  OR d.buyer_id IN (SELECT buyer_id FROM win))
           ORDER BY d.occurred_at, d.event_id""",
        {"since": since, "until": until},
    ).fetchall()
    return [
        StoredDecision(e, o, p, t, ev, Verdict(out, tuple(rules), kind, fen, version), compared)
        for e, o, p, t, ev, out, rules, kind, fen, version, compared in rows
    ]


def simulate(
    stored: list[StoredDecision], policies: Mapping[str, Policy], advance: Advance | None = None
) -> Simulation:
    result = Simulation(events=sum(1 for row in stored if row.compared))
    history = StoredHistory()
    for i, row in enumerate(stored, start=1):
        if advance is not None and i % 200 == 0:
            advance(i)
        policy = policies.get(row.platform)
        try:
            event = event_from_dict(row.event)
        except InvalidEvent as exc:
            result.not_decidable[exc.error_class] += row.compared
            continue
        if policy is None:
            result.not_decidable[f"no policy for {row.platform}"] += row.compared
            continue
        decision = decide(event, history.order_history(event), policy)
        history.advance(event, decision)
        if not row.compared:
            continue
        comp = decision.compensation
        verdict = Verdict(
            str(decision.outcome),
            decision.rule_ids,
            None if comp is None else str(comp.kind),
            0 if comp is None else comp.amount_fen,
            decision.policy_version,
        )
        result.decided.add(row.decided)
        result.simulated.add(verdict)
        result.transitions[(row.decided.outcome, verdict.outcome)] += 1
        before = row.decided
        if (before.outcome, before.rule_ids, before.compensation_kind, before.compensation_fen) != (
            verdict.outcome,
            verdict.rule_ids,
            verdict.compensation_kind,
            verdict.compensation_fen,
        ):
            result.changes.append((row, verdict))
    if advance is not None:
        advance(len(stored))
    return result

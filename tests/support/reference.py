"""What the worker should decide for a feed, computed with the pure rules and a history kept
independently of the worker's code (no StoredHistory, no SQL): the reference the integration and
e2e tests hold the worker to."""

from __future__ import annotations

from collections import Counter
from typing import Any

from order_recovery.domain.contract import event_from_dict
from order_recovery.domain.history import OrderHistory, business_day
from order_recovery.domain.policy import load_policies
from order_recovery.domain.rules import decide


def expected_decisions(events: list[dict[str, Any]]) -> dict[str, Any]:
    """event_id -> Decision, deciding each order's events in feed order with a history kept
    independently of the worker's code."""
    policies = load_policies()
    attempts: Counter[str] = Counter()
    compensated: set[tuple[str, str]] = set()
    refunds: Counter[tuple[str, Any]] = Counter()
    revoked: set[str] = set()
    decided: dict[str, Any] = {}
    for raw in events:
        if raw["event_id"] in decided or raw["platform"] not in policies:
            continue
        event = event_from_dict(raw)
        env = event.envelope
        key = (env.order_id, str(env.event_type))
        day = (env.buyer_id, business_day(env.occurred_at))
        history = OrderHistory(
            payment_attempts=attempts[env.order_id],
            buyer_refunds_today=refunds[day],
            compensation_granted=key in compensated,
            recovery_right_revoked=env.order_id in revoked,
        )
        decision = decide(event, history, policies[env.platform])
        decided[env.event_id] = decision
        if str(env.event_type) == "payment-timeout":
            attempts[env.order_id] += 1
        if decision.compensation is not None:
            compensated.add(key)
            if str(decision.compensation.kind) == "refund":
                refunds[day] += 1
        if "forged_logistics" in {str(f) for f in decision.risk_flags}:
            revoked.add(env.order_id)
    return decided

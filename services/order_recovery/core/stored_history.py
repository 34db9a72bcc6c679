"""What is known about a batch's orders and buyers while its events are decided in order.

The store loads it once per batch; each decision then advances it, so the next event of the same
order (or buyer) sees this one's effects. The pipeline and `recoveryctl simulate` share it, so a
simulation re-decides with exactly the worker's view of the past. Pure: no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from order_recovery.domain.decision import CompensationKind, Decision, RiskFlag
from order_recovery.domain.events import Event, EventType
from order_recovery.domain.history import OrderHistory, business_day


@dataclass(slots=True)
class StoredHistory:
    decided_event_ids: set[str] = field(default_factory=set)
    case_status: dict[tuple[str, str], str] = field(default_factory=dict)
    compensated: set[tuple[str, str]] = field(default_factory=set)
    buyer_refunds: dict[tuple[str, date], int] = field(default_factory=dict)
    payment_attempts: dict[str, int] = field(default_factory=dict)
    revoked_orders: set[str] = field(default_factory=set)

    def order_history(self, event: Event) -> OrderHistory:
        """The rules' explicit view of the past for this event."""
        env = event.envelope
        return OrderHistory(
            payment_attempts=self.payment_attempts.get(env.order_id, 0),
            buyer_refunds_today=self.buyer_refunds.get(
                (env.buyer_id, business_day(env.occurred_at)), 0
            ),
            compensation_granted=(env.order_id, str(env.event_type)) in self.compensated,
            recovery_right_revoked=env.order_id in self.revoked_orders,
        )

    def advance(self, event: Event, decision: Decision) -> None:
        """Record what the next event of the same order (or buyer) must see of this one."""
        env = event.envelope
        key = (env.order_id, str(env.event_type))
        self.case_status[key] = str(decision.outcome)
        if env.event_type is EventType.PAYMENT_TIMEOUT:
            self.payment_attempts[env.order_id] = self.payment_attempts.get(env.order_id, 0) + 1
        if decision.compensation is not None:
            self.compensated.add(key)
            if decision.compensation.kind is CompensationKind.REFUND:
                day_key = (env.buyer_id, business_day(env.occurred_at))
                self.buyer_refunds[day_key] = self.buyer_refunds.get(day_key, 0) + 1
        if RiskFlag.FORGED_LOGISTICS in decision.risk_flags:
            self.revoked_orders.add(env.order_id)

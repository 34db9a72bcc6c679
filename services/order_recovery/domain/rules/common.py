"""The intermediate result each exception module returns, before the shared guards (repeat
compensation, risk controls) turn it into a Decision."""

from __future__ import annotations

from typing import Any

from msgspec import Struct, structs

from order_recovery.domain.decision import (
    ActionType,
    Compensation,
    CompensationKind,
    Outcome,
    RiskFlag,
)
from order_recovery.domain.policy import ShippingPolicy


class Verdict(Struct, frozen=True, gc=False):
    outcome: Outcome
    rule_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    actions: tuple[ActionType, ...] = ()
    compensation: Compensation | None = None
    risk_flags: tuple[RiskFlag, ...] = ()
    final: bool = False  # no guard may change it (rejections, revoked recovery rights)

    def but(self, **changes: Any) -> Verdict:
        """A copy with these fields changed (unknown names raise TypeError)."""
        return structs.replace(self, **changes)

    def note(self, rule_id: str, reason: str) -> Verdict:
        return self.but(rule_ids=(*self.rule_ids, rule_id), reasons=(*self.reasons, reason))

    def say(self, reason: str) -> Verdict:
        return self.but(reasons=(*self.reasons, reason))


def rejected(rule_id: str, reason: str) -> Verdict:
    return Verdict(Outcome.REJECTED, (rule_id,), (reason,), final=True)


def full_refund(amount_fen: int) -> Compensation | None:
    """The refund of the whole order amount; None for a 0-fen order (nothing to pay back, and a
    Compensation is always positive). Callers then drop the `auto_refund` action too."""
    return Compensation(CompensationKind.REFUND, amount_fen) if amount_fen > 0 else None


NOTHING_TO_REFUND = "the order amount is 0: nothing to refund"


def coupon_fen(amount_fen: int, shipping: ShippingPolicy) -> int:
    """rate% of the amount (rounded down), clamped to [min, max], never above the amount itself.
    Integer arithmetic only: money is never a float."""
    raw = amount_fen * shipping.coupon_rate_bp // 10_000
    clamped = max(shipping.coupon_min_fen, min(raw, shipping.coupon_max_fen))
    return max(0, min(clamped, amount_fen))


def yuan(fen: int) -> str:
    """Human-readable amount for reasons; never parsed back."""
    return f"{fen // 100}.{fen % 100:02d} yuan"

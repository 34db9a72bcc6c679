"""The intermediate result each exception module returns, before the shared guards (repeat
compensation, risk controls) turn it into a Decision."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from order_recovery.domain.decision import (
    ActionType,
    Compensation,
    CompensationKind,
    Outcome,
    RiskFlag,
)
from order_recovery.domain.policy import ShippingPolicy


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    rule_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    actions: tuple[ActionType, ...] = ()
    compensation: Compensation | None = None
    risk_flags: tuple[RiskFlag, ...] = ()
    final: bool = False  # no guard may change it (rejections, revoked recovery rights)

    def but(self, **changes: Any) -> Verdict:
        """`dataclasses.replace`, without its field introspection on every call: this runs for
        most events, and replace() was a tenth of the rules' time."""
        unknown = changes.keys() - _VERDICT_FIELDS
        if unknown:
            raise TypeError(f"Verdict has no field(s) {sorted(unknown)}")
        get = changes.get
        return Verdict(
            get("outcome", self.outcome),
            get("rule_ids", self.rule_ids),
            get("reasons", self.reasons),
            get("actions", self.actions),
            get("compensation", self.compensation),
            get("risk_flags", self.risk_flags),
            get("final", self.final),
        )

    def note(self, rule_id: str, reason: str) -> Verdict:
        return self.but(rule_ids=(*self.rule_ids, rule_id), reasons=(*self.reasons, reason))

    def say(self, reason: str) -> Verdict:
        return self.but(reasons=(*self.reasons, reason))


_VERDICT_FIELDS = frozenset(f.name for f in fields(Verdict))


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

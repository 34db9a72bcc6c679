"""What the rules return: an outcome, ordered actions, at most one compensation, and the trace
(rule ids, policy version) that lets anyone replay and explain the decision."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from msgspec import Struct


class Outcome(StrEnum):
    RECOVERED = "recovered"  # an automatic recovery action was decided
    PENDING = "pending"  # waiting on someone else: channel query, evidence, platform appeal
    ESCALATED = "escalated"  # a risk control or conflict sends it to a person
    CLOSED_NO_RECOVERY = "closed_no_recovery"  # closed without recovering the order (refund...)
    EXPIRED = "expired"  # outside the recovery window
    REJECTED = "rejected"  # not (yet) an exception: nothing to do


class ActionType(StrEnum):
    RETRY_PAYMENT_QUERY = "retry_payment_query"
    RECALL_ORDER = "recall_order"
    REISSUE_ORDER_WITH_PAYMENT_LINK = "reissue_order_with_payment_link"
    CONSUME_ORIGINAL_COUPON = "consume_original_coupon"
    UPDATE_SHIPPING_STATUS = "update_shipping_status"
    ISSUE_COUPON = "issue_coupon"
    AUTO_REFUND = "auto_refund"
    MERCHANT_PENALTY = "merchant_penalty"
    UPLOAD_EVIDENCE = "upload_evidence"
    FILE_APPEAL = "file_appeal"
    REQUEST_PLATFORM_ARBITRATION = "request_platform_arbitration"
    REQUEST_EVIDENCE = "request_evidence"
    FREEZE = "freeze"
    INTERCEPT_REFUNDS = "intercept_refunds"
    REVOKE_RECOVERY_RIGHT = "revoke_recovery_right"
    MANUAL_REVIEW = "manual_review"


#: Actions that move money to the buyer; risk controls must never let these through.
MONEY_ACTIONS = frozenset({ActionType.ISSUE_COUPON, ActionType.AUTO_REFUND})


class RiskFlag(StrEnum):
    HIGH_VALUE_ORDER = "high_value_order"
    EXCESSIVE_PAYMENT_ATTEMPTS = "excessive_payment_attempts"
    REFUND_ABUSE = "refund_abuse"
    LOW_MERCHANT_DSR = "low_merchant_dsr"
    ORDER_BRUSHING_SUSPECTED = "order_brushing_suspected"
    FORGED_LOGISTICS = "forged_logistics"
    RECOVERY_RIGHT_REVOKED = "recovery_right_revoked"


class CompensationKind(StrEnum):
    COUPON = "coupon"
    REFUND = "refund"


class Compensation(Struct, frozen=True, gc=False):
    kind: CompensationKind
    amount_fen: int

    def __post_init__(self) -> None:
        if type(self.amount_fen) is not int or self.amount_fen <= 0:
            raise ValueError(f"compensation must be a positive int of fen, got {self.amount_fen!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "amount_fen": self.amount_fen}


class Decision(Struct, frozen=True, gc=False):
    outcome: Outcome
    actions: tuple[ActionType, ...]
    compensation: Compensation | None
    risk_flags: tuple[RiskFlag, ...]
    reason: str
    rule_ids: tuple[str, ...]
    policy_version: str
    # What the rules would have done automatically, withheld by a risk control for a person.
    held_actions: tuple[ActionType, ...] = ()

    @property
    def moves_money(self) -> bool:
        return self.compensation is not None or any(a in MONEY_ACTIONS for a in self.actions)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the `decision` object of the recovery-outcome.v1 schema."""
        return {
            "outcome": str(self.outcome),
            "actions": [str(a) for a in self.actions],
            "held_actions": [str(a) for a in self.held_actions],
            "compensation": None if self.compensation is None else self.compensation.to_dict(),
            "risk_flags": [str(f) for f in self.risk_flags],
            "reason": self.reason,
            "rule_ids": list(self.rule_ids),
            "policy_version": self.policy_version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        """Inverse of to_dict, for reading persisted decisions back."""
        comp = data["compensation"]
        return cls(
            outcome=Outcome(data["outcome"]),
            actions=tuple(ActionType(a) for a in data["actions"]),
            held_actions=tuple(ActionType(a) for a in data.get("held_actions", ())),
            compensation=None
            if comp is None
            else Compensation(CompensationKind(comp["kind"]), comp["amount_fen"]),
            risk_flags=tuple(RiskFlag(f) for f in data["risk_flags"]),
            reason=data["reason"],
            rule_ids=tuple(data["rule_ids"]),
            policy_version=data["policy_version"],
        )

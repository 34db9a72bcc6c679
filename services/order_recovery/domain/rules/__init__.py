"""`decide(event, history, policy) -> Decision`: the whole rules engine, pure and deterministic.

Order of evaluation (documented in docs/rules.md):
1. the exception type's own rules (trigger, windows, actions, compensation);
2. rejections and revoked recovery rights are final;
3. at most one compensation per order + exception type;
4. risk controls, which hold every automatic action (money above all) for manual review.
Only event time is used: the same inputs always give the same decision.
"""

from __future__ import annotations

from typing import TypeVar

from order_recovery.domain.decision import ActionType, CompensationKind, Decision, Outcome, RiskFlag
from order_recovery.domain.events import Event, LogisticsException, PaymentTimeout, ShippingDelay
from order_recovery.domain.history import OrderHistory
from order_recovery.domain.policy import Policy
from order_recovery.domain.rules.catalog import RULES
from order_recovery.domain.rules.common import Verdict, coupon_fen
from order_recovery.domain.rules.logistics import decide_logistics_exception
from order_recovery.domain.rules.payment import decide_payment_timeout
from order_recovery.domain.rules.risk import (
    brushing_suspected,
    effective_merchant_dsr,
    effective_payment_attempts,
    risk_hits,
)
from order_recovery.domain.rules.shipping import decide_shipping_delay

__all__ = [
    "RULES",
    "brushing_suspected",
    "coupon_fen",
    "decide",
    "effective_merchant_dsr",
    "effective_payment_attempts",
]

_T = TypeVar("_T")


def _base(event: Event, policy: Policy) -> Verdict:
    if isinstance(event, PaymentTimeout):
        return decide_payment_timeout(event, policy)
    if isinstance(event, ShippingDelay):
        return decide_shipping_delay(event, policy)
    if isinstance(event, LogisticsException):
        return decide_logistics_exception(event, policy)
    raise TypeError(f"not an order-exception event: {type(event).__name__}")


_REVOKED = Verdict(
    Outcome.CLOSED_NO_RECOVERY,
    ("risk.recovery_right_revoked",),
    ("the order lost its right to recovery earlier (forged logistics): nothing is done",),
    risk_flags=(RiskFlag.RECOVERY_RIGHT_REVOKED,),
    final=True,
)


def _one_compensation(verdict: Verdict) -> tuple[Verdict, tuple[ActionType, ...]]:
    """A coupon already granted is not granted again (the status update still happens). A refund
    that falls due after an earlier compensation goes to a person: the buyer is owed their money,
    but paying twice automatically is exactly what this guard exists to prevent.
    Returns the new verdict and the actions it holds back."""
    comp = verdict.compensation
    if comp is None:
        return verdict, ()
    if comp.kind is CompensationKind.COUPON:
        kept = tuple(a for a in verdict.actions if a is not ActionType.ISSUE_COUPON)
        return verdict.but(actions=kept, compensation=None).note(
            "compensation.already_granted", "a compensation was already granted: no new coupon"
        ), ()
    escalated = Verdict(
        Outcome.ESCALATED,
        (*verdict.rule_ids, "compensation.already_granted"),
        (*verdict.reasons, "a compensation was already granted: refund held for manual review"),
        actions=(ActionType.MANUAL_REVIEW,),
        risk_flags=verdict.risk_flags,
    )
    return escalated, verdict.actions


def _apply_risk(
    event: Event,
    history: OrderHistory,
    policy: Policy,
    verdict: Verdict,
    held: tuple[ActionType, ...],
) -> tuple[Verdict, tuple[ActionType, ...]]:
    hits = risk_hits(event, history, policy, verdict)
    if not hits:
        return verdict, held
    flagged = verdict.but(
        rule_ids=(*verdict.rule_ids, *(h.rule_id for h in hits)),
        reasons=(*verdict.reasons, *(h.reason for h in hits)),
        risk_flags=(*verdict.risk_flags, *(h.flag for h in hits)),
    )
    if not (any(h.unconditional for h in hits) or verdict.actions):
        return flagged, held  # only the high-value gate, and nothing automatic to gate
    if verdict.outcome is not Outcome.ESCALATED:
        held = verdict.actions
    protective = tuple(h.protective for h in hits if h.protective is not None)
    escalated = flagged.but(
        outcome=Outcome.ESCALATED,
        actions=(*protective, ActionType.MANUAL_REVIEW),
        compensation=None,
    ).say("automatic actions held for manual review")
    return escalated, held


def decide(event: Event, history: OrderHistory, policy: Policy) -> Decision:
    if event.envelope.platform != policy.platform:
        raise ValueError(
            f"policy for {policy.platform!r} given for an event of {event.envelope.platform!r}"
        )
    verdict = _base(event, policy)
    held: tuple[ActionType, ...] = ()
    if not verdict.final and history.recovery_right_revoked:
        verdict = _REVOKED
    if not verdict.final:
        if history.compensation_granted:
            verdict, held = _one_compensation(verdict)
        verdict, held = _apply_risk(event, history, policy, verdict, held)
    return Decision(
        outcome=verdict.outcome,
        actions=_unique(verdict.actions),
        compensation=verdict.compensation,
        risk_flags=_unique(verdict.risk_flags),
        reason="; ".join(verdict.reasons),
        rule_ids=_unique(verdict.rule_ids),
        policy_version=policy.version,
        held_actions=_unique(held),
    )


def _unique(items: tuple[_T, ...]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(items))

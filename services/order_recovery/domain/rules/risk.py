"""Risk controls shared by every exception type.

They run after the exception rules so the decision can record what *would* have happened
(`held_actions`) and a reviewer sees the proposal. Every control except the high-value one sends the
case to a person unconditionally; the high-value control only gates automatic actions ("manual risk
review before any automatic action"), so an expired big order stays expired.
"""

from __future__ import annotations

from msgspec import Struct

from order_recovery.domain.decision import ActionType, CompensationKind, RiskFlag
from order_recovery.domain.events import Event, GoodsCategory, PaymentTimeout
from order_recovery.domain.history import OrderHistory
from order_recovery.domain.policy import Policy
from order_recovery.domain.rules.common import Verdict, yuan


class RiskHit(Struct, frozen=True, gc=False):
    flag: RiskFlag
    rule_id: str
    reason: str
    protective: ActionType | None = None  # taken even though everything else is held
    unconditional: bool = True  # escalates even when the rules had no automatic action


def _refunds(verdict: Verdict) -> bool:
    comp = verdict.compensation
    return ActionType.AUTO_REFUND in verdict.actions or (
        comp is not None and comp.kind is CompensationKind.REFUND
    )


def brushing_suspected(amount_fen: int, weight_g: int | None, policy: Policy) -> bool:
    """Amount out of proportion to the parcel: at least the minimum amount and more than
    `brushing_max_fen_per_gram` per gram (an empty or near-empty parcel)."""
    r = policy.risk
    if weight_g is None:
        return False
    return (
        amount_fen >= r.brushing_min_amount_fen
        and amount_fen > weight_g * r.brushing_max_fen_per_gram
    )


def effective_payment_attempts(event: Event, history: OrderHistory) -> int:
    """Attempts counted for the freeze control: the larger of what the producer counted (payment
    events carry `payment_attempt_count`) and what the worker's store knows."""
    if isinstance(event, PaymentTimeout):
        return max(event.payment_attempt_count, history.payment_attempts)
    return history.payment_attempts


def effective_merchant_dsr(event: Event, history: OrderHistory) -> float | None:
    """The event's DSR reading when it carries one (the newer reading), else the stored one."""
    dsr = event.envelope.merchant_dsr
    return history.merchant_dsr if dsr is None else dsr


def risk_hits(
    event: Event, history: OrderHistory, policy: Policy, verdict: Verdict
) -> list[RiskHit]:
    r = policy.risk
    env = event.envelope
    hits: list[RiskHit] = []
    if env.amount_fen >= r.high_value_fen:
        hits.append(
            RiskHit(
                RiskFlag.HIGH_VALUE_ORDER,
                "risk.high_value_review",
                f"order of {yuan(env.amount_fen)} >= {yuan(r.high_value_fen)}: risk review",
                unconditional=False,
            )
        )
    attempts = effective_payment_attempts(event, history)
    if attempts > r.max_payment_attempts:
        hits.append(
            RiskHit(
                RiskFlag.EXCESSIVE_PAYMENT_ATTEMPTS,
                "risk.payment_attempts_freeze",
                f"{attempts} payment attempts > {r.max_payment_attempts}: freeze",
                protective=ActionType.FREEZE,
            )
        )
    refunds = history.buyer_refunds_today + (1 if _refunds(verdict) else 0)
    if refunds > r.max_buyer_refunds_per_day:
        hits.append(
            RiskHit(
                RiskFlag.REFUND_ABUSE,
                "risk.refund_abuse_intercept",
                f"buyer at {refunds} refunds today > {r.max_buyer_refunds_per_day}: intercepted",
                protective=ActionType.INTERCEPT_REFUNDS,
            )
        )
    dsr = effective_merchant_dsr(event, history)
    if dsr is not None and dsr < r.dsr_review_below:
        hits.append(
            RiskHit(
                RiskFlag.LOW_MERCHANT_DSR,
                "risk.low_dsr_review",
                f"merchant DSR {dsr} < {r.dsr_review_below}: manual review",
            )
        )
    weight = None if isinstance(event, PaymentTimeout) else event.parcel_weight_g
    if env.category is not GoodsCategory.VIRTUAL and brushing_suspected(
        env.amount_fen, weight, policy
    ):
        hits.append(
            RiskHit(
                RiskFlag.ORDER_BRUSHING_SUSPECTED,
                "risk.brushing_review",
                f"{yuan(env.amount_fen)} for a {weight} g parcel: suspected order brushing",
            )
        )
    return hits

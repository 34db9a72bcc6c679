"""Exception 2: a paid order has not been handed to the carrier in time."""

from __future__ import annotations

from datetime import timedelta

from order_recovery.domain.decision import ActionType, Compensation, CompensationKind, Outcome
from order_recovery.domain.events import CarrierPickupStatus, GoodsCategory, ShippingDelay
from order_recovery.domain.policy import Policy
from order_recovery.domain.rules.common import (
    NOTHING_TO_REFUND,
    Verdict,
    coupon_fen,
    full_refund,
    rejected,
    yuan,
)


def decide_shipping_delay(event: ShippingDelay, policy: Policy) -> Verdict:
    s = policy.shipping
    env = event.envelope
    now = env.occurred_at
    if not env.order_created_at <= event.paid_at <= now:
        return rejected(
            "event.inconsistent_timestamps",
            "order_created_at <= paid_at <= occurred_at does not hold",
        )
    # Handed to the carrier: whatever the clock says, the merchant has shipped.
    if event.carrier_pickup_status is CarrierPickupStatus.PICKED_UP:
        return rejected(
            "shipping.already_picked_up",
            "the carrier has picked the parcel up: not a shipping delay",
        )
    unshipped = now - event.paid_at
    fresh = env.category is GoodsCategory.FRESH
    refund = full_refund(env.amount_fen)

    # Checked before the 48 h trigger and the 7-day window: fresh produce has its own clock.
    if fresh and unshipped > timedelta(seconds=s.fresh_ship_limit_s):
        late = f"fresh produce unshipped for {unshipped}"
        penalty = "merchant penalised (deposit and traffic)"
        if refund is None:
            return Verdict(
                Outcome.CLOSED_NO_RECOVERY,
                ("shipping.fresh_refund_2h",),
                (f"{late}: {penalty}", NOTHING_TO_REFUND),
                actions=(ActionType.MERCHANT_PENALTY,),
            )
        return Verdict(
            Outcome.CLOSED_NO_RECOVERY,
            ("shipping.fresh_refund_2h",),
            (f"{late}: full refund of {yuan(env.amount_fen)}, {penalty}",),
            actions=(ActionType.AUTO_REFUND, ActionType.MERCHANT_PENALTY),
            compensation=refund,
        )
    limit = timedelta(seconds=s.fresh_ship_limit_s if fresh else s.ship_limit_s)
    if unshipped <= limit:
        return rejected(
            "shipping.not_yet_delayed", f"paid {unshipped} ago, the shipping limit is {limit}"
        )

    age = now - env.order_created_at
    window = timedelta(seconds=s.recovery_window_s)
    if age > window:
        past = f"order created {age} ago, past the {window} window"
        if refund is None:
            return Verdict(
                Outcome.CLOSED_NO_RECOVERY,
                ("shipping.refund_past_window",),
                (past, NOTHING_TO_REFUND),
            )
        return Verdict(
            Outcome.CLOSED_NO_RECOVERY,
            ("shipping.refund_past_window",),
            (f"{past}: full refund",),
            actions=(ActionType.AUTO_REFUND,),
            compensation=refund,
        )
    amount = coupon_fen(env.amount_fen, s)
    reason = f"unshipped {unshipped}, within the {window} window: mark delayed, urge the merchant"
    if amount == 0:  # a 0-fen order, or a policy whose coupon rate and minimum are both 0
        return Verdict(
            Outcome.RECOVERED,
            ("shipping.coupon_within_7d",),
            (reason, "coupon rule yields 0: no coupon"),
            actions=(ActionType.UPDATE_SHIPPING_STATUS,),
        )
    return Verdict(
        Outcome.RECOVERED,
        ("shipping.coupon_within_7d",),
        (f"{reason}, coupon of {yuan(amount)}",),
        actions=(ActionType.UPDATE_SHIPPING_STATUS, ActionType.ISSUE_COUPON),
        compensation=Compensation(CompensationKind.COUPON, amount),
    )

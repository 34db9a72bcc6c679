"""Every rule id the engine can emit, with a one-line meaning.

Rule ids are stable strings stored with each decision: rename one only with a migration of the
stored decisions. docs/rules.md mirrors this table (a unit test keeps them in step).
"""

from __future__ import annotations

RULES: dict[str, str] = {
    # common
    "event.inconsistent_timestamps": "timestamps contradict each other or lie after the event",
    "compensation.already_granted": "a compensation was already granted for order + exception",
    # payment-timeout
    "payment.not_yet_expired": "unpaid for less than the payment timeout (30 min, virtual 15 min)",
    "payment.no_recovery_window": "platform has no recovery window: order void at timeout",
    "payment.outside_window": "payment failure older than the recovery window",
    "payment.window_extended": "merchant asked for the extended window and the policy allows it",
    "payment.retry_transient_code": "transient channel code: re-query the channel first",
    "payment.non_transient_code": "non-transient channel code: no channel retry",
    "payment.recall_within_2h": "within 2 h of the failure: recall the same order",
    "payment.reissue_after_2h": "after 2 h, in window, in stock: new order + payment link",
    "payment.out_of_stock": "after 2 h and out of stock: cannot reissue",
    "payment.consume_original_coupon": "re-payment consumes the original order's coupon",
    # shipping-delay
    "shipping.already_picked_up": "the carrier has picked the parcel up: not a shipping delay",
    "shipping.not_yet_delayed": "paid less than 48 h ago (fresh: 2 h): not a delay yet",
    "shipping.fresh_refund_2h": "fresh produce unshipped > 2 h: full refund + merchant penalty",
    "shipping.coupon_within_7d": "within 7 natural days: update shipping status + coupon",
    "shipping.refund_past_window": "past the 7-day window: automatic full refund",
    # logistics-exception
    "logistics.forged_revokes_recovery": "forged logistics information: recovery right revoked",
    "logistics.outside_window": "more than 15 days after sign-off / exception",
    "logistics.request_evidence": "no evidence attached: ask the merchant, case stays open",
    "logistics.appeal_system_review": "douyin: upload evidence, appeal, system review",
    "logistics.platform_arbitration": "taobao: upload evidence, platform arbitration",
    "logistics.refund_first": "pinduoduo: automatic full refund first, then appeal",
    # risk controls
    "risk.recovery_right_revoked": "order lost its recovery right earlier: close",
    "risk.high_value_review": "order >= 5,000 yuan: manual risk review before automatic actions",
    "risk.payment_attempts_freeze": "over 3 payment attempts (event or store): freeze + review",
    "risk.refund_abuse_intercept": "buyer over 5 refunds in the day: intercept, manual review",
    "risk.low_dsr_review": "merchant DSR (event, else store) below 4.6: manual review",
    "risk.brushing_review": "amount out of proportion to parcel weight: manual review",
}

"""Exception 1: an order stayed unpaid past its payment timeout."""

from __future__ import annotations

from datetime import datetime, timedelta

from order_recovery.domain.decision import ActionType, Outcome
from order_recovery.domain.events import GoodsCategory, PaymentTimeout
from order_recovery.domain.policy import Policy
from order_recovery.domain.rules.common import Verdict, rejected


def decide_payment_timeout(event: PaymentTimeout, policy: Policy) -> Verdict:
    p = policy.payment
    env = event.envelope
    now = env.occurred_at
    created, failed = env.order_created_at, event.payment_failed_at
    if created > now or (failed is not None and not created <= failed <= now):
        return rejected(
            "event.inconsistent_timestamps",
            "order_created_at <= payment_failed_at <= occurred_at does not hold",
        )
    virtual = env.category is GoodsCategory.VIRTUAL
    timeout = timedelta(seconds=p.virtual_timeout_s if virtual else p.timeout_s)
    expired_at = created + timeout
    if now <= expired_at:
        return rejected(
            "payment.not_yet_expired",
            f"unpaid for {now - created}, the payment timeout is {timeout}",
        )
    if p.recovery_window_s == 0:
        return Verdict(
            Outcome.EXPIRED,
            ("payment.no_recovery_window",),
            (f"{policy.platform} has no recovery window: the order is void after the timeout",),
        )

    # Never attempted: the "payment failure" is the timeout running out.
    start = failed if failed is not None else expired_at
    elapsed = now - start
    verdict = Verdict(Outcome.RECOVERED, (), ())
    window_s = p.recovery_window_s
    if event.window_extension_requested:
        if p.window_extendable:
            window_s = p.extended_recovery_window_s
            verdict = verdict.note(
                "payment.window_extended",
                f"recovery window extended to {timedelta(seconds=window_s)}",
            )
        else:
            verdict = verdict.say(f"{policy.platform} has no window extension: request ignored")
    if elapsed > timedelta(seconds=window_s):
        return Verdict(
            Outcome.EXPIRED,
            (*verdict.rule_ids, "payment.outside_window"),
            (
                *verdict.reasons,
                f"payment failed {elapsed} ago, outside the {timedelta(seconds=window_s)} window",
            ),
        )
    return _inside_window(event, policy, verdict, elapsed)


def _inside_window(
    event: PaymentTimeout, policy: Policy, verdict: Verdict, elapsed: timedelta
) -> Verdict:
    p = policy.payment
    actions: list[ActionType] = []
    code = event.channel_return_code
    retry = code is not None and code in p.transient_return_codes
    if retry:
        actions.append(ActionType.RETRY_PAYMENT_QUERY)
        verdict = verdict.note(
            "payment.retry_transient_code",
            f"channel code {code} is transient: query the channel / retry the callback first",
        )
    elif code is not None and code in p.non_transient_return_codes:
        verdict = verdict.note(
            "payment.non_transient_code", f"channel code {code} is not transient: no retry"
        )

    if elapsed <= timedelta(seconds=p.recall_limit_s):
        actions.append(ActionType.RECALL_ORDER)
        verdict = verdict.note(
            "payment.recall_within_2h",
            f"payment failed {elapsed} ago: recall the order (reset to awaiting payment)",
        )
    elif event.stock_available:
        actions.append(ActionType.REISSUE_ORDER_WITH_PAYMENT_LINK)
        verdict = verdict.note(
            "payment.reissue_after_2h",
            f"payment failed {elapsed} ago: issue a new order number and payment link",
        )
    else:
        verdict = verdict.note("payment.out_of_stock", "out of stock: no new order can be issued")

    repays = (
        ActionType.RECALL_ORDER in actions or ActionType.REISSUE_ORDER_WITH_PAYMENT_LINK in actions
    )
    if repays and event.original_coupon_id is not None:
        actions.append(ActionType.CONSUME_ORIGINAL_COUPON)
        verdict = verdict.note(
            "payment.consume_original_coupon",
            f"re-payment consumes the original coupon {event.original_coupon_id}: tell the buyer",
        )

    if retry:
        outcome = Outcome.PENDING  # the channel's answer decides; recall/reissue is the fallback
    elif repays:
        outcome = Outcome.RECOVERED
    else:
        outcome = Outcome.CLOSED_NO_RECOVERY
    return Verdict(outcome, verdict.rule_ids, verdict.reasons, actions=tuple(actions))


def payment_window_end(event: PaymentTimeout, policy: Policy) -> datetime:
    """When the recovery window of a payment-timeout case closes: the deadline of a case waiting
    for payment (domain.case). The same arithmetic as `decide_payment_timeout`: the window runs
    from the payment failure (else from the timeout) and is the extended one when asked for and
    allowed."""
    p = policy.payment
    env = event.envelope
    virtual = env.category is GoodsCategory.VIRTUAL
    expired_at = env.order_created_at + timedelta(
        seconds=p.virtual_timeout_s if virtual else p.timeout_s
    )
    start = event.payment_failed_at if event.payment_failed_at is not None else expired_at
    extended = event.window_extension_requested and p.window_extendable
    return start + timedelta(
        seconds=p.extended_recovery_window_s if extended else p.recovery_window_s
    )

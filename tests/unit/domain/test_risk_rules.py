"""Risk controls (all exception types), repeat compensation, revoked recovery rights."""

from __future__ import annotations

import pytest

from order_recovery.domain import ActionType, OrderHistory, Outcome, RiskFlag
from order_recovery.domain.history import business_day

from .factories import (
    PLATFORMS,
    POLICIES,
    T0,
    D,
    H,
    M,
    logistics_exception,
    payment_timeout,
    run,
    shipping_delay,
)

A = ActionType
COUPON_CASE = {"paid_ago": 50 * H}  # shipping delay -> coupon
FRESH_REFUND = {"paid_ago": 3 * H, "category": "fresh"}  # shipping delay -> refund


def _money_free(d):
    return d.compensation is None and not d.moves_money


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize(
    "make",
    [
        lambda p, amount: payment_timeout(p, failed_ago=M, amount_fen=amount),
        lambda p, amount: shipping_delay(p, amount_fen=amount, weight_g=5_000),
        lambda p, amount: logistics_exception(p, amount_fen=amount),
    ],
    ids=["payment", "shipping", "logistics"],
)
def test_orders_of_5000_yuan_or_more_need_manual_risk_review_first(platform, make):
    below = run(make(platform, 499_999))
    assert below.outcome is not Outcome.ESCALATED
    at = run(make(platform, 500_000))
    if platform == "pinduoduo" and at.rule_ids[0] == "payment.no_recovery_window":
        # nothing automatic to hold: the order stays expired, flagged
        assert at.outcome is Outcome.EXPIRED and at.risk_flags == (RiskFlag.HIGH_VALUE_ORDER,)
        return
    assert at.outcome is Outcome.ESCALATED
    assert at.actions == (A.MANUAL_REVIEW,)
    assert at.held_actions == below.actions
    assert at.risk_flags == (RiskFlag.HIGH_VALUE_ORDER,)
    assert at.rule_ids[-1] == "risk.high_value_review"
    assert _money_free(at)


def test_high_value_without_automatic_action_keeps_its_outcome():
    d = run(payment_timeout("douyin", failed_ago=30 * H, amount_fen=800_000))
    assert d.outcome is Outcome.EXPIRED
    assert d.actions == ()
    assert d.risk_flags == (RiskFlag.HIGH_VALUE_ORDER,)


@pytest.mark.parametrize(
    ("on_event", "stored", "frozen"),
    [
        (4, 0, True),  # the producer counted more than 3 attempts
        (3, 0, False),
        (1, 4, True),  # the store knows more than the event
        (3, 3, False),  # the larger of the two, never the sum
        (0, 0, False),
    ],
)
def test_payment_attempts_are_the_larger_of_event_and_history(on_event, stored, frozen):
    doc = payment_timeout("douyin", failed_ago=M, attempts=on_event)
    d = run(doc, OrderHistory(payment_attempts=stored))
    assert ("risk.payment_attempts_freeze" in d.rule_ids) is frozen
    if frozen:
        assert d.outcome is Outcome.ESCALATED
        assert d.actions == (A.FREEZE, A.MANUAL_REVIEW)
        assert d.risk_flags == (RiskFlag.EXCESSIVE_PAYMENT_ATTEMPTS,)
        assert f"{max(on_event, stored)} payment attempts" in d.reason
    else:
        assert d.outcome is Outcome.RECOVERED


@pytest.mark.parametrize("platform", PLATFORMS)
def test_more_than_3_payment_attempts_freeze_and_manual_review(platform):
    ok = run(payment_timeout(platform, failed_ago=M), OrderHistory(payment_attempts=3))
    assert RiskFlag.EXCESSIVE_PAYMENT_ATTEMPTS not in ok.risk_flags
    d = run(payment_timeout(platform, failed_ago=M), OrderHistory(payment_attempts=4))
    assert d.outcome is Outcome.ESCALATED  # even pinduoduo's expired order: unconditional
    assert d.actions == (A.FREEZE, A.MANUAL_REVIEW)
    assert d.risk_flags == (RiskFlag.EXCESSIVE_PAYMENT_ATTEMPTS,)
    assert "risk.payment_attempts_freeze" in d.rule_ids
    assert _money_free(d)


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize(
    ("case", "prior", "intercepted"),
    [
        (FRESH_REFUND, 4, False),  # this refund is the 5th: allowed
        (FRESH_REFUND, 5, True),  # this refund would be the 6th: more than 5
        (COUPON_CASE, 5, False),  # no refund in this decision: still 5
        (COUPON_CASE, 6, True),  # the buyer already has more than 5 today
    ],
)
def test_buyer_over_5_refunds_a_day_is_intercepted(platform, case, prior, intercepted):
    d = run(shipping_delay(platform, **case), OrderHistory(buyer_refunds_today=prior))
    assert (RiskFlag.REFUND_ABUSE in d.risk_flags) is intercepted
    if intercepted:
        assert d.outcome is Outcome.ESCALATED
        assert d.actions == (A.INTERCEPT_REFUNDS, A.MANUAL_REVIEW)
        assert "risk.refund_abuse_intercept" in d.rule_ids
        assert _money_free(d)
    else:
        assert d.moves_money


def test_refunds_are_counted_per_shanghai_calendar_day():
    assert str(business_day(T0)) == "2025-06-02"
    late_utc = T0.replace(hour=0, minute=30) - 8 * H + 23 * H  # 2025-06-01T15:30Z = 23:30 CST
    assert str(business_day(late_utc)) == "2025-06-02"
    assert str(business_day(T0.replace(hour=0) - M)) == "2025-06-01"


@pytest.mark.parametrize(
    ("dsr", "review"), [(None, False), (5.0, False), (4.6, False), (4.59, True), (4.5, True)]
)
@pytest.mark.parametrize("source", ["history", "event"])
@pytest.mark.parametrize("platform", PLATFORMS)
def test_merchant_dsr_below_4_6_goes_to_manual_review(platform, dsr, review, source):
    if source == "history":
        d = run(shipping_delay(platform, **COUPON_CASE), OrderHistory(merchant_dsr=dsr))
    else:
        d = run(shipping_delay(platform, dsr=dsr, **COUPON_CASE))
    assert (d.outcome is Outcome.ESCALATED) is review
    if review:
        assert d.actions == (A.MANUAL_REVIEW,)
        assert d.risk_flags == (RiskFlag.LOW_MERCHANT_DSR,)
        assert d.rule_ids[-1] == "risk.low_dsr_review"
        assert d.held_actions == (A.UPDATE_SHIPPING_STATUS, A.ISSUE_COUPON)


@pytest.mark.parametrize(
    ("amount_fen", "weight_g", "flagged"),
    [
        (20_000, 0, True),
        (20_000, 1, False),  # exactly 200 yuan per gram: not above the threshold
        (20_001, 1, True),
        (5_000, 0, True),  # the minimum amount considered
        (4_999, 0, False),  # small orders: weight too noisy to judge
        (19_900, None, False),  # weight unknown
        (40_000, 500, False),
    ],
)
@pytest.mark.parametrize("event", ["shipping", "logistics"])
def test_amount_out_of_proportion_to_parcel_weight_is_brushing(
    event, amount_fen, weight_g, flagged
):
    if event == "shipping":
        doc = shipping_delay("douyin", amount_fen=amount_fen, weight_g=weight_g)
    else:
        doc = logistics_exception("douyin", amount_fen=amount_fen, weight_g=weight_g)
    d = run(doc)
    assert (RiskFlag.ORDER_BRUSHING_SUSPECTED in d.risk_flags) is flagged
    if flagged:
        assert d.outcome is Outcome.ESCALATED
        assert d.actions == (A.MANUAL_REVIEW,)
        assert "risk.brushing_review" in d.rule_ids
        assert _money_free(d)


@pytest.mark.parametrize(
    ("event_dsr", "stored_dsr", "review"),
    [
        (4.7, 4.5, False),  # the event's newer reading wins: recovered above the threshold
        (4.5, 4.9, True),  # ... and fell below it
        (None, 4.5, True),  # no reading on the event (null): the stored score decides
        (4.6, None, False),
    ],
)
@pytest.mark.parametrize(
    "make",
    [
        lambda dsr: payment_timeout(failed_ago=M, dsr=dsr),
        lambda dsr: shipping_delay(dsr=dsr, **COUPON_CASE),
        lambda dsr: logistics_exception(dsr=dsr),
    ],
    ids=["payment", "shipping", "logistics"],
)
def test_the_events_dsr_wins_over_the_stored_one(make, event_dsr, stored_dsr, review):
    d = run(make(event_dsr), OrderHistory(merchant_dsr=stored_dsr))
    assert (RiskFlag.LOW_MERCHANT_DSR in d.risk_flags) is review
    assert ("risk.low_dsr_review" in d.rule_ids) is review
    if review:
        assert d.outcome is Outcome.ESCALATED and _money_free(d)


def test_brushing_threshold_is_in_the_policy():
    risk = POLICIES["douyin"].risk
    assert (risk.brushing_min_amount_fen, risk.brushing_max_fen_per_gram) == (5_000, 20_000)


def test_risk_controls_combine_protective_actions_in_order():
    history = OrderHistory(payment_attempts=5, buyer_refunds_today=8, merchant_dsr=4.0)
    d = run(shipping_delay("douyin", amount_fen=600_000, **FRESH_REFUND), history)
    assert d.outcome is Outcome.ESCALATED
    assert d.actions == (A.FREEZE, A.INTERCEPT_REFUNDS, A.MANUAL_REVIEW)
    assert d.held_actions == (A.AUTO_REFUND, A.MERCHANT_PENALTY)
    assert d.risk_flags == (
        RiskFlag.HIGH_VALUE_ORDER,
        RiskFlag.EXCESSIVE_PAYMENT_ATTEMPTS,
        RiskFlag.REFUND_ABUSE,
        RiskFlag.LOW_MERCHANT_DSR,
    )
    assert _money_free(d)


@pytest.mark.parametrize(
    "doc",
    [payment_timeout(failed_ago=M), shipping_delay(**COUPON_CASE), logistics_exception()],
    ids=["payment", "shipping", "logistics"],
)
def test_revoked_recovery_right_closes_every_later_event(doc):
    d = run(doc, OrderHistory(recovery_right_revoked=True))
    assert d.outcome is Outcome.CLOSED_NO_RECOVERY
    assert d.actions == () and d.compensation is None
    assert d.rule_ids == ("risk.recovery_right_revoked",)
    assert d.risk_flags == (RiskFlag.RECOVERY_RIGHT_REVOKED,)


def test_rejection_wins_over_history():
    d = run(
        shipping_delay(paid_ago=H), OrderHistory(recovery_right_revoked=True, payment_attempts=9)
    )
    assert d.outcome is Outcome.REJECTED
    assert d.risk_flags == ()


def test_coupon_already_granted_no_second_coupon_status_still_updated():
    d = run(shipping_delay(**COUPON_CASE), OrderHistory(compensation_granted=True))
    assert d.outcome is Outcome.RECOVERED
    assert d.actions == (A.UPDATE_SHIPPING_STATUS,)
    assert d.compensation is None
    assert d.rule_ids == ("shipping.coupon_within_7d", "compensation.already_granted")


@pytest.mark.parametrize(
    "doc",
    [
        shipping_delay(**FRESH_REFUND),
        shipping_delay(paid_ago=50 * H, created_ago=8 * D),
        logistics_exception("pinduoduo"),
    ],
    ids=["fresh", "past-window", "pinduoduo-logistics"],
)
def test_refund_due_after_a_compensation_goes_to_manual_review(doc):
    first = run(doc)
    d = run(doc, OrderHistory(compensation_granted=True))
    assert d.outcome is Outcome.ESCALATED
    assert d.actions == (A.MANUAL_REVIEW,)
    assert d.held_actions == first.actions
    assert d.compensation is None
    assert "compensation.already_granted" in d.rule_ids


def test_compensation_history_irrelevant_when_nothing_is_paid():
    doc = payment_timeout(failed_ago=M)
    assert run(doc, OrderHistory(compensation_granted=True)) == run(doc)

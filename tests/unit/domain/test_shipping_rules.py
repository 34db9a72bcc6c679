"""Exception 2 (shipping delay): 48 h trigger, fresh 2 h, 7-day window, coupon clamp."""

from __future__ import annotations

import pytest

from order_recovery.domain import ActionType, CompensationKind, Outcome
from order_recovery.domain.rules import coupon_fen

from .factories import PLATFORMS, POLICIES, D, H, M, S, run, shipping_delay

A = ActionType


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("paid_ago", [48 * H - S, 48 * H])
def test_not_a_delay_until_48h_after_payment(platform, paid_ago):
    d = run(shipping_delay(platform, paid_ago=paid_ago))
    assert d.outcome is Outcome.REJECTED
    assert d.rule_ids == ("shipping.not_yet_delayed",)
    assert d.actions == () and d.compensation is None


@pytest.mark.parametrize("platform", PLATFORMS)
def test_delay_in_window_updates_status_and_compensates_with_coupon(platform):
    d = run(shipping_delay(platform, paid_ago=48 * H + S, amount_fen=19_900))
    assert d.outcome is Outcome.RECOVERED
    assert d.actions == (A.UPDATE_SHIPPING_STATUS, A.ISSUE_COUPON)
    assert d.compensation is not None
    assert (d.compensation.kind, d.compensation.amount_fen) == (CompensationKind.COUPON, 995)
    assert d.rule_ids == ("shipping.coupon_within_7d",)


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize(
    ("created_ago", "rule"),
    [
        (7 * D - S, "shipping.coupon_within_7d"),
        (7 * D, "shipping.coupon_within_7d"),
        (7 * D + S, "shipping.refund_past_window"),
    ],
)
def test_seven_natural_day_window_then_automatic_refund(platform, created_ago, rule):
    d = run(shipping_delay(platform, paid_ago=50 * H, created_ago=created_ago, amount_fen=8_800))
    assert d.rule_ids == (rule,)
    if rule == "shipping.refund_past_window":
        assert d.outcome is Outcome.CLOSED_NO_RECOVERY
        assert d.actions == (A.AUTO_REFUND,)
        assert d.compensation is not None
        assert (d.compensation.kind, d.compensation.amount_fen) == (CompensationKind.REFUND, 8_800)


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("paid_ago", [2 * H - S, 2 * H])
def test_fresh_produce_not_late_within_2h(platform, paid_ago):
    d = run(shipping_delay(platform, paid_ago=paid_ago, category="fresh"))
    assert d.outcome is Outcome.REJECTED
    assert d.rule_ids == ("shipping.not_yet_delayed",)


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("paid_ago", [2 * H + S, 47 * H, 50 * H, 8 * D])
def test_fresh_produce_over_2h_full_refund_and_merchant_penalty(platform, paid_ago):
    d = run(shipping_delay(platform, paid_ago=paid_ago, category="fresh", amount_fen=12_345))
    assert d.outcome is Outcome.CLOSED_NO_RECOVERY
    assert d.actions == (A.AUTO_REFUND, A.MERCHANT_PENALTY)
    assert d.compensation is not None
    assert (d.compensation.kind, d.compensation.amount_fen) == (CompensationKind.REFUND, 12_345)
    assert d.rule_ids == ("shipping.fresh_refund_2h",)


def test_standard_goods_have_no_2h_limit():
    assert run(shipping_delay(paid_ago=2 * H + S)).outcome is Outcome.REJECTED


@pytest.mark.parametrize(
    ("amount_fen", "coupon"),
    [
        (19_900, 995),  # 5 %
        (6_000, 300),  # 5 % = exactly the 3 yuan floor
        (5_999, 300),  # 5 % = 299 (rounded down) -> floor 300
        (6_020, 301),
        (100_000, 5_000),  # 5 % = exactly the 50 yuan cap
        (100_020, 5_000),
        (400_000, 5_000),
        (300, 300),
        (299, 299),  # never above the order amount
        (1, 1),
    ],
)
def test_coupon_is_5_percent_clamped_to_3_and_50_yuan_never_above_amount(amount_fen, coupon):
    d = run(shipping_delay(amount_fen=amount_fen))
    assert d.compensation is not None
    assert d.compensation.amount_fen == coupon
    assert coupon_fen(amount_fen, POLICIES["taobao"].shipping) == coupon


def test_coupon_figures_are_the_policy_defaults():
    for policy in POLICIES.values():
        s = policy.shipping
        assert (s.coupon_rate_bp, s.coupon_min_fen, s.coupon_max_fen) == (500, 300, 5_000)


@pytest.mark.parametrize(
    "overrides",
    [{"paid_ago": -H}, {"paid_ago": 50 * H, "created_ago": 49 * H}],
)
def test_inconsistent_timestamps_are_rejected(overrides):
    d = run(shipping_delay(**overrides))
    assert d.outcome is Outcome.REJECTED
    assert d.rule_ids == ("event.inconsistent_timestamps",)


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize(
    "case",
    [
        {"paid_ago": 50 * H},  # would be a coupon
        {"paid_ago": 50 * H, "created_ago": 8 * D},  # would be a refund past the window
        {"paid_ago": 3 * H, "category": "fresh"},  # would be the fresh refund + penalty
        {"paid_ago": H},  # not late either: the pickup still answers first
    ],
    ids=["coupon", "past-window", "fresh", "early"],
)
def test_parcel_already_picked_up_is_not_a_shipping_delay(platform, case):
    d = run(shipping_delay(platform, pickup="picked_up", amount_fen=600_000, **case))
    assert d.outcome is Outcome.REJECTED
    assert d.rule_ids == ("shipping.already_picked_up",)
    assert d.actions == () and d.compensation is None and d.risk_flags == ()


def test_contradictory_timestamps_win_over_the_pickup_status():
    d = run(shipping_delay(paid_ago=-M, pickup="picked_up"))
    assert d.rule_ids == ("event.inconsistent_timestamps",)


@pytest.mark.parametrize(
    ("case", "rule", "outcome", "actions"),
    [
        (
            {"paid_ago": 3 * H, "category": "fresh"},
            "shipping.fresh_refund_2h",
            Outcome.CLOSED_NO_RECOVERY,
            (A.MERCHANT_PENALTY,),
        ),
        (
            {"paid_ago": 50 * H, "created_ago": 8 * D},
            "shipping.refund_past_window",
            Outcome.CLOSED_NO_RECOVERY,
            (),
        ),
        (
            {"paid_ago": 50 * H},
            "shipping.coupon_within_7d",
            Outcome.RECOVERED,
            (A.UPDATE_SHIPPING_STATUS,),
        ),
    ],
    ids=["fresh", "past-window", "coupon"],
)
def test_a_zero_amount_order_is_never_compensated(case, rule, outcome, actions):
    d = run(shipping_delay(amount_fen=0, **case))
    assert d.rule_ids == (rule,)
    assert d.outcome is outcome
    assert d.actions == actions
    assert d.compensation is None and not d.moves_money
    if rule != "shipping.coupon_within_7d":
        assert "nothing to refund" in d.reason

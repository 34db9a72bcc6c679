"""Exception 1 (payment timeout), line by line of docs/recovery-rules, on every platform."""

from __future__ import annotations

import pytest

from order_recovery.domain import ActionType, Outcome

from .factories import PLATFORMS, POLICIES, H, M, S, payment_timeout, run

A = ActionType


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize(
    ("category", "timeout"), [("standard", 30 * M), ("fresh", 30 * M), ("virtual", 15 * M)]
)
def test_trigger_is_the_payment_timeout_virtual_15_min(platform, category, timeout):
    def at(unpaid):
        return run(
            payment_timeout(platform, created_ago=unpaid, failed_ago=None, category=category)
        )

    for unpaid in (timeout - S, timeout):
        d = at(unpaid)
        assert d.outcome is Outcome.REJECTED
        assert d.rule_ids == ("payment.not_yet_expired",)
        assert d.actions == () and d.compensation is None
    past = at(timeout + S)
    assert past.outcome is not Outcome.REJECTED
    if platform == "pinduoduo":
        assert past.outcome is Outcome.EXPIRED
    else:  # one second into the recovery window: recall
        assert past.actions == (A.RECALL_ORDER,)


def test_virtual_goods_expire_at_15_min_standard_still_payable():
    virtual = run(payment_timeout(created_ago=20 * M, failed_ago=None, category="virtual"))
    standard = run(payment_timeout(created_ago=20 * M, failed_ago=None, category="standard"))
    assert virtual.outcome is Outcome.RECOVERED
    assert standard.outcome is Outcome.REJECTED


@pytest.mark.parametrize(
    ("failed_ago", "action"),
    [
        (2 * H - S, A.RECALL_ORDER),
        (2 * H, A.RECALL_ORDER),
        (2 * H + S, A.REISSUE_ORDER_WITH_PAYMENT_LINK),
    ],
)
def test_recall_within_2h_else_new_order_and_payment_link(failed_ago, action):
    d = run(payment_timeout("douyin", failed_ago=failed_ago))
    assert d.outcome is Outcome.RECOVERED
    assert d.actions == (action,)
    expected = (
        "payment.recall_within_2h" if action is A.RECALL_ORDER else "payment.reissue_after_2h"
    )
    assert d.rule_ids == (expected,)


def test_new_order_needs_stock_otherwise_out_of_stock():
    d = run(payment_timeout("douyin", failed_ago=3 * H, stock=False))
    assert d.outcome is Outcome.CLOSED_NO_RECOVERY
    assert d.actions == ()
    assert d.rule_ids == ("payment.out_of_stock",)


def test_recall_does_not_need_stock():
    d = run(payment_timeout("douyin", failed_ago=H, stock=False))
    assert d.actions == (A.RECALL_ORDER,)


@pytest.mark.parametrize(
    ("failed_ago", "outcome"),
    [(24 * H - S, Outcome.RECOVERED), (24 * H, Outcome.RECOVERED), (24 * H + S, Outcome.EXPIRED)],
)
def test_douyin_window_24h_after_payment_failure(failed_ago, outcome):
    d = run(payment_timeout("douyin", failed_ago=failed_ago))
    assert d.outcome is outcome
    if outcome is Outcome.EXPIRED:
        assert d.rule_ids == ("payment.outside_window",)
        assert d.actions == () and d.compensation is None


@pytest.mark.parametrize(
    ("failed_ago", "outcome"),
    [(72 * H - S, Outcome.RECOVERED), (72 * H, Outcome.RECOVERED), (72 * H + S, Outcome.EXPIRED)],
)
def test_douyin_window_extendable_to_72h(failed_ago, outcome):
    d = run(payment_timeout("douyin", failed_ago=failed_ago, extend=True))
    assert d.outcome is outcome
    assert d.rule_ids[0] == "payment.window_extended"


def test_douyin_extension_only_when_requested():
    assert run(payment_timeout("douyin", failed_ago=25 * H)).outcome is Outcome.EXPIRED
    extended = run(payment_timeout("douyin", failed_ago=25 * H, extend=True))
    assert extended.actions == (A.REISSUE_ORDER_WITH_PAYMENT_LINK,)


@pytest.mark.parametrize("extend", [False, True])
@pytest.mark.parametrize(
    ("failed_ago", "outcome"),
    [(30 * M - S, Outcome.RECOVERED), (30 * M, Outcome.RECOVERED), (30 * M + S, Outcome.EXPIRED)],
)
def test_taobao_window_30_min_fixed(failed_ago, outcome, extend):
    d = run(payment_timeout("taobao", failed_ago=failed_ago, extend=extend))
    assert d.outcome is outcome
    assert "payment.window_extended" not in d.rule_ids
    if outcome is Outcome.RECOVERED:
        assert d.actions == (A.RECALL_ORDER,)  # inside 30 min is always inside 2 h
    if extend:
        assert "no window extension" in d.reason


@pytest.mark.parametrize("failed_ago", [None, S, 10 * M, 2 * H])
@pytest.mark.parametrize("extend", [False, True])
def test_pinduoduo_order_void_once_the_timeout_passes(failed_ago, extend):
    d = run(payment_timeout("pinduoduo", failed_ago=failed_ago, extend=extend))
    assert d.outcome is Outcome.EXPIRED
    assert d.rule_ids == ("payment.no_recovery_window",)
    assert d.actions == () and d.compensation is None


def test_never_attempted_window_starts_when_the_timeout_ran_out():
    # created 24h30m + 1s ago: the timeout ran out 24h + 1s ago -> outside douyin's 24h window
    assert run(payment_timeout(created_ago=24 * H + 30 * M, failed_ago=None)).outcome is (
        Outcome.RECOVERED
    )
    assert run(payment_timeout(created_ago=24 * H + 30 * M + S, failed_ago=None)).outcome is (
        Outcome.EXPIRED
    )


@pytest.mark.parametrize("code", POLICIES["douyin"].payment.transient_return_codes)
@pytest.mark.parametrize("platform", ["douyin", "taobao"])
def test_transient_channel_code_retries_the_payment_query_first(platform, code):
    d = run(payment_timeout(platform, failed_ago=10 * M, code=code))
    assert d.outcome is Outcome.PENDING
    assert d.actions == (A.RETRY_PAYMENT_QUERY, A.RECALL_ORDER)
    assert d.rule_ids == ("payment.retry_transient_code", "payment.recall_within_2h")


def test_wechat_err_timeout_is_transient_in_every_policy():
    for policy in POLICIES.values():
        assert "ERR_TIMEOUT" in policy.payment.transient_return_codes


@pytest.mark.parametrize("code", POLICIES["douyin"].payment.non_transient_return_codes)
def test_non_transient_code_skips_the_retry(code):
    d = run(payment_timeout("douyin", failed_ago=10 * M, code=code))
    assert d.outcome is Outcome.RECOVERED
    assert d.actions == (A.RECALL_ORDER,)
    assert d.rule_ids == ("payment.non_transient_code", "payment.recall_within_2h")


@pytest.mark.parametrize("code", [None, "SOMETHING_NEW"])
def test_unlisted_or_missing_code_does_not_retry(code):
    d = run(payment_timeout("douyin", failed_ago=10 * M, code=code))
    assert d.actions == (A.RECALL_ORDER,)
    assert d.rule_ids == ("payment.recall_within_2h",)


def test_transient_retry_still_first_when_out_of_stock():
    d = run(payment_timeout("douyin", failed_ago=5 * H, code="ERR_TIMEOUT", stock=False))
    assert d.outcome is Outcome.PENDING
    assert d.actions == (A.RETRY_PAYMENT_QUERY,)
    assert "payment.out_of_stock" in d.rule_ids


def test_transient_code_outside_window_is_still_expired():
    d = run(payment_timeout("taobao", failed_ago=31 * M, code="ERR_TIMEOUT"))
    assert d.outcome is Outcome.EXPIRED and d.actions == ()


@pytest.mark.parametrize(
    ("failed_ago", "first"), [(H, A.RECALL_ORDER), (3 * H, A.REISSUE_ORDER_WITH_PAYMENT_LINK)]
)
def test_repayment_consumes_the_original_coupon_and_says_so(failed_ago, first):
    d = run(payment_timeout("douyin", failed_ago=failed_ago, coupon="cpn-42"))
    assert d.actions == (first, A.CONSUME_ORIGINAL_COUPON)
    assert d.rule_ids[-1] == "payment.consume_original_coupon"
    assert "cpn-42" in d.reason and "tell the buyer" in d.reason


def test_no_coupon_consumption_without_repayment():
    expired = run(payment_timeout("douyin", failed_ago=30 * H, coupon="cpn-42"))
    out_of_stock = run(payment_timeout("douyin", failed_ago=3 * H, coupon="cpn-42", stock=False))
    for d in (expired, out_of_stock):
        assert A.CONSUME_ORIGINAL_COUPON not in d.actions


@pytest.mark.parametrize(
    "overrides",
    [
        {"failed_ago": -M},  # failure after the event
        {"failed_ago": 10 * M, "created_ago": 5 * M},  # failure before the order existed
        {"failed_ago": None, "created_ago": -H},  # order created after the event
    ],
)
def test_inconsistent_timestamps_are_rejected(overrides):
    d = run(payment_timeout("douyin", **overrides))
    assert d.outcome is Outcome.REJECTED
    assert d.rule_ids == ("event.inconsistent_timestamps",)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_decision_records_the_policy_version(platform):
    assert run(payment_timeout(platform)).policy_version == POLICIES[platform].version


def test_payment_timeout_never_compensates():
    for failed_ago in (M, 3 * H, 30 * H):
        assert run(payment_timeout("douyin", failed_ago=failed_ago)).compensation is None


@pytest.mark.parametrize("failed_ago", [H, 3 * H])
def test_a_zero_amount_order_is_recovered_like_any_other(failed_ago):
    zero = run(payment_timeout("douyin", failed_ago=failed_ago, amount_fen=0))
    assert zero == run(payment_timeout("douyin", failed_ago=failed_ago))

"""Hypothesis properties over generated valid events and histories (see factories for the
strategies, which cluster times around every policy boundary)."""

from __future__ import annotations

import copy
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from order_recovery.domain import (
    RULES,
    ActionType,
    CompensationKind,
    OrderHistory,
    Outcome,
    PaymentTimeout,
    decide,
    event_from_dict,
    outcome_event,
    validate_outcome,
)
from order_recovery.domain.outcome import outcome_json
from order_recovery.domain.sample import moved_to

from .factories import (
    POLICIES,
    T0,
    event_docs,
    histories,
    logistics_exception_docs,
    payment_timeout,
    payment_timeout_docs,
)

MONEY = {ActionType.ISSUE_COUPON, ActionType.AUTO_REFUND}


def _decide(doc: dict[str, Any], history: OrderHistory):
    event = event_from_dict(doc)
    return decide(event, history, POLICIES[event.envelope.platform])


@settings(max_examples=300)
@given(event_docs, histories)
def test_same_input_same_decision(doc, history):
    first = _decide(doc, history)
    again = _decide(
        copy.deepcopy(doc), OrderHistory(**{f: getattr(history, f) for f in history.__slots__})
    )
    assert first == again
    assert first.to_dict() == again.to_dict()


def _shift(doc: dict[str, Any], delta: timedelta) -> dict[str, Any]:
    return moved_to(doc, datetime.fromisoformat(doc["occurred_at"]) + delta)


@settings(max_examples=200)
@given(event_docs, histories, st.integers(-400 * 86_400, 400 * 86_400))
def test_only_event_time_matters_shifting_every_timestamp_changes_nothing(doc, history, seconds):
    assert _decide(_shift(doc, timedelta(seconds=seconds)), history) == _decide(doc, history)


@settings(max_examples=400)
@given(event_docs, histories)
def test_money_is_never_negative_and_coupons_stay_within_cap_and_amount(doc, history):
    event = event_from_dict(doc)
    policy = POLICIES[event.envelope.platform]
    d = decide(event, history, policy)
    comp = d.compensation
    if comp is not None:
        assert type(comp.amount_fen) is int and comp.amount_fen > 0
        assert comp.amount_fen <= event.envelope.amount_fen
        if comp.kind is CompensationKind.COUPON:
            assert comp.amount_fen <= policy.shipping.coupon_max_fen
            assert ActionType.ISSUE_COUPON in d.actions
        else:
            assert comp.amount_fen == event.envelope.amount_fen  # refunds are full refunds
            assert ActionType.AUTO_REFUND in d.actions
    else:
        assert not (MONEY & set(d.actions))


@settings(max_examples=300)
@given(event_docs, histories)
def test_at_most_one_compensation_per_order_and_exception(doc, history):
    granted = OrderHistory(
        payment_attempts=history.payment_attempts,
        buyer_refunds_today=history.buyer_refunds_today,
        compensation_granted=True,
        merchant_dsr=history.merchant_dsr,
        recovery_right_revoked=history.recovery_right_revoked,
    )
    d = _decide(doc, granted)
    assert d.compensation is None
    assert not d.moves_money


@settings(max_examples=300)
@given(event_docs, histories)
def test_expired_decisions_never_compensate(doc, history):
    d = _decide(doc, history)
    if d.outcome is Outcome.EXPIRED:
        assert d.compensation is None and not d.moves_money


@settings(max_examples=300)
@given(st.one_of(payment_timeout_docs(), logistics_exception_docs()), histories)
def test_an_event_outside_every_window_never_gets_a_compensation(doc, history):
    event = event_from_dict(doc)
    policy = POLICIES[event.envelope.platform]
    p = doc
    now = datetime.fromisoformat(doc["occurred_at"])
    if doc["event_type"] == "payment-timeout":
        start = p["payment_failed_at"] or None
        window = max(policy.payment.recovery_window_s, policy.payment.extended_recovery_window_s)
        if start is None:
            timeout = (
                policy.payment.virtual_timeout_s
                if p["category"] == "virtual"
                else policy.payment.timeout_s
            )
            begin = datetime.fromisoformat(p["order_created_at"]) + timedelta(seconds=timeout)
        else:
            begin = datetime.fromisoformat(start)
    else:
        begin = datetime.fromisoformat(p["signed_at"] or p["exception_reported_at"])
        window = policy.logistics.recovery_window_s
    if now - begin > timedelta(seconds=window):
        d = decide(event, history, policy)
        assert d.compensation is None and not d.moves_money


@settings(max_examples=400)
@given(event_docs, histories)
def test_risk_controls_always_block_automatic_money_movement(doc, history):
    event = event_from_dict(doc)
    policy = POLICIES[event.envelope.platform]
    d = decide(event, history, policy)
    r = policy.risk
    attempts = history.payment_attempts
    if isinstance(event, PaymentTimeout):
        attempts = max(attempts, event.payment_attempt_count)
    dsr = (
        history.merchant_dsr if event.envelope.merchant_dsr is None else event.envelope.merchant_dsr
    )
    if (
        event.envelope.amount_fen >= r.high_value_fen
        or attempts > r.max_payment_attempts
        or history.buyer_refunds_today > r.max_buyer_refunds_per_day
        or (dsr is not None and dsr < r.dsr_review_below)
    ):
        assert not d.moves_money
    if history.buyer_refunds_today >= r.max_buyer_refunds_per_day:
        assert ActionType.AUTO_REFUND not in d.actions  # it would be refund number 6+


@settings(max_examples=300)
@given(event_docs, histories)
def test_decisions_are_traceable_and_valid_outcome_messages(doc, history):
    event = event_from_dict(doc)
    policy = POLICIES[event.envelope.platform]
    d = decide(event, history, policy)
    assert d.rule_ids and set(d.rule_ids) <= set(RULES)
    assert d.policy_version == policy.version
    assert d.reason
    assert len(set(d.actions)) == len(d.actions)
    if d.outcome is Outcome.REJECTED:
        assert d.actions == () and d.compensation is None
    validate_outcome(outcome_event(event, d, decided_at=T0))


@settings(max_examples=300)
@given(
    event_docs,
    histories,
    st.datetimes(
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=8)), timezone(-timedelta(hours=5))]
        )
    ),
)
def test_the_hot_path_outcome_bytes_are_the_outcome_event(doc, history, decided_at):
    """The worker publishes `outcome_json`; it must say exactly what `outcome_event` says, down
    to the text of every timestamp, or a resend after a crash would not match the first copy."""
    event = event_from_dict(doc)
    d = decide(event, history, POLICIES[event.envelope.platform])
    fast = outcome_json(event, d, decided_at=decided_at)
    assert orjson.loads(fast) == outcome_event(event, d, decided_at=decided_at)
    assert fast == orjson.dumps(outcome_event(event, d, decided_at=decided_at))


def test_the_hot_path_outcome_bytes_hold_no_more_memory_than_their_length() -> None:
    """A worker keeps two or three batches of outcome payloads alive at once: a payload that
    carries its encoder's whole write buffer (orjson's is 4 KB) took up to 48 MB of its peak."""
    event = event_from_dict(payment_timeout())
    d = decide(event, OrderHistory(), POLICIES[event.envelope.platform])
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        payloads = [outcome_json(event, d, decided_at=T0) for _ in range(200)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    held = sum(s.size_diff for s in after.compare_to(before, "filename")) / len(payloads)
    assert held < 2 * len(payloads[0]) + 200, (held, len(payloads[0]))


@settings(max_examples=300)
@given(event_docs, histories)
def test_zero_amount_orders_never_move_money(doc, history):
    doc = {**doc, "amount_fen": 0}
    d = _decide(doc, history)
    assert d.compensation is None and not d.moves_money

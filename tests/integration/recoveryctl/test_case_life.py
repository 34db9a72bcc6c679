"""`case show` of a case driven through its whole life by the lifecycle service, as the worker and
an operator drive it: opened by a delayed shipment, an executor's report, the shipping window
passing, a reviewer's approval, the refund's report; and resolutions that change nothing."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from order_recovery.adapters.postgres.cases import PostgresCaseStore
from order_recovery.config import Settings
from order_recovery.core.lifecycle import Lifecycle
from order_recovery.domain.case import Case, CaseState, Ignored, Transition
from order_recovery.domain.decision import ActionType
from order_recovery.domain.events import EventType
from order_recovery.domain.resolutions import (
    ActionReport,
    ActionStatus,
    PaymentCompleted,
    ResolutionEnvelope,
    ResolutionType,
)
from tests.integration.recoveryctl.conftest import Run
from tests.unit.domain.factories import POLICIES, T0, H, decode, run, shipping_delay

pytestmark = pytest.mark.integration
Ctl = Callable[..., Run]
ORDER = "ord-life"


def _envelope(kind: ResolutionType, at: datetime) -> ResolutionEnvelope:
    return ResolutionEnvelope(str(uuid.uuid4()), kind, 1, at, "douyin", ORDER)


def _report(case: Case, action: ActionType, at: datetime) -> ActionReport:
    key = next(k for k in case.released if k.endswith(f"/{action}"))
    env = _envelope(ResolutionType.ACTION_REPORT, at)
    return ActionReport(env, EventType.SHIPPING_DELAY, action, key, ActionStatus.COMPLETED)


def _key(case: Case, action: ActionType) -> str:
    return next(k for k in case.released if k.endswith(f"/{action}"))


@pytest.fixture
def lived(ctl: Ctl, settings: Settings) -> dict[str, Any]:
    """The case's life; what the test expects to see of it."""
    doc = {**shipping_delay(), "order_id": ORDER}
    store = PostgresCaseStore(settings.database_url)  # as the worker drives it
    life = Lifecycle(store, POLICIES)
    try:
        opened = life.open(decode(doc), run(doc))
        assert isinstance(opened, Transition) and opened.to_state is CaseState.AWAITING_SHIPMENT
        window = opened.case.deadline
        assert window is not None and window.kind == "shipping_window"
        coupon = _report(opened.case, ActionType.ISSUE_COUPON, T0 + H)
        (progress,) = life.resolve([coupon])
        assert isinstance(progress, Ignored)
        (fired,) = life.fire_due(window.due_at)
        assert isinstance(fired, Transition) and fired.to_state is CaseState.AWAITING_REVIEW
        review_deadline = fired.case.deadline
        assert review_deadline is not None

        approved = ctl("review", "approve", ORDER, "--reviewer", "alice", "--reason", "refund it")
        assert approved.code == 0, approved.err
        case = store.case((ORDER, "shipping-delay"))
        assert case is not None and case.state is CaseState.AWAITING_REFUND
        refund = _report(case, ActionType.AUTO_REFUND, datetime.now(UTC))
        (refunded,) = life.resolve([refund])
        assert isinstance(refunded, Transition) and refunded.to_state is CaseState.REFUNDED
        # A redelivery (recorded once), a second report for a closed case, and a payment for a
        # payment-timeout case this order never had.
        again = ActionReport(
            _envelope(ResolutionType.ACTION_REPORT, refund.envelope.occurred_at),
            EventType.SHIPPING_DELAY,
            ActionType.AUTO_REFUND,
            refund.action_key,
            ActionStatus.COMPLETED,
        )
        stray = PaymentCompleted(_envelope(ResolutionType.PAYMENT_COMPLETED, T0 + H), 19_900)
        life.resolve([refund, again, stray])
    finally:
        store.close()
    return {
        "exception": opened.cause.ref,
        "window": window,
        "review_deadline": review_deadline,
        "coupon": coupon,
        "refund": refund,
        "again": again,
        "stray": stray,
        "keys": {
            a: _key(case, a) for a in ActionType if any(k.endswith(f"/{a}") for k in case.released)
        },
    }


def test_case_show_prints_the_whole_life_of_a_case_in_order(
    ctl: Ctl, lived: dict[str, Any]
) -> None:
    shown = ctl("case", "show", ORDER, "--json")
    assert shown.code == 0, shown.err
    keys = lived["keys"]
    status_key = keys[ActionType.UPDATE_SHIPPING_STATUS]
    coupon_key, refund_key = keys[ActionType.ISSUE_COUPON], keys[ActionType.AUTO_REFUND]

    (case,) = shown.json["cases"]
    assert (case["exception_type"], case["state"], case["steps"]) == (
        "shipping-delay",
        "refunded",
        4,
    )
    assert case["deadline"] is None and case["held_actions"] == [] and not case["review_overdue"]
    assert datetime.fromisoformat(case["closed_at"]) == lived["refund"].envelope.occurred_at
    assert case["released"] == [status_key, coupon_key, refund_key]
    assert [(a["key"], a["released_by"], a["status"], a["report_id"]) for a in case["actions"]] == [
        (status_key, 1, "pending", None),
        (coupon_key, 1, "completed", lived["coupon"].envelope.event_id),
        (refund_key, 3, "completed", lived["refund"].envelope.event_id),
    ]

    timeline = shown.json["timeline"]
    got = [(x["kind"], x["detail"].get("step"), x["detail"].get("rule_id")) for x in timeline]
    assert got == [
        ("step", 1, "case.open.shipment"),
        ("deadline_set", 1, None),
        ("resolution", None, "case.ignored.action_progress"),
        ("deadline_fired", 2, None),
        ("step", 2, "case.deadline.shipping_window"),
        ("deadline_set", 2, None),
        ("step", 3, "case.review.approved"),
        ("resolution", 4, "case.action.refund_completed"),
        ("step", 4, "case.action.refund_completed"),
        # One transaction: in event time (the stray payment is dated before the report).
        ("resolution", None, "case.ignored.unknown_case"),
        ("resolution", None, "case.ignored.closed"),
    ]
    (
        opened,
        window_set,
        coupon,
        fired,
        held,
        review_set,
        approved,
        report,
        refunded,
        stray,
        again,
    ) = timeline
    # The exception that opened it, the actions it released and what became of them.
    assert opened["event_id"] == lived["exception"]
    assert opened["detail"]["cause"]["kind"] == "exception"
    assert opened["detail"]["released"] == [
        {"key": status_key, "status": "pending"},
        {"key": coupon_key, "status": "completed"},
    ]
    # Deadlines set (and what became of them) and fired.
    window, review = lived["window"], lived["review_deadline"]
    assert (
        window_set["detail"]["kind"] == "shipping_window"
        and window_set["detail"]["fate"] == "fired"
    )
    assert datetime.fromisoformat(window_set["detail"]["due_at"]) == window.due_at
    assert fired["detail"]["kind"] == "shipping_window" and fired["detail"]["set_by_step"] == 1
    assert datetime.fromisoformat(fired["detail"]["due_at"]) == window.due_at
    assert held["detail"]["cause"]["kind"] == "deadline"
    assert (review_set["detail"]["kind"], review_set["detail"]["fate"]) == ("review", "cleared")
    assert datetime.fromisoformat(review_set["detail"]["due_at"]) == review.due_at
    assert held["detail"]["deadline_set"]["kind"] == "review"
    # The review: who, why, what it released.
    assert (approved["detail"]["actor"], approved["detail"]["reason"]) == ("alice", "refund it")
    assert approved["detail"]["action_keys"] == [refund_key]
    assert approved["detail"]["deadline_set"] is None
    # Resolutions: the reports matched to their keys, the step one caused, why others did not.
    assert (coupon["event_id"], coupon["detail"]["action_key"]) == (
        lived["coupon"].envelope.event_id,
        coupon_key,
    )
    assert coupon["detail"]["ignored"] and coupon["detail"]["status"] == "completed"
    assert report["event_id"] == refunded["event_id"] == lived["refund"].envelope.event_id
    assert not report["detail"]["ignored"]
    assert (again["event_id"], again["detail"]["why"]) == (
        lived["again"].envelope.event_id,
        "the case is already closed",
    )
    assert (stray["exception_type"], stray["event_id"]) == (
        "payment-timeout",
        lived["stray"].envelope.event_id,
    )
    assert [x["event_id"] for x in timeline].count(lived["refund"].envelope.event_id) == 2

    text = ctl("case", "show", ORDER)
    assert text.code == 0, text.err
    for shown_text in (
        "cases of order ord-life",
        "refunded",
        "actions released",
        "pending",
        "deadline fired",
        "deadline set",
        "alice",  # (words only: the table wraps long notes between words)
        "changed nothing",
        refund_key,
    ):
        assert shown_text in text.out, shown_text

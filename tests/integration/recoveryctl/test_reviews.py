"""`recoveryctl review` on the test's own database: the queue, and approvals that release the held
actions once however many reviewers press the button."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from order_recovery.adapters.postgres.cases import PostgresCaseStore
from order_recovery.config import Settings
from order_recovery.core.lifecycle import Lifecycle
from order_recovery.domain.case import CaseState, ReviewRefused, ReviewVerdict, Transition
from order_recovery.ops.reviews import decide_review
from tests.integration.recoveryctl.conftest import Run
from tests.unit.domain.factories import POLICIES, decode, payment_timeout, run, shipping_delay

pytestmark = pytest.mark.integration
Ctl = Callable[..., Run]


def _open(settings: Settings, order_id: str, doc: dict[str, Any]) -> None:
    doc = {**doc, "order_id": order_id}
    store = PostgresCaseStore(settings.database_url)  # as the worker opens them
    try:
        step = Lifecycle(store, POLICIES).open(decode(doc), run(doc))
        assert isinstance(step, Transition)
    finally:
        store.close()


@pytest.fixture
def waiting(settings: Settings) -> Settings:
    _open(settings, "ord-big", payment_timeout(amount_fen=600_000))  # high value: review
    _open(settings, "ord-late", shipping_delay())  # waits for the parcel, not a person
    return settings


def _steps(settings: Settings, order_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.database_owner_url) as conn:
        return conn.execute(
            "SELECT seq, rule_id, actor, actions FROM case_steps WHERE order_id = %s ORDER BY 1",
            (order_id,),
        ).fetchall()


def test_the_queue_lists_what_waits_for_a_person(ctl: Ctl, waiting: Settings) -> None:
    listed = ctl("review", "list", "--json")
    assert listed.code == 0, listed.err
    (case,) = listed.json["waiting"]
    assert (case["order_id"], case["held_actions"]) == ("ord-big", ["recall_order"])
    assert ctl("review", "list", "--platform", "taobao", "--json").json["waiting"] == []
    assert ctl("review", "list", "--older-than", "3650d", "--json").json["waiting"] == []
    assert ctl("review", "show", "ord-late").code == 1
    text = ctl("review", "list")
    assert "ord-big" in text.out and "1 case(s) waiting" in text.out


def test_approving_releases_the_held_actions_once_and_is_audited(
    ctl: Ctl, waiting: Settings
) -> None:
    approved = ctl("review", "approve", "ord-big", "--reviewer", "alice", "--reason", "known buyer")
    assert approved.code == 0, approved.err
    assert "awaiting_payment" in approved.out and "recall_order" in approved.out
    again = ctl("review", "approve", "ord-big", "--reviewer", "bob", "--reason", "me too")
    assert again.code == 1 and "no case waits" in again.err
    opened, approved_step = _steps(waiting, "ord-big")
    assert (opened[1], opened[2]) == ("case.open.review", None)
    assert "recall_order" not in opened[3]  # held until now
    assert approved_step[1:] == ("case.review.approved", "alice", ["recall_order"])
    with psycopg.connect(waiting.database_owner_url) as conn:
        (detail,) = conn.execute(
            "SELECT detail FROM audit_log WHERE order_id = 'ord-big' AND to_status = %s",
            ("awaiting_payment",),
        ).fetchone() or (None,)
    assert detail is not None and detail["actor"] == "alice" and detail["reason"] == "known buyer"


def test_rejecting_closes_the_case(ctl: Ctl, waiting: Settings) -> None:
    rejected = ctl("review", "reject", "ord-big", "--reviewer", "carol", "--reason", "fraud")
    assert rejected.code == 0, rejected.err
    assert str(CaseState.CLOSED_NO_RECOVERY) in rejected.out
    assert ctl("review", "approve", "ord-late", "--reviewer", "a", "--reason", "b").code == 1


def test_two_reviewers_at_once_grant_nothing_twice(waiting: Settings) -> None:
    results: list[object] = []
    barrier = threading.Barrier(2)

    def review(name: str, verdict: ReviewVerdict) -> None:
        barrier.wait()
        try:
            results.append(
                decide_review(
                    waiting.database_operator_url,
                    POLICIES,
                    ("ord-big", "payment-timeout"),
                    verdict,
                    name,
                    "at the same time",
                )
            )
        except ReviewRefused as exc:
            results.append(exc)

    threads = [
        threading.Thread(target=review, args=("alice", ReviewVerdict.APPROVE)),
        threading.Thread(target=review, args=("bob", ReviewVerdict.REJECT)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(type(r).__name__ for r in results) == ["ReviewRefused", "Transition"]
    assert len(_steps(waiting, "ord-big")) == 2


def test_a_review_needs_a_name_and_a_reason(waiting: Settings) -> None:
    with pytest.raises(ReviewRefused, match="name and a reason"):
        decide_review(
            waiting.database_operator_url,
            POLICIES,
            ("ord-big", "payment-timeout"),
            ReviewVerdict.APPROVE,
            " ",
            "x",
        )

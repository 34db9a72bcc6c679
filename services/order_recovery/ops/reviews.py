"""`recoveryctl review`: the queue of cases waiting for a person, and their approval or rejection.

The queue is read as the reports role; a review is written as the operator role through the same
lifecycle service the worker uses (`core.lifecycle`), so approving applies the state machine's
`on_review` under the case's row lock: the held actions are released once, a second approval (or
a second reviewer) finds the case moved on and is refused, and the step lands in the audit log
with the reviewer's name and reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from order_recovery.adapters.postgres.cases import PostgresCaseStore
from order_recovery.core.lifecycle import Lifecycle
from order_recovery.domain.case import Review, ReviewRefused, ReviewVerdict, Transition
from order_recovery.domain.policy import Policy


@dataclass(frozen=True, slots=True)
class Waiting:
    order_id: str
    exception_type: str
    platform: str
    buyer_id: str
    amount_fen: int
    waiting_since: datetime  # event time of the step that sent it to review
    overdue: bool
    held_actions: list[str]
    risk_flags: list[str]
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


QUEUE = """SELECT c.order_id, c.exception_type, c.platform, c.buyer_id, c.amount_fen,
        c.state_since, c.review_overdue, c.held_actions, coalesce(d.risk_flags, '{}'),
        coalesce(s.reason, '')
    FROM cases c
    LEFT JOIN decisions d ON d.event_id = c.opened_by
    LEFT JOIN case_steps s ON (s.order_id, s.exception_type, s.seq)
                            = (c.order_id, c.exception_type, c.seq)
    WHERE c.state = 'awaiting_review'
      AND (%(platform)s::text IS NULL OR c.platform = %(platform)s)
      AND (%(flag)s::text IS NULL OR %(flag)s = ANY(d.risk_flags))
      AND (%(before)s::timestamptz IS NULL OR c.state_since <= %(before)s)
      AND (%(order_id)s::text IS NULL OR c.order_id = %(order_id)s)
    ORDER BY c.state_since, c.order_id, c.exception_type"""


def queue(
    conn: psycopg.Connection[Any],
    *,
    platform: str | None = None,
    risk_flag: str | None = None,
    older_than: timedelta | None = None,
    order_id: str | None = None,
    now: datetime | None = None,
) -> list[Waiting]:
    """Cases waiting for a review, longest waiting first. `older_than` counts from `now` (the
    wall clock by default: how long a person has left it)."""
    before = None if older_than is None else (now or datetime.now(UTC)) - older_than
    params = {"platform": platform, "flag": risk_flag, "before": before, "order_id": order_id}
    return [Waiting(*row) for row in conn.execute(QUEUE, params)]


def decide_review(
    operator_url: str,
    policies: Mapping[str, Policy],
    key: tuple[str, str],
    verdict: ReviewVerdict,
    reviewer: str,
    reason: str,
    review_id: str | None = None,
) -> Transition:
    """Approve or reject one case; ReviewRefused unless it waits for a review."""
    if not reviewer.strip() or not reason.strip():
        raise ReviewRefused("a review needs the reviewer's name and a reason")
    review = Review(
        review_id=review_id or str(uuid.uuid4()),
        reviewer=reviewer,
        verdict=verdict,
        reason=reason,
        at=datetime.now(UTC),  # the one cause on a person's clock, recorded as such
    )
    store = PostgresCaseStore(operator_url)
    try:
        return Lifecycle(store, policies).review(key, review)
    finally:
        store.close()

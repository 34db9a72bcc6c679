"""The case state machine: from an exception's decision to recovered, refunded, failed or expired.

A case is one order and one exception type. The first decision that is not a rejection opens it in
the state its actions name; afterwards only three kinds of cause move it, each a pure function of
the case and the cause that returns the next step:
- a resolution event (payment completed, channel answer, parcel handed over, evidence, verdict,
  an executor's action report): `on_resolution`;
- a deadline that the stream's event time has passed: `on_deadline`;
- a reviewer's approval or rejection: `on_review`.

Each step is a `Transition` (with a rule id from `CASE_RULES`, the cause, and the actions it
releases to executors) or an `Ignored` (a cause that changes nothing: a duplicate, an unknown or
closed case, a resolution the state does not wait for), which the caller records and reports but
never treats as an error. Nothing here reads the wall clock: every instant comes from the cause,
so replaying the same causes gives the same life.

The case holds at most one pending deadline, the one of its current state, tagged with the case's
`seq` when it was set: a deadline whose case has moved on since is stale and changes nothing, which
is what lets a store fire deadlines at least once and still have each take effect exactly once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from msgspec import Struct, structs

from order_recovery.domain.decision import ActionType, Decision, Outcome
from order_recovery.domain.events import Event, EventType, PaymentTimeout
from order_recovery.domain.policy import LogisticsHandling, Policy
from order_recovery.domain.resolutions import (
    ActionReport,
    ActionStatus,
    ChannelQueryAnswer,
    ChannelQueryResult,
    EvidenceUploaded,
    ParcelHandedOver,
    PaymentCompleted,
    PlatformVerdict,
    Resolution,
    VerdictResult,
    case_type_of,
)
from order_recovery.domain.rules.payment import payment_window_end


class CaseState(StrEnum):
    AWAITING_PAYMENT = "awaiting_payment"  # recalled or reissued: the buyer has to pay
    AWAITING_CHANNEL_QUERY = "awaiting_channel_query"  # transient code: the channel is re-queried
    AWAITING_SHIPMENT = "awaiting_shipment"  # delayed (coupon granted): the merchant has to ship
    AWAITING_EVIDENCE = "awaiting_evidence"  # the merchant was asked for evidence
    AWAITING_VERDICT = "awaiting_verdict"  # appeal or arbitration filed: the platform decides
    AWAITING_REFUND = "awaiting_refund"  # an automatic refund was ordered: the executor reports
    AWAITING_REVIEW = "awaiting_review"  # a person decides (risk control, or a deadline passed)
    RECOVERED = "recovered"
    REFUNDED = "refunded"  # closed by the automatic refund the rules chose: counts as recovered
    FAILED = "failed"
    EXPIRED = "expired"
    CLOSED_NO_RECOVERY = "closed_no_recovery"


TERMINAL = frozenset(
    {
        CaseState.RECOVERED,
        CaseState.REFUNDED,
        CaseState.FAILED,
        CaseState.EXPIRED,
        CaseState.CLOSED_NO_RECOVERY,
    }
)
#: Closed states the recovery rate counts as recovered (the seed: "or refunded as the rules chose").
RECOVERED_STATES = frozenset({CaseState.RECOVERED, CaseState.REFUNDED})


class DeadlineKind(StrEnum):
    PAYMENT_WINDOW = "payment_window"  # the payment-timeout recovery window closes
    CHANNEL_QUERY = "channel_query"  # the channel did not answer the re-query
    SHIPPING_WINDOW = "shipping_window"  # the 7-day shipping window closes, still unshipped
    EVIDENCE = "evidence"  # the merchant sent no evidence
    VERDICT = "verdict"  # the platform gave no verdict
    REVIEW = "review"  # nobody took the review


class Deadline(Struct, frozen=True, gc=False):
    kind: DeadlineKind
    due_at: datetime
    seq: int  # the case's seq when set: once the case moves on, the deadline is stale


class ReviewVerdict(StrEnum):
    APPROVE = "approve"  # the held actions run, once
    REJECT = "reject"  # the case closes without recovery


class Review(Struct, frozen=True, gc=False):
    review_id: str  # the operator tool's id for this review: a second submission changes nothing
    reviewer: str
    verdict: ReviewVerdict
    reason: str
    at: datetime  # when the reviewer decided (a person's clock: the one cause not in event time)


class Case(Struct, frozen=True, gc=False):
    order_id: str
    exception_type: EventType
    platform: str
    buyer_id: str
    amount_fen: int
    opened_at: datetime  # event time of the exception that opened it
    opened_by: str  # that event's id
    state: CaseState
    seq: int  # transitions so far (1 once opened); action keys and deadlines carry it
    state_since: datetime  # event time of the cause of the last transition
    deadline: Deadline | None = None
    held_actions: tuple[ActionType, ...] = ()  # what an approval releases
    fallback_actions: tuple[ActionType, ...] = ()  # recall / new order after a failed re-query
    released: tuple[str, ...] = ()  # action keys sent to executors (reports must name one)
    payment_window_ends_at: datetime | None = None
    shipping_window_ends_at: datetime | None = None
    review_overdue: bool = False

    @property
    def closed(self) -> bool:
        return self.state in TERMINAL

    @property
    def key(self) -> tuple[str, str]:
        return self.order_id, str(self.exception_type)


class CauseKind(StrEnum):
    EXCEPTION = "exception"
    RESOLUTION = "resolution"
    DEADLINE = "deadline"
    REVIEW = "review"


class Cause(Struct, frozen=True, gc=False):
    kind: CauseKind
    ref: str  # event id, deadline kind, or review id
    at: datetime
    actor: str | None = None  # the reviewer


class Transition(Struct, frozen=True, gc=False):
    case: Case  # the case after the step
    from_state: CaseState | None  # None when the step opened the case
    rule_id: str
    reason: str
    cause: Cause
    actions: tuple[ActionType, ...] = ()  # released to executors by this step
    action_keys: tuple[str, ...] = ()  # one per action: what an executor applies at most once

    @property
    def to_state(self) -> CaseState:
        return self.case.state


class Ignored(Struct, frozen=True, gc=False):
    """A cause that changes nothing; recorded and reported, never an error."""

    rule_id: str
    reason: str
    cause: Cause


Step = Transition | Ignored


class ReviewRefused(ValueError):
    """A review of a case that is not waiting for one (or does not exist): the operator's error."""


#: Every rule id a step can carry, with its meaning; docs/rules.md mirrors it (a test checks).
CASE_RULES: dict[str, str] = {
    "case.open.review": "a risk control escalated the decision: waiting for a reviewer",
    "case.open.refund": "an automatic refund was decided: waiting for the executor's report",
    "case.open.channel_query": "transient channel code: waiting for the channel's answer",
    "case.open.payment": "order recalled or reissued: waiting for the buyer's payment",
    "case.open.verdict": "evidence uploaded and appeal / arbitration filed: waiting for a verdict",
    "case.open.evidence": "no evidence: waiting for the merchant's",
    "case.open.shipment": "shipping delayed (coupon granted): waiting for the carrier handover",
    "case.open.expired": "the decision found the order outside its recovery window",
    "case.open.closed": "the decision closed the order without recovery",
    "case.payment.completed": "the payment completed: recovered",
    "case.channel.paid": "the channel found the payment: recovered",
    "case.channel.failed": "the channel confirmed the failure: recall / new order runs",
    "case.channel.failed_no_fallback": "the channel confirmed the failure, no recall / new order",
    "case.shipment.handed_over": "the parcel was handed to the carrier: recovered",
    "case.evidence.uploaded": "the evidence arrived: uploaded and appeal / arbitration filed",
    "case.verdict.won": "the platform's verdict was won: recovered",
    "case.verdict.lost": "the platform's verdict was lost: failed",
    "case.action.refund_completed": "the automatic refund completed: closed as refunded",
    "case.action.failed": "an action failed for good: failed",
    "case.deadline.payment_window": "the recovery window closed before payment: expired",
    "case.deadline.channel_query": "the channel did not answer in time: recall / new order runs",
    "case.deadline.channel_query_no_fallback": "no channel answer, no recall / new order",
    "case.deadline.shipping_window": "unshipped at the end of the window: review, refund held",
    "case.deadline.evidence": "no evidence in time: closed without recovery",
    "case.deadline.verdict": "no verdict in time: review, refund held",
    "case.deadline.review": "the review was not taken in time: reported as overdue",
    "case.review.approved": "a reviewer approved: the held actions run",
    "case.review.approved_nothing_held": "a reviewer approved, nothing was held: closed",
    "case.review.rejected": "a reviewer rejected: closed without recovery",
    # Ignored: recorded and reported, the case is unchanged.
    "case.ignored.unknown_case": "no case for this order and exception type",
    "case.ignored.closed": "the case is already closed",
    "case.ignored.not_awaited": "the case's state does not wait for this",
    "case.ignored.stale_deadline": "the case moved on since the deadline was set",
    "case.ignored.action_unknown": "an action report names no action this case released",
    "case.ignored.action_progress": "an action completed or will be retried: nothing to move",
    "case.ignored.exception_again": "another exception event for an open or closed case",
}

#: Actions whose release puts a case in a waiting state, strongest first.
_WAITS_FOR: tuple[tuple[frozenset[ActionType], CaseState, str], ...] = (
    (frozenset({ActionType.AUTO_REFUND}), CaseState.AWAITING_REFUND, "refund"),
    (
        frozenset({ActionType.RETRY_PAYMENT_QUERY}),
        CaseState.AWAITING_CHANNEL_QUERY,
        "channel_query",
    ),
    (
        frozenset({ActionType.RECALL_ORDER, ActionType.REISSUE_ORDER_WITH_PAYMENT_LINK}),
        CaseState.AWAITING_PAYMENT,
        "payment",
    ),
    (
        frozenset({ActionType.FILE_APPEAL, ActionType.REQUEST_PLATFORM_ARBITRATION}),
        CaseState.AWAITING_VERDICT,
        "verdict",
    ),
    (frozenset({ActionType.REQUEST_EVIDENCE}), CaseState.AWAITING_EVIDENCE, "evidence"),
    (
        frozenset({ActionType.ISSUE_COUPON, ActionType.UPDATE_SHIPPING_STATUS}),
        CaseState.AWAITING_SHIPMENT,
        "shipment",
    ),
)
_REPAY = frozenset({ActionType.RECALL_ORDER, ActionType.REISSUE_ORDER_WITH_PAYMENT_LINK})
#: What a case held by a deadline (verdict or shipping window passed) asks a reviewer to release.
_REFUND_HELD = (ActionType.AUTO_REFUND,)
_APPEAL_AFTER_EVIDENCE = {
    LogisticsHandling.APPEAL_SYSTEM_REVIEW: ActionType.FILE_APPEAL,
    LogisticsHandling.PLATFORM_ARBITRATION: ActionType.REQUEST_PLATFORM_ARBITRATION,
    LogisticsHandling.REFUND_FIRST: ActionType.FILE_APPEAL,  # the rules' follow-up to the refund
}


def action_key(case: Case, seq: int, action: ActionType) -> str:
    """The idempotency key an executor applies an action under: one per case, step and action,
    so a redelivered command is applied once and an approval's actions differ from the
    decision's."""
    return f"{case.order_id}/{case.exception_type}/{seq}/{action}"


def _state_for(actions: tuple[ActionType, ...], outcome: Outcome) -> tuple[CaseState, str]:
    present = set(actions)
    for wanted, state, name in _WAITS_FOR:
        if present & wanted:
            return state, name
    if outcome is Outcome.EXPIRED:
        return CaseState.EXPIRED, "expired"
    return CaseState.CLOSED_NO_RECOVERY, "closed"


def _deadline(case: Case, policy: Policy) -> Deadline | None:
    """The pending deadline of the case's current state (set when the state is entered)."""
    life = policy.lifecycle
    since, state = case.state_since, case.state
    due: datetime | None = None
    if state is CaseState.AWAITING_PAYMENT:
        due, kind = case.payment_window_ends_at, DeadlineKind.PAYMENT_WINDOW
    elif state is CaseState.AWAITING_CHANNEL_QUERY:
        due, kind = (
            since + timedelta(seconds=life.channel_query_timeout_s),
            DeadlineKind.CHANNEL_QUERY,
        )
    elif state is CaseState.AWAITING_SHIPMENT:
        due, kind = case.shipping_window_ends_at, DeadlineKind.SHIPPING_WINDOW
    elif state is CaseState.AWAITING_EVIDENCE:
        due, kind = since + timedelta(seconds=life.evidence_timeout_s), DeadlineKind.EVIDENCE
    elif state is CaseState.AWAITING_VERDICT:
        due, kind = since + timedelta(seconds=life.verdict_timeout_s), DeadlineKind.VERDICT
    elif state is CaseState.AWAITING_REVIEW and not case.review_overdue:
        due, kind = since + timedelta(seconds=life.review_timeout_s), DeadlineKind.REVIEW
    if due is None:
        return None
    return Deadline(kind, due, case.seq)


def _move(
    case: Case,
    to: CaseState,
    rule_id: str,
    reason: str,
    cause: Cause,
    policy: Policy,
    *,
    release: tuple[ActionType, ...] = (),
    **changes: object,
) -> Transition:
    seq = case.seq + 1
    keys = tuple(action_key(case, seq, a) for a in release)
    if "review_overdue" not in changes:  # only a review that stays overdue keeps the mark
        changes["review_overdue"] = case.review_overdue and to is CaseState.AWAITING_REVIEW
    moved = structs.replace(
        case,
        state=to,
        seq=seq,
        state_since=cause.at,
        released=case.released + keys,
        **changes,
    )
    moved = structs.replace(moved, deadline=_deadline(moved, policy))
    return Transition(moved, case.state, rule_id, reason, cause, release, keys)


def _enter(
    case: Case,
    actions: tuple[ActionType, ...],
    outcome: Outcome,
    cause: Cause,
    policy: Policy,
    reason: str,
    rule_id: str | None = None,
) -> Transition:
    """Move to the state that `actions` wait for, releasing them; the repay actions stay as the
    fallback of a channel re-query. `rule_id` None: the opening rule of that state."""
    state, name = _state_for(actions, outcome)
    fallback = tuple(a for a in actions if a in _REPAY)
    return _move(
        case,
        state,
        rule_id or f"case.open.{name}",
        reason,
        cause,
        policy,
        release=actions,
        fallback_actions=fallback,
    )


def open_case(event: Event, decision: Decision, policy: Policy) -> Step:
    """The case an exception's decision opens; a rejection (not an exception yet) opens none."""
    env = event.envelope
    cause = Cause(CauseKind.EXCEPTION, env.event_id, env.occurred_at)
    if decision.outcome is Outcome.REJECTED:
        return Ignored("case.ignored.not_awaited", "the event is not an exception yet", cause)
    blank = Case(
        order_id=env.order_id,
        exception_type=env.event_type,
        platform=env.platform,
        buyer_id=env.buyer_id,
        amount_fen=env.amount_fen,
        opened_at=env.occurred_at,
        opened_by=env.event_id,
        state=CaseState.AWAITING_REVIEW,  # replaced by the first transition
        seq=0,
        state_since=env.occurred_at,
        payment_window_ends_at=payment_window_end(event, policy)
        if isinstance(event, PaymentTimeout)
        else None,
        shipping_window_ends_at=env.order_created_at
        + timedelta(seconds=policy.shipping.recovery_window_s)
        if env.event_type is EventType.SHIPPING_DELAY
        else None,
    )
    if decision.outcome is Outcome.ESCALATED:
        transition = _move(
            blank,
            CaseState.AWAITING_REVIEW,
            "case.open.review",
            decision.reason,
            cause,
            policy,
            release=decision.actions,  # the protective ones (freeze, intercept, review)
            held_actions=decision.held_actions,
        )
    else:
        transition = _enter(
            blank, decision.actions, decision.outcome, cause, policy, decision.reason
        )
    return structs.replace(transition, from_state=None)


def on_exception_again(case: Case, event: Event) -> Ignored:
    """A later exception for the same order and type: its decision stands on its own (the rules
    refuse a second compensation); the case it belongs to is not reopened or moved."""
    env = event.envelope
    cause = Cause(CauseKind.EXCEPTION, env.event_id, env.occurred_at)
    return Ignored("case.ignored.exception_again", f"case is {case.state}", cause)


def on_resolution(case: Case | None, resolution: Resolution, policy: Policy) -> Step:
    env = resolution.envelope
    cause = Cause(CauseKind.RESOLUTION, env.event_id, env.occurred_at)
    if case is None:
        return Ignored(
            "case.ignored.unknown_case",
            f"no {case_type_of(resolution)} case for order {env.order_id}",
            cause,
        )
    if case.closed:
        return Ignored("case.ignored.closed", f"case is {case.state}", cause)
    if isinstance(resolution, ActionReport):
        return _on_action_report(case, resolution, cause, policy)
    state = case.state
    if isinstance(resolution, PaymentCompleted) and state in (
        CaseState.AWAITING_PAYMENT,
        CaseState.AWAITING_CHANNEL_QUERY,
    ):
        paid = resolution.new_order_id or case.order_id
        return _move(
            case, CaseState.RECOVERED, "case.payment.completed", f"order {paid} paid", cause, policy
        )
    if isinstance(resolution, ChannelQueryResult) and state is CaseState.AWAITING_CHANNEL_QUERY:
        if resolution.answer is ChannelQueryAnswer.PAID:
            return _move(
                case,
                CaseState.RECOVERED,
                "case.channel.paid",
                "the channel found it",
                cause,
                policy,
            )
        return _fall_back(case, cause, policy, "case.channel.failed")
    if isinstance(resolution, ParcelHandedOver) and state is CaseState.AWAITING_SHIPMENT:
        reason = f"handed to {resolution.carrier} ({resolution.tracking_no})"
        return _move(case, CaseState.RECOVERED, "case.shipment.handed_over", reason, cause, policy)
    if isinstance(resolution, EvidenceUploaded) and state is CaseState.AWAITING_EVIDENCE:
        appeal = _APPEAL_AFTER_EVIDENCE[policy.logistics.handling]
        return _move(
            case,
            CaseState.AWAITING_VERDICT,
            "case.evidence.uploaded",
            f"{len(resolution.evidence)} evidence item(s): upload and {appeal}",
            cause,
            policy,
            release=(ActionType.UPLOAD_EVIDENCE, appeal),
        )
    if isinstance(resolution, PlatformVerdict) and state is CaseState.AWAITING_VERDICT:
        if resolution.result is VerdictResult.WON:
            reason = f"{resolution.proceeding} won ({resolution.amount_fen} fen)"
            return _move(case, CaseState.RECOVERED, "case.verdict.won", reason, cause, policy)
        reason = f"{resolution.proceeding} lost"
        return _move(case, CaseState.FAILED, "case.verdict.lost", reason, cause, policy)
    return Ignored(
        "case.ignored.not_awaited", f"a {env.event_type} while {state}: nothing to move", cause
    )


def _fall_back(case: Case, cause: Cause, policy: Policy, rule_id: str) -> Transition:
    """The channel said failed, or said nothing in time: the rule's next step (recall or new
    order) runs; without one (out of stock) the case fails (`<rule_id>_no_fallback`)."""
    if case.fallback_actions:
        reason = f"next step: {', '.join(case.fallback_actions)}"
        return _move(
            case,
            CaseState.AWAITING_PAYMENT,
            rule_id,
            reason,
            cause,
            policy,
            release=case.fallback_actions,
        )
    reason = "no recall or new order possible (out of stock)"
    return _move(case, CaseState.FAILED, f"{rule_id}_no_fallback", reason, cause, policy)


def _on_action_report(case: Case, report: ActionReport, cause: Cause, policy: Policy) -> Step:
    if report.action_key not in case.released:
        return Ignored(
            "case.ignored.action_unknown", f"no action {report.action_key} was released", cause
        )
    if report.status is ActionStatus.FAILED and report.final:
        reason = f"{report.action} failed for good" + (
            f": {report.detail}" if report.detail else ""
        )
        return _move(case, CaseState.FAILED, "case.action.failed", reason, cause, policy)
    if (
        report.status is ActionStatus.COMPLETED
        and report.action is ActionType.AUTO_REFUND
        and case.state is CaseState.AWAITING_REFUND
    ):
        return _move(
            case, CaseState.REFUNDED, "case.action.refund_completed", "refund paid", cause, policy
        )
    return Ignored(
        "case.ignored.action_progress", f"{report.action} {report.status}: nothing to move", cause
    )


def on_deadline(case: Case, deadline: Deadline, policy: Policy) -> Step:
    """A deadline the stream has passed. Only the case's own pending deadline moves it."""
    cause = Cause(CauseKind.DEADLINE, str(deadline.kind), deadline.due_at)
    if case.closed:
        return Ignored("case.ignored.closed", f"case is {case.state}", cause)
    if case.deadline != deadline:
        return Ignored("case.ignored.stale_deadline", f"set at step {deadline.seq}", cause)
    kind = deadline.kind
    if kind is DeadlineKind.PAYMENT_WINDOW:
        return _move(
            case, CaseState.EXPIRED, "case.deadline.payment_window", "window closed", cause, policy
        )
    if kind is DeadlineKind.CHANNEL_QUERY:
        return _fall_back(case, cause, policy, "case.deadline.channel_query")
    if kind is DeadlineKind.EVIDENCE:
        return _move(
            case,
            CaseState.CLOSED_NO_RECOVERY,
            "case.deadline.evidence",
            "no evidence",
            cause,
            policy,
        )
    if kind is DeadlineKind.REVIEW:
        return _move(
            case,
            CaseState.AWAITING_REVIEW,
            "case.deadline.review",
            "review overdue",
            cause,
            policy,
            review_overdue=True,
        )
    rule_id = (
        "case.deadline.verdict" if kind is DeadlineKind.VERDICT else "case.deadline.shipping_window"
    )
    return _move(
        case,
        CaseState.AWAITING_REVIEW,
        rule_id,
        f"{kind} passed: a person decides on a full refund",
        cause,
        policy,
        held_actions=_REFUND_HELD,
    )


def on_review(case: Case | None, review: Review, policy: Policy) -> Transition:
    """Raises ReviewRefused unless the case waits for a review: approving twice, or a second
    reviewer after the first, finds the case moved on and grants nothing twice."""
    if case is None:
        raise ReviewRefused("no such case")
    if case.state is not CaseState.AWAITING_REVIEW:
        raise ReviewRefused(f"case is {case.state}, not waiting for a review")
    cause = Cause(CauseKind.REVIEW, review.review_id, review.at, actor=review.reviewer)
    if review.verdict is ReviewVerdict.REJECT:
        return _move(
            case,
            CaseState.CLOSED_NO_RECOVERY,
            "case.review.rejected",
            review.reason,
            cause,
            policy,
            held_actions=(),
        )
    if not case.held_actions:
        return _move(
            case,
            CaseState.CLOSED_NO_RECOVERY,
            "case.review.approved_nothing_held",
            review.reason,
            cause,
            policy,
        )
    return structs.replace(
        _enter(
            structs.replace(case, held_actions=()),
            case.held_actions,
            Outcome.RECOVERED,
            cause,
            policy,
            review.reason,
            "case.review.approved",
        ),
        from_state=CaseState.AWAITING_REVIEW,
    )


def due_deadline(case: Case, until: datetime) -> Deadline | None:
    """The case's pending deadline if event time `until` has passed it."""
    deadline = case.deadline
    if case.closed or deadline is None or deadline.due_at > until:
        return None
    return deadline


def catch_up(case: Case, until: datetime, policy: Policy) -> list[Transition]:
    """Fire, in order, every deadline that event time `until` has passed, so that a resolution
    dated `until` finds the case as the deadlines left it (a payment after its window counts as
    late whatever the order the two arrived in)."""
    steps: list[Transition] = []
    while (deadline := due_deadline(case, until)) is not None:
        step = on_deadline(case, deadline, policy)
        if not isinstance(step, Transition):  # pragma: no cover - a due deadline always moves
            break
        steps.append(step)
        case = step.case
    return steps

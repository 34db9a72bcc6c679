"""The case state machine, transition by transition (docs/rules.md, "Case lifecycle", cites these).

Cases are opened from real decisions (the factories' events through the contract and the rules),
so a change to the rules that moves a case to another state shows up here."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest
from msgspec import structs

from order_recovery.domain.case import (
    CASE_RULES,
    Case,
    CaseState,
    Deadline,
    DeadlineKind,
    Ignored,
    Review,
    ReviewRefused,
    ReviewVerdict,
    Step,
    Transition,
    catch_up,
    on_deadline,
    on_exception_again,
    on_resolution,
    on_review,
    open_case,
)
from order_recovery.domain.decision import ActionType
from order_recovery.domain.events import Evidence
from order_recovery.domain.resolutions import (
    ActionReport,
    ActionStatus,
    ChannelQueryAnswer,
    ChannelQueryResult,
    EvidenceUploaded,
    ParcelHandedOver,
    PaymentCompleted,
    PlatformVerdict,
    Proceeding,
    ResolutionEnvelope,
    ResolutionType,
    VerdictResult,
)
from tests.unit.domain.factories import (
    POLICIES,
    T0,
    D,
    H,
    M,
    decode,
    logistics_exception,
    payment_timeout,
    run,
    shipping_delay,
)


def opened(doc: dict[str, Any]) -> Transition:
    step = open_case(decode(doc), run(doc), POLICIES[doc["platform"]])
    assert isinstance(step, Transition), step
    return step


def case_of(doc: dict[str, Any]) -> Case:
    return opened(doc).case


def envelope(
    kind: ResolutionType,
    at: datetime = T0 + M,
    *,
    order_id: str = "ord-1",
    platform: str = "douyin",
) -> ResolutionEnvelope:
    return ResolutionEnvelope(
        event_id=str(uuid.uuid4()),
        event_type=kind,
        schema_version=1,
        occurred_at=at,
        platform=platform,
        order_id=order_id,
    )


def paid(at: datetime = T0 + M, new_order_id: str | None = None) -> PaymentCompleted:
    return PaymentCompleted(envelope(ResolutionType.PAYMENT_COMPLETED, at), 19_900, new_order_id)


def channel(answer: ChannelQueryAnswer, at: datetime = T0 + M) -> ChannelQueryResult:
    return ChannelQueryResult(envelope(ResolutionType.CHANNEL_QUERY_RESULT, at), answer)


def handed_over(at: datetime = T0 + H) -> ParcelHandedOver:
    return ParcelHandedOver(envelope(ResolutionType.PARCEL_HANDED_OVER, at), "SF", "SF1")


def evidence(platform: str = "douyin") -> EvidenceUploaded:
    env = envelope(ResolutionType.EVIDENCE_UPLOADED, T0 + D, platform=platform)
    return EvidenceUploaded(env, (Evidence("photo", "oss://e/2.png"),))


def verdict(result: VerdictResult) -> PlatformVerdict:
    env = envelope(ResolutionType.PLATFORM_VERDICT, T0 + 2 * D)
    return PlatformVerdict(env, Proceeding.APPEAL, result, 19_900 if result == "won" else 0)


def report(
    case: Case,
    action: ActionType,
    status: ActionStatus,
    *,
    final: bool = True,
    key: str | None = None,
) -> ActionReport:
    if key is None:
        key = next(k for k in case.released if k.endswith(f"/{action}"))
    env = envelope(ResolutionType.ACTION_REPORT, T0 + 2 * H, platform=case.platform)
    return ActionReport(env, case.exception_type, action, key, status, final)


def review(verdict_: ReviewVerdict, reviewer: str = "alice", at: datetime = T0 + H) -> Review:
    return Review(str(uuid.uuid4()), reviewer, verdict_, "checked the buyer", at)


def moved(step: Step, to: CaseState, rule_id: str) -> Transition:
    assert isinstance(step, Transition), step
    assert step.rule_id == rule_id
    assert step.rule_id in CASE_RULES
    assert step.to_state is to
    return step


def ignored(step: Step, rule_id: str) -> None:
    assert isinstance(step, Ignored), step
    assert step.rule_id == rule_id
    assert rule_id in CASE_RULES


def fire(case: Case) -> Step:
    assert case.deadline is not None
    return on_deadline(case, case.deadline, POLICIES[case.platform])


HIGH_VALUE = payment_timeout(amount_fen=600_000)
RECALL = payment_timeout(failed_ago=10 * M)
TRANSIENT = payment_timeout(code="ERR_TIMEOUT")
TRANSIENT_OUT_OF_STOCK = payment_timeout(code="ERR_TIMEOUT", failed_ago=3 * H, stock=False)
COUPON = shipping_delay()
FRESH = shipping_delay(category="fresh", paid_ago=3 * H)
APPEAL = logistics_exception("douyin")
NO_EVIDENCE = logistics_exception("douyin", evidence=[])


# ------------------------------------------------------------------------------ opening


def test_a_rejection_opens_no_case():
    doc = payment_timeout(failed_ago=None, created_ago=10 * M)  # not past the timeout yet
    step = open_case(decode(doc), run(doc), POLICIES["douyin"])
    ignored(step, "case.ignored.not_awaited")


def test_an_escalated_decision_waits_for_review_holding_its_actions():
    t = moved(opened(HIGH_VALUE), CaseState.AWAITING_REVIEW, "case.open.review")
    assert t.from_state is None and t.case.seq == 1
    assert t.case.held_actions == (ActionType.RECALL_ORDER,)
    assert ActionType.RECALL_ORDER not in t.actions  # held, not released
    assert t.case.deadline == Deadline(DeadlineKind.REVIEW, T0 + D, 1)


def test_a_transient_code_waits_for_the_channel_with_the_recall_as_fallback():
    t = moved(opened(TRANSIENT), CaseState.AWAITING_CHANNEL_QUERY, "case.open.channel_query")
    assert t.case.fallback_actions == (ActionType.RECALL_ORDER,)
    assert t.case.deadline == Deadline(DeadlineKind.CHANNEL_QUERY, T0 + 5 * M, 1)


def test_a_recall_waits_for_payment_until_the_recovery_window_closes():
    t = moved(opened(RECALL), CaseState.AWAITING_PAYMENT, "case.open.payment")
    assert t.actions == (ActionType.RECALL_ORDER,)
    assert t.action_keys == ("ord-1/payment-timeout/1/recall_order",)
    assert t.case.released == t.action_keys
    assert t.case.deadline == Deadline(DeadlineKind.PAYMENT_WINDOW, T0 - 10 * M + D, 1)


def test_the_extended_window_is_the_deadline_when_asked_for():
    case = case_of(payment_timeout(failed_ago=3 * H, extend=True))
    assert case.state is CaseState.AWAITING_PAYMENT
    assert case.deadline is not None and case.deadline.due_at == T0 - 3 * H + 3 * D


def test_a_coupon_waits_for_the_shipment_until_the_seven_day_window_closes():
    t = moved(opened(COUPON), CaseState.AWAITING_SHIPMENT, "case.open.shipment")
    assert ActionType.ISSUE_COUPON in t.actions
    created = T0 - 50 * H - M
    assert t.case.deadline == Deadline(DeadlineKind.SHIPPING_WINDOW, created + 7 * D, 1)


def test_an_automatic_refund_waits_for_the_executors_report_without_deadline():
    t = moved(opened(FRESH), CaseState.AWAITING_REFUND, "case.open.refund")
    assert ActionType.AUTO_REFUND in t.actions and t.case.deadline is None


def test_an_appeal_waits_for_the_verdict():
    t = moved(opened(APPEAL), CaseState.AWAITING_VERDICT, "case.open.verdict")
    assert t.case.deadline == Deadline(DeadlineKind.VERDICT, T0 + 7 * D, 1)


def test_no_evidence_waits_for_the_merchants():
    t = moved(opened(NO_EVIDENCE), CaseState.AWAITING_EVIDENCE, "case.open.evidence")
    assert t.case.deadline == Deadline(DeadlineKind.EVIDENCE, T0 + 3 * D, 1)


def test_an_expired_decision_opens_an_expired_case():
    t = moved(
        opened(payment_timeout("taobao", failed_ago=40 * M)), CaseState.EXPIRED, "case.open.expired"
    )
    assert t.case.closed and t.case.deadline is None


def test_a_decision_without_recovery_opens_a_closed_case():
    forged = moved(
        opened(logistics_exception(forged=True)), CaseState.CLOSED_NO_RECOVERY, "case.open.closed"
    )
    assert forged.case.closed
    out_of_stock = case_of(payment_timeout(failed_ago=3 * H, stock=False))
    assert out_of_stock.state is CaseState.CLOSED_NO_RECOVERY


def test_a_later_exception_leaves_the_case_as_it_is():
    ignored(on_exception_again(case_of(COUPON), decode(COUPON)), "case.ignored.exception_again")


# ------------------------------------------------------------------------------ resolutions


def test_payment_completed_recovers_a_case_waiting_for_payment_or_the_channel():
    policy = POLICIES["douyin"]
    for doc in (RECALL, TRANSIENT):
        step = on_resolution(case_of(doc), paid(new_order_id="ord-1-b"), policy)
        t = moved(step, CaseState.RECOVERED, "case.payment.completed")
        assert "ord-1-b" in t.reason and t.case.deadline is None


def test_the_channel_finding_the_payment_recovers():
    step = on_resolution(case_of(TRANSIENT), channel(ChannelQueryAnswer.PAID), POLICIES["douyin"])
    moved(step, CaseState.RECOVERED, "case.channel.paid")


def test_the_channel_confirming_the_failure_runs_the_recall_once():
    step = on_resolution(case_of(TRANSIENT), channel(ChannelQueryAnswer.FAILED), POLICIES["douyin"])
    t = moved(step, CaseState.AWAITING_PAYMENT, "case.channel.failed")
    assert t.actions == (ActionType.RECALL_ORDER,)
    assert t.action_keys == ("ord-1/payment-timeout/2/recall_order",)
    assert t.case.deadline is not None and t.case.deadline.kind is DeadlineKind.PAYMENT_WINDOW


def test_the_channel_confirming_the_failure_fails_a_case_with_nothing_to_fall_back_on():
    case = case_of(TRANSIENT_OUT_OF_STOCK)
    assert case.state is CaseState.AWAITING_CHANNEL_QUERY and not case.fallback_actions
    step = on_resolution(case, channel(ChannelQueryAnswer.FAILED), POLICIES["douyin"])
    moved(step, CaseState.FAILED, "case.channel.failed_no_fallback")


def test_the_parcel_handed_over_recovers_a_delayed_order():
    step = on_resolution(case_of(COUPON), handed_over(), POLICIES["douyin"])
    moved(step, CaseState.RECOVERED, "case.shipment.handed_over")


@pytest.mark.parametrize(
    ("platform", "appeal"),
    [("douyin", ActionType.FILE_APPEAL), ("taobao", ActionType.REQUEST_PLATFORM_ARBITRATION)],
)
def test_the_evidence_files_the_platforms_appeal(platform: str, appeal: ActionType):
    case = case_of(logistics_exception(platform, evidence=[]))
    step = on_resolution(case, evidence(platform), POLICIES[platform])
    t = moved(step, CaseState.AWAITING_VERDICT, "case.evidence.uploaded")
    assert t.actions == (ActionType.UPLOAD_EVIDENCE, appeal)
    assert t.case.deadline == Deadline(DeadlineKind.VERDICT, T0 + D + 7 * D, 2)


def test_a_won_verdict_recovers_and_a_lost_one_fails():
    case, policy = case_of(APPEAL), POLICIES["douyin"]
    moved(
        on_resolution(case, verdict(VerdictResult.WON), policy),
        CaseState.RECOVERED,
        "case.verdict.won",
    )
    moved(
        on_resolution(case, verdict(VerdictResult.LOST), policy),
        CaseState.FAILED,
        "case.verdict.lost",
    )


def test_the_refund_reported_completed_closes_the_case_as_refunded():
    case = case_of(FRESH)
    step = on_resolution(
        case, report(case, ActionType.AUTO_REFUND, ActionStatus.COMPLETED), POLICIES["douyin"]
    )
    moved(step, CaseState.REFUNDED, "case.action.refund_completed")


def test_an_action_failed_for_good_fails_the_case():
    case = case_of(COUPON)
    step = on_resolution(
        case, report(case, ActionType.ISSUE_COUPON, ActionStatus.FAILED), POLICIES["douyin"]
    )
    moved(step, CaseState.FAILED, "case.action.failed")


def test_progress_on_an_action_moves_nothing():
    case, policy = case_of(COUPON), POLICIES["douyin"]
    retrying = report(case, ActionType.ISSUE_COUPON, ActionStatus.FAILED, final=False)
    ignored(on_resolution(case, retrying, policy), "case.ignored.action_progress")
    done = report(case, ActionType.ISSUE_COUPON, ActionStatus.COMPLETED)
    ignored(on_resolution(case, done, policy), "case.ignored.action_progress")


def test_a_report_on_an_action_the_case_never_released_is_ignored():
    case = case_of(FRESH)
    forged = report(
        case,
        ActionType.AUTO_REFUND,
        ActionStatus.COMPLETED,
        key="ord-1/shipping-delay/9/auto_refund",
    )
    ignored(on_resolution(case, forged, POLICIES["douyin"]), "case.ignored.action_unknown")


def test_a_resolution_for_no_case_or_a_closed_one_or_out_of_turn_changes_nothing():
    policy = POLICIES["douyin"]
    ignored(on_resolution(None, paid(), policy), "case.ignored.unknown_case")
    recovered = on_resolution(case_of(RECALL), paid(), policy)
    assert isinstance(recovered, Transition)
    ignored(on_resolution(recovered.case, paid(), policy), "case.ignored.closed")
    ignored(on_resolution(case_of(RECALL), handed_over(), policy), "case.ignored.not_awaited")
    ignored(on_resolution(case_of(APPEAL), evidence(), policy), "case.ignored.not_awaited")


# ------------------------------------------------------------------------------ deadlines


def test_the_payment_window_closing_expires_the_case():
    moved(fire(case_of(RECALL)), CaseState.EXPIRED, "case.deadline.payment_window")


def test_the_channel_silent_runs_the_recall_or_fails_without_one():
    t = moved(fire(case_of(TRANSIENT)), CaseState.AWAITING_PAYMENT, "case.deadline.channel_query")
    assert t.actions == (ActionType.RECALL_ORDER,)
    assert t.cause.at == T0 + 5 * M  # the deadline's event time, not a clock
    moved(
        fire(case_of(TRANSIENT_OUT_OF_STOCK)),
        CaseState.FAILED,
        "case.deadline.channel_query_no_fallback",
    )


def test_an_unshipped_order_at_the_end_of_the_window_goes_to_review_with_the_refund_held():
    t = moved(fire(case_of(COUPON)), CaseState.AWAITING_REVIEW, "case.deadline.shipping_window")
    assert t.case.held_actions == (ActionType.AUTO_REFUND,) and not t.actions


def test_no_evidence_in_time_closes_the_case_without_recovery():
    moved(fire(case_of(NO_EVIDENCE)), CaseState.CLOSED_NO_RECOVERY, "case.deadline.evidence")


def test_no_verdict_in_time_goes_to_review_with_the_refund_held():
    t = moved(fire(case_of(APPEAL)), CaseState.AWAITING_REVIEW, "case.deadline.verdict")
    assert t.case.held_actions == (ActionType.AUTO_REFUND,)
    assert t.case.deadline == Deadline(DeadlineKind.REVIEW, T0 + 7 * D + D, 2)


def test_a_review_not_taken_in_time_is_reported_overdue_once():
    t = moved(fire(case_of(HIGH_VALUE)), CaseState.AWAITING_REVIEW, "case.deadline.review")
    assert t.case.review_overdue and t.case.deadline is None
    assert t.case.held_actions == (ActionType.RECALL_ORDER,)


def test_a_stale_deadline_or_one_of_a_closed_case_changes_nothing():
    case, policy = case_of(TRANSIENT), POLICIES["douyin"]
    old = case.deadline
    assert old is not None
    after = on_resolution(case, channel(ChannelQueryAnswer.FAILED), policy)
    assert isinstance(after, Transition)
    ignored(on_deadline(after.case, old, policy), "case.ignored.stale_deadline")
    closed = on_resolution(case, paid(), policy)
    assert isinstance(closed, Transition)
    ignored(on_deadline(closed.case, old, policy), "case.ignored.closed")


def test_catching_up_fires_every_passed_deadline_in_order_before_a_late_resolution():
    case, policy = case_of(TRANSIENT), POLICIES["douyin"]
    late = T0 + 2 * D  # past the re-query's 5 min and the recall's 24 h window
    steps = catch_up(case, late, policy)
    assert [s.rule_id for s in steps] == [
        "case.deadline.channel_query",
        "case.deadline.payment_window",
    ]
    ignored(on_resolution(steps[-1].case, paid(late), policy), "case.ignored.closed")
    assert catch_up(case, T0 + M, policy) == []  # nothing due yet


def test_the_same_causes_give_the_same_life():
    def life() -> list[Step]:
        case, policy = case_of(TRANSIENT), POLICIES["douyin"]
        steps: list[Step] = list(catch_up(case, T0 + 10 * M, policy))
        last = steps[-1]
        assert isinstance(last, Transition)
        env = structs.replace(paid().envelope, event_id="5f0c1c52-7a53-4c7e-9a3e-1f1f1f1f1f1f")
        steps.append(on_resolution(last.case, PaymentCompleted(env, 19_900), policy))
        return steps

    assert life() == life()


# ------------------------------------------------------------------------------ reviews


def test_approving_releases_the_held_actions_once_under_new_keys():
    case, policy = case_of(HIGH_VALUE), POLICIES["douyin"]
    t = moved(
        on_review(case, review(ReviewVerdict.APPROVE), policy),
        CaseState.AWAITING_PAYMENT,
        "case.review.approved",
    )
    assert t.actions == (ActionType.RECALL_ORDER,)
    assert t.action_keys == ("ord-1/payment-timeout/2/recall_order",)
    assert t.cause.actor == "alice" and t.case.held_actions == ()
    with pytest.raises(ReviewRefused, match="awaiting_payment"):
        on_review(t.case, review(ReviewVerdict.APPROVE), policy)  # approving twice grants nothing


def test_two_reviewers_on_one_case_produce_the_same_step_number_so_only_one_can_be_stored():
    case, policy = case_of(HIGH_VALUE), POLICIES["douyin"]
    first = on_review(case, review(ReviewVerdict.APPROVE, "alice"), policy)
    second = on_review(case, review(ReviewVerdict.REJECT, "bob"), policy)
    assert first.case.seq == second.case.seq == case.seq + 1  # the store's unique (case, seq)
    with pytest.raises(ReviewRefused):
        on_review(first.case, review(ReviewVerdict.REJECT, "bob"), policy)


def test_rejecting_closes_without_recovery():
    t = on_review(case_of(HIGH_VALUE), review(ReviewVerdict.REJECT), POLICIES["douyin"])
    moved(t, CaseState.CLOSED_NO_RECOVERY, "case.review.rejected")
    assert not t.actions


def test_approving_a_case_that_held_nothing_closes_it():
    case = structs.replace(case_of(HIGH_VALUE), held_actions=())
    t = on_review(case, review(ReviewVerdict.APPROVE), POLICIES["douyin"])
    moved(t, CaseState.CLOSED_NO_RECOVERY, "case.review.approved_nothing_held")


def test_approving_an_overdue_review_still_releases_and_clears_the_mark():
    overdue = fire(case_of(HIGH_VALUE))
    assert isinstance(overdue, Transition)
    t = on_review(overdue.case, review(ReviewVerdict.APPROVE, at=T0 + 2 * D), POLICIES["douyin"])
    assert t.to_state is CaseState.AWAITING_PAYMENT and not t.case.review_overdue


def test_a_review_is_refused_for_a_case_not_waiting_for_one():
    with pytest.raises(ReviewRefused, match="awaiting_shipment"):
        on_review(case_of(COUPON), review(ReviewVerdict.APPROVE), POLICIES["douyin"])
    with pytest.raises(ReviewRefused, match="no such case"):
        on_review(None, review(ReviewVerdict.APPROVE), POLICIES["douyin"])

"""The contract of the case store (core.ports.CaseStore), through the lifecycle service on it:
what a case goes through is stored as it was decided, and every cause takes effect once."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from msgspec import structs

from order_recovery.core.faults import PublishFailed, WriteConflict
from order_recovery.core.lifecycle import Lifecycle
from order_recovery.core.ports import CaseStore
from order_recovery.domain.case import (
    Case,
    CaseState,
    Ignored,
    Review,
    ReviewRefused,
    ReviewVerdict,
    Transition,
    on_resolution,
    on_review,
    open_case,
)
from order_recovery.domain.commands import ActionCommand, commands_of
from order_recovery.domain.resolutions import (
    ChannelQueryAnswer,
    ChannelQueryResult,
    PaymentCompleted,
    ResolutionEnvelope,
    ResolutionType,
)
from tests.unit.domain.factories import (
    POLICIES,
    T0,
    M,
    decode,
    payment_timeout,
    run,
    shipping_delay,
)

KEY = ("ord-1", "payment-timeout")


def _opening(store: CaseStore, doc: dict[str, Any]) -> Transition:
    step = Lifecycle(store, POLICIES).open(decode(doc), run(doc))
    assert isinstance(step, Transition)
    return step


def _opened(store: CaseStore, doc: dict[str, Any]) -> Case:
    return _opening(store, doc).case


def _relayed(store: CaseStore, limit: int = 100) -> list[ActionCommand]:
    sent: list[ActionCommand] = []
    assert store.relay_commands(limit, sent.extend) == len(sent)
    return sent


def _broker_down(commands: list[ActionCommand]) -> None:
    raise PublishFailed("simulated: the broker did not acknowledge")


def _resolution(kind: ResolutionType, at_min: int = 1, event_id: str | None = None) -> Any:
    env = ResolutionEnvelope(
        event_id=event_id or str(uuid.uuid4()),
        event_type=kind,
        schema_version=1,
        occurred_at=T0 + at_min * M,
        platform="douyin",
        order_id="ord-1",
    )
    if kind is ResolutionType.PAYMENT_COMPLETED:
        return PaymentCompleted(env, 19_900)
    return ChannelQueryResult(env, ChannelQueryAnswer.FAILED)


def _review(verdict: ReviewVerdict = ReviewVerdict.APPROVE, review_id: str | None = None) -> Review:
    return Review(review_id or str(uuid.uuid4()), "alice", verdict, "checked", T0 + 10 * M)


class CaseStoreContract:
    @pytest.fixture
    def store(self) -> CaseStore:
        raise NotImplementedError

    def test_a_case_reads_back_as_it_was_stored(self, store: CaseStore) -> None:
        case = _opened(store, payment_timeout(code="ERR_TIMEOUT"))
        assert case.deadline is not None and case.fallback_actions and case.released
        assert store.case(KEY) == case
        assert store.case(("ord-2", "payment-timeout")) is None

    def test_a_case_is_opened_once(self, store: CaseStore) -> None:
        doc = payment_timeout()
        first = _opened(store, doc)
        step = open_case(decode(doc), run(doc), POLICIES["douyin"])
        assert isinstance(step, Transition)
        with pytest.raises(WriteConflict), store.work() as work:
            work.save([step])
        assert Lifecycle(store, POLICIES).open(decode(doc), run(doc)).case == first  # type: ignore[union-attr]
        assert store.case(KEY) == first

    def test_a_resolution_takes_effect_once_however_often_it_arrives(
        self, store: CaseStore
    ) -> None:
        _opened(store, payment_timeout())
        life = Lifecycle(store, POLICIES)
        paid = _resolution(ResolutionType.PAYMENT_COMPLETED)
        (step,) = life.resolve([paid, paid])
        assert isinstance(step, Transition) and step.to_state is CaseState.RECOVERED
        assert life.resolve([paid]) == []
        stored = store.case(KEY)
        assert stored is not None and stored.state is CaseState.RECOVERED and stored.seq == 2

    def test_a_resolution_for_no_case_is_recorded_once_and_moves_nothing(
        self, store: CaseStore
    ) -> None:
        life = Lifecycle(store, POLICIES)
        paid = _resolution(ResolutionType.PAYMENT_COMPLETED)
        (step,) = life.resolve([paid])
        assert isinstance(step, Ignored) and step.rule_id == "case.ignored.unknown_case"
        assert life.resolve([paid]) == []
        assert store.case(KEY) is None

    def test_a_resolution_that_came_before_its_case_is_adopted_once_the_case_opens(
        self, store: CaseStore
    ) -> None:
        life = Lifecycle(store, POLICIES)
        early = _resolution(ResolutionType.CHANNEL_QUERY_RESULT, at_min=2)
        paid = _resolution(ResolutionType.PAYMENT_COMPLETED, at_min=3)
        assert [s.rule_id for s in life.resolve([early, paid])] == ["case.ignored.unknown_case"] * 2
        assert life.adopt_orphans() == []  # still no case
        _opened(store, payment_timeout(code="ERR_TIMEOUT"))
        adopted = life.adopt_orphans()
        assert [s.rule_id for s in adopted] == ["case.channel.failed", "case.payment.completed"]
        assert life.adopt_orphans() == [] and life.resolve([paid]) == []
        stored = store.case(KEY)
        assert stored is not None and stored.state is CaseState.RECOVERED and stored.seq == 3

    def test_deadlines_passed_fire_before_a_late_resolution(self, store: CaseStore) -> None:
        _opened(store, payment_timeout(code="ERR_TIMEOUT"))
        late = _resolution(ResolutionType.PAYMENT_COMPLETED, at_min=3 * 24 * 60)
        steps = Lifecycle(store, POLICIES).resolve([late])
        assert [s.rule_id for s in steps] == [
            "case.deadline.channel_query",
            "case.deadline.payment_window",
            "case.ignored.closed",
        ]
        stored = store.case(KEY)
        assert stored is not None and stored.state is CaseState.EXPIRED and stored.seq == 3

    def test_a_deadline_fires_once(self, store: CaseStore) -> None:
        case = _opened(store, payment_timeout(code="ERR_TIMEOUT"))
        _opened(store, shipping_delay())  # its 7-day window is far off
        life = Lifecycle(store, POLICIES)
        assert life.fire_due(T0 + M) == []
        (fired,) = life.fire_due(T0 + 6 * M)
        assert isinstance(fired, Transition) and fired.rule_id == "case.deadline.channel_query"
        assert fired.case.seq == case.seq + 1
        assert life.fire_due(T0 + 6 * M) == []
        stored = store.case(KEY)
        assert stored is not None and stored.state is CaseState.AWAITING_PAYMENT

    def test_a_step_from_a_stale_read_is_refused(self, store: CaseStore) -> None:
        case = _opened(store, payment_timeout(code="ERR_TIMEOUT"))
        policy = POLICIES["douyin"]
        first = on_resolution(case, _resolution(ResolutionType.PAYMENT_COMPLETED), policy)
        second = on_resolution(case, _resolution(ResolutionType.CHANNEL_QUERY_RESULT), policy)
        assert isinstance(first, Transition) and isinstance(second, Transition)
        with store.work() as work:
            work.save([first])
        with pytest.raises(WriteConflict), store.work() as work:
            work.save([second])
        assert store.case(KEY) == first.case

    def test_nothing_of_a_failed_unit_of_work_is_kept(self, store: CaseStore) -> None:
        case = _opened(store, payment_timeout())
        step = on_resolution(
            case, _resolution(ResolutionType.PAYMENT_COMPLETED), POLICIES["douyin"]
        )
        assert isinstance(step, Transition)
        with pytest.raises(RuntimeError), store.work() as work:
            work.save([step])
            raise RuntimeError("the caller failed after saving")
        assert store.case(KEY) == case

    def test_approving_releases_once_and_a_second_review_is_refused(self, store: CaseStore) -> None:
        _opened(store, payment_timeout(amount_fen=600_000))
        life = Lifecycle(store, POLICIES)
        approved = life.review(KEY, _review())
        assert approved.to_state is CaseState.AWAITING_PAYMENT and approved.actions
        with pytest.raises(ReviewRefused):
            life.review(KEY, _review(ReviewVerdict.REJECT))
        with pytest.raises(ReviewRefused):
            life.review(("ord-9", "payment-timeout"), _review())

    def test_two_reviewers_reading_the_same_case_store_one_step(self, store: CaseStore) -> None:
        case = _opened(store, payment_timeout(amount_fen=600_000))
        policy = POLICIES["douyin"]
        alice = on_review(case, _review(), policy)
        bob = on_review(case, _review(ReviewVerdict.REJECT), policy)
        with store.work() as work:
            work.save([alice])
        with pytest.raises(WriteConflict), store.work() as work:
            work.save([bob])
        assert store.case(KEY) == alice.case

    def test_the_same_review_submitted_again_is_refused(self, store: CaseStore) -> None:
        case = _opened(store, payment_timeout(amount_fen=600_000))
        policy = POLICIES["douyin"]
        review = _review(review_id="5b1d7a3c-0000-4000-8000-000000000001")
        approved = on_review(case, review, policy)
        with store.work() as work:
            work.save([approved])
        # The same review id on a case waiting for review again (escalated by a later deadline).
        again = structs.replace(approved.case, state=CaseState.AWAITING_REVIEW)
        with pytest.raises(ReviewRefused), store.work() as work:
            work.save([on_review(again, review, policy)])

    # ------------------------------------------------------------------ action commands
    def test_a_steps_actions_are_relayed_once_each_in_step_order(self, store: CaseStore) -> None:
        opening = _opening(store, payment_timeout(amount_fen=600_000))  # escalated
        assert opening.actions
        assert _relayed(store) == commands_of(opening)
        assert _relayed(store) == []  # a second pass (or a second relay) sends nothing again
        approved = Lifecycle(store, POLICIES).review(KEY, _review())
        assert approved.actions and _relayed(store) == commands_of(approved)
        assert store.command_backlog() == 0

    def test_commands_are_relayed_oldest_first_a_pass_at_most_its_limit(
        self, store: CaseStore
    ) -> None:
        first = _opening(store, payment_timeout(code="ERR_TIMEOUT"))
        second = _opening(store, shipping_delay())
        expected = commands_of(first) + commands_of(second)
        assert len(expected) >= 2 and store.command_backlog() == len(expected)
        assert _relayed(store, limit=1) == expected[:1]
        assert _relayed(store) == expected[1:]

    def test_a_publish_that_fails_marks_nothing_and_the_next_pass_sends_it(
        self, store: CaseStore
    ) -> None:
        opening = _opening(store, shipping_delay())
        with pytest.raises(PublishFailed):
            store.relay_commands(100, _broker_down)
        assert store.command_backlog() == len(opening.actions)
        assert _relayed(store) == commands_of(opening)

    def test_a_failed_unit_of_work_leaves_no_command(self, store: CaseStore) -> None:
        case = _opened(store, payment_timeout(amount_fen=600_000))
        _relayed(store)
        approved = on_review(case, _review(), POLICIES["douyin"])
        assert approved.actions
        with pytest.raises(RuntimeError), store.work() as work:
            work.save([approved])
            raise RuntimeError("the caller failed after saving")
        assert _relayed(store) == []

    def test_two_relays_at_once_send_each_command_once(self, store: CaseStore) -> None:
        """While one pass is publishing, another finds it under way and sends nothing."""
        opening = _opening(store, shipping_delay())
        publishing, release = threading.Event(), threading.Event()
        first: list[ActionCommand] = []

        def slow(commands: list[ActionCommand]) -> None:
            publishing.set()
            assert release.wait(10)
            first.extend(commands)

        thread = threading.Thread(target=store.relay_commands, args=(100, slow))
        thread.start()
        try:
            assert publishing.wait(10)
            assert _relayed(self.second_handle(store)) == []
        finally:
            release.set()
            thread.join(10)
        assert first == commands_of(opening) and _relayed(store) == []

    def second_handle(self, store: CaseStore) -> CaseStore:
        """Another handle on the same data (another connection); the fake is its own."""
        return store

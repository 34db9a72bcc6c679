"""The DecisionStore and UnsendableLetters contracts (see tests/contracts/__init__.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pytest

from order_recovery.core.faults import Fenced, WriteConflict
from order_recovery.core.ports import CaseStore, DecisionStore, UnsendableLetters
from order_recovery.core.records import (
    DeadLetter,
    Decided,
    HistoryKeys,
    OutboxBatch,
    OutgoingMessage,
    SourceRecord,
)
from order_recovery.domain.case import CaseState, Transition, open_case
from order_recovery.domain.commands import ActionCommand, commands_of
from order_recovery.domain.contract import decode_event
from order_recovery.domain.history import OrderHistory, business_day
from order_recovery.domain.limits import (
    LimitClaim,
    LimitKind,
    buyer_day_subject,
    fold_claims,
    limit_uses,
)
from order_recovery.domain.outcome import outcome_json
from order_recovery.domain.policy import load_policies
from order_recovery.domain.rules import decide
from tests.unit.domain.factories import (
    H,
    M,
    logistics_exception,
    payment_timeout,
    shipping_delay,
)

POLICIES = load_policies()
DECIDED_AT = datetime(2026, 1, 1, tzinfo=UTC)
TOPIC = "orders.shipping-delay"


def decided(doc: dict[str, Any], offset: int = 0, **over: Any) -> Decided:
    """A factory event with its own id (and `over`), decided on an empty history."""
    doc = {**doc, "event_id": str(uuid.uuid4()), **over}
    raw = orjson.dumps(doc)
    event = decode_event(raw)
    decision = decide(event, OrderHistory(), POLICIES[doc["platform"]])
    record = SourceRecord(f"orders.{doc['event_type']}", 0, offset, doc["order_id"].encode(), raw)
    opening = open_case(event, decision, POLICIES[doc["platform"]])
    return Decided(
        record,
        event,
        decision,
        None,
        outcome_json(event, decision, decided_at=DECIDED_AT),
        opening if isinstance(opening, Transition) else None,
    )


def claims_of(batch: Sequence[Decided]) -> list[LimitClaim]:
    uses = []
    for d in batch:
        uses += limit_uses(d.event, d.decision, POLICIES[d.event.envelope.platform])
    return fold_claims(uses)


def keys(*batch: Decided, event_ids: bool = False) -> HistoryKeys:
    envs = [d.event.envelope for d in batch]
    return HistoryKeys(
        sorted({e.order_id for e in envs}),
        sorted({(e.buyer_id, business_day(e.occurred_at)) for e in envs}),
        sorted(e.event_id for e in envs) if event_ids else None,
    )


def ids(*batch: Decided) -> set[str]:
    return {d.event.envelope.event_id for d in batch}


class Sent:
    """A Publish callback that records what it was given, or raises."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[OutboxBatch] = []
        self.fail = fail

    def __call__(self, batches: list[OutboxBatch]) -> None:
        if self.fail:
            raise RuntimeError("simulated: the broker is gone")
        self.batches += batches


class StoreHarness:
    """What a subclass provides: the store, a second handle on the same data (another
    connection), the case store on the same data, and a way to age every outbox batch (a crash
    long ago)."""

    store: DecisionStore
    other: DecisionStore
    cases: CaseStore

    def age_outbox(self, seconds: float) -> None:
        raise NotImplementedError


class DecisionStoreContract:
    @pytest.fixture
    def harness(self) -> Iterator[StoreHarness]:
        raise NotImplementedError

    @pytest.fixture
    def store(self, harness: StoreHarness) -> DecisionStore:
        return harness.store

    # ------------------------------------------------------------------ cases
    def test_a_decision_opens_its_case_once_with_its_first_step(
        self, harness: StoreHarness
    ) -> None:
        first = decided(payment_timeout(failed_ago=10 * M), order_id="ord-c")
        again = decided(payment_timeout(failed_ago=20 * M, code="ERR_TIMEOUT"), order_id="ord-c")
        not_yet = decided(payment_timeout(failed_ago=None, created_ago=10 * M), order_id="ord-r")
        later = decided(payment_timeout(failed_ago=3 * H), order_id="ord-c")
        assert first.opening is not None and again.opening is not None
        assert not_yet.opening is None and later.opening is not None
        harness.store.save_decisions([first, again, not_yet])
        harness.store.save_decisions([later])
        case = harness.cases.case(("ord-c", "payment-timeout"))
        assert case == first.opening.case  # the batch's first; a later batch changes nothing
        assert case.state is CaseState.AWAITING_PAYMENT and case.seq == 1
        assert harness.cases.case(("ord-r", "payment-timeout")) is None

    def test_a_case_the_decisions_open_issues_its_actions_as_commands_once(
        self, harness: StoreHarness
    ) -> None:
        """The hot path's outbox rows are the domain's commands of the opening step: one per
        action key, only for the case actually opened, relayed once."""
        first = decided(payment_timeout(failed_ago=10 * M), order_id="ord-k")
        again = decided(  # its case is open by then: it issues no command
            payment_timeout(failed_ago=20 * M, code="ERR_TIMEOUT"), order_id="ord-k"
        )
        other = decided(shipping_delay(), order_id="ord-l")
        assert first.opening and again.opening and other.opening
        harness.store.save_decisions([first, again, other])
        sent: list[ActionCommand] = []
        assert harness.cases.relay_commands(100, sent.extend) == len(sent)
        expected = commands_of(first.opening) + commands_of(other.opening)
        assert expected and sorted(sent, key=lambda c: c.action_key) == sorted(
            expected, key=lambda c: c.action_key
        )
        assert [c.action_key for c in sent if c.order_id == "ord-k"] == list(
            first.opening.action_keys
        )  # a step's commands in the step's order
        assert harness.cases.relay_commands(100, sent.extend) == 0
        assert harness.cases.command_backlog() == 0

    # ------------------------------------------------------------------ the history read
    def test_a_written_batch_is_read_back_as_the_rules_need_it(self, store: DecisionStore) -> None:
        coupon = decided(shipping_delay("taobao"), order_id="ord-coupon")
        refund = decided(
            shipping_delay("douyin", category="fresh", paid_ago=3 * H), order_id="ord-refund"
        )
        attempt = decided(payment_timeout("douyin"), order_id="ord-pay")
        forged = decided(logistics_exception("douyin", forged=True), order_id="ord-forged")
        batch = [coupon, refund, attempt, forged]
        assert store.save_decisions(batch, claims_of(batch)) is not None
        history = store.load_history(keys(*batch))
        assert ids(*batch) <= history.decided_event_ids
        assert history.case_status[("ord-coupon", "shipping-delay")] == str(coupon.decision.outcome)
        assert {("ord-coupon", "shipping-delay"), ("ord-refund", "shipping-delay")} <= (
            history.compensated
        )
        assert history.payment_attempts == {"ord-pay": 1}
        assert history.revoked_orders == {"ord-forged"}
        day = business_day(refund.event.envelope.occurred_at)
        assert history.buyer_refunds == {("buyer-1", day): 1}

    def test_a_read_sees_only_the_orders_it_asks_for(self, store: DecisionStore) -> None:
        mine, theirs = (
            decided(shipping_delay(), order_id="ord-a"),
            decided(shipping_delay(), order_id="ord-b"),
        )
        store.save_decisions([mine, theirs], claims_of([mine, theirs]))
        history = store.load_history(keys(mine))
        assert history.decided_event_ids == ids(mine)
        assert set(history.case_status) == {("ord-a", "shipping-delay")}

    def test_an_event_id_under_another_order_is_known_once_looked_up(
        self, store: DecisionStore
    ) -> None:
        first = decided(shipping_delay(), order_id="ord-a")
        store.save_decisions([first], claims_of([first]))
        reused = decided(shipping_delay(), order_id="ord-b", event_id=first.event.envelope.event_id)
        assert store.load_history(keys(reused)).decided_event_ids == set()
        assert store.load_history(keys(reused, event_ids=True)).decided_event_ids == ids(first)

    def test_a_pending_batch_counts_once_whether_or_not_it_landed(
        self, store: DecisionStore
    ) -> None:
        attempt = decided(payment_timeout("douyin"), order_id="ord-pay")
        pending = [(attempt.event, attempt.decision)]
        before = store.load_history(keys(attempt), pending)
        assert (before.decided_event_ids, before.payment_attempts) == (ids(attempt), {"ord-pay": 1})
        store.save_decisions([attempt], claims_of([attempt]))
        after = store.load_history(keys(attempt), pending)
        assert (after.decided_event_ids, after.payment_attempts) == (ids(attempt), {"ord-pay": 1})

    # ------------------------------------------------------------------ conflicts
    def test_an_event_decided_again_refuses_the_whole_write(self, store: DecisionStore) -> None:
        first = decided(shipping_delay(), order_id="ord-a")
        store.save_decisions([first], claims_of([first]))
        fresh = decided(shipping_delay(), order_id="ord-b")
        with pytest.raises(WriteConflict):
            store.save_decisions([fresh, first], claims_of([fresh, first]))
        assert store.load_history(keys(fresh, first)).decided_event_ids == ids(first)
        assert store.outbox_backlog() == 1

    def test_a_second_compensation_of_an_order_refuses_the_whole_write(
        self, store: DecisionStore
    ) -> None:
        one = decided(shipping_delay("taobao"), order_id="ord-c")
        two = decided(shipping_delay("taobao"), order_id="ord-c")  # decided on a stale read
        other = decided(shipping_delay("taobao"), order_id="ord-d")
        assert one.decision.compensation is not None and two.decision.compensation is not None
        store.save_decisions([one], claims_of([one]))
        with pytest.raises(WriteConflict):
            store.save_decisions([other, two], claims_of([other, two]))
        assert store.load_history(keys(other, two)).decided_event_ids == ids(one)

    def test_a_counter_past_the_ceiling_a_claim_relied_on_refuses_the_write(
        self, store: DecisionStore
    ) -> None:
        day = date(2025, 6, 2)
        subject = buyer_day_subject("buyer-9", day)
        read = HistoryKeys([], [("buyer-9", day)])

        def claim(ceiling: int | None) -> list[LimitClaim]:
            return [LimitClaim(LimitKind.BUYER_REFUNDS, subject, 1, ceiling)]

        first, second, third = (decided(shipping_delay(), order_id=f"ord-{i}") for i in range(3))
        store.save_decisions([first], claim(1))
        with pytest.raises(WriteConflict):
            store.save_decisions([second], claim(1))  # relied on being the first refund
        assert store.load_history(read).buyer_refunds == {("buyer-9", day): 1}
        assert store.load_history(keys(second)).decided_event_ids == set()
        store.save_decisions([third], claim(None))  # relies on nothing: the counter moves on
        assert store.load_history(read).buyer_refunds == {("buyer-9", day): 2}

    # ------------------------------------------------------------------ leases
    def test_a_claim_takes_a_new_epoch_unless_the_owner_holds_it(
        self, store: DecisionStore
    ) -> None:
        tp = (TOPIC, 3)
        assert store.claim_partitions([tp], "a") == {tp: 1}
        assert store.claim_partitions([tp], "a") == {tp: 1}
        assert store.claim_partitions([tp, (TOPIC, 4)], "b") == {tp: 2, (TOPIC, 4): 1}
        assert store.claim_partitions([tp], "a") == {tp: 3}
        assert store.claim_partitions([], "a") == {}

    def test_a_write_under_a_lease_claimed_since_is_fenced_whole(
        self, store: DecisionStore
    ) -> None:
        tp, kept = (TOPIC, 0), (TOPIC, 1)
        old = store.claim_partitions([tp, kept], "zombie")
        new = store.claim_partitions([tp], "successor")
        late = decided(shipping_delay(), order_id="ord-late")
        with pytest.raises(Fenced) as fenced:
            store.save_decisions([late], claims_of([late]), old)
        assert fenced.value.partitions == {tp}
        assert store.load_history(keys(late)).decided_event_ids == set()
        assert store.outbox_backlog() == 0
        assert store.save_decisions([late], claims_of([late]), new) is not None

    def test_leases_are_checked_without_decisions_and_an_unclaimed_one_is_lost(
        self, store: DecisionStore
    ) -> None:
        tp = (TOPIC, 5)
        leases = store.claim_partitions([tp], "a")
        assert store.save_decisions([], (), leases) is None
        assert store.save_decisions([]) is None
        store.claim_partitions([tp], "b")
        with pytest.raises(Fenced):
            store.save_decisions([], (), leases)
        with pytest.raises(Fenced):
            store.save_decisions([], (), {(TOPIC, 6): 1})

    # ------------------------------------------------------------------ the outbox
    def test_a_write_is_one_outbox_batch_of_its_outcomes_in_decision_order(
        self, store: DecisionStore
    ) -> None:
        batch = [decided(shipping_delay(), order_id=f"ord-{i}") for i in range(3)]
        batch_id = store.save_decisions(batch, claims_of(batch))
        assert store.outbox_backlog() == 3
        sent = Sent()
        assert store.publish_unpublished_holding([batch[1].event.envelope.event_id], [], sent) == 3
        assert sent.batches == [
            OutboxBatch(
                str(batch_id), [(d.event.envelope.order_id, d.outcome_payload) for d in batch]
            )
        ]
        assert store.outbox_backlog() == 0
        assert store.publish_unpublished_holding(list(ids(*batch)), [], Sent()) == 0

    def test_unpublished_batches_holding_the_events_go_oldest_first(
        self, store: DecisionStore
    ) -> None:
        a, b, c = (decided(shipping_delay(), order_id=f"ord-{i}") for i in range(3))
        first = store.save_decisions([a], claims_of([a]))
        second = store.save_decisions([b], claims_of([b]))
        third = store.save_decisions([c], claims_of([c]))
        sent = Sent()
        ids_ = [c.event.envelope.event_id, a.event.envelope.event_id]
        assert store.publish_unpublished_holding(ids_, [], sent) == 2
        assert [x.batch_id for x in sent.batches] == [first, third]
        assert store.outbox_backlog() == 1 and second is not None

    def test_batches_the_caller_published_itself_are_left_to_it(self, store: DecisionStore) -> None:
        a = decided(shipping_delay(), order_id="ord-a")
        mine = store.save_decisions([a], claims_of([a]))
        assert mine is not None
        assert store.publish_unpublished_holding(list(ids(a)), [mine], Sent()) == 0
        assert store.outbox_backlog() == 1

    def test_a_failed_send_leaves_the_batches_unpublished(self, store: DecisionStore) -> None:
        a = decided(shipping_delay(), order_id="ord-a")
        store.save_decisions([a], claims_of([a]))
        with pytest.raises(RuntimeError, match="gone"):
            store.publish_unpublished_holding(list(ids(a)), [], Sent(fail=True))
        assert store.outbox_backlog() == 1
        assert store.publish_unpublished_holding(list(ids(a)), [], Sent()) == 1

    def test_marking_published_is_per_batch_and_idempotent(self, store: DecisionStore) -> None:
        a, b = decided(shipping_delay(), order_id="ord-a"), decided(shipping_delay(), order_id="b")
        first = store.save_decisions([a], claims_of([a]))
        store.save_decisions([b], claims_of([b]))
        assert first is not None
        store.mark_published([first])
        store.mark_published([first])
        store.mark_published([])
        assert store.outbox_backlog() == 1

    def test_the_relay_sends_batches_older_than_asked_oldest_first_up_to_the_limit(
        self, harness: StoreHarness
    ) -> None:
        store = harness.store
        a, b, c = (decided(shipping_delay(), order_id=f"ord-{i}") for i in range(3))
        first = store.save_decisions([a], claims_of([a]))
        second = store.save_decisions([b], claims_of([b]))
        harness.age_outbox(120)
        store.save_decisions([c], claims_of([c]))  # young: its own worker is sending it
        sent = Sent()
        assert store.relay_unpublished(60, 1, sent) == 1
        assert store.relay_unpublished(60, 10, sent) == 1
        assert store.relay_unpublished(60, 10, sent) == 0
        assert [x.batch_id for x in sent.batches] == [first, second]
        assert store.outbox_backlog() == 1

    def test_one_relay_pass_runs_at_a_time(self, harness: StoreHarness) -> None:
        store, other = harness.store, harness.other
        a = decided(shipping_delay(), order_id="ord-a")
        store.save_decisions([a], claims_of([a]))
        harness.age_outbox(120)
        meanwhile: list[int] = []
        never = Sent(fail=True)

        def send(batches: list[OutboxBatch]) -> None:
            meanwhile.append(other.relay_unpublished(60, 10, never))

        assert store.relay_unpublished(60, 10, send) == 1
        assert meanwhile == [0]
        assert store.outbox_backlog() == 0


class UnsendableLettersContract:
    @pytest.fixture
    def letters(self) -> Iterator[UnsendableLetters]:
        raise NotImplementedError

    def test_a_dead_letter_is_kept_once_per_source_record(self, letters: UnsendableLetters) -> None:
        record = SourceRecord(TOPIC, 1, 7, b"k", b"{not json", None, (("trace", b"t"),))
        letter = DeadLetter(record, "malformed_json", "nope")
        sent = OutgoingMessage(f"{TOPIC}.dlq", b"k", b"{not", [("dlq.id", b"x")])
        assert letters.record(letter, sent, "too large", "w-1") is True
        assert letters.record(letter, sent, "too large", "w-2") is False
        moved = DeadLetter(SourceRecord(TOPIC, 1, 8, None, None), "malformed_json", "nope")
        assert letters.record(moved, sent, "too large", "w-1") is True

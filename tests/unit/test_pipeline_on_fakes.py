"""The pipeline's batch state machine on the in-memory fakes (tests/fakes.py), no services: one
batch through, the overlap of batch N+1 decided while N is written (N landed or not, N's write
failing and redone, another worker having written part of N), workers racing on a limit,
zombies, revoked partitions, the outbox catch-up, publish failures and dead letters. The same
behaviour is held against the real Postgres and Kafka in tests/integration; the fakes pass the
real adapters' contract suites (tests/contracts/), which is what makes these tests worth it."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest

from order_recovery.adapters.metrics import WorkerMetrics
from order_recovery.adapters.retry import RetryPolicy
from order_recovery.bootstrap import build_pipeline
from order_recovery.config import Settings
from order_recovery.core.batch import BatchResult
from order_recovery.core.faults import Transient
from order_recovery.core.pipeline import Pipeline
from order_recovery.core.records import Decided, HistoryKeys, OutgoingMessage, SourceRecord
from order_recovery.core.stored_history import StoredHistory
from order_recovery.domain.decision import Decision
from order_recovery.domain.events import Event
from order_recovery.domain.policy import load_policies
from order_recovery.domain.sample import sample_events
from tests.fakes import InMemoryStore, KeptLetters, RecordingPublisher
from tests.support.dependent_feed import GROUP, assert_results_in_order, dependent_feed
from tests.support.racing import RacingStore
from tests.support.reference import expected_decisions
from tests.unit.domain.factories import H, logistics_exception, shipping_delay

SETTINGS = Settings(worker_id="w-unit", max_record_bytes=64 * 1024)
OUTCOMES = SETTINGS.outcome_topic
PRODUCED_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: after every sample event
POLICIES = load_policies()
CAP = POLICIES["douyin"].risk.max_buyer_refunds_per_day


class Parts:
    """A pipeline on fakes, and the fakes, for the test to look at."""

    def __init__(
        self,
        store: InMemoryStore | None = None,
        *,
        overlapped: bool = False,
        publisher: RecordingPublisher | None = None,
    ) -> None:
        self.store = store or InMemoryStore()
        self.publisher = publisher or RecordingPublisher()
        self.letters = KeptLetters()
        self.metrics = WorkerMetrics()
        self.stop = threading.Event()
        self.pipeline: Pipeline = build_pipeline(
            SETTINGS,
            POLICIES,
            store=self.store,
            reader=self.store if overlapped else None,
            publisher=self.publisher,
            unsendable=self.letters,
            metrics=self.metrics,
            retry=RetryPolicy(self.stop, initial_s=0.001, max_delay_s=0.01),
        )

    def outcome_ids(self) -> list[str]:
        return [
            orjson.loads(m.value or b"")["source_event_id"] for m in self.publisher.to(OUTCOMES)
        ]

    def process(self, records: list[SourceRecord], stuck_s: float = 10.0) -> BatchResult:
        """One batch; one that does not finish (retried for ever) fails the test instead of
        hanging it: its retries are stopped, and give up with their last fault."""
        with ThreadPoolExecutor(1) as pool:
            done = pool.submit(self.pipeline.process, records)
            try:
                return done.result(stuck_s)
            except TimeoutError:
                self.stop.set()
                pytest.fail(f"the batch did not finish in {stuck_s}s: {done.exception(10)!r}")

    def run(self, records: list[SourceRecord], size: int = GROUP) -> list[BatchResult]:
        """Overlapped (`submit`), `size` records a batch."""
        results: list[BatchResult] = []
        for start in range(0, len(records), size):
            results += self.pipeline.submit(records[start : start + size])
        results += self.pipeline.drain()
        return results

    def close(self) -> None:
        self.stop.set()
        self.pipeline.close()


def records(events: list[dict[str, Any]], partition: int = 0, start: int = 0) -> list[SourceRecord]:
    return [
        SourceRecord(
            SETTINGS.source_topic(e["event_type"]),
            partition,
            start + i,
            e["order_id"].encode(),
            orjson.dumps(e),
            PRODUCED_MS,
        )
        for i, e in enumerate(events)
    ]


def delays(count: int, tag: str, **over: Any) -> list[dict[str, Any]]:
    return [
        {
            **shipping_delay("taobao"),
            "event_id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{tag}/{i}")),
            "order_id": f"ord-{tag}-{i}",
            **over,
        }
        for i in range(count)
    ]


def assert_decided_like_the_reference(store: InMemoryStore, events: list[dict[str, Any]]) -> None:
    expected = expected_decisions(events)
    assert {k: (d.decision.outcome, d.decision.rule_ids) for k, d in store.decisions.items()} == {
        k: (d.outcome, d.rule_ids) for k, d in expected.items()
    }
    assert {k: d.decision.compensation for k, d in store.decisions.items()} == {
        k: d.compensation for k, d in expected.items()
    }


# ---------------------------------------------------------------------------- one batch
def test_a_batch_is_decided_written_and_published_once() -> None:
    parts = Parts()
    events = sample_events(200, seed=7)
    unique = {e["event_id"] for e in events}
    result = parts.pipeline.process(records(events))
    assert (result.decided, result.duplicates) == (len(unique), len(events) - len(unique))
    assert result.commit_offsets == {
        (SETTINGS.source_topic(t), 0): max(i for i, e in enumerate(events) if e["event_type"] == t)
        + 1
        for t in {e["event_type"] for e in events}
    }
    assert set(parts.store.decisions) == unique
    assert sorted(parts.outcome_ids()) == sorted(unique)
    assert parts.store.outbox_backlog() == 0  # marked at once without a background marker

    again = parts.pipeline.process(records(events, start=1000))
    assert (again.decided, again.duplicates) == (0, len(events))
    assert len(parts.outcome_ids()) == len(unique)
    parts.close()


def test_a_batch_is_counted_once_in_the_metrics() -> None:
    parts = Parts()
    events = delays(3, "metrics") + delays(1, "metrics")  # the last one a duplicate
    parts.pipeline.process(records(events))
    m = parts.metrics
    assert m.consumed.labels("shipping-delay")._value.get() == 4
    assert m.duplicates.labels("shipping-delay")._value.get() == 1
    outcome = str(parts.store.decisions[events[0]["event_id"]].decision.outcome)
    assert m.decided.labels("shipping-delay", "taobao", outcome)._value.get() == 3
    assert m.batch_size._sum.get() == 4
    parts.close()


def test_poison_is_dead_lettered_with_headers_and_the_batch_carries_on() -> None:
    parts = Parts()
    topic = SETTINGS.source_topic("shipping-delay")
    good = delays(2, "poison")
    batch = [
        *records(good),
        SourceRecord(topic, 0, 2, b"k1", b"\xff not json", 1_700_000_000_000, (("trace", b"t1"),)),
        SourceRecord(topic, 0, 3, b"k2", orjson.dumps(dict(good[0], platform="jingdong"))),
    ]
    result = parts.pipeline.process(batch)
    assert result.decided == 2
    assert [d.error_class for d in result.dead_letters] == ["malformed_json", "unknown_platform"]
    first, _ = parts.publisher.to(SETTINGS.dlq_topic(topic))
    headers = dict(first.headers)
    assert (first.key, first.value, headers["trace"]) == (b"k1", b"\xff not json", b"t1")
    assert headers["dlq.error.class"] == b"malformed_json"
    assert headers["dlq.original.offset"] == b"2"
    assert result.commit_offsets == {(topic, 0): 4}
    parts.close()


def test_a_dead_letter_the_broker_refuses_even_truncated_is_kept_once() -> None:
    parts = Parts(publisher=RecordingPublisher(max_bytes=8 * 1024))
    topic = SETTINGS.source_topic("shipping-delay")
    wide = SourceRecord(topic, 0, 0, b"k" * 10_000, b"{" * 20_000)  # the key alone is too large
    for _ in range(2):  # redelivered: nothing more kept
        assert parts.pipeline.process([wide]).commit_offsets == {(topic, 0): 1}
    assert list(parts.letters.rows) == [(topic, 0, 0)]
    assert parts.metrics.dead_letters_unsendable._value.get() == 1
    parts.close()


# ---------------------------------------------------------------------------- the overlap
class HeldWrites(InMemoryStore):
    """The first `overlaps` writes on the pipeline's writer thread each wait for the next batch's
    history read, and that read waits for the write to be under way: so batch N+1 is surely
    decided while N is written. The write is held before it lands (`land_first=False`: the read
    must count N from its pending decisions) or after (the read finds N stored). Logs how many
    pending decisions each read was given."""

    def __init__(self, overlaps: int, land_first: bool = False, fail_first: int = 0) -> None:
        super().__init__()
        self.overlaps, self.land_first, self.fail_first = overlaps, land_first, fail_first
        self.read_log: list[int] = []
        self.overlapped = 0  # reads made while a write was held
        self._turns = threading.Condition()
        self._held = 0  # writes that reached their hold
        self._beside = 0  # reads made beside a held write

    def load_history(
        self, keys: HistoryKeys, pending: Sequence[tuple[Event, Decision]] = ()
    ) -> StoredHistory:
        self.read_log.append(len(pending))
        if pending and self._beside < self.overlaps:
            with self._turns:
                if self._turns.wait_for(lambda: self._held > self._beside, timeout=5):
                    self.overlapped += 1
                self._beside += 1
                self._turns.notify_all()
        return super().load_history(keys, pending)

    def save_decisions(self, decided: Sequence[Decided], *args: Any) -> str | None:
        if self.land_first:
            batch = super().save_decisions(decided, *args)
            self._hold()
            return batch
        self._hold()
        if self.fail_first:
            self.fail_first -= 1
            raise Transient("simulated: connection lost before the write", "pg_unavailable")
        return super().save_decisions(decided, *args)

    def _hold(self) -> None:
        writer = threading.current_thread().name.startswith("pipeline-writer")
        if not writer or self._held >= self.overlaps:
            return
        with self._turns:
            self._held += 1
            self._turns.notify_all()
            self._turns.wait_for(lambda: self._beside >= self._held, timeout=5)


@pytest.mark.parametrize("land_first", [False, True], ids=["in-flight", "landed"])
def test_the_next_batch_decided_during_a_write_counts_it_exactly_once(land_first: bool) -> None:
    events = dependent_feed(3, seed=31)
    store = HeldWrites(len(events) // GROUP - 1, land_first=land_first)
    parts = Parts(store, overlapped=True)
    results = parts.run(records(events))
    batches = len(events) // GROUP
    assert store.overlapped == batches - 1, "the batches did not overlap"
    assert_results_in_order(results, batches, len(events))
    assert_decided_like_the_reference(store, events)
    assert sorted(parts.outcome_ids()) == sorted(e["event_id"] for e in events)
    parts.close()


def test_a_failed_write_is_redone_and_the_batch_decided_on_it_decided_again() -> None:
    events = dependent_feed(1, seed=33)[: 2 * GROUP]
    store = HeldWrites(1, fail_first=1)
    parts = Parts(store, overlapped=True)
    results = parts.run(records(events))
    # N read; N+1 read beside N's write (N pending); N redone on a fresh read; N+1 decided again,
    # alone, once N turned out other than decided (its write failed).
    assert store.read_log == [0, GROUP, 0, 0]
    assert store.writes == 2 and store.decisions.keys() == {e["event_id"] for e in events}
    assert_results_in_order(results, 2, len(events))
    assert_decided_like_the_reference(store, events)
    assert sorted(parts.outcome_ids()) == sorted(e["event_id"] for e in events)
    parts.close()


def test_a_batch_whose_write_went_as_decided_is_not_decided_again() -> None:
    events = dependent_feed(1, seed=33)[: 2 * GROUP]
    store = HeldWrites(1)
    parts = Parts(store, overlapped=True)
    parts.run(records(events))
    assert store.read_log == [0, GROUP]
    parts.close()


class OtherWorkerFirst(InMemoryStore):
    """Another worker writes `theirs` right after this worker's first history read: this one's
    first write then meets decisions it did not know of."""

    def __init__(self, theirs: list[dict[str, Any]]) -> None:
        super().__init__()
        self._theirs = theirs

    def load_history(
        self, keys: HistoryKeys, pending: Sequence[tuple[Event, Decision]] = ()
    ) -> StoredHistory:
        history = super().load_history(keys, pending)
        if self._theirs:
            theirs, self._theirs = self._theirs, []
            other = Parts(self)
            other.pipeline.process(records(theirs, partition=1))
            other.close()
        return history


def test_a_batch_another_worker_wrote_part_of_is_decided_again_on_a_fresh_read() -> None:
    events = list({e["event_id"]: e for e in sample_events(50, seed=12)}.values())
    store = OtherWorkerFirst(events[:30])
    parts = Parts(store)
    result = parts.pipeline.process(records(events))
    assert store.reads == 3  # ours, the other worker's, ours after the conflict
    assert (result.decided, result.duplicates) == (len(events) - 30, 30)
    assert store.decisions.keys() == {e["event_id"] for e in events}
    assert sorted(parts.outcome_ids()) == sorted(e["event_id"] for e in events[30:])
    parts.close()


def test_when_another_worker_wrote_part_of_n_the_batch_decided_on_n_is_decided_again() -> None:
    events = dependent_feed(1, seed=35)[: 2 * GROUP]
    store = OtherWorkerFirst(events[: GROUP // 2])
    parts = Parts(store, overlapped=True)
    results = parts.run(records(events))
    assert [r.decided for r in results] == [GROUP // 2, GROUP]
    assert [r.duplicates for r in results] == [GROUP // 2, 0]
    assert_decided_like_the_reference(store, events)
    parts.close()


def test_an_event_id_reused_under_another_order_is_found_on_the_fresh_read() -> None:
    """A producer's bug: the read keyed by order does not know the id, the write refuses it, and
    the read after the conflict looks the ids up themselves (else: refused for ever)."""
    parts = Parts()
    first = delays(1, "reused")
    again = [{**first[0], "order_id": "ord-elsewhere"}]
    assert parts.process(records(first)).decided == 1
    result = parts.process(records(again, start=1), stuck_s=3)
    assert (result.decided, result.duplicates) == (0, 1)
    parts.close()


# ---------------------------------------------------------------------------- other workers
def race(
    first: list[SourceRecord], second: list[SourceRecord]
) -> tuple[InMemoryStore, RacingStore, RecordingPublisher]:
    """Both read before either writes; the first writes first, the second only after it."""
    shared, published = InMemoryStore(), RecordingPublisher()
    barrier, first_done = threading.Barrier(2), threading.Event()
    one = Parts(RacingStore(shared, barrier), publisher=published)  # type: ignore[arg-type]
    late = RacingStore(shared, barrier, first_done)
    two = Parts(late, publisher=published)  # type: ignore[arg-type]

    def run_first() -> BatchResult:
        try:
            return one.pipeline.process(first)
        finally:
            first_done.set()

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.submit(run_first), pool.submit(two.pipeline.process, second)
        a.result(10), b.result(10)
    one.close()
    two.close()
    return shared, late, published


def test_one_buyers_refunds_decided_by_two_workers_at_once_stop_at_the_cap() -> None:
    fresh = shipping_delay("douyin", category="fresh", paid_ago=3 * H)
    lost = logistics_exception("pinduoduo")

    def refund(doc: dict[str, Any], n: str) -> dict[str, Any]:
        return {**doc, "event_id": str(uuid.uuid4()), "order_id": f"ord-{n}", "buyer_id": "b-r"}

    shipping = [refund(fresh, f"s{i}") for i in range(4)]
    logistics = [refund(lost, f"l{i}") for i in range(4)]
    shared, late, published = race(records(shipping), records(logistics))
    refunds = [d for d in shared.decisions.values() if d.decision.compensation is not None]
    assert len(refunds) == CAP and {str(d.decision.compensation.kind) for d in refunds} == {
        "refund"
    }
    assert late.reads == 2, "the second worker's stale batch was written as it was"
    assert len(published.to(OUTCOMES)) == 8


def test_a_second_coupon_decided_by_another_worker_is_refused() -> None:
    doc = shipping_delay("taobao")
    one = {**doc, "event_id": str(uuid.uuid4()), "order_id": "ord-coupon"}
    two = {**doc, "event_id": str(uuid.uuid4()), "order_id": "ord-coupon"}
    shared, late, _ = race(records([one]), records([two], partition=1))
    assert list(shared.compensations) == [("ord-coupon", "shipping-delay")]
    assert late.reads == 2


def test_a_zombie_writes_nothing_of_a_partition_another_worker_claimed() -> None:
    store = InMemoryStore()
    events = delays(15, "zombie")
    zombie, successor = Parts(store), Parts(store)
    assert zombie.pipeline.process(records(events[:5])).decided == 5
    assert successor.pipeline.process(records(events[5:10], start=5)).decided == 5
    for _ in range(2):  # and again: it does not claim the partition back on its own
        late = zombie.pipeline.process(records(events[10:], start=10))
        assert (late.decided, late.commit_offsets) == (0, {})
    assert store.decisions.keys() == {e["event_id"] for e in events[:10]}
    zombie.pipeline.assigned([(SETTINGS.source_topic("shipping-delay"), 0)])
    assert zombie.pipeline.process(records(events[10:], start=10)).decided == 5
    assert successor.pipeline.process(records(delays(1, "after"), start=15)).decided == 0


def test_records_of_a_partition_revoked_before_they_were_decided_are_left_to_its_owner() -> None:
    store = InMemoryStore()
    topic = SETTINGS.source_topic("shipping-delay")
    kept, moved = Parts(store), Parts(store)
    kept.pipeline.assigned([(topic, 0), (topic, 1)])
    kept.pipeline.revoked([(topic, 1)])
    moved.pipeline.assigned([(topic, 1)])
    events = delays(6, "revoked")
    assert moved.pipeline.process(records(events[3:], partition=1)).decided == 3
    mixed = records(events[:3]) + records(delays(3, "late"), partition=1)
    result = kept.pipeline.process(mixed)
    assert (result.decided, result.commit_offsets) == (3, {(topic, 0): 3})


class ClaimedMidWrite(InMemoryStore):
    """Another worker claims the batch's partitions while its first write is under way."""

    def save_decisions(self, decided: Sequence[Decided], *args: Any) -> str | None:
        if self.writes == 0:
            self.claim_partitions({(d.record.topic, d.record.partition) for d in decided}, "new")
        return super().save_decisions(decided, *args)


def test_a_batch_fenced_in_flight_is_left_to_the_new_owner() -> None:
    store = ClaimedMidWrite()
    parts = Parts(store, overlapped=True)
    results = parts.run(records(delays(4, "fenced")), size=4)
    assert [(r.decided, r.commit_offsets) for r in results] == [(0, {})]
    assert store.decisions == {} and parts.outcome_ids() == []
    parts.close()


# ---------------------------------------------------------------------------- the outbox
class CrashingPublisher(RecordingPublisher):
    """The worker dies after its commit, before the broker has its outcomes."""

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        raise RuntimeError("simulated: killed after the commit")


def test_outcomes_a_crash_left_unsent_go_out_before_newer_ones_of_the_same_orders() -> None:
    store = InMemoryStore()
    first = delays(5, "crash")
    later = [{**e, "event_id": str(uuid.uuid5(uuid.NAMESPACE_OID, e["event_id"]))} for e in first]
    crashed = Parts(store, publisher=CrashingPublisher())
    with pytest.raises(RuntimeError, match="killed"):
        crashed.pipeline.process(records(first))
    restarted = Parts(store)
    result = restarted.pipeline.process(records(first + later))
    assert (result.decided, result.duplicates) == (5, 5)
    order = restarted.outcome_ids()
    for old, new in zip(first, later, strict=True):
        assert order.index(old["event_id"]) < order.index(new["event_id"])
    assert store.outbox_backlog() == 0


class CommitThenDrop(InMemoryStore):
    """The first write commits, then the connection drops before the worker hears of it."""

    def save_decisions(self, decided: Sequence[Decided], *args: Any) -> str | None:
        batch = super().save_decisions(decided, *args)
        if self.writes == 1:
            raise Transient("simulated: connection lost after the commit", "pg_unavailable")
        return batch


def test_a_write_that_committed_unbeknown_is_published_on_the_redo() -> None:
    store = CommitThenDrop()
    parts = Parts(store)
    events = delays(8, "unbeknown")
    result = parts.pipeline.process(records(events))
    assert store.writes == 2 and (result.decided, result.duplicates) == (0, 8)
    assert Counter(parts.outcome_ids()) == Counter(e["event_id"] for e in events)
    parts.close()


def test_a_failed_publish_is_retried_alone() -> None:
    publisher = RecordingPublisher()
    publisher.fail_next(2)
    store = InMemoryStore()
    parts = Parts(store, overlapped=True, publisher=publisher)
    events = dependent_feed(1, seed=34)[: 3 * GROUP]
    results = parts.run(records(events))
    assert store.writes == len(results) == 3, "a failed publish must not redo the write"
    assert sorted(parts.outcome_ids()) == sorted(e["event_id"] for e in events)
    parts.close()

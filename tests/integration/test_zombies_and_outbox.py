"""Workers that lost their partitions, and outcomes a crash left unsent, against the real Postgres
and Kafka.

A zombie (a worker paused past its session, or revoked mid-batch) must write nothing of a
partition another worker has claimed. The outbox relay has one owner at a time, so no crash
leftover is sent twice by two workers at once; and the outcomes of one order reach the topic in
the order they were decided, also when a crash left older ones unsent."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import psycopg
import pytest

from order_recovery.adapters.kafka_producer import KafkaPublisher
from order_recovery.adapters.postgres.store import PostgresStore
from order_recovery.bootstrap import Worker, bootstrap
from order_recovery.config import Settings
from order_recovery.core.faults import Transient
from order_recovery.core.records import Decided, OutgoingMessage, SourceRecord
from order_recovery.domain.sample import sample_events
from tests.support.kafka_io import read_topic
from tests.support.pipelines import PipelineBuilder
from tests.unit.domain.factories import shipping_delay


def records(
    settings: Settings, events: list[dict[str, Any]], partition: int = 0, start: int = 0
) -> list[SourceRecord]:
    """All on one partition of the shipping-delay topic, as a rebalance would move it."""
    topic = settings.source_topic("shipping-delay")
    return [
        SourceRecord(topic, partition, start + i, e["order_id"].encode(), orjson.dumps(e))
        for i, e in enumerate(events)
    ]


def delays(count: int, tag: str) -> list[dict[str, Any]]:
    return [
        {
            **shipping_delay("taobao"),
            "event_id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{tag}/{i}")),
            "order_id": f"ord-{tag}-{i}",
        }
        for i in range(count)
    ]


def decided_ids(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT event_id::text FROM decisions").fetchall()}


def published_ids(settings: Settings) -> list[str]:
    messages = read_topic(settings.kafka_bootstrap_servers, settings.outcome_topic)
    return [orjson.loads(m.value())["source_event_id"] for m in messages]


# ---------------------------------------------------------------------------- zombies
def test_a_zombie_writes_nothing_of_a_partition_another_worker_claimed(
    settings: Settings, build: PipelineBuilder
) -> None:
    events = delays(15, "zombie")
    zombie, successor = build(), build()
    assert zombie.process(records(settings, events[:5])).decided == 5
    # The zombie is paused past its session; its partition goes to the successor.
    assert successor.process(records(settings, events[5:10], start=5)).decided == 5
    # The zombie wakes with a batch of the partition it no longer owns.
    for _ in range(2):  # and again: it does not claim the partition back on its own
        late = zombie.process(records(settings, events[10:], start=10))
        assert (late.decided, late.commit_offsets) == (0, {})
    assert decided_ids(settings.database_reader_url) == {e["event_id"] for e in events[:10]}
    assert set(published_ids(settings)) == {e["event_id"] for e in events[:10]}
    # Assigned the partition again by the group, it claims it, and now the other is fenced.
    zombie.assigned([(settings.source_topic("shipping-delay"), 0)])
    assert zombie.process(records(settings, events[10:], start=10)).decided == 5
    assert successor.process(records(settings, delays(1, "after"), start=15)).decided == 0


def test_records_of_a_partition_revoked_before_they_were_decided_are_left_to_its_owner(
    settings: Settings, build: PipelineBuilder
) -> None:
    """A batch fetched just before a rebalance holds records of a partition the runtime has
    since revoked: claiming it would steal it back from the worker it went to."""
    topic = settings.source_topic("shipping-delay")
    events = delays(6, "revoked")
    kept, moved = build(), build()
    kept.assigned([(topic, 0), (topic, 1)])
    kept.revoked([(topic, 1)])
    moved.assigned([(topic, 1)])
    assert moved.process(records(settings, events[3:], partition=1)).decided == 3
    mixed = records(settings, events[:3]) + records(settings, delays(3, "late"), partition=1)
    result = kept.process(mixed)
    assert (result.decided, result.commit_offsets) == (3, {(topic, 0): 3})
    assert moved.process(records(settings, delays(1, "still"), partition=1, start=3)).decided == 1


def test_a_claim_waits_for_a_write_in_progress_under_the_old_lease(settings: Settings) -> None:
    """So a write that began before the new owner's claim is either visible to its history read
    or was refused: never landing behind it."""
    topic = settings.source_topic("shipping-delay")
    old, new = PostgresStore(settings.database_url), PostgresStore(settings.database_url)
    try:
        ((_, epoch),) = old.claim_partitions([(topic, 0)], "old").items()
        with psycopg.connect(settings.database_url) as writing:
            writing.execute(
                "SELECT 1 FROM partition_leases WHERE topic = %s AND epoch = %s FOR SHARE",
                (topic, epoch),
            )  # a write transaction of the old owner, holding its lease
            with ThreadPoolExecutor(1) as pool:
                claim = pool.submit(new.claim_partitions, [(topic, 0)], "new")
                time.sleep(0.5)
                assert not claim.done(), "the claim did not wait for the write in progress"
                writing.commit()
                assert claim.result(10) == {(topic, 0): epoch + 1}
    finally:
        old.close()
        new.close()


# ---------------------------------------------------------------------------- the outbox
class SlowPublisher(KafkaPublisher):
    """Takes a while to send, so two workers' relay passes overlap."""

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        time.sleep(0.5)
        super().publish(messages)


def slow_relay_worker(settings: Settings) -> Worker:
    """A worker whose relay takes a while to send."""
    publisher = SlowPublisher(settings.kafka_bootstrap_servers, "test-slow")
    return bootstrap(settings, runtime="test", publisher=publisher)


def leave_unpublished(dsn: str) -> None:
    """A crash after the Postgres commits, before the outcomes were marked published."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE outbox_batches SET published_at = NULL,"
            " created_at = created_at - interval '1 minute'"
        )


def test_two_workers_relays_send_each_leftover_once(
    settings: Settings, build: PipelineBuilder
) -> None:
    events = list({e["event_id"]: e for e in sample_events(30, seed=5)}.values())
    pipeline = build()
    for start in range(0, len(events), 10):
        pipeline.process(records(settings, events[start : start + 10], start=start))
    leave_unpublished(settings.database_owner_url)
    workers = [slow_relay_worker(settings), slow_relay_worker(settings)]
    stores = [PostgresStore(settings.database_url) for _ in workers]
    try:
        with ThreadPoolExecutor(2) as pool:
            sent = list(pool.map(lambda w, s: w.relay_once(s), workers, stores))
        sent_again = [w.relay_once(s) for w, s in zip(workers, stores, strict=True)]
    finally:
        for worker, store in zip(workers, stores, strict=True):
            store.close()
            worker.close()
    assert sorted(sent) == [0, len(events)] and sent_again == [0, 0]
    # Each outcome twice: once by the pipeline, once by one relay.
    assert set(Counter(published_ids(settings)).values()) == {2}


class CrashingPublisher(KafkaPublisher):
    """The worker dies after its Postgres commit, before the broker has its outcomes."""

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        raise RuntimeError("simulated: killed after the commit")


def test_outcomes_a_crash_left_unsent_go_out_before_newer_ones_of_the_same_orders(
    settings: Settings, build: PipelineBuilder
) -> None:
    first = delays(5, "crash")
    later = [
        {**e, "event_id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"again/{e['event_id']}"))}
        for e in first
    ]  # a second delay of each order: its outcome is newer
    crashed = build(publisher=CrashingPublisher(settings.kafka_bootstrap_servers, "test-crash"))
    with pytest.raises(RuntimeError, match="killed"):
        crashed.process(records(settings, first))
    # The restarted worker is redelivered the uncommitted batch, then reads on.
    restarted = build()
    result = restarted.process(records(settings, first + later))
    assert (result.decided, result.duplicates) == (5, 5)
    order = published_ids(settings)
    for old, new in zip(first, later, strict=True):
        assert old["event_id"] in order, "an outcome left in the outbox was never sent"
        assert order.index(old["event_id"]) < order.index(new["event_id"])


class CommitThenDrop(PostgresStore):
    """The first write commits, then the connection drops before the worker hears of it."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn)
        self.writes = 0

    def save_decisions(self, rows: Sequence[Decided], *args: Any) -> str | None:
        self.writes += 1
        batch = super().save_decisions(rows, *args)
        if self.writes == 1:
            raise Transient("simulated: connection lost after the commit", "pg_unavailable")
        return batch


def test_a_write_that_committed_unbeknown_is_published_on_the_redo(
    settings: Settings, build: PipelineBuilder
) -> None:
    events = delays(8, "unbeknown")
    store = CommitThenDrop(settings.database_url)
    result = build(store).process(records(settings, events))
    assert store.writes == 2 and (result.decided, result.duplicates) == (0, 8)
    assert Counter(published_ids(settings)) == Counter(e["event_id"] for e in events)

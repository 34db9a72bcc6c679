"""The overlapped pipeline (`submit`) against the real Postgres and Kafka: batch N+1 is decided
while batch N is being written, and must decide exactly what one batch at a time would.

The feed makes every batch depend on the one before it: each group of orders comes back in the
next batch with new events of the same orders (payment attempts pile up, a second compensation is
refused, buyers reach their refund limit), so a history that missed or double-counted the batch
in flight would decide differently from the reference.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg

from order_recovery.adapters.kafka_producer import KafkaPublisher
from order_recovery.adapters.postgres.store import PostgresStore
from order_recovery.config import Settings
from order_recovery.core.batch import BatchResult
from order_recovery.core.faults import PublishFailed, Transient
from order_recovery.core.pipeline import Pipeline
from order_recovery.core.records import Decided, HistoryKeys, OutgoingMessage, SourceRecord
from order_recovery.core.stored_history import StoredHistory
from tests.support.dependent_feed import GROUP, assert_results_in_order, dependent_feed
from tests.support.kafka_io import read_topic
from tests.support.pipelines import PipelineBuilder
from tests.support.reference import expected_decisions


def records(settings: Settings, events: list[dict[str, Any]]) -> list[SourceRecord]:
    return [
        SourceRecord(
            settings.source_topic(e["event_type"]), 0, i, e["order_id"].encode(), orjson.dumps(e)
        )
        for i, e in enumerate(events)
    ]


class SlowWriter(PostgresStore):
    """Holds every write back a little, so the next batch is decided before this one commits."""

    def __init__(self, dsn: str, delay_s: float = 0.15, fail_first: int = 0) -> None:
        super().__init__(dsn)
        self.delay_s, self.fail_first, self.writes = delay_s, fail_first, 0

    def save_decisions(self, rows: Sequence[Decided], *args: Any) -> str | None:
        self.writes += 1
        time.sleep(self.delay_s)
        if self.writes <= self.fail_first:
            raise Transient("simulated: connection lost before the write", "pg_unavailable")
        return super().save_decisions(rows, *args)


class LateReader(PostgresStore):
    """Reads only after the batch in flight has surely committed."""

    def load_history(self, keys: HistoryKeys, pending: Any = ()) -> StoredHistory:
        time.sleep(0.3)
        return super().load_history(keys, pending)


class FlakyPublisher(KafkaPublisher):
    def __init__(self, bootstrap: str, fail_first: int) -> None:
        super().__init__(bootstrap, "test-flaky")
        self.fail_first, self.calls = fail_first, 0

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise PublishFailed("simulated: broker did not acknowledge")
        super().publish(messages)


def reader(settings: Settings) -> PostgresStore:
    """The overlapped pipeline's second connection, for history reads beside a write."""
    return PostgresStore(settings.database_url)


def run_overlapped(pipeline: Pipeline, recs: list[SourceRecord]) -> list[BatchResult]:
    results: list[BatchResult] = []
    for start in range(0, len(recs), GROUP):
        results += pipeline.submit(recs[start : start + GROUP])
    results += pipeline.drain()
    pipeline.close()
    return results


def assert_decided_like_the_reference(settings: Settings, events: list[dict[str, Any]]) -> None:
    expected = expected_decisions(events)
    with psycopg.connect(settings.database_reader_url) as conn:
        rows = conn.execute("SELECT event_id::text, outcome, rule_ids FROM decisions").fetchall()
        comp = conn.execute("SELECT event_id::text, kind, amount_fen FROM compensations").fetchall()
    assert {r[0]: (r[1], tuple(r[2])) for r in rows} == {
        k: (str(d.outcome), d.rule_ids) for k, d in expected.items()
    }
    assert {r[0]: (r[1], r[2]) for r in comp} == {
        k: (str(d.compensation.kind), d.compensation.amount_fen)
        for k, d in expected.items()
        if d.compensation is not None
    }


def test_the_feed_really_depends_on_the_batch_before() -> None:
    """Guards the feed itself: deciding each batch without the one before must differ."""
    events = dependent_feed(6, seed=31)
    together = expected_decisions(events)
    alone: dict[str, Any] = {}
    for start in range(0, len(events), GROUP):
        alone.update(expected_decisions(events[start : start + GROUP]))
    changed = [k for k in together if together[k].rule_ids != alone[k].rule_ids]
    assert len(changed) >= GROUP // 2


def test_the_next_batch_counts_the_one_in_flight_exactly_once(
    settings: Settings, build: PipelineBuilder
) -> None:
    events = dependent_feed(6, seed=31)
    pipeline = build(SlowWriter(settings.database_url), reader=reader(settings))
    results = run_overlapped(pipeline, records(settings, events))
    assert_results_in_order(results, len(events) // GROUP, len(events))
    assert_decided_like_the_reference(settings, events)


def test_a_batch_in_flight_that_committed_before_the_read_is_not_counted_twice(
    settings: Settings, build: PipelineBuilder
) -> None:
    events = dependent_feed(4, seed=32)
    pipeline = build(reader=LateReader(settings.database_url))
    run_overlapped(pipeline, records(settings, events))
    assert_decided_like_the_reference(settings, events)


def test_a_failed_write_is_redone_and_the_batch_after_it_decided_again(
    settings: Settings, build: PipelineBuilder
) -> None:
    events = dependent_feed(4, seed=33)
    writer = SlowWriter(settings.database_url, fail_first=2)
    pipeline = build(writer, reader=reader(settings))
    results = run_overlapped(pipeline, records(settings, events))
    assert writer.writes >= len(results) + 2
    assert_results_in_order(results, len(events) // GROUP, len(events))
    assert_decided_like_the_reference(settings, events)
    outcomes = read_topic(settings.kafka_bootstrap_servers, settings.outcome_topic)
    assert sorted(orjson.loads(m.value())["source_event_id"] for m in outcomes) == sorted(
        e["event_id"] for e in events
    )


def test_a_failed_publish_is_retried_alone(settings: Settings, build: PipelineBuilder) -> None:
    events = dependent_feed(3, seed=34)
    publisher = FlakyPublisher(settings.kafka_bootstrap_servers, fail_first=1)
    writer = SlowWriter(settings.database_url, delay_s=0.05)
    pipeline = build(writer, reader=reader(settings), publisher=publisher)
    results = run_overlapped(pipeline, records(settings, events))
    assert writer.writes == len(results), "a failed publish must not redo the write"
    assert_decided_like_the_reference(settings, events)
    outcomes = read_topic(settings.kafka_bootstrap_servers, settings.outcome_topic)
    assert sorted(orjson.loads(m.value())["source_event_id"] for m in outcomes) == sorted(
        e["event_id"] for e in events
    )

"""The pipeline in-process against the real Postgres and Kafka: exact effects of one batch."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime

import orjson
import psycopg
import pytest

from order_recovery.adapters.postgres.outbox_marker import OutboxMarker
from order_recovery.adapters.postgres.store import PostgresStore
from order_recovery.bootstrap import bootstrap
from order_recovery.config import Settings
from order_recovery.core.pipeline import Pipeline
from order_recovery.core.records import HistoryKeys, SourceRecord
from order_recovery.core.stored_history import StoredHistory
from order_recovery.domain.case import Transition, open_case
from order_recovery.domain.contract import event_from_dict, validate_outcome
from order_recovery.domain.policy import load_policies
from order_recovery.domain.sample import sample_events
from tests.support.kafka_io import read_topic
from tests.support.pipeline_run import PRODUCED_MS
from tests.support.pipelines import PipelineBuilder
from tests.support.reference import expected_decisions

POLICIES = load_policies()


@pytest.fixture
def pipeline(build: PipelineBuilder) -> Pipeline:
    return build()


def _records(settings: Settings, events: list[dict], start_offset: int = 0) -> list[SourceRecord]:
    return [
        SourceRecord(
            settings.source_topic(e["event_type"]),
            0,
            start_offset + i,
            e["order_id"].encode(),
            orjson.dumps(e),
            PRODUCED_MS,
        )
        for i, e in enumerate(events)
    ]


#: The audit rows of decisions (a case's steps have theirs too, with a `step` in the detail).
DECISION_AUDIT = "audit_log WHERE NOT detail ? 'step'"


def _count(settings: Settings, table: str) -> int:
    """Rows the test checks, read as the reports role (the worker may not read everything)."""
    with psycopg.connect(settings.database_reader_url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def _outboxed(settings: Settings) -> int:
    """Outcomes written to the outbox, whatever batches hold them."""
    with psycopg.connect(settings.database_reader_url) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(cardinality(event_ids)), 0) FROM outbox_batches"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_batch_is_decided_persisted_and_published_once(
    settings: Settings, pipeline: Pipeline
) -> None:
    events = [e for e in sample_events(200, seed=7)]
    unique = {e["event_id"] for e in events}
    result = pipeline.process(_records(settings, events))
    assert result.decided == len(unique)
    assert result.duplicates == len(events) - len(unique)
    assert not result.dead_letters
    assert _count(settings, "decisions") == len(unique)
    assert _count(settings, "outbox_batches WHERE published_at IS NULL") == 0
    outcomes = read_topic(settings.kafka_bootstrap_servers, settings.outcome_topic)
    assert len(outcomes) == len(unique)

    again = pipeline.process(_records(settings, events, start_offset=1000))
    assert again.decided == 0 and again.duplicates == len(events)
    assert _count(settings, "decisions") == len(unique)
    assert len(read_topic(settings.kafka_bootstrap_servers, settings.outcome_topic)) == len(unique)


def test_poison_goes_to_the_dead_letter_topic_with_headers(
    settings: Settings, pipeline: Pipeline
) -> None:
    good = sample_events(3, seed=3)
    topic = settings.source_topic("payment-timeout")
    unknown_platform = dict(
        good[0], platform="jingdong", event_id=good[0]["event_id"][:-4] + "ffff"
    )
    records = [
        *_records(settings, good),
        SourceRecord(topic, 1, 5, b"k1", b"\xff not json", 1_700_000_000_000, (("trace", b"t1"),)),
        SourceRecord(topic, 1, 6, b"k2", orjson.dumps({"event_type": "payment-timeout"})),
        SourceRecord(
            settings.source_topic(unknown_platform["event_type"]),
            2,
            9,
            b"k3",
            orjson.dumps(unknown_platform),
        ),
    ]
    result = pipeline.process(records)
    assert result.decided == 3
    assert [d.error_class for d in result.dead_letters] == [
        "malformed_json",
        "schema_violation",
        "unknown_platform",
    ]
    letters = read_topic(settings.kafka_bootstrap_servers, settings.dlq_topic(topic))
    first = next(m for m in letters if m.key() == b"k1")
    assert first.value() == b"\xff not json"
    headers = dict(first.headers() or [])
    assert headers["trace"] == b"t1"
    assert headers["dlq.error.class"] == b"malformed_json"
    assert headers["dlq.original.topic"] == topic.encode()
    assert headers["dlq.original.partition"] == b"1"
    assert headers["dlq.original.offset"] == b"5"
    assert headers["dlq.original.timestamp"] == b"1700000000000"
    assert headers["dlq.attempt"] == b"1"
    assert headers["dlq.worker.id"] == settings.worker_id.encode()
    assert headers["dlq.failed.at"] and headers["dlq.error.message"]


class StaleReadStore(PostgresStore):
    """A second worker whose first history read happened before the first worker's commit."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn)
        self.reads = 0

    def load_history(self, keys: HistoryKeys, pending: object = ()) -> StoredHistory:
        self.reads += 1
        return StoredHistory() if self.reads == 1 else super().load_history(keys, pending)


def test_a_batch_another_worker_already_wrote_is_decided_again_on_a_fresh_read(
    settings: Settings, pipeline: Pipeline, build: PipelineBuilder
) -> None:
    """Two workers can decide the same events during a rebalance; the late one's write hits the
    unique keys, nothing of it lands, and its batch is decided again on a fresh read, which
    finds the other worker's decisions: nothing is written twice."""
    events = list({e["event_id"]: e for e in sample_events(50, seed=12)}.values())
    assert pipeline.process(_records(settings, events[:30])).decided == 30
    store = StaleReadStore(settings.database_url)
    result = build(store).process(_records(settings, events))
    assert store.reads == 2  # the stale read, then the one after the conflict
    assert (result.decided, result.duplicates) == (len(events) - 30, 30)
    assert _count(settings, "decisions") == len(events)
    assert _count(settings, DECISION_AUDIT) == len(events)
    assert _outboxed(settings) == len(events)
    outcomes = read_topic(settings.kafka_bootstrap_servers, settings.outcome_topic)
    assert len(outcomes) == len(events)


def test_each_batch_leaves_the_stage_empty_and_writes_its_own_outbox_row(
    settings: Settings, build: PipelineBuilder
) -> None:
    """The stage is emptied by the commit itself (ON COMMIT DELETE ROWS): rows left over from
    one batch would send the next down the keyed path and into the wrong outbox row."""
    events = list({e["event_id"]: e for e in sample_events(60, seed=13)}.values())
    store = PostgresStore(settings.database_url)
    pipeline = build(store)
    first = pipeline.process(_records(settings, events[:25]))
    second = pipeline.process(_records(settings, events[25:], start_offset=25))
    row = store._connection().execute("SELECT count(*) FROM decision_stage").fetchone()
    assert (first.decided, second.decided, row) == (25, len(events) - 25, (0,))
    with psycopg.connect(settings.database_reader_url) as conn:
        sizes = conn.execute(
            "SELECT cardinality(event_ids) FROM outbox_batches ORDER BY created_at"
        ).fetchall()
    assert sizes == [(25,), (len(events) - 25,)]


def test_the_outbox_relay_resends_what_a_crash_left_unpublished_with_the_same_ids(
    settings: Settings, pipeline: Pipeline
) -> None:
    events = list({e["event_id"]: e for e in sample_events(20, seed=4)}.values())
    pipeline.process(_records(settings, events))
    with psycopg.connect(settings.database_owner_url) as conn:
        # A crash after the Postgres commit, before the outcomes were marked published.
        (left,) = conn.execute(
            """UPDATE outbox_batches SET published_at = NULL,
                   created_at = now() - interval '1 minute'
               RETURNING event_ids::text[]"""
        ).fetchall()
    worker = bootstrap(settings, runtime="test")
    store = PostgresStore(settings.database_url)
    try:
        assert worker.relay_once(store) == len(events)
        assert worker.relay_once(store) == 0  # marked: a second pass sends nothing
        assert worker.metrics.outbox_backlog._value.get() == 0
    finally:
        store.close()
        worker.close()
    published = [
        orjson.loads(m.value())
        for m in read_topic(settings.kafka_bootstrap_servers, settings.outcome_topic)
    ]
    # Every outcome of the batch was sent twice, both times under the same outcome id.
    ids = Counter(o["event_id"] for o in published)
    assert set(ids.values()) == {2} and len(ids) == len(events)
    assert {o["source_event_id"] for o in published} == set(left[0])


def test_the_background_marker_marks_every_published_outcome(
    settings: Settings, build: PipelineBuilder
) -> None:
    marker = OutboxMarker(settings.database_url)
    pipeline = build(mark_published=marker.mark)
    try:
        events = list({e["event_id"]: e for e in sample_events(300, seed=9)}.values())
        for start in range(0, len(events), 100):
            pipeline.process(_records(settings, events[start : start + 100], start))
        assert marker.flush(10)
        assert _outboxed(settings) == len(events)
        assert _count(settings, "outbox_batches WHERE published_at IS NULL") == 0
    finally:
        marker.close()


def test_every_stored_column_says_what_the_rules_decided(
    settings: Settings, pipeline: Pipeline
) -> None:
    """The write path's encodings (a binary COPY, lists joined into one column and split again
    in SQL, event ids cast from text) must store each decision exactly: every column of every
    table against the pure rules' reference, and the outbox's bytes against what was published."""
    events = list({e["event_id"]: e for e in sample_events(600, seed=21)}.values())
    for start in range(0, len(events), 200):
        pipeline.process(_records(settings, events[start : start + 200], start))
    expected = expected_decisions(events)
    raw = {e["event_id"]: e for e in events}
    with psycopg.connect(settings.database_reader_url) as conn:
        decisions = conn.execute(
            """SELECT event_id::text, order_id, exception_type, platform, buyer_id, amount_fen,
                      occurred_at, outcome, rule_ids, risk_flags, reason, policy_version,
                      source_offset, event::text FROM decisions"""
        ).fetchall()
        actions: dict[str, list[str]] = {}
        for event_id, action in conn.execute(
            "SELECT event_id::text, action FROM actions ORDER BY event_id, seq"
        ):
            actions.setdefault(event_id, []).append(action)
        compensations = {
            event_id: (kind, fen)
            for event_id, kind, fen in conn.execute(
                "SELECT event_id::text, kind, amount_fen FROM compensations"
            )
        }
        audit = {
            event_id: (to_status, detail)
            for event_id, to_status, detail in conn.execute(
                "SELECT event_id::text, to_status, detail FROM audit_log WHERE NOT detail ? 'step'"
            )
        }
        opened = conn.execute(
            """SELECT c.opened_by::text, c.state, s.rule_id FROM cases c
               JOIN case_steps s USING (order_id, exception_type) WHERE s.seq = 1"""
        ).fetchall()
        step_audits = conn.execute(
            "SELECT count(*) FROM audit_log WHERE detail ? 'step'"
        ).fetchone()
        payloads = [
            bytes(p)
            for (batch,) in conn.execute("SELECT payloads FROM outbox_batches ORDER BY created_at")
            for p in batch
        ]
    assert len(decisions) == len(expected) == len(audit)
    # Each case opened by the first decision of its order and type that is not a rejection.
    first: dict[tuple[str, str], tuple[str, str, str]] = {}
    for doc in events:
        d, key = expected[doc["event_id"]], (doc["order_id"], doc["event_type"])
        if d.outcome != "rejected" and key not in first:
            step = open_case(event_from_dict(doc), d, POLICIES[doc["platform"]])
            assert isinstance(step, Transition)
            first[key] = (doc["event_id"], str(step.to_state), step.rule_id)
    assert sorted(opened) == sorted(first.values()) and step_audits == (len(first),)
    for (event_id, order_id, etype, platform, buyer, fen, occurred, outcome, rules, flags,
         reason, version, offset, event_text) in decisions:  # fmt: skip
        d, doc = expected[event_id], raw[event_id]
        assert (order_id, etype, platform, buyer, fen) == (
            doc["order_id"], doc["event_type"], doc["platform"], doc["buyer_id"], doc["amount_fen"]
        )  # fmt: skip
        assert occurred == datetime.fromisoformat(doc["occurred_at"])
        assert (outcome, tuple(rules), tuple(flags), reason, version) == (
            d.outcome, d.rule_ids, d.risk_flags, d.reason, d.policy_version
        )  # fmt: skip
        assert orjson.loads(event_text) == doc and offset == events.index(doc)
        assert tuple(actions.get(event_id, ())) == d.actions
        comp = None if d.compensation is None else (d.compensation.kind, d.compensation.amount_fen)
        assert compensations.get(event_id) == comp
        assert audit[event_id] == (
            d.outcome,
            {"rule_ids": list(d.rule_ids), "policy_version": d.policy_version,
             "actions": list(d.actions)},
        )  # fmt: skip
    published = [
        m.value() for m in read_topic(settings.kafka_bootstrap_servers, settings.outcome_topic)
    ]
    assert sorted(published) == sorted(payloads) and len(payloads) == len(expected)
    for payload in payloads:
        message = orjson.loads(payload)
        validate_outcome(message)
        assert message["decision"] == expected[message["source_event_id"]].to_dict()


def test_the_history_read_takes_keys_the_joined_form_cannot_carry(settings: Settings) -> None:
    """A looser schema directory could admit an id holding the list separator: the read must
    then still find exactly that key (the binary-array fallback)."""
    odd = "ord\x1fodd"
    with psycopg.connect(settings.database_owner_url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO recovery_cases (order_id, exception_type, platform, merchant_id,
                   buyer_id, status, opened_at, updated_at, last_event_id)
               VALUES (%s, 'shipping-delay', 'douyin', 'm', 'b', 'pending', now(), now(),
                       gen_random_uuid())""",
            (odd,),
        )
    store = PostgresStore(settings.database_url)
    try:
        found = store.load_history(HistoryKeys([odd, "ord-plain"], [("b", date(2026, 12, 1))]))
    finally:
        store.close()
    assert found.case_status == {(odd, "shipping-delay"): "pending"}

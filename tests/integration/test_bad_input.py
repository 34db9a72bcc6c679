"""Bad input through the pipeline with the real broker and Postgres: a record too large to
dead-letter whole, a dead letter the broker refuses even truncated, an event from the future.
Each is turned away with a reason, its neighbours are decided, and the batch finishes (its
offsets can be committed): nothing stops a partition."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest

from order_recovery.config import Settings
from order_recovery.core.records import SourceRecord
from order_recovery.domain.sample import sample_events
from tests.support.kafka_io import read_topic, set_topic_config
from tests.support.pipeline_run import PRODUCED_MS, Run


@pytest.fixture
def run(settings: Settings) -> Iterator[Run]:
    r = Run(settings)
    yield r
    r.close()


def events(n: int, seed: int) -> list[dict[str, Any]]:
    return list({e["event_id"]: e for e in sample_events(n, seed=seed)}.values())


def records(
    settings: Settings, topic: str, values: list[bytes], key: Callable[[int], bytes]
) -> list[SourceRecord]:
    return [SourceRecord(topic, 0, i, key(i), v, PRODUCED_MS) for i, v in enumerate(values)]


def dead_letters(settings: Settings, topic: str) -> list[Any]:
    return read_topic(settings.kafka_bootstrap_servers, settings.dlq_topic(topic))


def decisions(settings: Settings) -> int:
    with psycopg.connect(settings.database_reader_url) as conn:
        row = conn.execute("SELECT count(*) FROM decisions").fetchone()
    return int(row[0]) if row else 0


def test_a_record_too_large_to_dead_letter_whole_goes_truncated_and_its_neighbours_are_decided(
    settings: Settings, run: Run
) -> None:
    """About 1 MB, which the broker accepts (message.max.bytes 1 MiB): its dead letter, the same
    value plus headers, is over the producer's limit. The worker used to exit 70 on it without
    committing, and again on every restart."""
    topic = settings.source_topic("shipping-delay")
    good = [e for e in events(40, seed=31) if e["event_type"] == "shipping-delay"][:6]
    huge = b'{"event_type": "shipping-delay", "pad": "' + b"x" * 999_950 + b'"}'
    values = [orjson.dumps(e) for e in good[:3]] + [huge] + [orjson.dumps(e) for e in good[3:]]
    result = run.process(records(settings, topic, values, lambda i: f"k{i}".encode()))

    assert (result.decided, [d.error_class for d in result.dead_letters]) == (
        6,
        ["oversized_record"],
    )
    assert result.commit_offsets == {(topic, 0): 7}
    assert decisions(settings) == 6
    (letter,) = dead_letters(settings, topic)
    headers = dict(letter.headers())
    assert letter.key() == b"k3"
    assert letter.value() == huge[: 16 * 1024]
    assert headers["dlq.value.truncated"] == b"true"
    assert headers["dlq.value.bytes"] == str(len(huge)).encode()
    assert headers["dlq.error.class"] == b"oversized_record"
    assert b"over the limit of 524288" in headers["dlq.error.message"]
    assert (headers["dlq.original.topic"], headers["dlq.original.offset"]) == (topic.encode(), b"3")
    assert headers["dlq.id"] == f"{topic}/0/3".encode()


def test_a_dead_letter_refused_even_truncated_is_kept_in_postgres_and_the_batch_finishes(
    settings: Settings, run: Run
) -> None:
    """The dead-letter topic takes less than its source topic. The broker refuses the batch the
    large dead letter is in, neighbours included; those go through alone, the large one is kept
    in Postgres. Before, the refusal was retried for ever: the partition stopped."""
    topic = settings.source_topic("shipping-delay")
    set_topic_config(
        settings.kafka_bootstrap_servers, settings.dlq_topic(topic), "max.message.bytes", "8192"
    )
    good = [e for e in events(40, seed=32) if e["event_type"] == "shipping-delay"][:2]
    # 20 KB, not JSON, under the record limit; random, so lz4 cannot squeeze it under the limit.
    wide = random.Random(32).randbytes(20_000)
    values = [b"{not json", wide, orjson.dumps(good[0]), b"[]", orjson.dumps(good[1])]
    batch = records(settings, topic, values, lambda i: b"same-key")  # one DLQ partition

    result = run.process(batch)
    assert result.decided == 2
    assert [d.error_class for d in result.dead_letters] == ["malformed_json"] * 3
    assert result.commit_offsets == {(topic, 0): 5}
    sent = dead_letters(settings, topic)
    assert sorted(m.value() for m in sent) == [b"[]", b"{not json"]
    with psycopg.connect(settings.database_reader_url) as conn:
        rows = conn.execute(
            """SELECT source_topic, source_partition, source_offset, dlq_topic, error_class,
                      refusal, length(value_prefix), value_bytes, header_names, worker_id
               FROM unsendable_dead_letters"""
        ).fetchall()
    ((src, part, off, dlq, cls, refusal, kept, size, names, worker),) = rows
    assert (src, part, off, dlq, cls) == (topic, 0, 1, settings.dlq_topic(topic), "malformed_json")
    assert "too large" in refusal.lower()
    assert (kept, size, worker) == (16 * 1024, len(wide), settings.worker_id)
    assert {"dlq.id", "dlq.error.class", "dlq.value.truncated"} <= set(names)
    assert run.metrics.dead_letters_unsendable._value.get() == 1

    again = run.process(batch)  # redelivered (a worker died before committing): no second row
    assert again.commit_offsets == {(topic, 0): 5}
    with psycopg.connect(settings.database_reader_url) as conn:
        assert conn.execute("SELECT count(*) FROM unsendable_dead_letters").fetchone() == (1,)
    assert run.metrics.dead_letters_unsendable._value.get() == 1


def test_an_event_from_the_future_is_dead_lettered_and_a_slightly_early_one_decided(
    settings: Settings, run: Run
) -> None:
    """occurred_at against the record's broker timestamp, within the default skew of 60 s."""
    base = events(10, seed=33)[:3]
    stamped = datetime.fromisoformat(base[0]["occurred_at"]) - timedelta(seconds=30)
    produced_ms = int(stamped.timestamp() * 1000)  # the event is 30 s "early": allowed
    ahead = [
        dict(base[1], occurred_at=(stamped + timedelta(hours=2)).isoformat()),
        dict(base[2], occurred_at=(stamped + timedelta(seconds=61)).isoformat()),
    ]
    batch = [
        SourceRecord(settings.source_topic(e["event_type"]), 0, i, b"k", orjson.dumps(e), ts)
        for i, (e, ts) in enumerate(
            [(base[0], produced_ms), (ahead[0], produced_ms), (ahead[1], produced_ms)]
        )
    ]
    result = run.process(batch)
    assert result.decided == 1
    assert [(d.record.offset, d.error_class) for d in result.dead_letters] == [
        (1, "event_from_future"),
        (2, "event_from_future"),
    ]
    assert "ahead of the record's timestamp" in result.dead_letters[0].message
    with psycopg.connect(settings.database_reader_url) as conn:
        (decided,) = conn.execute("SELECT event_id::text FROM decisions").fetchall()
    assert decided == (base[0]["event_id"],)


def test_keys_written_twice_are_dead_lettered_not_decided(settings: Settings, run: Run) -> None:
    event = events(5, seed=34)[0]
    raw = orjson.dumps(dict(event, event_id=str(uuid.uuid4())))
    twice = raw[:-1] + b',"amount_fen":100000000}'
    topic = settings.source_topic(event["event_type"])
    result = run.process(records(settings, topic, [twice], lambda i: b"k"))
    assert (result.decided, [d.error_class for d in result.dead_letters]) == (0, ["malformed_json"])
    assert "amount_fen: the key appears twice" in result.dead_letters[0].message

"""Bad input never stops the worker (the process, on the real broker and database): a record of
about 1 MB, which the broker accepts but whose dead letter it would not, and a record whose dead
letter the dead-letter topic refuses even truncated. Both are turned away, their neighbours are
decided, the worker commits past them and is still running."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer

from order_recovery.config import Settings
from order_recovery.domain.sample import sample_events
from tests.support.kafka_io import (
    committed_offsets,
    end_offsets,
    produce_events,
    read_topic,
    set_topic_config,
    wait_until,
)
from tests.support.worker_process import WorkerProcess

pytestmark = pytest.mark.e2e


def produce_large(settings: Settings, topic: str, key: bytes, value: bytes) -> None:
    """One record up to the broker's own limit (1 MiB), over the producer's default 1 MB."""
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "message.max.bytes": 1_048_576}
    )
    producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def rows(dsn: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture(params=["confluent", "faust"])
def worker(
    request: pytest.FixtureRequest, settings: Settings, tmp_path: Path
) -> Iterator[WorkerProcess]:
    process = WorkerProcess(settings, tmp_path, runtime=request.param).start()
    yield process.wait_ready()
    process.stop()


def test_records_whose_dead_letters_the_broker_refuses_do_not_stop_the_worker(
    settings: Settings, worker: WorkerProcess
) -> None:
    shipping = settings.source_topic("shipping-delay")
    logistics = settings.source_topic("logistics-exception")
    set_topic_config(
        settings.kafka_bootstrap_servers, settings.dlq_topic(logistics), "max.message.bytes", "4096"
    )
    events = list({e["event_id"]: e for e in sample_events(300, seed=51)}.values())
    produce_events(settings, events[:150])
    huge = b'{"event_type": "shipping-delay", "pad": "' + b"x" * 999_950 + b'"}'
    produce_large(settings, shipping, b"huge", huge)
    produce_large(settings, logistics, b"wide", random.Random(51).randbytes(30_000))
    produce_events(settings, events[150:])

    def decided() -> int:
        assert worker.proc is not None
        exited = worker.proc.poll()
        assert exited is None, f"the worker exited with {exited}:\n{worker.log()[-4000:]}"
        return int(rows(settings.database_reader_url, "SELECT count(*) FROM decisions")[0][0])

    wait_until(lambda: decided() == len(events), 90, "every valid event decided")
    ends = end_offsets(settings.kafka_bootstrap_servers, settings.source_topics)
    wait_until(
        lambda: (
            committed_offsets(
                settings.kafka_bootstrap_servers, settings.consumer_group, settings.source_topics
            )
            == ends
        ),
        60,
        "offsets committed past every record",
    )
    assert worker.proc is not None and worker.proc.poll() is None, worker.log()
    assert worker.metric("order_recovery_dead_lettered_total", reason="oversized_record") == 1
    assert worker.metric("order_recovery_dead_letters_unsendable_total") == 1

    (letter,) = read_topic(settings.kafka_bootstrap_servers, settings.dlq_topic(shipping))
    headers = dict(letter.headers())
    assert (letter.key(), len(letter.value())) == (b"huge", 16 * 1024)
    assert headers["dlq.value.truncated"] == b"true"
    assert headers["dlq.value.bytes"] == str(len(huge)).encode()
    kept = rows(
        settings.database_reader_url,
        "SELECT source_topic, error_class, value_bytes FROM unsendable_dead_letters",
    )
    assert kept == [(logistics, "malformed_json", 30_000)]

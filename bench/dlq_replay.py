"""The DLQ replay figure of issue 19: how fast `recoveryctl dlq replay` with no rate cap drains a
dead-letter backlog (bench/run.py then has the worker decide the replayed records, to see that it
does so at its normal rate).

The backlog is what a fixed bug leaves behind: valid sample events, each dead-lettered once as a
rule error (the headers `core.dead_letters.dead_letter_message` writes, as the worker would have),
produced straight to the DLQ topics of a fresh topic set. The replay is timed in this process by
calling the function the CLI calls (`ops.replay.replay`, rate=None), from its start (the scan that
picks one copy of each letter, the transactional producer's set-up) to its last commit: a
subprocess would add the interpreter's start to a figure of about a second.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
from confluent_kafka import Producer

from order_recovery.adapters.kafka_messages import produce_all
from order_recovery.config import Settings
from order_recovery.core.dead_letters import RULE_ERROR, dead_letter_message
from order_recovery.core.records import DeadLetter, SourceRecord
from order_recovery.domain.sample import sample_events
from order_recovery.ops.dlq import LetterFilter
from order_recovery.ops.replay import replay


def preload_dead_letters(settings: Settings, count: int, partitions: int) -> None:
    """`count` distinct events as dead letters on the source topics' DLQ topics."""
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    letters = []
    for offset, event in enumerate(sample_events(count, seed=77, duplicate_pct=0)):
        record = SourceRecord(
            settings.source_topic(event["event_type"]),
            offset % partitions,
            offset,
            event["order_id"].encode(),
            orjson.dumps(event),
            now_ms,
        )
        letter = DeadLetter(record, RULE_ERROR, "bench: a rule that raised, since fixed")
        letters.append(dead_letter_message(letter, "bench-worker", now))
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "linger.ms": 20,
            "compression.type": "lz4",
        }
    )
    produce_all(producer, letters)
    if producer.flush(60) != 0:
        raise RuntimeError("dead letters not delivered")


def timed_replay(settings: Settings) -> tuple[int, float]:
    """(records sent, records per second) of one uncapped replay of every dead letter."""
    started = time.perf_counter()
    result = replay(settings, f"bench-{int(time.time())}", LetterFilter(), rate=None)
    elapsed = time.perf_counter() - started
    if not result.done:
        raise RuntimeError(f"replay did not finish: {result.to_json()}")
    return result.sent, result.sent / elapsed

"""Publishing the sample feed (`recoveryctl produce-sample`): realistic mixed events through
confluent-kafka, keyed by order id, at a capped rate."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import orjson
from confluent_kafka import Producer

from order_recovery.adapters.kafka_messages import produce_all
from order_recovery.config import Settings
from order_recovery.core.records import OutgoingMessage
from order_recovery.domain.sample import moved_to, sample_events

CHUNK = 1000


def produce_sample(
    settings: Settings,
    count: int,
    rate: float | None,
    seed: int,
    progress: Callable[[int], None] = lambda sent: None,
    live: bool = False,
) -> int:
    """Send `count` events (0 = until interrupted) at most `rate` per second (None = as fast as
    the broker takes them). Chunks of the generator use consecutive seeds, so a long feed does
    not repeat itself. `live`: each event dated now as it is sent (a redelivery keeps the
    date of its first sending), so its case lives in the present, beside the wall clock."""
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "linger.ms": 10,
            "enable.idempotence": True,
        }
    )
    sent = 0
    started = time.monotonic()

    def paced() -> Iterator[OutgoingMessage]:
        nonlocal sent
        chunk_seed = seed
        while count == 0 or sent < count:
            size = CHUNK if count == 0 else min(CHUNK, count - sent)
            first_sent: dict[str, datetime] = {}
            for event in sample_events(size, seed=chunk_seed):
                if live:
                    at = first_sent.setdefault(event["event_id"], datetime.now(UTC))
                    event = moved_to(event, at)
                if rate:
                    delay = started + sent / rate - time.monotonic()
                    if delay > 0:
                        producer.poll(0)
                        time.sleep(delay)
                yield OutgoingMessage(
                    settings.source_topic(event["event_type"]),
                    event["order_id"].encode(),
                    orjson.dumps(event),
                )
                sent += 1  # counted once produced: the loop asks for the next one after it
                if sent % 500 == 0:
                    progress(sent)
            chunk_seed += 1

    try:
        produce_all(producer, paced())
    finally:
        producer.flush(30)
    progress(sent)
    return sent

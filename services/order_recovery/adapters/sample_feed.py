"""Publishing the sample feed (`recoveryctl produce-sample`): realistic mixed events through
confluent-kafka, keyed by order id, at a capped rate."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
from confluent_kafka import Producer

from order_recovery.config import Settings
from order_recovery.domain.sample import sample_events

CHUNK = 1000


def produce_sample(
    settings: Settings,
    count: int,
    rate: float | None,
    seed: int,
    progress: Callable[[int], None] = lambda sent: None,
) -> int:
    """Send `count` events (0 = until interrupted) at most `rate` per second (None = as fast as
    the broker takes them). Chunks of the generator use consecutive seeds, so a long feed does
    not repeat itself."""
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "linger.ms": 10,
            "enable.idempotence": True,
        }
    )
    sent = 0
    started = time.monotonic()
    chunk_seed = seed
    try:
        while count == 0 or sent < count:
            size = CHUNK if count == 0 else min(CHUNK, count - sent)
            for event in sample_events(size, seed=chunk_seed):
                if rate:
                    delay = started + sent / rate - time.monotonic()
                    if delay > 0:
                        producer.poll(0)
                        time.sleep(delay)
                _produce(
                    producer,
                    settings.source_topic(event["event_type"]),
                    event["order_id"].encode(),
                    orjson.dumps(event),
                )
                sent += 1
                if sent % 500 == 0:
                    progress(sent)
            chunk_seed += 1
    finally:
        producer.flush(30)
    progress(sent)
    return sent


def _produce(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, key=key, value=value)
            return
        except BufferError:
            producer.poll(0.05)

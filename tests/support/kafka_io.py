"""Producing test feeds and reading topics back, with confluent-kafka against the real broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import orjson
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from order_recovery.adapters.kafka_admin import delete_topics, ensure_topics
from order_recovery.adapters.kafka_settling import when_settled
from order_recovery.config import Settings


@contextmanager
def own_topics(kafka_bootstrap: str, base: Settings) -> Iterator[Settings]:
    """`base` with topics and a consumer group of its own: created here, deleted after."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    settings = replace(
        base,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=prefix,
        topic_partitions=3,
        consumer_group=f"{prefix}group",
    )
    ensure_topics(kafka_bootstrap, settings.all_topics, 3, 1)
    try:
        yield settings
    finally:
        delete_topics(kafka_bootstrap, settings.all_topics)


def produce_events(
    settings: Settings, events: Iterable[dict[str, Any]], compression: str = "none"
) -> int:
    """Each event to its type's topic, keyed by order id (per-order ordering)."""
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "linger.ms": 5,
            "compression.type": compression,
        }
    )
    n = _produce_each(producer, settings, events)
    assert producer.flush(30) == 0, "test feed not fully acknowledged by the broker"
    return n


def _produce_each(producer: Producer, settings: Settings, events: Iterable[dict[str, Any]]) -> int:
    n = 0
    for event in events:
        producer.produce(
            settings.source_topic(event["event_type"]),
            key=event["order_id"].encode(),
            value=orjson.dumps(event),
        )
        n += 1
        if n % 5000 == 0:
            producer.poll(0)
    return n


def produce_in_transaction(
    settings: Settings, events: Iterable[dict[str, Any]], *, commit: bool, transactional_id: str
) -> int:
    """Each event to its type's topic inside one Kafka transaction, then committed or aborted:
    an aborted transaction's records stay in the log, and only a read-committed consumer skips
    them (the way `recoveryctl dlq replay` leaves them when it is interrupted)."""
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "transactional.id": transactional_id,
            "linger.ms": 5,
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    n = _produce_each(producer, settings, events)
    assert producer.flush(30) == 0, "transactional feed not fully acknowledged by the broker"
    if commit:
        producer.commit_transaction(30)
    else:
        producer.abort_transaction(30)
    return n


def produce_raw(
    settings: Settings,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    producer.produce(topic, key=key, value=value, headers=headers)
    assert producer.flush(10) == 0


def set_topic_config(bootstrap: str, topic: str, name: str, value: str) -> None:
    """One topic setting (e.g. a DLQ topic's max.message.bytes below its source topic's)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    # The broker applies it from the metadata log a moment later: wait until it says so.
    wait_until(
        lambda: (
            admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])[
                ConfigResource(ResourceType.TOPIC, topic)
            ]
            .result(timeout=10)[name]
            .value
            == value
        ),
        10,
        f"{topic} {name}={value}",
    )


def _watermarks(consumer: Consumer, tp: TopicPartition) -> tuple[int, int]:
    low, high = when_settled(lambda: consumer.get_watermark_offsets(tp, timeout=10), str(tp))
    return low, high


def read_topic(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Message]:
    """Every record currently in the topic, all partitions, from the beginning to the end offsets
    taken now."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {}
        for p in metadata.partitions:
            low, high = _watermarks(consumer, TopicPartition(topic, p))
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        out: list[Message] = []
        done: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(ends):
            assert time.monotonic() < deadline, f"timed out reading {topic}"
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error():
                    continue
                out.append(msg)
                if msg.offset() + 1 >= ends[msg.partition()]:
                    done.add(msg.partition())
        return out
    finally:
        consumer.close()


def committed_offsets(
    bootstrap: str, group: str, topics: Iterable[str]
) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        partitions = []
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            partitions += [TopicPartition(topic, p) for p in meta.partitions]
        return {
            (tp.topic, tp.partition): tp.offset for tp in consumer.committed(partitions, timeout=10)
        }
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-reader"})
    try:
        out = {}
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            for p in meta.partitions:
                out[(topic, p)] = _watermarks(consumer, TopicPartition(topic, p))[1]
        return out
    finally:
        consumer.close()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)

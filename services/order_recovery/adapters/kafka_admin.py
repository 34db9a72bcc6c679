"""Topic creation. The project creates its own topics (the local broker has auto-create off), so a
producer's typo cannot silently create a topic nobody consumes."""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from order_recovery.config import Settings


class KafkaUnavailable(RuntimeError):
    """The broker did not answer in time."""


def admin_client(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def wait_for_broker(bootstrap: str, timeout_s: float = 30.0) -> None:
    admin = admin_client(bootstrap)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin.list_topics(timeout=min(5.0, timeout_s))
            return
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"Kafka at {bootstrap} did not answer: {exc}") from exc
            time.sleep(0.5)


def ensure_topics(
    bootstrap: str, names: Iterable[str], partitions: int, replication: int, timeout_s: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet; return those created now."""
    wait_for_broker(bootstrap, timeout_s)
    admin = admin_client(bootstrap)
    wanted = [NewTopic(n, num_partitions=partitions, replication_factor=replication) for n in names]
    created = []
    for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    _wait_until_visible(admin, [t.topic for t in wanted], timeout_s)
    return created


def _wait_until_visible(admin: AdminClient, names: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        topics = admin.list_topics(timeout=5).topics
        if all(n in topics and not topics[n].error for n in names):
            return
        if time.monotonic() > deadline:
            raise KafkaUnavailable(f"topics not visible after {timeout_s}s: {names}")
        time.sleep(0.1)


def delete_topics(bootstrap: str, names: Iterable[str], timeout_s: float = 30.0) -> None:
    admin = admin_client(bootstrap)  # keep a reference: a collected client fails its futures
    futures = admin.delete_topics(list(names), request_timeout=timeout_s)
    for future in futures.values():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise


def ensure_project_topics(settings: Settings) -> list[str]:
    return ensure_topics(
        settings.kafka_bootstrap_servers,
        settings.all_topics,
        settings.topic_partitions,
        settings.topic_replication_factor,
    )

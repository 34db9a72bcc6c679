"""Producing to Kafka from the pipeline (outcomes and dead letters) with confluent-kafka's
idempotent producer, synchronously: a batch is acknowledged only once every message is on the
broker, so a crash can duplicate (same ids) but never lose.

Two kinds of failure. A message the broker did not acknowledge in time (broker down, leader
moving) is transient: `PublishFailed`, and the caller retries the whole call for as long as it
lasts. A message refused for what it is (too large for the producer's or the topic's
message.max.bytes, an invalid record) would be refused again however often it is sent:
`Refused`, naming those messages once everything else is acknowledged, and the caller decides."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import KafkaError, Message, Producer

from order_recovery.adapters.kafka_messages import PERMANENT, produce_all
from order_recovery.core.faults import PublishFailed, Refused
from order_recovery.core.records import OutgoingMessage


class KafkaPublisher:
    """The core's Publisher on confluent-kafka's idempotent producer."""

    def __init__(self, bootstrap: str, client_id: str, flush_timeout_s: float = 15.0) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "client.id": client_id,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                "message.timeout.ms": int(flush_timeout_s * 1000),
            }
        )
        self._flush_timeout_s = flush_timeout_s

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Send all and wait for the broker's acknowledgement of each. Raise PublishFailed if any
        is missing for a reason that may pass (the caller retries the whole call), else Refused
        if the producer or the broker refused some for good."""
        if not messages:
            return
        failed: list[tuple[KafkaError, OutgoingMessage]] = []
        refused: list[tuple[OutgoingMessage, str]] = []

        def on_delivery(m: OutgoingMessage, err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failed.append((err, m))

        produce_all(self._producer, messages, on_delivery, refused)
        remaining = self._producer.flush(self._flush_timeout_s)
        transient = [err for err, _ in failed if err.code() not in PERMANENT]
        if remaining or transient:
            first = transient[0] if transient else f"{remaining} message(s) unacknowledged"
            raise PublishFailed(
                f"{len(failed) + remaining} of {len(messages)} not delivered: {first}"
            )
        refused += [(m, err.str()) for err, m in failed]
        if refused:
            raise Refused(refused)

    def close(self) -> None:
        self._producer.flush(self._flush_timeout_s)

"""Producing to Kafka from the pipeline (outcomes and dead letters) with confluent-kafka's
idempotent producer, synchronously: a batch is acknowledged only once every message is on the
broker, so a crash can duplicate (same ids) but never lose."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import KafkaError, Message, Producer
from msgspec import Struct, field

from order_recovery.adapters.retry import PublishFailed


class OutgoingMessage(Struct, frozen=True, gc=False):
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class KafkaPublisher:
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
        """Send all and wait for the broker's acknowledgement of each; raise PublishFailed if any
        is missing (the caller retries the whole call)."""
        if not messages:
            return
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(err)

        for m in messages:
            while True:
                try:
                    self._producer.produce(
                        m.topic,
                        key=m.key,
                        value=m.value,
                        headers=m.headers or None,
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    self._producer.poll(0.05)  # local queue full: let deliveries drain
        remaining = self._producer.flush(self._flush_timeout_s)
        if remaining or errors:
            first = errors[0] if errors else f"{remaining} message(s) unacknowledged"
            raise PublishFailed(
                f"{len(errors) + remaining} of {len(messages)} not delivered: {first}"
            )

    def close(self) -> None:
        self._producer.flush(self._flush_timeout_s)

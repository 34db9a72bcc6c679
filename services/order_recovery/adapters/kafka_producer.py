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
from functools import partial

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from msgspec import Struct, field

from order_recovery.adapters.retry import PublishFailed

#: Errors no resend can fix. librdkafka refuses a message over its own message.max.bytes in
#: produce() itself; the broker refuses a record batch over the topic's max.message.bytes as a
#: whole, so the other messages of that batch report the same error and only a resend of each
#: alone tells them apart (their next batch is another one; the idempotent producer carries on).
PERMANENT = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD}
)


class OutgoingMessage(Struct, frozen=True, gc=False):
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class Refused(Exception):
    """Every message of a `publish` was acknowledged except these, refused for good: each with
    the reason. Not transient: the same messages would be refused again."""

    def __init__(self, refused: list[tuple[OutgoingMessage, str]]) -> None:
        super().__init__(f"{len(refused)} message(s) refused: {refused[0][1]}")
        self.refused = refused


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
        """Send all and wait for the broker's acknowledgement of each. Raise PublishFailed if any
        is missing for a reason that may pass (the caller retries the whole call), else Refused
        if the producer or the broker refused some for good."""
        if not messages:
            return
        failed: list[tuple[KafkaError, OutgoingMessage]] = []
        refused: list[tuple[OutgoingMessage, str]] = []

        # Per message, so a refusal names the message as given (a delivery report carries no
        # headers); the partial costs a fraction of the produce() it goes with.
        def on_delivery(m: OutgoingMessage, err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failed.append((err, m))

        for m in messages:
            while True:
                try:
                    self._producer.produce(
                        m.topic,
                        key=m.key,
                        value=m.value,
                        headers=m.headers or None,
                        on_delivery=partial(on_delivery, m),
                    )
                    break
                except BufferError:
                    self._producer.poll(0.05)  # local queue full: let deliveries drain
                except KafkaException as exc:
                    if exc.args[0].code() not in PERMANENT:
                        raise
                    refused.append((m, exc.args[0].str()))
                    break
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

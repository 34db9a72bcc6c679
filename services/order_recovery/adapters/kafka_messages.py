"""confluent-kafka's messages in the core's terms, both ways, in one place for the whole project:
a consumed `Message` as a `SourceRecord` (the confluent runtime's batches, `recoveryctl dlq`'s
scans), and the one produce loop (the worker's publisher, the sample feed, the bench's preload),
which waits out a full local queue instead of failing."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from order_recovery.core.records import OutgoingMessage, SourceRecord

#: Errors no resend can fix. librdkafka refuses a message over its own message.max.bytes in
#: produce() itself; the broker refuses a record batch over the topic's max.message.bytes as a
#: whole, so the other messages of that batch report the same error and only a resend of each
#: alone tells them apart (their next batch is another one; the idempotent producer carries on).
PERMANENT = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD}
)

#: A delivery report for one message: (message as given, error or None, librdkafka's message).
OnDelivery = Callable[[OutgoingMessage, KafkaError | None, Message], None]


def source_record(msg: Message) -> SourceRecord:
    """A consumed message as the core describes it: no timestamp when the broker gave none, a
    header without a value as empty bytes."""
    _, timestamp = msg.timestamp()
    return SourceRecord(
        topic=msg.topic() or "",
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        key=msg.key(),
        value=msg.value(),
        timestamp_ms=timestamp if timestamp and timestamp > 0 else None,
        headers=tuple((k, v or b"") for k, v in (msg.headers() or ())),
    )


def produce_all(
    producer: Producer,
    messages: Iterable[OutgoingMessage],
    on_delivery: OnDelivery | None = None,
    refused: list[tuple[OutgoingMessage, str]] | None = None,
) -> None:
    """Hand every message to the producer, in order, polling while its local queue is full.
    A message the producer refuses for good (PERMANENT) goes into `refused` when given, else
    its KafkaException propagates. Does not flush: the caller decides how long to wait."""
    for m in messages:
        # Per message, so a refusal names the message as given (a delivery report carries no
        # headers); the partial costs a fraction of the produce() it goes with.
        report = None if on_delivery is None else partial(on_delivery, m)
        while True:
            try:
                producer.produce(
                    m.topic, key=m.key, value=m.value, headers=m.headers or None, on_delivery=report
                )
                break
            except BufferError:
                producer.poll(0.05)  # local queue full: let deliveries drain
            except KafkaException as exc:
                if refused is None or exc.args[0].code() not in PERMANENT:
                    raise
                refused.append((m, exc.args[0].str()))
                break

"""Dead letters: the message built for a record the pipeline turns away, and seeing each one
through to the broker, or, when the broker will not take it, to the store of unsendable letters
(Postgres: `adapters/postgres/unsendable.py`).

A dead letter is the record's key, value and headers plus the `dlq.*` headers (`core/headers.py`),
so it can be larger than the record the broker accepted. Each goes, in turn:
1. whole, with the batch's outcomes; a record over ORDER_RECOVERY_MAX_RECORD_BYTES starts at 2;
2. refused (too large for the producer or the dead-letter topic): alone, whole, since the broker
   refuses a record batch as a whole and the letter may only have shared one with a refused one;
3. refused again: with its value cut to its first TRUNCATED_VALUE_BYTES, headers
   `dlq.value.truncated: true` and `dlq.value.bytes: <whole size>`; the whole record stays on the
   source topic at `dlq.original.topic/partition/offset` for as long as its retention keeps it;
4. refused even so: a row in `unsendable_dead_letters`, logged and counted.
Then the batch is finished and its offsets move on: no record can stop a partition. A refused
outcome (they are small, never truncated) is a bug and stops the worker as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from order_recovery.config import Settings
from order_recovery.core.faults import Refused
from order_recovery.core.headers import (
    DLQ_ATTEMPT,
    DLQ_ERROR_CLASS,
    DLQ_ERROR_MESSAGE,
    DLQ_FAILED_AT,
    DLQ_ID,
    DLQ_ORIGINAL_OFFSET,
    DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_TIMESTAMP,
    DLQ_ORIGINAL_TOPIC,
    DLQ_PREFIX,
    DLQ_VALUE_BYTES,
    DLQ_VALUE_TRUNCATED,
    DLQ_WORKER_ID,
    dead_letter_id,
)
from order_recovery.core.ports import BatchObserver, Publisher, UnsendableLetters
from order_recovery.core.records import DeadLetter, OutgoingMessage
from order_recovery.domain.errors import (
    EventFromFuture,
    MalformedJson,
    OversizedRecord,
    SchemaViolation,
    UnknownEventType,
    UnknownPlatform,
)

log = logging.getLogger(__name__)

#: What a truncated dead letter keeps of the value: the head of any event (a real one is about
#: 1 KiB whole) and far under any sane topic limit.
TRUNCATED_VALUE_BYTES = 16 * 1024
#: dlq.error.message is cut here: it quotes the offending value, which may be large.
ERROR_MESSAGE_BYTES = 4000
#: A rule raised on the event (a bug; the event is kept for a replay once fixed).
RULE_ERROR = "rule_error"
#: The `dlq.error.class` of a record turned away before any rule saw it (with RULE_ERROR, every
#: class the worker writes: the metrics create their series up front).
DEAD_LETTER_REASONS = tuple(
    cls.error_class
    for cls in (
        OversizedRecord,
        MalformedJson,
        SchemaViolation,
        UnknownEventType,
        EventFromFuture,
        UnknownPlatform,
    )
)


def dead_letter_message(
    letter: DeadLetter, worker_id: str, failed_at: datetime, truncate: bool = False
) -> OutgoingMessage:
    """The record's key, value and own headers plus the dlq.* headers; with `truncate`, only the
    first TRUNCATED_VALUE_BYTES of the value, and headers that say so."""
    r = letter.record
    previous = dict(r.headers).get(DLQ_ATTEMPT)
    attempt = int(previous) + 1 if previous and previous.isdigit() else 1
    original = [(k, v) for k, v in r.headers if not k.startswith(DLQ_PREFIX)]
    headers = [
        *original,
        (DLQ_ID, dead_letter_id(r.topic, r.partition, r.offset).encode()),
        (DLQ_ERROR_CLASS, letter.error_class.encode()),
        (
            DLQ_ERROR_MESSAGE,
            letter.message.encode("utf-8", "backslashreplace")[:ERROR_MESSAGE_BYTES],
        ),
        (DLQ_ORIGINAL_TOPIC, r.topic.encode()),
        (DLQ_ORIGINAL_PARTITION, str(r.partition).encode()),
        (DLQ_ORIGINAL_OFFSET, str(r.offset).encode()),
        (DLQ_ORIGINAL_TIMESTAMP, str(r.timestamp_ms or "").encode()),
        (DLQ_ATTEMPT, str(attempt).encode()),
        (DLQ_FAILED_AT, failed_at.isoformat().encode()),
        (DLQ_WORKER_ID, worker_id.encode()),
    ]
    value = r.value
    if truncate and value is not None and len(value) > TRUNCATED_VALUE_BYTES:
        headers += [(DLQ_VALUE_TRUNCATED, b"true"), (DLQ_VALUE_BYTES, str(len(value)).encode())]
        value = value[:TRUNCATED_VALUE_BYTES]
    return OutgoingMessage(Settings.dlq_topic(r.topic), r.key, value, headers)


def _can_truncate(letter: DeadLetter) -> bool:
    return len(letter.record.value or b"") > TRUNCATED_VALUE_BYTES


class DeadLetterSender:
    """Publishes a batch's dead letters with its outcomes, and sees every dead letter through."""

    def __init__(
        self,
        settings: Settings,
        publisher: Publisher,
        unsendable: UnsendableLetters,
        observer: BatchObserver,
    ) -> None:
        self._settings = settings
        self._publisher = publisher
        self._unsendable = unsendable
        self._observer = observer

    def publish(self, dead: Sequence[DeadLetter], outcomes: Sequence[OutgoingMessage]) -> None:
        """Every outcome and every dead letter acknowledged by the broker (or the dead letter in
        Postgres); PublishFailed when the broker is unavailable (retry the call), Refused when an
        outcome was refused (a bug)."""
        failed_at = datetime.now(UTC)
        sent: dict[bytes, tuple[DeadLetter, bool]] = {}  # dlq.id -> letter, sent truncated
        letters: list[OutgoingMessage] = []
        for letter in dead:
            truncate = letter.record.size > self._settings.max_record_bytes
            message = self._message(letter, failed_at, truncate)
            sent[_id(message)] = (letter, truncate and _can_truncate(letter))
            letters.append(message)
        try:
            self._publisher.publish([*letters, *outcomes])
        except Refused as refused:
            outcomes_refused = [(m, why) for m, why in refused.refused if _id(m) not in sent]
            if outcomes_refused:
                raise Refused(outcomes_refused) from None
            for message, why in refused.refused:
                letter, truncated = sent[_id(message)]
                self._see_through(letter, truncated, why, failed_at)

    def _message(
        self, letter: DeadLetter, failed_at: datetime, truncate: bool = False
    ) -> OutgoingMessage:
        return dead_letter_message(letter, self._settings.worker_id, failed_at, truncate)

    def _see_through(
        self, letter: DeadLetter, truncated: bool, why: str, failed_at: datetime
    ) -> None:
        """Steps 2 to 4 for one dead letter the broker refused in its batch."""
        attempts = [] if truncated else [self._message(letter, failed_at)]
        if _can_truncate(letter):
            attempts.append(self._message(letter, failed_at, truncate=True))
        for message in attempts:
            try:
                self._publisher.publish([message])
                return
            except Refused as again:
                why = again.refused[0][1]
        r = letter.record
        added = self._unsendable.record(letter, attempts[-1], why, self._settings.worker_id)
        log.error(
            "the dead letter of %s[%d]@%d (%s) was refused by the broker (%s)%s: kept in "
            "Postgres, table unsendable_dead_letters",
            r.topic,
            r.partition,
            r.offset,
            letter.error_class,
            why,
            ", truncated too" if _can_truncate(letter) else "",
        )
        if added:
            self._observer.dead_letter_kept()

    def close(self) -> None:
        self._unsendable.close()


def _id(message: OutgoingMessage) -> bytes:
    """A dead letter's DLQ_ID (b"" for an outcome, which has none)."""
    for name, value in message.headers:
        if name == DLQ_ID:
            return value
    return b""

"""Building dead letters and seeing each one through (order_recovery.core.dead_letters), against a
publisher that refuses what is over a topic's limit the way the broker does. No services."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from order_recovery.adapters.metrics import WorkerMetrics
from order_recovery.config import Settings
from order_recovery.core import headers as h
from order_recovery.core.dead_letters import (
    ERROR_MESSAGE_BYTES,
    TRUNCATED_VALUE_BYTES,
    DeadLetterSender,
    dead_letter_message,
)
from order_recovery.core.faults import Refused
from order_recovery.core.records import DeadLetter, OutgoingMessage, SourceRecord

AT = datetime(2025, 6, 2, 10, tzinfo=UTC)
SETTINGS = Settings(worker_id="w-1", max_record_bytes=64 * 1024)


def letter(
    value: bytes | None = b"{not json",
    offset: int = 7,
    headers: tuple[tuple[str, bytes], ...] = (),
    key: bytes | None = b"ord-1",
    message: str = "malformed_json: <message>: nope",
) -> DeadLetter:
    record = SourceRecord(
        "orders.shipping-delay", 2, offset, key, value, 1_700_000_000_000, headers
    )
    return DeadLetter(record, "malformed_json", message)


def test_the_header_names_are_the_contract() -> None:
    """Operators' scripts, dashboards and other teams' consumers read these: never renamed."""
    assert [
        h.DLQ_ID, h.DLQ_ERROR_CLASS, h.DLQ_ERROR_MESSAGE, h.DLQ_ORIGINAL_TOPIC,
        h.DLQ_ORIGINAL_PARTITION, h.DLQ_ORIGINAL_OFFSET, h.DLQ_ORIGINAL_TIMESTAMP, h.DLQ_ATTEMPT,
        h.DLQ_FAILED_AT, h.DLQ_WORKER_ID, h.DLQ_VALUE_TRUNCATED, h.DLQ_VALUE_BYTES,
        h.REPLAY_ID, h.REPLAY_AT, h.REPLAY_SOURCE_TOPIC, h.REPLAY_SOURCE_PARTITION,
        h.REPLAY_SOURCE_OFFSET,
    ] == [
        "dlq.id", "dlq.error.class", "dlq.error.message", "dlq.original.topic",
        "dlq.original.partition", "dlq.original.offset", "dlq.original.timestamp", "dlq.attempt",
        "dlq.failed.at", "dlq.worker.id", "dlq.value.truncated", "dlq.value.bytes",
        "replay.id", "replay.at", "replay.source.topic", "replay.source.partition",
        "replay.source.offset",
    ]  # fmt: skip


def test_a_dead_letter_is_the_record_plus_headers_saying_why_and_from_where() -> None:
    own = (("trace", b"t1"), ("dlq.error.class", b"stale"), ("dlq.attempt", b"2"))
    m = dead_letter_message(letter(headers=own), "w-1", AT)
    assert (m.topic, m.key, m.value) == ("orders.shipping-delay.dlq", b"ord-1", b"{not json")
    assert m.headers == [
        ("trace", b"t1"),
        ("dlq.id", b"orders.shipping-delay/2/7"),
        ("dlq.error.class", b"malformed_json"),
        ("dlq.error.message", b"malformed_json: <message>: nope"),
        ("dlq.original.topic", b"orders.shipping-delay"),
        ("dlq.original.partition", b"2"),
        ("dlq.original.offset", b"7"),
        ("dlq.original.timestamp", b"1700000000000"),
        ("dlq.attempt", b"3"),  # a replayed record that failed again
        ("dlq.failed.at", b"2025-06-02T10:00:00+00:00"),
        ("dlq.worker.id", b"w-1"),
    ]


def test_the_same_record_gets_the_same_id_and_another_record_another() -> None:
    def ident(x: DeadLetter) -> bytes:
        return dict(dead_letter_message(x, "w", AT).headers)["dlq.id"]

    assert (
        ident(letter(offset=7))
        == ident(letter(offset=7, message="other"))
        != ident(letter(offset=8))
    )


def test_a_long_error_message_is_cut_and_never_unencodable() -> None:
    m = dead_letter_message(letter(message="\udcff" + "x" * 10_000), "w", AT)
    assert len(dict(m.headers)["dlq.error.message"]) == ERROR_MESSAGE_BYTES


def test_a_truncated_dead_letter_keeps_the_head_and_says_how_large_the_value_was() -> None:
    big = b"{" + b"x" * 100_000
    m = dead_letter_message(letter(big), "w", AT, truncate=True)
    assert m.value == big[:TRUNCATED_VALUE_BYTES]
    assert m.headers[-2:] == [("dlq.value.truncated", b"true"), ("dlq.value.bytes", b"100001")]
    small = dead_letter_message(letter(b"{}"), "w", AT, truncate=True)
    assert small.value == b"{}" and "dlq.value.truncated" not in dict(small.headers)


class Broker:
    """Refuses, per topic, messages over a size, and (as librdkafka reports a refused record
    batch) every other message of that topic sent in the same call."""

    def __init__(self, limits: dict[str, int]) -> None:
        self.limits = limits
        self.calls: list[list[OutgoingMessage]] = []
        self.delivered: list[OutgoingMessage] = []

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self.calls.append(list(messages))
        too_big = {m.topic for m in messages if _size(m) > self.limits.get(m.topic, 1 << 30)}
        refused = [(m, "Broker: Message size too large") for m in messages if m.topic in too_big]
        self.delivered += [m for m in messages if m.topic not in too_big]
        if refused:
            raise Refused(refused)


def _size(m: OutgoingMessage) -> int:
    return len(m.key or b"") + len(m.value or b"") + sum(len(k) + len(v) for k, v in m.headers)


class Kept:
    """The last-resort store: what it was given; True the first time per record."""

    def __init__(self) -> None:
        self.rows: list[tuple[DeadLetter, OutgoingMessage, str]] = []

    def record(self, x: DeadLetter, sent: OutgoingMessage, refusal: str, worker_id: str) -> bool:
        first = all(r[0].record != x.record for r in self.rows)
        self.rows.append((x, sent, refusal))
        return first

    def close(self) -> None:
        pass


def sender(broker: Broker, kept: Kept, settings: Settings = SETTINGS) -> DeadLetterSender:
    return DeadLetterSender(settings, broker, kept, WorkerMetrics())  # type: ignore[arg-type]


OUTCOME = OutgoingMessage("orders.recovery-outcome", b"ord-9", b"{}")
DLQ = "orders.shipping-delay.dlq"


def test_dead_letters_and_outcomes_go_out_in_one_call() -> None:
    broker = Broker({})
    sender(broker, Kept()).publish([letter(offset=1), letter(offset=2)], [OUTCOME])
    assert len(broker.calls) == 1 and len(broker.delivered) == 3


def test_a_record_over_the_limit_is_dead_lettered_truncated_at_once() -> None:
    broker = Broker({})
    sender(broker, Kept()).publish([letter(b"[" * (SETTINGS.max_record_bytes + 1))], [])
    ((m,),) = broker.calls
    assert len(m.value or b"") == TRUNCATED_VALUE_BYTES
    assert dict(m.headers)["dlq.value.bytes"] == str(SETTINGS.max_record_bytes + 1).encode()


def test_a_refused_batch_is_resent_letter_by_letter_whole_then_truncated() -> None:
    broker = Broker({DLQ: 20_000})
    kept = Kept()
    big, small = letter(b"{" * 30_000, offset=1), letter(b"{", offset=2)
    sender(broker, kept).publish([big, small], [OUTCOME])
    sizes = [[len(m.value or b"") for m in call] for call in broker.calls]
    # The batch; the big one alone, whole, then truncated; its neighbour alone, whole.
    assert sizes == [[30_000, 1, 2], [30_000], [TRUNCATED_VALUE_BYTES], [1]]
    assert sorted(len(m.value or b"") for m in broker.delivered) == [1, 2, TRUNCATED_VALUE_BYTES]
    assert kept.rows == []


def test_what_the_broker_refuses_even_truncated_is_kept_once() -> None:
    broker = Broker({DLQ: 1_000})
    kept = Kept()
    metrics = WorkerMetrics()
    send = DeadLetterSender(SETTINGS, broker, kept, metrics)  # type: ignore[arg-type]
    big = letter(b"{" * 30_000)
    send.publish([big], [OUTCOME])
    send.publish([big], [])  # redelivered: the row is there already
    (first, sent, refusal), _again = kept.rows
    assert first == big and refusal == "Broker: Message size too large"
    assert len(sent.value or b"") == TRUNCATED_VALUE_BYTES
    assert dict(sent.headers)["dlq.value.truncated"] == b"true"
    assert metrics.dead_letters_unsendable._value.get() == 1
    assert OUTCOME in broker.delivered


def test_a_refused_outcome_is_not_swallowed() -> None:
    broker = Broker({"orders.recovery-outcome": 1})
    with pytest.raises(Refused):
        sender(broker, Kept()).publish([letter()], [OUTCOME])

"""Dead-letter topics: reading them (a bounded scan), selecting records, summarising them.

A scan runs from given offsets to the end offsets taken before it starts, so it terminates while
the worker keeps dead-lettering new records. A record can be dead-lettered twice (a worker that
died between producing its dead letter and committing its offset leaves it to the next owner):
both copies carry the same `dlq.id`, and everything here counts, shows and replays it once.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from order_recovery.adapters.kafka_admin import KafkaUnavailable
from order_recovery.adapters.kafka_messages import source_record
from order_recovery.adapters.kafka_settling import when_settled
from order_recovery.config import DLQ_SUFFIX, EXCEPTION_TYPES, Settings
from order_recovery.core.headers import (
    DLQ_ERROR_CLASS,
    DLQ_FAILED_AT,
    DLQ_ID,
    DLQ_ORIGINAL_TIMESTAMP,
    DLQ_ORIGINAL_TOPIC,
    DLQ_VALUE_TRUNCATED,
)
from order_recovery.core.records import SourceRecord
from order_recovery.ops.output import Advance, UsageError, escape_bytes

TP = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Letter:
    """One record of a dead-letter topic, as stored."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    #: The last value of each header (a replayed record may carry an older one first), looked up
    #: several times per record by a replay, which reads backlogs of many thousands.
    _last: dict[str, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_last", dict(self.headers))

    @classmethod
    def of(cls, r: SourceRecord) -> Letter:
        """The record as read from the topic (`adapters.kafka_messages.source_record`)."""
        return cls(r.topic, r.partition, r.offset, r.timestamp_ms, r.key, r.value, r.headers)

    def header(self, name: str) -> str | None:
        """The last value of a header."""
        found = self._last.get(name)
        return None if found is None else found.decode("utf-8", "backslashreplace")

    @property
    def error_class(self) -> str:
        return self.header(DLQ_ERROR_CLASS) or "unknown"

    @property
    def identity(self) -> tuple[str, ...]:
        """Equal for the copies of one dead letter: its `dlq.id`, else (a dead letter written
        before the header existed, or by hand) its own place in the DLQ."""
        found = self.header(DLQ_ID)
        return ("id", found) if found else ("at", self.topic, str(self.partition), str(self.offset))

    @property
    def truncated(self) -> bool:
        """The value is only the head of the record's (see `dlq.value.truncated`)."""
        return self.header(DLQ_VALUE_TRUNCATED) == "true"

    @property
    def original_timestamp_ms(self) -> int | None:
        """The failed record's own timestamp (`dlq.original.timestamp`), if it had one."""
        raw = self.header(DLQ_ORIGINAL_TIMESTAMP)
        return int(raw) if raw and raw.isdigit() and int(raw) > 0 else None

    @property
    def failed_at(self) -> datetime | None:
        """`dlq.failed.at`, else the record's timestamp (a record produced by hand)."""
        raw = self.header(DLQ_FAILED_AT)
        if raw:
            try:
                at = datetime.fromisoformat(raw)
                return at if at.tzinfo else at.replace(tzinfo=UTC)
            except ValueError:
                pass
        if self.timestamp_ms:
            return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)
        return None

    @property
    def original_topic(self) -> str:
        return self.header(DLQ_ORIGINAL_TOPIC) or self.topic.removesuffix(DLQ_SUFFIX)

    def decoded(self) -> Any | None:
        """The value as JSON when it is JSON; None otherwise (then show the raw bytes)."""
        if self.value is None:
            return None
        try:
            return orjson.loads(self.value)
        except orjson.JSONDecodeError:
            return None

    @property
    def order_id(self) -> str | None:
        """The event's order id, else the record key (producers key by order id)."""
        doc = self.decoded()
        if isinstance(doc, dict) and isinstance(doc.get("order_id"), str):
            return str(doc["order_id"])
        return None if self.key is None else self.key.decode("utf-8", "backslashreplace")

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
            "error_class": self.error_class,
            "failed_at": self.failed_at,
            "order_id": self.order_id,
            **record_json(self.key, self.headers, self.decoded(), self.value),
        }


def record_json(
    key: bytes | None, headers: Sequence[tuple[str, bytes]], doc: Any | None, value: bytes | None
) -> dict[str, Any]:
    """A dead letter's key, headers and value as JSON: the value decoded when it is JSON
    (`doc`), else its bytes escaped."""
    return {
        "key": None if key is None else escape_bytes(key),
        "headers": [[k, v.decode("utf-8", "backslashreplace")] for k, v in headers],
        "value": doc,
        "value_raw": None if doc is not None or value is None else escape_bytes(value),
    }


@dataclass(frozen=True, slots=True)
class LetterFilter:
    """Which dead letters a command works on; unset fields select everything."""

    topic: str | None = None
    error_class: str | None = None
    order_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, letter: Letter) -> bool:
        if self.topic is not None and letter.topic != self.topic:
            return False
        if self.error_class is not None and letter.error_class != self.error_class:
            return False
        if self.order_id is not None and letter.order_id != self.order_id:
            return False
        if self.since is not None or self.until is not None:
            at = letter.failed_at
            if at is None:
                return False
            if self.since is not None and at < self.since:
                return False
            if self.until is not None and at >= self.until:
                return False
        return True

    def to_json(self) -> dict[str, Any]:
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}


def dlq_topics(settings: Settings) -> list[str]:
    return [settings.dlq_topic(t) for t in settings.source_topics]


def resolve_topic(settings: Settings, name: str | None) -> str | None:
    """Accept an exception type, a source topic or a DLQ topic; answer the DLQ topic."""
    if name is None:
        return None
    for event_type in EXCEPTION_TYPES:
        source = settings.source_topic(event_type)
        if name in (event_type, source, settings.dlq_topic(source)):
            return settings.dlq_topic(source)
    raise UsageError(f"unknown topic {name!r} (one of: {', '.join(dlq_topics(settings))})")


#: librdkafka's own log lines (connection refused, every 50 ms) would bury the one-line reason an
#: operator gets; failures still surface, as exceptions.
QUIET = logging.getLogger("recoveryctl.librdkafka")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


def ping(bootstrap: str, timeout_s: float = 5.0) -> None:
    try:
        AdminClient({"bootstrap.servers": bootstrap}, logger=QUIET).list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaUnavailable(f"Kafka at {bootstrap} did not answer: {exc}") from None


def reader(settings: Settings, group: str = "recoveryctl-reader") -> Consumer:
    """A consumer that only reads: it never commits (replay commits through its transaction)."""
    ping(settings.kafka_bootstrap_servers)
    return Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        },
        logger=QUIET,
    )


def watermarks(consumer: Consumer, topics: Sequence[str]) -> dict[TP, tuple[int, int]]:
    """(low, high) offsets of every partition of `topics`, taken now."""
    out: dict[TP, tuple[int, int]] = {}
    metadata = when_settled(lambda: consumer.list_topics(timeout=10).topics, "topic metadata")
    for topic in topics:
        if topic not in metadata or metadata[topic].error is not None:
            raise KafkaUnavailable(f"topic {topic} does not exist (`recoveryctl topics create`)")
        for p in sorted(metadata[topic].partitions):
            tp = TopicPartition(topic, p)
            low, high = when_settled(
                lambda tp=tp: consumer.get_watermark_offsets(tp, timeout=10), f"offsets of {tp}"
            )
            out[(topic, p)] = (low, high)
    return out


def scan(
    consumer: Consumer,
    ranges: Mapping[TP, tuple[int, int]],
    advance: Advance | None = None,
    idle_timeout_s: float = 30.0,
) -> Iterator[Letter]:
    """Every record in [start, end) of each partition, in offset order per partition."""
    pending = {tp: end for tp, (start, end) in ranges.items() if start < end}
    if not pending:
        return
    consumer.assign([TopicPartition(t, p, ranges[(t, p)][0]) for t, p in pending])
    seen = 0
    last_progress = time.monotonic()
    try:
        while pending:
            messages = consumer.consume(500, timeout=0.5)
            for msg in messages:
                if msg.error():
                    continue
                tp = (msg.topic() or "", msg.partition() or 0)
                offset = msg.offset() or 0
                if tp not in pending or offset >= pending[tp]:
                    continue
                seen += 1
                yield Letter.of(source_record(msg))
                last_progress = time.monotonic()
                if offset + 1 >= pending[tp]:
                    del pending[tp]
            # A partition can end in offsets with no record (transaction markers): ask where
            # the consumer stands rather than waiting for a record that never comes.
            for tp_pos in consumer.position([TopicPartition(t, p) for t, p in pending]):
                key = (tp_pos.topic, tp_pos.partition)
                if tp_pos.offset >= 0 and tp_pos.offset >= pending.get(key, 1 << 62):
                    del pending[key]
            if advance is not None:
                advance(seen)
            if pending and time.monotonic() - last_progress > idle_timeout_s:
                raise KafkaUnavailable(f"no records from {sorted(pending)} in {idle_timeout_s}s")
    finally:
        consumer.unassign()


def read_letters(
    settings: Settings,
    topics: Sequence[str],
    progress: Callable[[int], AbstractContextManager[Advance]] | None = None,
) -> list[Letter]:
    """Every record of `topics` up to the end offsets taken now."""
    consumer = reader(settings)
    try:
        ranges = watermarks(consumer, topics)
        with progress(total(ranges)) if progress else nullcontext(None) as advance:
            return list(scan(consumer, ranges, advance))
    finally:
        consumer.close()


Place = tuple[str, int, int]


class FirstCopies:
    """Where the one copy of each dead letter is: of its copies, the first in (topic, partition,
    offset) order, so the choice does not depend on the order partitions were read in (a replay
    resumed later chooses the same copy). Holds a place per dead letter, not the letters."""

    def __init__(self) -> None:
        self._first: dict[tuple[str, ...], Place] = {}

    def see(self, letter: Letter) -> None:
        at = (letter.topic, letter.partition, letter.offset)
        known = self._first.get(letter.identity)
        if known is None or at < known:
            self._first[letter.identity] = at

    def places(self) -> set[Place]:
        return set(self._first.values())


def distinct(letters: Iterable[Letter]) -> list[Letter]:
    """One copy of each dead letter (see `FirstCopies`), in the order given."""
    letters = list(letters)
    first = FirstCopies()
    for x in letters:
        first.see(x)
    chosen = first.places()
    return [x for x in letters if (x.topic, x.partition, x.offset) in chosen]


def total(ranges: Mapping[TP, tuple[int, int]]) -> int:
    return sum(max(0, end - start) for start, end in ranges.values())


@dataclass(frozen=True, slots=True)
class TopicSummary:
    topic: str
    count: int
    oldest_failure: datetime | None
    newest_failure: datetime | None
    by_error_class: dict[str, int]
    #: Dead letters of this topic the broker refused even truncated, kept in Postgres instead
    #: (None: Postgres could not be asked).
    unsendable: int | None = None


def summarise(
    topics: Sequence[str], letters: Sequence[Letter], unsendable: Mapping[str, int] | None = None
) -> list[TopicSummary]:
    """Per topic, each dead letter once (see `distinct`)."""
    letters = distinct(letters)
    out = []
    for topic in topics:
        mine = [x for x in letters if x.topic == topic]
        times = [at for x in mine if (at := x.failed_at) is not None]
        classes = Counter(x.error_class for x in mine)
        out.append(
            TopicSummary(
                topic,
                len(mine),
                min(times, default=None),
                max(times, default=None),
                dict(sorted(classes.items())),
                None if unsendable is None else unsendable.get(topic, 0),
            )
        )
    return out

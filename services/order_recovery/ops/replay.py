"""`dlq replay`: send selected dead letters back to their original topic, once per replay id.

Progress lives in Kafka, in the consumer group `<consumer group>.replay.<replay id>`: its committed
offset per DLQ partition is the next record to examine, and the commit metadata holds the end
offsets taken when the replay first started and the filters it was started with. Records are sent
by a transactional producer (transactional.id = that group) and each transaction commits the group
offsets with the records it sent, so a replay stopped anywhere (Ctrl-C, a crash, a kill -9) either
sent a record and moved past it, or did neither. Starting the same replay id again fences the old
producer, aborts whatever it left open, and continues where the committed offsets say.
Consumers must read with isolation.level=read_committed (confluent-kafka's default) not to see an
aborted transaction's records; the worker is idempotent either way.

A dead letter written twice (same `dlq.id`) is sent once: of the copies the filters select, only
the first in (topic, partition, offset) order is sent, found by reading the topics up to the
replay's end offsets before sending, so a resumed replay picks the same copy. A truncated dead
letter is not sent (its value is only the record's head). A record is sent with its original
timestamp (`dlq.original.timestamp`), so the worker judges its event time against the same
reference as the first time (see `order_recovery.core.intake`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer, TopicPartition

from order_recovery.adapters.kafka_settling import when_settled
from order_recovery.config import Settings
from order_recovery.core.headers import (
    DLQ_ATTEMPT,
    DLQ_PREFIX,
    REPLAY_AT,
    REPLAY_ID,
    REPLAY_PREFIX,
    REPLAY_SOURCE_OFFSET,
    REPLAY_SOURCE_PARTITION,
    REPLAY_SOURCE_TOPIC,
)
from order_recovery.ops.dlq import (
    QUIET,
    TP,
    FirstCopies,
    Letter,
    LetterFilter,
    Place,
    dlq_topics,
    reader,
    scan,
    total,
    watermarks,
)
from order_recovery.ops.output import Advance, UsageError

_REPLAY_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
#: A transaction is committed at least this often, so an interruption loses little work (a
#: second's). Each commit costs about 55 ms (`send_offsets_to_transaction` and the commit), so the
#: record bound is large: with 50 records a chunk the replay ran at about 500/s, with 5,000 about
#: 5,000/s on the same broker (docs/performance.md; a replay's start-up then dominates).
CHUNK_RECORDS, CHUNK_SECONDS = 5000, 1.0
#: The letters the first pass reads (to choose one copy of each) are kept for the second, which
#: then need not read them again, up to this much memory; a larger backlog is read twice. Reading
#: a letter from Kafka costs about 13 us of the replay's 45 or so (docs/performance.md).
KEEP_BYTES = 256 * 1024 * 1024
#: What a kept letter costs besides its key and value (the object, its headers and their dict).
LETTER_OVERHEAD_BYTES = 1500


def new_replay_id() -> str:
    return datetime.now(UTC).strftime("r%Y%m%dT%H%M%S")


def check_replay_id(text: str) -> str:
    if not _REPLAY_ID.match(text):
        raise UsageError(f"replay id {text!r} must match {_REPLAY_ID.pattern}")
    return text


def replay_group(settings: Settings, replay_id: str) -> str:
    return f"{settings.consumer_group}.replay.{replay_id}"


def replay_headers(letter: Letter, replay_id: str, at: datetime) -> list[tuple[str, bytes]]:
    """The record's own headers plus the replay's. Of the dead-letter headers only `dlq.attempt`
    stays: the worker reads it to count attempt + 1 when the record fails again. Replay headers of
    an earlier replay are replaced."""
    kept = [
        (k, v)
        for k, v in letter.headers
        if (not k.startswith(DLQ_PREFIX) or k == DLQ_ATTEMPT) and not k.startswith(REPLAY_PREFIX)
    ]
    return [
        *kept,
        (REPLAY_ID, replay_id.encode()),
        (REPLAY_AT, at.isoformat().encode()),
        (REPLAY_SOURCE_TOPIC, letter.topic.encode()),
        (REPLAY_SOURCE_PARTITION, str(letter.partition).encode()),
        (REPLAY_SOURCE_OFFSET, str(letter.offset).encode()),
    ]


def describe(letter: Letter) -> dict[str, Any]:
    return {
        "dlq_topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "target_topic": letter.original_topic,
        "error_class": letter.error_class,
        "order_id": letter.order_id,
        "failed_at": letter.failed_at,
    }


@dataclass(slots=True)
class ReplayResult:
    replay_id: str
    dry_run: bool
    resumed: bool
    selected: list[dict[str, Any]] = field(default_factory=list)
    sent: int = 0
    examined: int = 0
    duplicates: int = 0  # selected copies of a dead letter sent (or to be sent) from elsewhere
    truncated: int = 0  # selected dead letters not sent: their value is only a prefix
    interrupted: bool = False
    limit_reached: bool = False
    done: bool = False  # every partition reached the end offsets of the replay's start

    def to_json(self) -> dict[str, Any]:
        return {
            "replay_id": self.replay_id,
            "dry_run": self.dry_run,
            "resumed": self.resumed,
            "sent": self.sent,
            "examined": self.examined,
            "skipped_duplicates": self.duplicates,
            "skipped_truncated": self.truncated,
            "interrupted": self.interrupted,
            "limit_reached": self.limit_reached,
            "done": self.done,
            "records": self.selected,
        }


@dataclass(frozen=True, slots=True)
class _State:
    ranges: dict[TP, tuple[int, int]]  # next offset to examine, end offset at the start
    filters: dict[str, Any]
    resumed: bool


def _metadata(end: int, filters: dict[str, Any]) -> str:
    return orjson.dumps({"end": end, "filters": filters}).decode()


def _load_state(consumer: Any, topics: list[str], filt: LetterFilter) -> _State:
    marks = watermarks(consumer, topics)
    committed = when_settled(
        lambda: consumer.committed([TopicPartition(t, p) for t, p in marks], timeout=10),
        "the replay group's offsets",
    )
    ranges: dict[TP, tuple[int, int]] = {}
    filters: dict[str, Any] | None = None
    for tp in committed:
        key = (tp.topic, tp.partition)
        low = marks[key][0]
        if tp.offset >= 0 and tp.metadata:
            saved = orjson.loads(tp.metadata)
            filters = saved["filters"]
            ranges[key] = (max(tp.offset, low), int(saved["end"]))
    if filters is None:
        return _State({tp: (low, high) for tp, (low, high) in marks.items()}, filt.to_json(), False)
    if filters != filt.to_json():
        raise UsageError(
            f"this replay id was started with filters {filters}; "
            "resume it with the same filters or use a new --replay-id"
        )
    for key, (low, _high) in marks.items():
        ranges.setdefault(key, (low, low))  # a partition added later: not part of this replay
    return _State(ranges, filters, True)


class _Transactions:
    """A transactional producer whose every commit also moves the replay group's offsets."""

    def __init__(self, settings: Settings, group: str, consumer: Any, state: _State) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "transactional.id": group,
                # Batched and compressed like the project's other producers: the worker decided
                # records replayed in small uncompressed batches at 0.75 of its rate on the same
                # records batched (docs/performance.md); the wait is nothing to a replay.
                "linger.ms": 50,
                "compression.type": "lz4",
                "transaction.timeout.ms": 60_000,
            },
            logger=QUIET,
        )
        self._consumer = consumer
        self._state = state
        self._errors: list[KafkaError] = []
        self._producer.init_transactions(30)  # fences an earlier run, aborts what it left open
        self._producer.begin_transaction()
        self.in_chunk = 0
        self.chunk_started = time.monotonic()

    def send(self, topic: str, letter: Letter, headers: list[tuple[str, bytes]]) -> None:
        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self._errors.append(err)

        self._producer.produce(
            topic,
            key=letter.key,
            value=letter.value,
            headers=headers,
            on_delivery=on_delivery,
            timestamp=letter.original_timestamp_ms or 0,  # 0: the producer stamps it now
        )
        self._producer.poll(0)
        self.in_chunk += 1

    def commit(self, positions: dict[TP, int], *, again: bool = True) -> None:
        offsets = [
            TopicPartition(t, p, positions.get((t, p), start), _metadata(end, self._state.filters))
            for (t, p), (start, end) in self._state.ranges.items()
        ]
        self._producer.send_offsets_to_transaction(
            offsets, self._consumer.consumer_group_metadata(), 30
        )
        self._producer.commit_transaction(60)
        if self._errors:  # commit_transaction raises first in practice; belt and braces
            raise RuntimeError(f"replay not delivered: {self._errors[0]}")
        if again:
            self._producer.begin_transaction()
        self.in_chunk = 0
        self.chunk_started = time.monotonic()

    def due(self) -> bool:
        return (
            self.in_chunk >= CHUNK_RECORDS or time.monotonic() - self.chunk_started > CHUNK_SECONDS
        )


def _chosen_copies(
    consumer: Any, state: _State, filt: LetterFilter
) -> tuple[set[Place], list[Letter] | None]:
    """Where the one copy of each selected dead letter is, among all the replay covers: from the
    start of each partition (a copy before where a resumed replay stands was sent, or chosen not
    to be, by an earlier run) to the end offsets of the replay's first start. With it, the letters
    read, unless they come to more than KEEP_BYTES: then the replay reads them again."""
    first = FirstCopies()
    kept: list[Letter] | None = []
    size = 0
    marks = watermarks(consumer, sorted({t for t, _ in state.ranges}))
    ranges = {tp: (marks[tp][0], end) for tp, (_start, end) in state.ranges.items()}
    with closing(scan(consumer, ranges)) as letters:
        for letter in letters:
            if filt.matches(letter):
                first.see(letter)
            if kept is not None:
                size += LETTER_OVERHEAD_BYTES + len(letter.value or b"") + len(letter.key or b"")
                if size <= KEEP_BYTES:
                    kept.append(letter)
                else:
                    kept = None
    return first.places(), kept


def _kept_in(
    letters: list[Letter], ranges: dict[TP, tuple[int, int]], advance: Advance | None
) -> Iterator[Letter]:
    """The letters of `ranges` among those read already, as `scan` would give them again."""
    seen = 0
    for x in letters:
        start, end = ranges.get((x.topic, x.partition), (0, 0))
        if start <= x.offset < end:
            seen += 1
            yield x
            if advance is not None and seen % 1000 == 0:
                advance(seen)
    if advance is not None:
        advance(seen)


def replay(
    settings: Settings,
    replay_id: str,
    filt: LetterFilter,
    *,
    dry_run: bool = False,
    rate: float | None = None,
    limit: int | None = None,
    stop: Callable[[], bool] = lambda: False,
    progress: Callable[[int], AbstractContextManager[Advance]] | None = None,
) -> ReplayResult:
    """Replay what `filt` selects, from where this replay id stopped to the end offsets taken
    when it first started. `stop` is polled between records (Ctrl-C sets it); `progress` gets the
    number of records to examine and gives back a callback."""
    group = replay_group(settings, replay_id)
    topics = [filt.topic] if filt.topic else dlq_topics(settings)
    consumer = reader(settings, group)
    try:
        state = _load_state(consumer, topics, filt)
        # The transactional producer's set-up (finding the coordinator, fencing an earlier
        # run: 0.05 to 0.5 s) waits on the broker, not the interpreter: it runs beside the first
        # pass instead of after it.
        with ThreadPoolExecutor(1) as pool:
            setting_up = (
                None if dry_run else pool.submit(_Transactions, settings, group, consumer, state)
            )
            chosen, kept = _chosen_copies(consumer, state, filt)
            tx = None if setting_up is None else setting_up.result()
        result = ReplayResult(replay_id, dry_run, state.resumed)
        if tx is not None and not state.resumed:
            tx.commit({})  # record the end offsets and filters before sending anything
        positions: dict[TP, int] = {}
        with (
            progress(total(state.ranges)) if progress else nullcontext(None) as advance,
            # Closed here, before the consumer it reads (a scan left to the collector would
            # unassign a closed consumer).
            closing(
                scan(consumer, state.ranges, advance)
                if kept is None
                else _kept_in(kept, state.ranges, advance)
            ) as letters,
        ):
            started = time.monotonic()
            for letter in letters:
                if stop():
                    result.interrupted = True
                    break
                where = (letter.topic, letter.partition, letter.offset)
                if not filt.matches(letter):
                    pass
                elif where not in chosen:
                    result.duplicates += 1
                elif letter.truncated:
                    result.truncated += 1
                else:
                    if limit is not None and len(result.selected) >= limit:
                        result.limit_reached = True
                        break
                    result.selected.append(describe(letter))
                    if tx is not None and tx.due():
                        tx.commit(positions)
                    if tx is not None:
                        if rate is not None:
                            wait = started + result.sent / rate - time.monotonic()
                            if wait > 0:
                                time.sleep(wait)
                        headers = replay_headers(letter, replay_id, datetime.now(UTC))
                        tx.send(letter.original_topic, letter, headers)
                        result.sent += 1
                positions[(letter.topic, letter.partition)] = letter.offset + 1
                result.examined += 1
        if tx is not None:
            tx.commit(positions, again=False)
        result.done = not (result.interrupted or result.limit_reached)
        return result
    finally:
        consumer.close()

"""The stream processor, independent of any consumer runtime: a batch of raw records in, decisions
persisted and published, and the answer "acknowledge all of these" out.

decode -> validate -> load history -> decide -> persist -> publish, then the runtime acks. Offsets
may only be committed once a batch's BatchResult is returned: by then every valid event's decision
is committed in Postgres, every outcome and dead letter is on the broker. Transient faults are
retried for as long as they last (the partition waits); permanent per-event faults go to the
record's dead-letter topic and the batch carries on (`intake` checks a record's size before it is
decoded and its event time after; `dead_letters` sees each dead letter through, truncated or kept
in Postgres if the broker refuses it). Anything else is a bug and propagates: the
runtime must then stop without acknowledging the batch.

Two ways to drive it. `process` takes one batch all the way through. `submit` overlaps batches:
batch N is written and published on a background thread while the caller's thread decodes and
decides batch N+1, so Postgres and Kafka work on one core while the rules run on the other. N+1 is
decided on a history that counts N's decisions exactly once (see `PostgresStore.load_history`),
and is only written after N turned out exactly as it was decided; if N did not (its write failed
and was redone, or a concurrent worker had written part of it), N+1 is decided again from scratch.
Either way a batch's result is handed back only after its own write and publish, and in order.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain

from msgspec import Struct

from order_recovery.adapters.kafka_producer import KafkaPublisher, OutgoingMessage
from order_recovery.adapters.metrics import WorkerMetrics
from order_recovery.adapters.postgres.store import (
    DecisionRow,
    HistoryKeys,
    PostgresStore,
)
from order_recovery.adapters.postgres.unsendable import UnsendableStore
from order_recovery.adapters.retry import RetryPolicy, transient_cause
from order_recovery.config import Settings
from order_recovery.dead_letters import DeadLetterSender
from order_recovery.domain.contract import decode_event
from order_recovery.domain.decision import Decision, Outcome
from order_recovery.domain.errors import (
    EventFromFuture,
    InvalidEvent,
    MalformedJson,
    OversizedRecord,
    SchemaViolation,
    UnknownEventType,
    UnknownPlatform,
)
from order_recovery.domain.events import Event
from order_recovery.domain.history import business_day
from order_recovery.domain.outcome import outcome_json
from order_recovery.domain.policy import Policy, policy_for
from order_recovery.domain.rules import decide
from order_recovery.intake import check_event_time, check_size
from order_recovery.records import DeadLetter, SourceRecord

log = logging.getLogger(__name__)

RULE_ERROR = "rule_error"
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


@dataclass(frozen=True, slots=True)
class BatchResult:
    records: int
    decided: int
    duplicates: int
    dead_letters: tuple[DeadLetter, ...]
    # Next offset to commit per (topic, partition): last processed offset + 1.
    commit_offsets: dict[tuple[str, int], int] = field(default_factory=dict)


class _Decided(Struct, frozen=True, gc=False):
    record: SourceRecord
    event: Event
    decision: Decision
    row: DecisionRow


@dataclass(slots=True)
class _Batch:
    """A batch between its decisions and its result."""

    records: Sequence[SourceRecord]
    parsed: list[tuple[SourceRecord, Event, Policy]]
    dead: list[DeadLetter]
    started: float
    decided: list[_Decided] = field(default_factory=list)
    duplicates: Counter[str] = field(default_factory=Counter)
    # Written by the background thread: the decisions this batch inserted.
    written: Future[_Written] | None = None
    # True once the batch was written exactly as decided (what a successor may build on).
    as_decided: bool = False

    def forget_decisions(self) -> None:
        """Before deciding again: only the decode's verdicts stand."""
        self.decided, self.duplicates = [], Counter()
        self.dead = [d for d in self.dead if d.error_class != RULE_ERROR]


@dataclass(frozen=True, slots=True)
class _Written:
    """The decisions a write inserted, and the outbox batch holding their outcomes."""

    fresh: list[_Decided]
    outbox_batch: str | None


class _Unpublished(Exception):
    """The write committed but the publish failed: only the publish is to be retried."""

    def __init__(self, written: _Written, cause: Exception) -> None:
        super().__init__(str(cause))
        self.written, self.cause = written, cause


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        policies: Mapping[str, Policy],
        store: PostgresStore,
        publisher: KafkaPublisher,
        metrics: WorkerMetrics,
        retry: RetryPolicy,
        mark_published: Callable[[list[str]], None] | None = None,
        reader: PostgresStore | None = None,
        unsendable: UnsendableStore | None = None,
    ) -> None:
        self._settings = settings
        self._policies = policies
        self._store = store
        self._publisher = publisher
        self._metrics = metrics
        self._retry = retry
        # The worker marks published outbox batches in the background (OutboxMarker); without one,
        # the mark is a transaction of its own right here.
        self._mark_published = mark_published or self._mark_now
        # History reads for batch N+1 while N is written need a connection of their own;
        # without one, `submit` finishes N before deciding N+1.
        self._reader = reader
        self._dead_letters = DeadLetterSender(
            settings, publisher, unsendable or UnsendableStore(settings.database_url), metrics
        )
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="pipeline-writer")
        self._in_flight: _Batch | None = None

    # ------------------------------------------------------------------ driving it
    def process(self, records: Sequence[SourceRecord]) -> BatchResult:
        """One batch, start to finish."""
        done = self.submit(records)
        done += self.drain()
        (result,) = done
        return result

    def submit(self, records: Sequence[SourceRecord]) -> list[BatchResult]:
        """Decide this batch and start writing it; return the results of earlier batches that
        finished meanwhile (at most one), in order. Call `drain` when no batch follows."""
        batch = self._decode(records)
        prior = self._in_flight
        decided_early = False
        if prior is not None and self._reader is not None:
            try:
                self._decide(batch, self._reader, prior)
                decided_early = True
            except Exception as exc:  # a fault while reading: decide again once N is done
                if transient_cause(exc) is None:
                    raise
        done = self.drain()
        if not (decided_early and prior is not None and prior.as_decided):
            batch.forget_decisions()
            self._retry.call(lambda: self._decide(batch, self._reader or self._store), "decide")
        batch.written = self._writer.submit(self._write_and_publish, batch)
        self._in_flight = batch
        return done

    def drain(self) -> list[BatchResult]:
        """Finish the batch being written, if any: its result, or nothing."""
        batch, self._in_flight = self._in_flight, None
        return [] if batch is None else [self._finish(batch)]

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._dead_letters.close()

    # ------------------------------------------------------------------ the stages
    def _decode(self, records: Sequence[SourceRecord]) -> _Batch:
        batch = _Batch(records, [], [], time.perf_counter())
        max_bytes, max_skew_s = self._settings.max_record_bytes, self._settings.max_event_skew_s
        for record in records:
            try:
                check_size(record, max_bytes)
                event = decode_event(record.value if record.value is not None else b"")
                check_event_time(event, record, max_skew_s)
                policy = policy_for(self._policies, event.envelope.platform)
            except InvalidEvent as exc:
                batch.dead.append(DeadLetter(record, exc.error_class, str(exc)))
                continue
            batch.parsed.append((record, event, policy))
        return batch

    def _decide(self, batch: _Batch, store: PostgresStore, prior: _Batch | None = None) -> None:
        """Decide every event of the batch in order on its stored history (and `prior`'s
        decisions, whether or not their write has committed yet). Pure apart from the read:
        redoing it is always safe."""
        if not batch.parsed:
            return
        pending = [] if prior is None else [(d.event, d.decision) for d in prior.decided]
        stored = store.load_history(_history_keys(batch.parsed), pending)
        decided_at = datetime.now(UTC)  # the worker's clock, once per batch
        seen: set[str] = set()
        for record, event, policy in batch.parsed:
            env = event.envelope
            if env.event_id in stored.decided_event_ids or env.event_id in seen:
                batch.duplicates[str(env.event_type)] += 1
                continue
            seen.add(env.event_id)
            try:
                decision = decide(event, stored.order_history(event), policy)
            except Exception as exc:  # a rule that raises is this event's fault, not the batch's
                log.exception("rule failed for event %s", env.event_id)
                batch.dead.append(DeadLetter(record, RULE_ERROR, f"{type(exc).__name__}: {exc}"))
                continue
            from_status = stored.case_status.get((env.order_id, str(env.event_type)))
            row = self._row(record, event, decision, from_status, decided_at)
            batch.decided.append(_Decided(record, event, decision, row))
            stored.advance(event, decision)

    def _write_and_publish(self, batch: _Batch) -> _Written:
        """On the writer thread, one attempt: the caller's thread owns retries (they must keep
        the consumer polling, which only that thread may do)."""
        written = self._write(batch)
        try:
            self._publish(written.fresh, batch.dead)
        except Exception as exc:
            raise _Unpublished(written, exc) from exc
        return written

    def _write(self, batch: _Batch) -> _Written:
        saved = self._store.save_decisions([d.row for d in batch.decided])
        self._metrics.pg_transaction_seconds.observe(self._store.last_transaction_s)
        inserted = set(saved.event_ids)
        fresh = [d for d in batch.decided if d.event.envelope.event_id in inserted]
        return _Written(fresh, saved.outbox_batch)

    def _finish(self, batch: _Batch) -> BatchResult:
        assert batch.written is not None
        redone = False
        try:
            written = batch.written.result()
        except _Unpublished as unpublished:
            if transient_cause(unpublished.cause) is None:
                raise unpublished.cause from None
            written = unpublished.written
            self._retry.call(
                lambda: self._publish(written.fresh, batch.dead),
                "publish",
                after=unpublished.cause,
            )
        except Exception as exc:
            if transient_cause(exc) is None:
                raise
            written = self._retry.call(lambda: self._redo(batch), "persist batch", after=exc)
            redone = True
        fresh = written.fresh
        batch.as_decided = not redone and len(fresh) == len(batch.decided)
        inserted = {d.event.envelope.event_id for d in fresh}
        for d in batch.decided:
            if d.event.envelope.event_id not in inserted:  # another worker got there first
                batch.duplicates[str(d.event.envelope.event_type)] += 1
        if written.outbox_batch is not None:
            self._mark_published([written.outbox_batch])
        self._observe(batch, fresh)
        commit: dict[tuple[str, int], int] = {}
        for r in batch.records:
            tp = (r.topic, r.partition)
            commit[tp] = max(commit.get(tp, 0), r.offset + 1)
        return BatchResult(
            len(batch.records),
            len(fresh),
            sum(batch.duplicates.values()),
            tuple(batch.dead),
            commit,
        )

    def _redo(self, batch: _Batch) -> _Written:
        """After a failed attempt: decide again on a fresh read (the failed write may or may
        not have committed), write, publish. Nothing else is in flight by now."""
        batch.forget_decisions()
        self._decide(batch, self._store)
        written = self._write(batch)
        self._retry.call(lambda: self._publish(written.fresh, batch.dead), "publish")
        return written

    def _row(
        self,
        record: SourceRecord,
        event: Event,
        decision: Decision,
        from_status: str | None,
        decided_at: datetime,
    ) -> DecisionRow:
        env = event.envelope
        comp = decision.compensation
        return DecisionRow(
            event_id=env.event_id,
            order_id=env.order_id,
            exception_type=env.event_type,
            platform=env.platform,
            merchant_id=env.merchant_id,
            buyer_id=env.buyer_id,
            category=env.category,
            amount_fen=env.amount_fen,
            occurred_at=env.occurred_at,
            outcome=decision.outcome,
            rule_ids=decision.rule_ids,
            risk_flags=decision.risk_flags,
            reason=decision.reason,
            policy_version=decision.policy_version,
            actions=decision.actions,
            compensation_kind=None if comp is None else comp.kind,
            compensation_fen=None if comp is None else comp.amount_fen,
            event_day=business_day(env.occurred_at),
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            event_json=(record.value or b"{}").decode(),
            outcome_payload=outcome_json(event, decision, decided_at=decided_at),
            from_status=from_status,
        )

    # ------------------------------------------------------------------ publish
    def _publish(self, decided: Sequence[_Decided], dead: Sequence[DeadLetter]) -> None:
        outcomes = [
            OutgoingMessage(
                self._settings.outcome_topic,
                d.event.envelope.order_id.encode(),
                d.row.outcome_payload,
            )
            for d in decided
        ]
        self._dead_letters.publish(dead, outcomes)

    def _mark_now(self, batch_ids: list[str]) -> None:
        self._retry.call(lambda: self._store.mark_published(batch_ids), "mark outbox published")

    # ------------------------------------------------------------------ metrics
    def _observe(self, batch: _Batch, decided: Sequence[_Decided]) -> None:
        records, dead, duplicates = batch.records, batch.dead, batch.duplicates
        elapsed_s = time.perf_counter() - batch.started
        m = self._metrics
        consumed = Counter(_event_type_of_topic(r.topic, self._settings) for r in records)
        for event_type, n in consumed.items():
            m.consumed.labels(event_type).inc(n)
        for event_type, n in duplicates.items():
            m.duplicates.labels(event_type).inc(n)
        # Counted per batch in as few passes as possible (C-level Counter updates), then one
        # labelled update per series: the metrics cost a batch, not an event.
        outcomes = Counter(
            (d.event.envelope.event_type, d.event.envelope.platform, d.decision.outcome)
            for d in decided
        )
        actions = Counter(chain.from_iterable(d.decision.actions for d in decided))
        rules = Counter(chain.from_iterable(d.decision.rule_ids for d in decided))
        money: Counter[tuple[str, str]] = Counter()
        recovered: dict[tuple[str, str], list[float]] = {}
        now = datetime.now(UTC)
        for d in decided:
            env, decision = d.event.envelope, d.decision
            comp = decision.compensation
            if comp is not None:
                money[(comp.kind, env.platform)] += comp.amount_fen
            if decision.outcome is Outcome.RECOVERED:
                recovered.setdefault((env.event_type, env.platform), []).append(
                    max(0.0, (now - env.occurred_at).total_seconds())
                )
        for (event_type, platform), waits in recovered.items():
            histogram = m.time_to_recovery.labels(event_type, platform)
            for wait in waits:
                histogram.observe(wait)
        for labels, n in outcomes.items():
            m.decided.labels(*labels).inc(n)
        for action, n in actions.items():
            m.actions.labels(action).inc(n)
        for rule_id, n in rules.items():
            m.rules_fired.labels(rule_id).inc(n)
        for (kind, platform), fen in money.items():
            m.compensation_fen.labels(kind, platform).inc(fen)
        for reason, n in Counter(letter.error_class for letter in dead).items():
            m.dead_lettered.labels(reason).inc(n)
        m.batch_size.observe(len(records))
        m.batch_seconds.observe(elapsed_s)


def _event_type_of_topic(topic: str, settings: Settings) -> str:
    prefix = settings.topic_prefix
    return topic[len(prefix) :] if topic.startswith(prefix) else topic


def _history_keys(parsed: Sequence[tuple[SourceRecord, Event, Policy]]) -> HistoryKeys:
    envs = [e.envelope for _, e, _ in parsed]
    return HistoryKeys(
        order_ids=sorted({env.order_id for env in envs}),
        buyer_days=sorted({(env.buyer_id, business_day(env.occurred_at)) for env in envs}),
    )

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
and was redone, or it lost a race to another worker), N+1 is decided again from scratch.
Either way a batch's result is handed back only after its own write and publish, and in order.

Other workers. A write that meets another worker's commit (the same event decided, the same
compensation granted, a cross-worker limit counter past what a decision relied on: see
`domain.limits`) is refused whole, and the batch is decided again on a fresh read. Before its first
batch of a partition the pipeline claims the partition in Postgres (a lease with an epoch), and
every write checks the batch's leases: a zombie whose partition was claimed by another worker
writes nothing of it, and its records of that partition are left to their new owner (the runtime
reports assignments, so such a partition is only claimed again once it is assigned again).
Outcomes of one order reach the topic in decision order: a batch that finds events already decided
first sends any of their outcomes a crash left unpublished.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    OutboxBatch,
    Partition,
    PostgresStore,
)
from order_recovery.adapters.postgres.unsendable import UnsendableStore
from order_recovery.adapters.retry import RetryPolicy, transient_cause
from order_recovery.config import Settings
from order_recovery.core.dead_letters import DeadLetterSender
from order_recovery.core.faults import Fenced, WriteConflict
from order_recovery.core.intake import check_event_time, check_size
from order_recovery.core.records import DeadLetter, SourceRecord
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
from order_recovery.domain.limits import LimitClaim, LimitUse, fold_claims, limit_uses
from order_recovery.domain.outcome import outcome_json
from order_recovery.domain.policy import Policy, policy_for
from order_recovery.domain.rules import decide

log = logging.getLogger(__name__)

RULE_ERROR = "rule_error"
#: Outbox batches this pipeline published and remembers, so that a batch meeting their events
#: again (an exact duplicate in the feed) does not resend them before their background mark lands;
#: a handful of batches is seconds of marks.
PUBLISHED_HERE_KEPT = 16
#: A batch decided again this many times in a row on fresh reads, and still refused, is logged as
#: an error: each refusal means another worker committed first, which cannot go on for long.
CONFLICTS_WORTH_A_WORD = 10
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
    # Events found decided by an earlier batch: their outcomes may still be in the outbox, unsent.
    duplicate_ids: list[str] = field(default_factory=list)
    # Outbox batches this pipeline published itself and may not have marked yet.
    published_here: list[str] = field(default_factory=list)
    # What the decisions add to and rely on of the cross-worker limit counters.
    claims: list[LimitClaim] = field(default_factory=list)
    # The lease epoch of each partition of the batch, checked by its write.
    leases: dict[Partition, int] = field(default_factory=dict)
    # Written by the background thread: the outbox batch holding the outcomes (None: none).
    written: Future[str | None] | None = None
    # True once the batch was written exactly as decided (what a successor may build on).
    as_decided: bool = False
    # Writes refused as stale in a row (each after a fresh read).
    conflicts: int = 0

    def forget_decisions(self) -> None:
        """Before deciding again: only the decode's verdicts stand."""
        self.decided, self.duplicates, self.duplicate_ids = [], Counter(), []
        self.claims = []
        self.dead = [d for d in self.dead if d.error_class != RULE_ERROR]

    def drop_partitions(self, lost: frozenset[Partition] | set[Partition]) -> None:
        """Leave these partitions' records to their new owner: not decided, not committed."""
        self.records = [r for r in self.records if (r.topic, r.partition) not in lost]
        self.parsed = [p for p in self.parsed if (p[0].topic, p[0].partition) not in lost]
        self.dead = [d for d in self.dead if (d.record.topic, d.record.partition) not in lost]
        self.forget_decisions()

    @property
    def partitions(self) -> set[Partition]:
        return {(r.topic, r.partition) for r in self.records}


class _Unpublished(Exception):
    """The write committed but the publish failed: only the publish is to be retried."""

    def __init__(self, outbox_batch: str | None, cause: Exception) -> None:
        super().__init__(str(cause))
        self.outbox_batch, self.cause = outbox_batch, cause


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
        # This worker's lease epoch per partition it claimed (see `_claim`); the partitions the
        # runtime says are assigned (None until it says anything: then every partition of a batch
        # is ours, as for a pipeline driven directly); the partitions another worker claimed from
        # under this one, not to be claimed back until the runtime assigns them again.
        self._leases: dict[Partition, int] = {}
        self._assigned: set[Partition] | None = None
        self._fenced: set[Partition] = set()
        self._published_here: deque[str] = deque(maxlen=PUBLISHED_HERE_KEPT)
        # The lease owner: unique per pipeline, so that even two processes configured with the
        # same worker id (a restart beside a paused zombie) fence each other.
        self._lease_owner = f"{settings.worker_id}#{uuid.uuid4().hex[:12]}"

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
        batch.published_here = list(self._published_here)
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

    # ------------------------------------------------------------------ partitions
    def assigned(self, partitions: Iterable[Partition]) -> None:
        """The runtime's word that these partitions are this worker's (again): they may be
        claimed at their next batch, even if another worker had claimed them from under us."""
        partitions = set(partitions)
        self._assigned = (self._assigned or set()) | partitions
        self._fenced -= partitions

    def revoked(self, partitions: Iterable[Partition]) -> None:
        """The runtime's word that these partitions went to another worker: records of them in
        a batch not yet decided are left to it, and their leases forgotten (a batch of them in
        flight may still commit, unless the new owner claimed them first)."""
        partitions = set(partitions)
        self._assigned = (self._assigned or set()) - partitions
        for tp in partitions:
            self._leases.pop(tp, None)

    def _claim(self, batch: _Batch, store: PostgresStore) -> None:
        """Make sure the batch's partitions are leased to this worker before its history is
        read: a new claim waits for a zombie's write in progress, so the read sees it, and any
        write of the zombie after it is refused. Records of a partition that is not ours (any
        more) are left to its owner; claiming it would steal it back."""
        assigned = self._assigned
        lost = {
            tp
            for tp in batch.partitions
            if tp in self._fenced or (assigned is not None and tp not in assigned)
        }
        if lost:
            batch.drop_partitions(lost)
        new = batch.partitions - self._leases.keys()
        if new:
            self._leases.update(store.claim_partitions(new, self._lease_owner))
        batch.leases = {tp: self._leases[tp] for tp in batch.partitions}

    def _lose(self, batch: _Batch, partitions: frozenset[Partition]) -> None:
        log.warning(
            "partitions %s were claimed by another worker: their records are left to it",
            sorted(partitions),
        )
        for tp in partitions:
            self._leases.pop(tp, None)
        self._fenced |= partitions
        batch.drop_partitions(partitions)

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

    def _decide(
        self,
        batch: _Batch,
        store: PostgresStore,
        prior: _Batch | None = None,
        recheck: bool = False,
    ) -> None:
        """Decide every event of the batch in order on its stored history (and `prior`'s
        decisions, whether or not their write has committed yet). Pure apart from the read
        (and a claim of partitions new to this worker): redoing it is always safe. `recheck`
        after a write conflict: the read also looks the batch's event ids up themselves."""
        self._claim(batch, store)
        if not batch.parsed:
            return
        pending = [] if prior is None else [(d.event, d.decision) for d in prior.decided]
        keys = _history_keys(batch.parsed, recheck)
        stored = store.load_history(keys, pending)
        decided_at = datetime.now(UTC)  # the worker's clock, once per batch
        seen: set[str] = set()
        uses: list[LimitUse] = []
        for record, event, policy in batch.parsed:
            env = event.envelope
            if env.event_id in seen:
                batch.duplicates[str(env.event_type)] += 1
                continue
            if env.event_id in stored.decided_event_ids:
                batch.duplicates[str(env.event_type)] += 1
                batch.duplicate_ids.append(env.event_id)
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
            uses += limit_uses(event, decision, policy)
            stored.advance(event, decision)
        batch.claims = fold_claims(uses)

    def _write_and_publish(self, batch: _Batch) -> str | None:
        """On the writer thread, one attempt: the caller's thread owns retries (they must keep
        the consumer polling, which only that thread may do)."""
        outbox_batch = self._write(batch)
        try:
            self._publish(batch)
        except Exception as exc:
            raise _Unpublished(outbox_batch, exc) from exc
        return outbox_batch

    def _write(self, batch: _Batch) -> str | None:
        outbox_batch = self._store.save_decisions(
            [d.row for d in batch.decided], batch.claims, batch.leases
        )
        self._metrics.pg_transaction_seconds.observe(self._store.last_transaction_s)
        return outbox_batch

    def _finish(self, batch: _Batch) -> BatchResult:
        assert batch.written is not None
        redone = False
        try:
            outbox_batch = batch.written.result()
        except _Unpublished as unpublished:
            if transient_cause(unpublished.cause) is None:
                raise unpublished.cause from None
            outbox_batch = unpublished.outbox_batch
            self._retry.call(lambda: self._publish(batch), "publish", after=unpublished.cause)
        except Fenced as fenced:
            self._lose(batch, fenced.partitions)
            outbox_batch = self._retry.call(lambda: self._redo(batch), "persist batch")
            redone = True
        except Exception as exc:
            if transient_cause(exc) is None:
                raise
            outbox_batch = self._retry.call(lambda: self._redo(batch), "persist batch", after=exc)
            redone = True
        batch.as_decided = not redone
        if outbox_batch is not None:
            self._published_here.append(outbox_batch)
            self._mark_published([outbox_batch])
        self._observe(batch)
        commit: dict[tuple[str, int], int] = {}
        for r in batch.records:
            tp = (r.topic, r.partition)
            commit[tp] = max(commit.get(tp, 0), r.offset + 1)
        return BatchResult(
            len(batch.records),
            len(batch.decided),
            sum(batch.duplicates.values()),
            tuple(batch.dead),
            commit,
        )

    def _redo(self, batch: _Batch) -> str | None:
        """After a failed attempt: decide again on a fresh read (the failed write may or may
        not have committed; another worker's commit may have made the decisions stale), write,
        publish. Nothing else is in flight by now."""
        while True:
            batch.forget_decisions()
            self._decide(batch, self._store, recheck=True)
            try:
                outbox_batch = self._write(batch)
            except Fenced as fenced:
                self._lose(batch, fenced.partitions)
                continue
            except WriteConflict:
                batch.conflicts += 1
                if batch.conflicts % CONFLICTS_WORTH_A_WORD == 0:
                    # Each conflict is another worker's commit; a batch that keeps losing on
                    # fresh reads has claims its own read cannot satisfy: a bug in the limits.
                    log.error(
                        "batch of %d records refused %d times in a row on fresh reads; claims %s",
                        len(batch.records),
                        batch.conflicts,
                        batch.claims,
                    )
                raise
            self._retry.call(lambda: self._publish(batch), "publish")
            return outbox_batch

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
    def _publish(self, batch: _Batch) -> None:
        """The batch's dead letters and outcomes. First, the outcomes of its already-decided
        events that a crash (or a zombie) left in the outbox unsent, so that they reach the topic
        before anything newer of the same orders; they are then marked sent."""
        if batch.duplicate_ids:
            resent = self._store.publish_unpublished_holding(
                batch.duplicate_ids, batch.published_here, self.publish_outbox
            )
            if resent:
                log.info("sent %d outcome(s) a crash had left in the outbox", resent)
        outcomes = [
            OutgoingMessage(
                self._settings.outcome_topic,
                d.event.envelope.order_id.encode(),
                d.row.outcome_payload,
            )
            for d in batch.decided
        ]
        self._dead_letters.publish(batch.dead, outcomes)

    def publish_outbox(self, batches: list[OutboxBatch]) -> None:
        """Send outbox batches' outcomes, in order (the outbox relay's and the catch-up's)."""
        topic = self._settings.outcome_topic
        messages = [OutgoingMessage(topic, k.encode(), v) for b in batches for k, v in b.messages]
        self._publisher.publish(messages)
        self._metrics.outcomes_published.inc(sum(len(b.messages) for b in batches))

    def _mark_now(self, batch_ids: list[str]) -> None:
        self._retry.call(lambda: self._store.mark_published(batch_ids), "mark outbox published")

    # ------------------------------------------------------------------ metrics
    def _observe(self, batch: _Batch) -> None:
        records, dead, duplicates = batch.records, batch.dead, batch.duplicates
        decided = batch.decided
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


def _history_keys(
    parsed: Sequence[tuple[SourceRecord, Event, Policy]], with_event_ids: bool
) -> HistoryKeys:
    envs = [e.envelope for _, e, _ in parsed]
    return HistoryKeys(
        order_ids=sorted({env.order_id for env in envs}),
        buyer_days=sorted({(env.buyer_id, business_day(env.occurred_at)) for env in envs}),
        event_ids=sorted({env.event_id for env in envs}) if with_event_ids else None,
    )

"""The stream processor, independent of any consumer runtime: a batch of raw records in, decisions
persisted and published, and the answer "acknowledge all of these" out.

decode -> validate -> load history -> decide -> persist -> publish, then the runtime acks. Offsets
may only be committed after `process` returns: by then every valid event's decision is committed in
Postgres, every outcome and dead letter is on the broker. Transient faults are retried inside
`process` for as long as they last (the partition waits); permanent per-event faults go to the
record's dead-letter topic and the batch carries on. Anything else is a bug and propagates: the
runtime must then stop without acknowledging the batch.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from order_recovery.adapters.kafka_producer import KafkaPublisher, OutgoingMessage
from order_recovery.adapters.metrics import WorkerMetrics
from order_recovery.adapters.postgres.store import (
    DecisionRow,
    HistoryKeys,
    PostgresStore,
)
from order_recovery.adapters.retry import RetryPolicy
from order_recovery.config import Settings
from order_recovery.domain.contract import decode_event
from order_recovery.domain.decision import Decision, Outcome
from order_recovery.domain.errors import (
    InvalidEvent,
    MalformedJson,
    SchemaViolation,
    UnknownEventType,
    UnknownPlatform,
)
from order_recovery.domain.events import Event
from order_recovery.domain.history import business_day
from order_recovery.domain.outcome import outcome_event
from order_recovery.domain.policy import Policy, policy_for
from order_recovery.domain.rules import decide

log = logging.getLogger(__name__)

DLQ_HEADER_PREFIX = "dlq."
REPLAY_ATTEMPT_HEADER = "dlq.attempt"
RULE_ERROR = "rule_error"
DEAD_LETTER_REASONS = tuple(
    cls.error_class for cls in (MalformedJson, SchemaViolation, UnknownEventType, UnknownPlatform)
)


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A consumed record, as any runtime can describe it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: SourceRecord
    error_class: str
    message: str


@dataclass(frozen=True, slots=True)
class BatchResult:
    records: int
    decided: int
    duplicates: int
    dead_letters: tuple[DeadLetter, ...]
    # Next offset to commit per (topic, partition): last processed offset + 1.
    commit_offsets: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Decided:
    record: SourceRecord
    event: Event
    decision: Decision
    row: DecisionRow


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
    ) -> None:
        self._settings = settings
        self._policies = policies
        self._store = store
        self._publisher = publisher
        self._metrics = metrics
        self._retry = retry
        # The worker marks published outbox rows in the background (OutboxMarker); without one,
        # the mark is a transaction of its own right here.
        self._mark_published = mark_published or self._mark_now

    # ------------------------------------------------------------------ the batch
    def process(self, records: Sequence[SourceRecord]) -> BatchResult:
        started = time.perf_counter()
        parsed, dead = self._decode(records)
        decided, rule_failures, duplicates = self._retry.call(
            lambda: self._decide_and_persist(parsed), "persist batch"
        )
        dead.extend(rule_failures)
        self._publish(decided, dead)
        self._observe(records, decided, dead, duplicates, time.perf_counter() - started)
        commit: dict[tuple[str, int], int] = {}
        for r in records:
            tp = (r.topic, r.partition)
            commit[tp] = max(commit.get(tp, 0), r.offset + 1)
        return BatchResult(
            len(records), len(decided), sum(duplicates.values()), tuple(dead), commit
        )

    def _decode(
        self, records: Sequence[SourceRecord]
    ) -> tuple[list[tuple[SourceRecord, Event, Policy]], list[DeadLetter]]:
        parsed: list[tuple[SourceRecord, Event, Policy]] = []
        dead: list[DeadLetter] = []
        for record in records:
            try:
                event = decode_event(record.value if record.value is not None else b"")
                policy = policy_for(self._policies, event.envelope.platform)
            except InvalidEvent as exc:
                dead.append(DeadLetter(record, exc.error_class, str(exc)))
                continue
            parsed.append((record, event, policy))
        return parsed, dead

    def _decide_and_persist(
        self, parsed: Sequence[tuple[SourceRecord, Event, Policy]]
    ) -> tuple[list[_Decided], list[DeadLetter], Counter[str]]:
        """One unit of work, retried whole: history is re-read on every attempt so a decision
        never rests on a snapshot older than the transaction that records it."""
        duplicates: Counter[str] = Counter()
        if not parsed:
            return [], [], duplicates
        stored = self._store.load_history(_history_keys(parsed))
        decided: list[_Decided] = []
        failures: list[DeadLetter] = []
        seen: set[str] = set()
        for record, event, policy in parsed:
            env = event.envelope
            if env.event_id in stored.decided_event_ids or env.event_id in seen:
                duplicates[str(env.event_type)] += 1
                continue
            seen.add(env.event_id)
            try:
                decision = decide(event, stored.order_history(event), policy)
            except Exception as exc:  # a rule that raises is this event's fault, not the batch's
                log.exception("rule failed for event %s", env.event_id)
                failures.append(DeadLetter(record, RULE_ERROR, f"{type(exc).__name__}: {exc}"))
                continue
            from_status = stored.case_status.get((env.order_id, str(env.event_type)))
            row = self._row(record, event, decision, from_status)
            decided.append(_Decided(record, event, decision, row))
            stored.advance(event, decision)
        inserted = set(self._store.save_decisions([d.row for d in decided]))
        self._metrics.pg_transaction_seconds.observe(self._store.last_transaction_s)
        fresh = []
        for d in decided:
            if d.event.envelope.event_id in inserted:
                fresh.append(d)
            else:  # decided meanwhile by another worker (a rebalance overlap)
                duplicates[str(d.event.envelope.event_type)] += 1
        return fresh, failures, duplicates

    def _row(
        self, record: SourceRecord, event: Event, decision: Decision, from_status: str | None
    ) -> DecisionRow:
        env = event.envelope
        comp = decision.compensation
        outcome = outcome_event(event, decision, decided_at=datetime.now(UTC))
        return DecisionRow(
            event_id=env.event_id,
            order_id=env.order_id,
            exception_type=str(env.event_type),
            platform=env.platform,
            merchant_id=env.merchant_id,
            buyer_id=env.buyer_id,
            category=str(env.category),
            amount_fen=env.amount_fen,
            occurred_at=env.occurred_at,
            outcome=str(decision.outcome),
            rule_ids=list(decision.rule_ids),
            risk_flags=[str(f) for f in decision.risk_flags],
            reason=decision.reason,
            policy_version=decision.policy_version,
            actions=[str(a) for a in decision.actions],
            compensation_kind=None if comp is None else str(comp.kind),
            compensation_fen=None if comp is None else comp.amount_fen,
            event_day=business_day(env.occurred_at),
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            event_json=(record.value or b"{}").decode(),
            outcome_id=outcome["event_id"],
            outcome_payload=orjson.dumps(outcome),
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
        letters = [self._dead_letter_message(letter) for letter in dead]
        self._retry.call(lambda: self._publisher.publish([*letters, *outcomes]), "publish")
        ids = [d.event.envelope.event_id for d in decided]
        self._mark_published(ids)

    def _mark_now(self, event_ids: list[str]) -> None:
        self._retry.call(lambda: self._store.mark_published(event_ids), "mark outbox published")

    def _dead_letter_message(self, letter: DeadLetter) -> OutgoingMessage:
        r = letter.record
        previous = dict(r.headers).get(REPLAY_ATTEMPT_HEADER)
        attempt = int(previous) + 1 if previous and previous.isdigit() else 1
        original = [(k, v) for k, v in r.headers if not k.startswith(DLQ_HEADER_PREFIX)]
        headers = [
            *original,
            ("dlq.error.class", letter.error_class.encode()),
            ("dlq.error.message", letter.message.encode()[:4000]),
            ("dlq.original.topic", r.topic.encode()),
            ("dlq.original.partition", str(r.partition).encode()),
            ("dlq.original.offset", str(r.offset).encode()),
            ("dlq.original.timestamp", str(r.timestamp_ms or "").encode()),
            (REPLAY_ATTEMPT_HEADER, str(attempt).encode()),
            ("dlq.failed.at", datetime.now(UTC).isoformat().encode()),
            ("dlq.worker.id", self._settings.worker_id.encode()),
        ]
        return OutgoingMessage(Settings.dlq_topic(r.topic), r.key, r.value, headers)

    # ------------------------------------------------------------------ metrics
    def _observe(
        self,
        records: Sequence[SourceRecord],
        decided: Sequence[_Decided],
        dead: Sequence[DeadLetter],
        duplicates: Counter[str],
        elapsed_s: float,
    ) -> None:
        m = self._metrics
        consumed = Counter(_event_type_of_topic(r.topic, self._settings) for r in records)
        for event_type, n in consumed.items():
            m.consumed.labels(event_type).inc(n)
        for event_type, n in duplicates.items():
            m.duplicates.labels(event_type).inc(n)
        outcomes: Counter[tuple[str, str, str]] = Counter()
        actions: Counter[str] = Counter()
        rules: Counter[str] = Counter()
        money: Counter[tuple[str, str]] = Counter()
        now = datetime.now(UTC)
        for d in decided:
            env = d.event.envelope
            outcomes[(str(env.event_type), env.platform, str(d.decision.outcome))] += 1
            actions.update(str(a) for a in d.decision.actions)
            rules.update(d.decision.rule_ids)
            if d.decision.compensation is not None:
                comp = d.decision.compensation
                money[(str(comp.kind), env.platform)] += comp.amount_fen
            if d.decision.outcome is Outcome.RECOVERED:
                m.time_to_recovery.labels(str(env.event_type), env.platform).observe(
                    max(0.0, (now - env.occurred_at).total_seconds())
                )
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
        event_ids=sorted({env.event_id for env in envs}),
        order_ids=sorted({env.order_id for env in envs}),
        buyer_days=sorted({(env.buyer_id, business_day(env.occurred_at)) for env in envs}),
    )

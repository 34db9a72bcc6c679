"""One batch on its way through the pipeline: its records decoded (with the intake checks), its
events decided in order on the stored history, and what it hands back when finished (the result
for the runtime, the report for the metrics). No I/O: the pipeline reads and writes it through
the ports. `decode` and `decide` are the per-event hot path: keep them free of extra work."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime

from order_recovery.config import Settings
from order_recovery.core.dead_letters import RULE_ERROR
from order_recovery.core.intake import check_event_time, check_size
from order_recovery.core.ports import BatchReport
from order_recovery.core.records import (
    DeadLetter,
    Decided,
    HistoryKeys,
    Partition,
    SourceRecord,
)
from order_recovery.core.stored_history import StoredHistory
from order_recovery.domain.case import Transition, open_case
from order_recovery.domain.contract import decode_event
from order_recovery.domain.errors import InvalidEvent
from order_recovery.domain.events import Event
from order_recovery.domain.history import business_day
from order_recovery.domain.limits import LimitClaim, LimitUse, fold_claims, limit_uses
from order_recovery.domain.outcome import outcome_json
from order_recovery.domain.policy import Policy, policy_for
from order_recovery.domain.rules import decide as decide_event

log = logging.getLogger(__name__)

#: A batch decided again this many times in a row on fresh reads, and still refused, is logged as
#: an error: each refusal means another worker committed first, which cannot go on for long.
CONFLICTS_WORTH_A_WORD = 10


@dataclass(frozen=True, slots=True)
class BatchResult:
    records: int
    decided: int
    duplicates: int
    dead_letters: tuple[DeadLetter, ...]
    # Next offset to commit per (topic, partition): last processed offset + 1.
    commit_offsets: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass(slots=True)
class Batch:
    """A batch between its decisions and its result."""

    records: Sequence[SourceRecord]
    parsed: list[tuple[SourceRecord, Event, Policy]]
    dead: list[DeadLetter]
    started: float
    decided: list[Decided] = field(default_factory=list)
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

    def refused(self) -> None:
        """Its write was refused as stale, after a fresh read: another worker's commit."""
        self.conflicts += 1
        if self.conflicts % CONFLICTS_WORTH_A_WORD == 0:
            # A batch that keeps losing on fresh reads has claims its own read cannot satisfy:
            # a bug in the limits.
            log.error(
                "batch of %d records refused %d times in a row on fresh reads; claims %s",
                len(self.records),
                self.conflicts,
                self.claims,
            )

    @property
    def partitions(self) -> set[Partition]:
        return {(r.topic, r.partition) for r in self.records}

    def history_keys(self, with_event_ids: bool) -> HistoryKeys:
        """What the history read looks up; `with_event_ids` after a write conflict."""
        envs = [e.envelope for _, e, _ in self.parsed]
        return HistoryKeys(
            order_ids=sorted({env.order_id for env in envs}),
            buyer_days=sorted({(env.buyer_id, business_day(env.occurred_at)) for env in envs}),
            event_ids=sorted({env.event_id for env in envs}) if with_event_ids else None,
        )

    def result(self) -> BatchResult:
        commit: dict[tuple[str, int], int] = {}
        for r in self.records:
            tp = (r.topic, r.partition)
            commit[tp] = max(commit.get(tp, 0), r.offset + 1)
        return BatchResult(
            len(self.records),
            len(self.decided),
            sum(self.duplicates.values()),
            tuple(self.dead),
            commit,
        )

    def report(self, settings: Settings) -> BatchReport:
        by_topic = Counter(r.topic for r in self.records)
        return BatchReport(
            records=len(self.records),
            consumed={settings.event_type_of(t): n for t, n in by_topic.items()},
            decided=self.decided,
            duplicates=self.duplicates,
            dead=self.dead,
            elapsed_s=time.perf_counter() - self.started,
        )


def decode(
    records: Sequence[SourceRecord], policies: Mapping[str, Policy], settings: Settings
) -> Batch:
    """Each record checked, decoded and matched to its platform's policy, or dead-lettered."""
    batch = Batch(records, [], [], time.perf_counter())
    max_bytes, max_skew_s = settings.max_record_bytes, settings.max_event_skew_s
    for record in records:
        try:
            check_size(record, max_bytes)
            event = decode_event(record.value if record.value is not None else b"")
            check_event_time(event, record, max_skew_s)
            policy = policy_for(policies, event.envelope.platform)
        except InvalidEvent as exc:
            batch.dead.append(DeadLetter(record, exc.error_class, str(exc)))
            continue
        batch.parsed.append((record, event, policy))
    return batch


def decide(batch: Batch, stored: StoredHistory, decided_at: datetime) -> None:
    """Decide every event of the batch in order on `stored` (which each decision advances, so
    the next event of the same order or buyer sees it): duplicates counted, a rule that raises
    dead-lettered (it is this event's fault, not the batch's), the limit claims folded."""
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
            decision = decide_event(event, stored.order_history(event), policy)
        except Exception as exc:
            log.exception("rule failed for event %s", env.event_id)
            batch.dead.append(DeadLetter(record, RULE_ERROR, f"{type(exc).__name__}: {exc}"))
            continue
        from_status = stored.case_status.get((env.order_id, str(env.event_type)))
        payload = outcome_json(event, decision, decided_at=decided_at)
        opening = open_case(event, decision, policy)
        batch.decided.append(
            Decided(
                record,
                event,
                decision,
                from_status,
                payload,
                opening if isinstance(opening, Transition) else None,
            )
        )
        uses += limit_uses(event, decision, policy)
        stored.advance(event, decision)
    batch.claims = fold_claims(uses)

"""In-memory stand-ins for the core's ports (order_recovery/core/ports.py), for tests that need no
services: the pipeline's unit tests run on them in milliseconds.

- `InMemoryStore`: the DecisionStore with the Postgres store's semantics: a write is all or
  nothing; an event decided twice, a second compensation of an order and exception type, and a
  limit counter past a claim's ceiling refuse the whole write as WriteConflict, in that order;
  partition leases with epochs, and a write under a lost lease refused as Fenced; the outbox as
  one batch per write, sent and marked one sender at a time, and one relay pass at a time.
- `RecordingPublisher`: the broker as the pipeline meets it: what it acknowledged, in order; a
  message over librdkafka's message.max.bytes refused for good (Refused) once the rest is
  delivered; `fail_next(n)`: the next n calls fail as with a broker down (PublishFailed).
- `KeptLetters`: the last resort of the dead-letter path, one row per source record.
- `InMemoryCaseStore`: the case store, its steps' action commands in an outbox relayed one pass
  at a time, marked only once the publish returned.

tests/contracts/ holds one suite per port, run against these (tests/unit/test_fakes_contract.py)
and against the real adapters (tests/integration/test_adapters_contract.py), so a fake cannot
drift from what it stands for.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from order_recovery.core.faults import Fenced, PublishFailed, Refused, WriteConflict
from order_recovery.core.lifecycle import case_key
from order_recovery.core.ports import CaseKey, Publish, PublishCommands
from order_recovery.core.records import (
    DeadLetter,
    Decided,
    HistoryKeys,
    OutboxBatch,
    OutgoingMessage,
    Partition,
)
from order_recovery.core.stored_history import StoredHistory
from order_recovery.domain.case import Case, ReviewRefused, Step, Transition
from order_recovery.domain.commands import ActionCommand, commands_of
from order_recovery.domain.decision import Decision, RiskFlag
from order_recovery.domain.events import Event, EventType
from order_recovery.domain.limits import LimitClaim, LimitKind, buyer_day_subject
from order_recovery.domain.resolutions import Resolution

#: librdkafka's default message.max.bytes: a larger message is refused in produce() itself.
PRODUCER_MAX_BYTES = 1_000_000


@dataclass(slots=True)
class _Outbox:
    batch_id: str
    event_ids: list[str]
    messages: list[tuple[str, bytes]]
    created_at: float
    published: bool = False


class InMemoryStore:
    """Thread-safe: the pipeline writes on its writer thread while its next batch is read."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        lifecycle: InMemoryCaseStore | None = None,
    ) -> None:
        self._clock = clock
        self.lifecycle = lifecycle or InMemoryCaseStore()  # the cases the decisions open
        self._lock = threading.RLock()  # every read and write is one atomic step
        self._outbox_lock = threading.Lock()  # the outbox rows' locks: one sender at a time
        self._relay_lock = threading.Lock()  # the relay's advisory lock
        self.decisions: dict[str, Decided] = {}
        self._by_order: dict[str, list[Decided]] = {}
        self.compensations: dict[tuple[str, str], str] = {}  # (order, type) -> event id
        self.counters: dict[tuple[str, str], tuple[int, int | None]] = {}  # -> (used, ceiling)
        self.cases: dict[tuple[str, str], str] = {}  # (order, type) -> status
        self.leases: dict[Partition, tuple[int, str]] = {}  # -> (epoch, owner)
        self.outbox: list[_Outbox] = []  # in creation order
        self.reads = self.writes = 0

    # ------------------------------------------------------------------ HistoryReader
    def claim_partitions(self, partitions: Iterable[Partition], owner: str) -> dict[Partition, int]:
        with self._lock:
            claimed = {}
            for tp in sorted(partitions):
                epoch, held_by = self.leases.get(tp, (0, ""))
                if held_by != owner:
                    epoch += 1
                self.leases[tp] = (epoch, owner)
                claimed[tp] = epoch
            return claimed

    def load_history(
        self, keys: HistoryKeys, pending: Sequence[tuple[Event, Decision]] = ()
    ) -> StoredHistory:
        with self._lock:
            self.reads += 1
            orders = set(keys.order_ids)
            refunds = {}
            for buyer, day in keys.buyer_days:
                counter = self.counters.get(
                    (LimitKind.BUYER_REFUNDS, buyer_day_subject(buyer, day))
                )
                if counter is not None:
                    refunds[(buyer, day)] = counter[0]
            history = StoredHistory(
                case_status={k: s for k, s in self.cases.items() if k[0] in orders},
                compensated={k for k in self.compensations if k[0] in orders},
                buyer_refunds=refunds,
            )
            history.decided_event_ids.update(e for e in keys.event_ids or () if e in self.decisions)
            for order_id in keys.order_ids:
                for d in self._by_order.get(order_id, ()):
                    history.decided_event_ids.add(d.event.envelope.event_id)
                    if d.event.envelope.event_type is EventType.PAYMENT_TIMEOUT:
                        attempts = history.payment_attempts.get(order_id, 0)
                        history.payment_attempts[order_id] = attempts + 1
                    if RiskFlag.FORGED_LOGISTICS in d.decision.risk_flags:
                        history.revoked_orders.add(order_id)
            if pending and pending[0][0].envelope.event_id not in self.decisions:
                for event, decision in pending:  # the pending batch has not landed
                    history.decided_event_ids.add(event.envelope.event_id)
                    history.advance(event, decision)
            return history

    # ------------------------------------------------------------------ DecisionStore
    def save_decisions(
        self,
        decided: Sequence[Decided],
        claims: Sequence[LimitClaim] = (),
        leases: Mapping[Partition, int] | None = None,
    ) -> str | None:
        if not decided and not leases:
            return None
        with self._lock:
            self.writes += 1
            ids = [d.event.envelope.event_id for d in decided]
            if len(set(ids)) < len(ids) or any(i in self.decisions for i in ids):
                raise WriteConflict("another worker wrote decisions_pkey")
            granted = [_case(d) for d in decided if d.decision.compensation is not None]
            if len(set(granted)) < len(granted) or any(k in self.compensations for k in granted):
                raise WriteConflict("another worker wrote compensations_pkey")
            counters = {}
            for c in claims:
                used = self.counters.get((c.kind, c.subject), (0, None))[0] + c.delta
                if c.ceiling is not None and used > c.ceiling:
                    raise WriteConflict("a limit counter moved past what the batch relied on")
                counters[(str(c.kind), c.subject)] = (used, c.ceiling)
            lost = {tp for tp, epoch in (leases or {}).items() if self._epoch(tp) != epoch}
            if lost:
                raise Fenced(lost)
            for d in decided:
                env = d.event.envelope
                self.decisions[env.event_id] = d
                self._by_order.setdefault(env.order_id, []).append(d)
                self.cases[_case(d)] = str(d.decision.outcome)
                if d.decision.compensation is not None:
                    self.compensations[_case(d)] = env.event_id
            openings = [d.opening for d in decided if d.opening is not None]
            if openings:
                with self.lifecycle.work() as work:
                    new = {o.case.key: o for o in reversed(openings)}  # each case's first
                    work.save([o for k, o in new.items() if not work.lock([k])])
            self.counters.update(counters)
            if not decided:
                return None
            batch_id = str(uuid.uuid4())
            self.outbox.append(
                _Outbox(
                    batch_id,
                    ids,
                    [(d.event.envelope.order_id, d.outcome_payload) for d in decided],
                    self._clock(),
                )
            )
            return batch_id

    def mark_published(self, batch_ids: Sequence[str]) -> None:
        with self._lock:
            wanted = set(batch_ids)
            for b in self.outbox:
                if b.batch_id in wanted:
                    b.published = True

    def publish_unpublished_holding(
        self, event_ids: Sequence[str], published: Sequence[str], publish: Publish
    ) -> int:
        if not event_ids:
            return 0
        ids, skip = set(event_ids), set(published)
        return self._send(
            lambda b: b.batch_id not in skip and not ids.isdisjoint(b.event_ids), None, publish
        )

    def relay_unpublished(self, older_than_s: float, limit: int, publish: Publish) -> int:
        if not self._relay_lock.acquire(blocking=False):
            return 0  # another pass is under way
        try:
            cutoff = self._clock() - older_than_s
            return self._send(lambda b: b.created_at < cutoff, limit, publish)
        finally:
            self._relay_lock.release()

    def outbox_backlog(self) -> int:
        with self._lock:
            return sum(len(b.event_ids) for b in self.outbox if not b.published)

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ for the tests
    def age_outbox(self, seconds: float) -> None:
        """Every outbox batch written this much earlier (as a crash long ago left it)."""
        with self._lock:
            for b in self.outbox:
                b.created_at -= seconds

    def forget_published(self) -> None:
        """Every outbox batch unpublished again (a crash before the marks)."""
        with self._lock:
            for b in self.outbox:
                b.published = False

    # ------------------------------------------------------------------ inside
    def _epoch(self, tp: Partition) -> int | None:
        lease = self.leases.get(tp)
        return None if lease is None else lease[0]

    def _send(self, wanted: Callable[[_Outbox], bool], limit: int | None, publish: Publish) -> int:
        """Lock the wanted unpublished batches (oldest first), send them, mark them."""
        with self._outbox_lock:
            with self._lock:
                found = [b for b in self.outbox if not b.published and wanted(b)][:limit]
            if not found:
                return 0
            publish([OutboxBatch(b.batch_id, list(b.messages)) for b in found])
            with self._lock:
                for b in found:
                    b.published = True
            return sum(len(b.messages) for b in found)


def _case(d: Decided) -> tuple[str, str]:
    env = d.event.envelope
    return (env.order_id, str(env.event_type))


class RecordingPublisher:
    def __init__(self, max_bytes: int = PRODUCER_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.sent: list[OutgoingMessage] = []
        self.calls = 0
        self._failures = 0
        self._lock = threading.Lock()

    def fail_next(self, calls: int = 1) -> None:
        """The next `calls` publishes fail as with the broker down: nothing acknowledged."""
        self._failures = calls

    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        with self._lock:
            self.calls += 1
            if not messages:
                return
            if self._failures:
                self._failures -= 1
                raise PublishFailed(f"{len(messages)} of {len(messages)} not delivered: simulated")
            refused = [(m, "Broker: Message size too large") for m in messages if _too_big(m, self)]
            self.sent += [m for m in messages if not _too_big(m, self)]
            if refused:
                raise Refused(refused)

    def to(self, topic: str) -> list[OutgoingMessage]:
        return [m for m in self.sent if m.topic == topic]

    def close(self) -> None:
        pass


def _too_big(m: OutgoingMessage, publisher: RecordingPublisher) -> bool:
    size = len(m.key or b"") + len(m.value or b"") + sum(len(k) + len(v) for k, v in m.headers)
    return size > publisher.max_bytes


class KeptLetters:
    """The UnsendableLetters port: one row per source record, the first one kept."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int, int], tuple[DeadLetter, OutgoingMessage, str]] = {}

    def record(
        self, letter: DeadLetter, sent: OutgoingMessage, refusal: str, worker_id: str
    ) -> bool:
        r = letter.record
        key = (r.topic, r.partition, r.offset)
        if key in self.rows:
            return False
        self.rows[key] = (letter, sent, refusal)
        return True

    def close(self) -> None:
        pass


@dataclass(slots=True)
class _OutboxCommand:
    command: ActionCommand
    published: bool = False


class InMemoryCaseStore:
    """The case store in dicts. A unit of work edits copies and swaps them in on a clean exit,
    so an exception leaves nothing behind, like a rolled-back transaction; one unit at a time
    (a lock), which is what the real store's row locks give each case."""

    def __init__(self) -> None:
        self.cases: dict[CaseKey, Case] = {}
        self.steps: dict[tuple[str, str, int], Transition] = {}
        self.resolutions: dict[str, tuple[str, int | None]] = {}
        self.bodies: dict[str, Resolution] = {}
        self.audit: list[tuple[CaseKey, str]] = []
        #: The command outbox, in write order: each command with whether a relay published it.
        self.commands: list[_OutboxCommand] = []
        self._lock = threading.Lock()
        self._relay_lock = threading.Lock()

    @contextmanager
    def work(self) -> Iterator[_CaseWork]:
        with self._lock:
            work = _CaseWork(
                dict(self.cases), dict(self.steps), dict(self.resolutions), dict(self.bodies)
            )
            yield work
            keys = {row.command.action_key for row in self.commands}
            if any(c.action_key in keys for c in work.commands):
                raise WriteConflict("case_commands_action_key_key")
            self.cases, self.steps, self.resolutions = work.cases, work.steps, work.resolutions
            self.bodies = work.bodies
            self.audit.extend(work.audit)
            self.commands.extend(_OutboxCommand(c) for c in work.commands)

    def case(self, key: CaseKey) -> Case | None:
        return self.cases.get(key)

    def relay_commands(self, limit: int, publish: PublishCommands) -> int:
        if not self._relay_lock.acquire(blocking=False):
            return 0  # another pass is under way
        try:
            with self._lock:
                rows = [row for row in self.commands if not row.published][:limit]
            if not rows:
                return 0
            publish([row.command for row in rows])
            with self._lock:
                for row in rows:
                    row.published = True
            return len(rows)
        finally:
            self._relay_lock.release()

    def command_backlog(self) -> int:
        with self._lock:
            return sum(1 for row in self.commands if not row.published)

    def close(self) -> None:
        pass


@dataclass
class _CaseWork:
    cases: dict[CaseKey, Case]
    steps: dict[tuple[str, str, int], Transition]
    resolutions: dict[str, tuple[str, int | None]]
    bodies: dict[str, Resolution]

    def __post_init__(self) -> None:
        self.audit: list[tuple[CaseKey, str]] = []
        self.commands: list[ActionCommand] = []

    def lock(self, keys: Iterable[CaseKey]) -> dict[CaseKey, Case]:
        return {k: self.cases[k] for k in keys if k in self.cases}

    def due(self, until: datetime, limit: int) -> list[Case]:
        pending = [c for c in self.cases.values() if c.deadline and c.deadline.due_at <= until]
        return sorted(pending, key=lambda c: c.deadline.due_at if c.deadline else until)[:limit]

    def known(self, event_ids: Iterable[str]) -> set[str]:
        return {e for e in event_ids if e in self.resolutions}

    def orphans(self, limit: int) -> list[Resolution]:
        waiting = [
            self.bodies[e]
            for e, (rule_id, _) in self.resolutions.items()
            if rule_id == "case.ignored.unknown_case" and case_key(self.bodies[e]) in self.cases
        ]
        return sorted(waiting, key=lambda r: (r.envelope.occurred_at, r.envelope.event_id))[:limit]

    def save(
        self,
        transitions: Sequence[Transition],
        resolutions: Sequence[tuple[Resolution, Step]] = (),
        adopted: Sequence[tuple[Resolution, Step]] = (),
    ) -> None:
        for t in transitions:
            key, seq = t.case.key, t.case.seq
            if (*key, seq) in self.steps or self.cases.get(key, t.case).seq not in (seq, seq - 1):
                raise WriteConflict(f"case {key} moved on before step {seq}")
            if t.from_state is None and key in self.cases:
                raise WriteConflict(f"case {key} was opened by another writer")
            if t.cause.kind == "review" and any(
                s.cause.kind == "review" and s.cause.ref == t.cause.ref for s in self.steps.values()
            ):
                raise ReviewRefused(f"review {t.cause.ref} was applied before")
            self.steps[(*key, seq)] = t
            self.cases[key] = t.case
            self.audit.append((key, t.rule_id))
            self.commands.extend(commands_of(t))
        for resolution, step in resolutions:
            event_id = resolution.envelope.event_id
            if event_id in self.resolutions:
                raise WriteConflict(f"resolution {event_id} was recorded by another writer")
            seq = step.case.seq if isinstance(step, Transition) else None
            self.resolutions[event_id] = (step.rule_id, seq)
            self.bodies[event_id] = resolution
        for resolution, step in adopted:
            seq = step.case.seq if isinstance(step, Transition) else None
            self.resolutions[resolution.envelope.event_id] = (step.rule_id, seq)

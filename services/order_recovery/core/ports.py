"""What the pipeline needs from the outside world, as Protocols: the core is typed on these, the
adapters implement them (Postgres, Kafka, Prometheus, tenacity), and the in-memory fakes of
tests/fakes.py implement them too; one contract suite (tests/contracts/) runs against both, so a
fake cannot drift from what it stands for.

Each port raises only the core's faults (`core.faults`): `Transient` (and its `WriteConflict`,
`PublishFailed`) for what a retry may fix, `Fenced`, `Refused`; anything else is a bug."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from order_recovery.core.records import (
    DeadLetter,
    Decided,
    HistoryKeys,
    OutboxBatch,
    OutgoingMessage,
    Partition,
)
from order_recovery.core.stored_history import StoredHistory
from order_recovery.domain.case import Case, Step, Transition
from order_recovery.domain.commands import ActionCommand
from order_recovery.domain.decision import Decision
from order_recovery.domain.events import Event
from order_recovery.domain.limits import LimitClaim
from order_recovery.domain.resolutions import Resolution

T = TypeVar("T")

#: Sends outbox batches in the order given and returns once the broker has them all; raising
#: leaves them unmarked (the store's claim on them is released).
Publish = Callable[[list[OutboxBatch]], None]
#: Marks outbox batches published (the worker's background marker; else the store, at once).
MarkPublished = Callable[[list[str]], None]
#: Sends action commands in the order given and returns once the broker has them all; raising
#: leaves them unmarked (the relay's next pass sends them again).
PublishCommands = Callable[[list[ActionCommand]], None]
#: The worker's clock: read once per batch for the outcomes' `decided_at`, never by a rule.
Clock = Callable[[], datetime]


class HistoryReader(Protocol):
    """Reads for deciding a batch; the pipeline may use a second one beside the store's writes."""

    def claim_partitions(self, partitions: Iterable[Partition], owner: str) -> dict[Partition, int]:
        """Lease these partitions to `owner`: a new epoch each, unless `owner` holds it already;
        taken only after any write in progress under an older epoch has finished."""
        ...

    def load_history(
        self, keys: HistoryKeys, pending: Sequence[tuple[Event, Decision]] = ()
    ) -> StoredHistory:
        """What the rules need to know about these keys, in one snapshot. `pending`: a batch
        whose write may be in flight elsewhere, counted exactly once whether or not it landed."""
        ...


class DecisionStore(HistoryReader, Protocol):
    """Where decisions, their effects, the limit counters, the leases and the outbox live."""

    def save_decisions(
        self,
        decided: Sequence[Decided],
        claims: Sequence[LimitClaim] = (),
        leases: Mapping[Partition, int] | None = None,
    ) -> str | None:
        """All of it or nothing, in one transaction; the outbox batch's id (None: no decision).
        WriteConflict when another worker's commit made the batch stale (a decided event id, a
        granted compensation, a counter past a claim's ceiling); Fenced when a partition's lease
        is no longer at the epoch given."""
        ...

    def mark_published(self, batch_ids: Sequence[str]) -> None: ...

    def publish_unpublished_holding(
        self, event_ids: Sequence[str], published: Sequence[str], publish: Publish
    ) -> int:
        """Send (oldest first) and mark the unpublished outbox batches holding any of these
        events, except `published`; how many outcomes went out. One sender per batch at once."""
        ...

    def relay_unpublished(self, older_than_s: float, limit: int, publish: Publish) -> int:
        """The outbox relay's pass over batches older than `older_than_s`, oldest first, up to
        `limit`; one pass at a time across all workers (another's under way: 0)."""
        ...

    def outbox_backlog(self) -> int:
        """Outcomes written but not yet marked published."""
        ...

    def reset(self) -> None:
        """Drop any connection after a fault, so the next call starts clean."""
        ...

    def close(self) -> None: ...


class Publisher(Protocol):
    def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Every message acknowledged by the broker, or PublishFailed (retry the whole call), or
        Refused naming the messages refused for good once every other one is acknowledged."""
        ...

    def close(self) -> None: ...


class UnsendableLetters(Protocol):
    """The last resort of the dead-letter path: dead letters the broker refused even truncated."""

    def record(
        self, letter: DeadLetter, sent: OutgoingMessage, refusal: str, worker_id: str
    ) -> bool:
        """Keep it (as last tried); True when this call added it, False when it was kept before."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class BatchReport:
    """A finished batch, for the metrics: observed once per batch, never per event."""

    records: int
    consumed: Mapping[str, int]  # records per event type (of their topic)
    decided: Sequence[Decided]
    duplicates: Counter[str]  # per event type
    dead: Sequence[DeadLetter]
    elapsed_s: float


class BatchObserver(Protocol):
    """The worker's metrics, as the core reports to them."""

    def batch_finished(self, report: BatchReport) -> None: ...

    def outcomes_sent(self, count: int) -> None:
        """Outcomes sent from the outbox (the relay's and a catch-up's)."""
        ...

    def dead_letter_kept(self) -> None:
        """A dead letter the broker refused even truncated, kept in the store instead."""
        ...


class Retry(Protocol):
    def call(self, fn: Callable[[], T], what: str, after: BaseException | None = None) -> T:
        """Run fn until it succeeds, retrying `Transient` faults; re-raise anything else.
        `after`: a transient fault of an attempt made elsewhere, reported like one of ours."""
        ...


#: A case's key: (order id, exception type).
CaseKey = tuple[str, str]


class CaseWork(Protocol):
    """One transaction of the case store (domain.case): what it locks stays locked until the
    work commits (a clean exit of `CaseStore.work`) or rolls back (an exception)."""

    def lock(self, keys: Collection[CaseKey]) -> dict[CaseKey, Case]:
        """The cases of these keys that exist, locked against every other writer."""
        ...

    def due(self, until: datetime, limit: int) -> list[Case]:
        """Up to `limit` cases whose pending deadline is at or before `until`, oldest first,
        locked; cases another writer holds are skipped, not waited for."""
        ...

    def known(self, event_ids: Collection[str]) -> set[str]:
        """Which of these resolution event ids were recorded before."""
        ...

    def orphans(self, limit: int) -> list[Resolution]:
        """Up to `limit` resolutions recorded for a case that did not exist then and does now,
        oldest event time first, locked (others' skipped)."""
        ...

    def save(
        self,
        transitions: Sequence[Transition],
        resolutions: Sequence[tuple[Resolution, Step]] = (),
        adopted: Sequence[tuple[Resolution, Step]] = (),
    ) -> None:
        """Store each transition (the case as it left it, its step, its audit row, and the action
        commands it issues, `domain.commands.commands_of`, into the command outbox), record each
        new resolution with the step it caused, and the step each adopted orphan caused. A
        transition that opens a case it finds open, or whose step another writer stored first,
        raises WriteConflict (redo the work); a review already applied raises ReviewRefused."""
        ...


class CaseStore(Protocol):
    def work(self) -> AbstractContextManager[CaseWork]: ...

    def case(self, key: CaseKey) -> Case | None:
        """Read only: the case as last committed."""
        ...

    def relay_commands(self, limit: int, publish: PublishCommands) -> int:
        """One pass of the command outbox relay: up to `limit` commands no pass has published
        yet (whichever writer stored their step: this store, or the decision store opening a
        case), oldest first, handed to `publish`, and marked published once it returns; how many
        went out. A raising `publish` marks nothing. One pass at a time across all processes:
        while another is under way, 0."""
        ...

    def command_backlog(self) -> int:
        """Commands stored and not yet published."""
        ...

    def close(self) -> None: ...

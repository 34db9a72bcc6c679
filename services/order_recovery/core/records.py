"""The values the core exchanges with the outside, as any runtime or store can describe them: a
consumed record, a message to produce, a decided event on its way to the store, the keys of a
history read, an outbox batch. Apart from the pipeline so that the dead-letter path, the intake
checks, the ports and the adapters can use them without importing the stream processor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from msgspec import Struct, field

from order_recovery.domain.case import Transition
from order_recovery.domain.decision import Decision
from order_recovery.domain.events import Event

#: A partition of a source topic, as (topic, partition).
Partition = tuple[str, int]


# Structs, not dataclasses, for what is built per event (see domain/events.py).
class SourceRecord(Struct, frozen=True, gc=False):
    """A consumed record, as any runtime can describe it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def size(self) -> int:
        """Bytes of key, value and headers: all of it goes into the record's dead letter."""
        size = len(self.value or b"") + len(self.key or b"")
        for name, value in self.headers:
            size += len(name.encode("utf-8", "surrogatepass")) + len(value or b"")
        return size


class DeadLetter(Struct, frozen=True, gc=False):
    """A record the pipeline cannot decide on, and why."""

    record: SourceRecord
    error_class: str
    message: str


class OutgoingMessage(Struct, frozen=True, gc=False):
    """A message to produce: an outcome or a dead letter."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class Decided(Struct, frozen=True, gc=False):
    """One decided event as the store writes it: the store adapter flattens it into its own rows
    (one per decision, on the writer thread), so the pipeline builds nothing per event for the
    tables. `from_status`: the case's status before this decision (None: a new case);
    `outcome_payload`: the outcome message, the same bytes in the outbox and on the topic."""

    record: SourceRecord
    event: Event
    decision: Decision
    from_status: str | None
    outcome_payload: bytes
    opening: Transition | None = None  # the case this decision opens if it has none yet


@dataclass(frozen=True, slots=True)
class HistoryKeys:
    """A batch's orders and (buyer, business day) pairs. Its events need no key of their own:
    a redelivery keeps its order, so an event is known if its order's decisions include it.
    `event_ids` only after a write conflict: then the ids are looked up themselves, so that an
    id reused under another order (a producer's bug) is known too and cannot conflict forever."""

    order_ids: list[str]
    buyer_days: list[tuple[str, date]]
    event_ids: list[str] | None = None


@dataclass(frozen=True, slots=True)
class OutboxBatch:
    """A written batch's outcomes, as (message key, payload) in decision order."""

    batch_id: str
    messages: list[tuple[str, bytes]]

"""The faults the core tells apart, raised by the adapters in the core's own terms (no driver
types), so the pipeline never needs to know which database or broker refused what.

Transient: the unit of work is retried for as long as the fault lasts (the partition waits); its
`cause` labels the retry in the metrics. Permanent: `Refused` (the same messages would be refused
again) and anything else an adapter raises, which is a bug. `Fenced` is neither: the batch's
partitions belong to another worker now."""

from __future__ import annotations

from collections.abc import Iterable

from order_recovery.core.records import OutgoingMessage

#: Every `Transient.cause` the adapters raise (the metrics create their series up front).
TRANSIENT_CAUSES = (
    "pg_unavailable",
    "pg_serialization",
    "pg_deadlock",
    "kafka_publish",
    "write_conflict",
)


class Transient(Exception):
    """A fault that passes: Postgres unreachable or dropped, a serialization failure, a deadlock
    (each with its `cause`), or one of the subclasses below. Safe to retry the whole call."""

    cause = "transient"

    def __init__(self, message: str, cause: str | None = None) -> None:
        super().__init__(message)
        if cause is not None:
            self.cause = cause

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.cause))


class PublishFailed(Transient):
    """Kafka did not acknowledge every message in time (broker down or slow)."""

    cause = "kafka_publish"


class WriteConflict(Transient):
    """Another worker's commit made this batch's decisions stale: a decision of the same event,
    a compensation of the same order and exception type, or a counter a decision relied on
    (`domain.limits`) moved past its bound. Nothing was written; the batch is decided again on
    a fresh read, which sees the other commit."""

    cause = "write_conflict"


class Refused(Exception):
    """Every message of a `publish` was acknowledged except these, refused for good (too large
    for the producer or the topic, an invalid record): each with the reason. Not transient."""

    def __init__(self, refused: list[tuple[OutgoingMessage, str]]) -> None:
        super().__init__(f"{len(refused)} message(s) refused: {refused[0][1]}")
        self.refused = refused


class Fenced(Exception):
    """Partitions of the batch were claimed by another worker since this one claimed them: this
    worker is a zombie for them (paused past its session, or revoked mid-batch). Nothing was
    written; their records belong to the new owner."""

    def __init__(self, partitions: Iterable[tuple[str, int]]) -> None:
        self.partitions = frozenset(partitions)
        names = ", ".join(f"{t}[{p}]" for t, p in sorted(self.partitions))
        super().__init__(f"partitions claimed by another worker: {names}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.partitions,))


def transient_cause(exc: BaseException) -> str | None:
    """A short label for a fault worth retrying, or None for anything else (a bug, bad data)."""
    return exc.cause if isinstance(exc, Transient) else None

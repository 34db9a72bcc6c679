"""Faults of the write that the pipeline answers by deciding again, raised by the store adapter in
the pipeline's own terms (no driver types), so the pipeline never needs to know which database
refused what."""

from __future__ import annotations

from collections.abc import Iterable


class WriteConflict(Exception):
    """Another worker's commit made this batch's decisions stale: a decision of the same event,
    a compensation of the same order and exception type, or a counter a decision relied on
    (`domain.limits`) moved past its bound. Nothing was written; the batch is decided again on
    a fresh read, which sees the other commit."""


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

"""One worker of a race between two, on any store (the Postgres adapter or the in-memory fake):
its first history read meets the other worker's at a barrier (so neither sees the other's
batch), and its first write waits until `write_after` is set."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from order_recovery.core.ports import DecisionStore
from order_recovery.core.records import Decided, HistoryKeys
from order_recovery.core.stored_history import StoredHistory


class RacingStore:
    def __init__(
        self,
        store: DecisionStore,
        barrier: threading.Barrier,
        write_after: threading.Event | None = None,
    ) -> None:
        self.store, self.barrier, self.write_after = store, barrier, write_after
        self.reads = self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)  # everything else as the store does it

    def load_history(self, keys: HistoryKeys, pending: Any = ()) -> StoredHistory:
        history = self.store.load_history(keys, pending)
        self.reads += 1
        if self.reads == 1:
            self.barrier.wait(10)
        return history

    def save_decisions(self, rows: Sequence[Decided], *args: Any) -> str | None:
        self.writes += 1
        if self.writes == 1 and self.write_after is not None:
            assert self.write_after.wait(10), "the first worker never finished"
        return self.store.save_decisions(rows, *args)

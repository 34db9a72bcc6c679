"""Marking published outbox batches off the batch's critical path.

The mark is bookkeeping, not a side effect: losing it in a crash only means the outbox relay resends
that batch's outcomes with the same ids. So instead of a transaction per batch in the pipeline's
path, a background thread marks whatever was published since its last pass, on its own connection,
while the next batch is being decided.
"""

from __future__ import annotations

import logging
import threading

from order_recovery.adapters.postgres.store import PostgresStore
from order_recovery.core.faults import transient_cause

log = logging.getLogger(__name__)


class OutboxMarker:
    def __init__(self, dsn: str, idle_wait_s: float = 0.2, retry_wait_s: float = 1.0) -> None:
        self._store = PostgresStore(dsn)
        self._pending: list[str] = []
        self._in_progress = 0
        self._lock = threading.Condition()
        self._stopping = False
        self._idle_wait_s = idle_wait_s
        self._retry_wait_s = retry_wait_s
        self._thread = threading.Thread(target=self._run, name="outbox-marker", daemon=True)
        self._thread.start()

    def mark(self, batch_ids: list[str]) -> None:
        with self._lock:
            self._pending.extend(batch_ids)
            self._lock.notify_all()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything handed in so far is marked; False on timeout."""
        with self._lock:
            return self._lock.wait_for(
                lambda: not self._pending and not self._in_progress, timeout=timeout_s
            )

    def close(self, timeout_s: float = 5.0) -> None:
        self.flush(timeout_s)
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        self._thread.join(timeout_s)
        self._store.close()

    def _run(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._pending or self._stopping, self._idle_wait_s)
                if self._stopping and not self._pending:
                    return
                batch, self._pending = self._pending, []
                self._in_progress = len(batch)
            if not batch:
                continue
            try:
                self._store.mark_published(batch)
                done = True
            except Exception as exc:
                cause = transient_cause(exc)
                (log.warning if cause else log.exception)("marking outbox batches failed: %s", exc)
                done = False
            with self._lock:
                if not done:
                    self._pending[:0] = batch
                self._in_progress = 0
                self._lock.notify_all()
            if not done:
                threading.Event().wait(self._retry_wait_s)

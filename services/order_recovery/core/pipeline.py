"""The stream processor, independent of any consumer runtime and of any adapter: a batch of raw
records in, decisions persisted and published, and the answer "acknowledge all of these" out. It
is typed on the ports (`core.ports`); `order_recovery.bootstrap` gives it the real adapters, the
unit tests give it the in-memory fakes (tests/fakes.py).

decode -> validate -> load history -> decide (`core.batch`) -> persist -> publish
(`core.outbound`), then the runtime acks. Offsets may only be committed once a batch's
BatchResult is returned: by then every valid event's decision is committed, every outcome and
dead letter is on the broker. Transient faults are retried for as long as they last (the partition
waits); permanent per-event faults go to the record's dead-letter topic and the batch carries on
(`core.dead_letters`). Anything else is a bug and propagates: the runtime must then stop without
acknowledging the batch.

Two ways to drive it. `process` takes one batch all the way through. `submit` overlaps batches:
batch N is written and published on a background thread while the caller's thread decodes and
decides batch N+1, so the store and the broker work on one core while the rules run on the other.
N+1 is decided on a history that counts N's decisions exactly once (see
`HistoryReader.load_history`), and is only written after N turned out exactly as it was decided;
if N did not (its write failed and was redone, or it lost a race to another worker), N+1 is
decided again from scratch. Either way a batch's result is handed back only after its own write
and publish, and in order.

Other workers. A write that meets another worker's commit (the same event decided, the same
compensation granted, a cross-worker limit counter past what a decision relied on: see
`domain.limits`) is refused whole as a WriteConflict, and the batch is decided again on a fresh
read. A write of partitions another worker has claimed is refused as Fenced (`core.leases`), and
their records are left to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from order_recovery.config import Settings
from order_recovery.core import batch as batches
from order_recovery.core.batch import Batch, BatchResult
from order_recovery.core.faults import Fenced, WriteConflict, transient_cause
from order_recovery.core.leases import Leases
from order_recovery.core.outbound import Outbound
from order_recovery.core.ports import (
    BatchObserver,
    Clock,
    DecisionStore,
    HistoryReader,
    MarkPublished,
    Publisher,
    Retry,
    UnsendableLetters,
)
from order_recovery.core.records import Partition, SourceRecord
from order_recovery.domain.policy import Policy


class _Unpublished(Exception):
    """The write committed but the publish failed: only the publish is to be retried."""

    def __init__(self, outbox_batch: str | None, cause: Exception) -> None:
        super().__init__(str(cause))
        self.outbox_batch, self.cause = outbox_batch, cause


class Pipeline:
    """The batch state machine: decide, write and publish, overlapped; typed on the ports."""

    def __init__(
        self,
        settings: Settings,
        policies: Mapping[str, Policy],
        store: DecisionStore,
        publisher: Publisher,
        observer: BatchObserver,
        retry: Retry,
        unsendable: UnsendableLetters,
        mark_published: MarkPublished | None = None,
        reader: HistoryReader | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._settings, self._policies = settings, policies
        self._store, self._observer, self._retry = store, observer, retry
        self._clock = clock or (lambda: datetime.now(UTC))
        # History reads for batch N+1 while N is written need a connection of their own;
        # without one, `submit` finishes N before deciding N+1.
        self._reader = reader
        self.outbound = Outbound(
            settings, store, publisher, unsendable, observer, retry, mark_published
        )
        self._leases = Leases(settings.worker_id)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="pipeline-writer")
        self._in_flight: Batch | None = None

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
        batch = batches.decode(records, self._policies, self._settings)
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
        batch.published_here = self.outbound.published_here()
        batch.written = self._writer.submit(self._write_and_publish, batch)
        self._in_flight = batch
        return done

    def drain(self) -> list[BatchResult]:
        """Finish the batch being written, if any: its result, or nothing."""
        batch, self._in_flight = self._in_flight, None
        return [] if batch is None else [self._finish(batch)]

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self.outbound.close()

    def assigned(self, partitions: Iterable[Partition]) -> None:
        """The runtime's word that these partitions are this worker's (see `Leases`)."""
        self._leases.assigned(partitions)

    def revoked(self, partitions: Iterable[Partition]) -> None:
        """The runtime's word that these partitions went to another worker (see `Leases`)."""
        self._leases.revoked(partitions)

    # ------------------------------------------------------------------ the stages
    def _decide(
        self, batch: Batch, reader: HistoryReader, prior: Batch | None = None, recheck: bool = False
    ) -> None:
        """Decide the batch on its stored history (and `prior`'s decisions, whether or not their
        write has committed yet). Pure apart from the read (and a claim of partitions new to
        this worker): redoing it is always safe. `recheck` after a write conflict: the read also
        looks the batch's event ids up themselves."""
        self._leases.claim(batch, reader)
        if not batch.parsed:
            return
        pending = [] if prior is None else [(d.event, d.decision) for d in prior.decided]
        stored = reader.load_history(batch.history_keys(recheck), pending)
        batches.decide(batch, stored, self._clock())  # the worker's clock, once per batch

    def _write_and_publish(self, batch: Batch) -> str | None:
        """On the writer thread, one attempt: the caller's thread owns retries (they must keep
        the consumer polling, which only that thread may do)."""
        outbox_batch = self._write(batch)
        try:
            self.outbound.publish(batch)
        except Exception as exc:
            raise _Unpublished(outbox_batch, exc) from exc
        return outbox_batch

    def _write(self, batch: Batch) -> str | None:
        return self._store.save_decisions(batch.decided, batch.claims, batch.leases)

    def _finish(self, batch: Batch) -> BatchResult:
        assert batch.written is not None
        redone = False
        try:
            outbox_batch = batch.written.result()
        except _Unpublished as unpublished:
            if transient_cause(unpublished.cause) is None:
                raise unpublished.cause from None
            outbox_batch = unpublished.outbox_batch
            self._retry.call(lambda: self.outbound.publish(batch), "publish", unpublished.cause)
        except Fenced as fenced:
            self._leases.lose(batch, fenced.partitions)
            outbox_batch = self._retry.call(lambda: self._redo(batch), "persist batch")
            redone = True
        except Exception as exc:
            if transient_cause(exc) is None:
                raise
            outbox_batch = self._retry.call(lambda: self._redo(batch), "persist batch", exc)
            redone = True
        batch.as_decided = not redone
        if outbox_batch is not None:
            self.outbound.sent(outbox_batch)
        self._observer.batch_finished(batch.report(self._settings))
        return batch.result()

    def _redo(self, batch: Batch) -> str | None:
        """After a failed attempt: decide again on a fresh read (the failed write may or may
        not have committed; another worker's commit may have made the decisions stale), write,
        publish. Nothing else is in flight by now."""
        while True:
            batch.forget_decisions()
            self._decide(batch, self._store, recheck=True)
            try:
                outbox_batch = self._write(batch)
            except Fenced as fenced:
                self._leases.lose(batch, fenced.partitions)
                continue
            except WriteConflict:
                batch.refused()
                raise
            self._retry.call(lambda: self.outbound.publish(batch), "publish")
            return outbox_batch

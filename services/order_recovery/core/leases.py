"""Which partitions this pipeline may write, as the runtime and the store say.

Before its first batch of a partition the pipeline claims it in the store (a lease with an epoch),
and every write checks the batch's leases: a zombie whose partition another worker claimed writes
nothing of it, and its records of that partition are left to their new owner. The runtime reports
assignments, so a partition lost that way is only claimed again once it is assigned again."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

from order_recovery.core.batch import Batch
from order_recovery.core.ports import HistoryReader
from order_recovery.core.records import Partition

log = logging.getLogger(__name__)


class Leases:
    def __init__(self, worker_id: str) -> None:
        # The lease owner: unique per pipeline, so that even two processes configured with the
        # same worker id (a restart beside a paused zombie) fence each other.
        self.owner = f"{worker_id}#{uuid.uuid4().hex[:12]}"
        # This worker's lease epoch per partition it claimed; the partitions the runtime says are
        # assigned (None until it says anything: then every partition of a batch is ours, as for
        # a pipeline driven directly); the partitions another worker claimed from under this one,
        # not to be claimed back until the runtime assigns them again.
        self._epochs: dict[Partition, int] = {}
        self._assigned: set[Partition] | None = None
        self._fenced: set[Partition] = set()

    def assigned(self, partitions: Iterable[Partition]) -> None:
        """These partitions are this worker's (again): they may be claimed at their next batch,
        even if another worker had claimed them from under us."""
        partitions = set(partitions)
        self._assigned = (self._assigned or set()) | partitions
        self._fenced -= partitions

    def revoked(self, partitions: Iterable[Partition]) -> None:
        """These partitions went to another worker: records of them in a batch not yet decided
        are left to it, and their leases forgotten (a batch of them in flight may still commit,
        unless the new owner claimed them first)."""
        partitions = set(partitions)
        self._assigned = (self._assigned or set()) - partitions
        for tp in partitions:
            self._epochs.pop(tp, None)

    def claim(self, batch: Batch, reader: HistoryReader) -> None:
        """Make sure the batch's partitions are leased to this worker before its history is
        read: a new claim waits for a zombie's write in progress, so the read sees it, and any
        write of the zombie after it is refused. Records of a partition that is not ours (any
        more) are left to its owner; claiming it would steal it back."""
        assigned = self._assigned
        lost = {
            tp
            for tp in batch.partitions
            if tp in self._fenced or (assigned is not None and tp not in assigned)
        }
        if lost:
            batch.drop_partitions(lost)
        new = batch.partitions - self._epochs.keys()
        if new:
            self._epochs.update(reader.claim_partitions(new, self.owner))
        batch.leases = {tp: self._epochs[tp] for tp in batch.partitions}

    def lose(self, batch: Batch, partitions: frozenset[Partition]) -> None:
        """The store refused the batch's write as Fenced: these are another worker's now."""
        log.warning(
            "partitions %s were claimed by another worker: their records are left to it",
            sorted(partitions),
        )
        for tp in partitions:
            self._epochs.pop(tp, None)
        self._fenced |= partitions
        batch.drop_partitions(partitions)

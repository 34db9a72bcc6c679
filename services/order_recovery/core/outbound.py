"""What a batch sends once written: its dead letters and outcomes, and before them any outcomes of
its already-decided events that a crash (or a zombie) left in the outbox unsent, so that the
outcomes of one order reach the topic in decision order. Also the outbox relay's sending, and the
marking of what was sent."""

from __future__ import annotations

import logging
from collections import deque

from order_recovery.config import Settings
from order_recovery.core.batch import Batch
from order_recovery.core.dead_letters import DeadLetterSender
from order_recovery.core.ports import (
    BatchObserver,
    DecisionStore,
    MarkPublished,
    Publisher,
    Retry,
    UnsendableLetters,
)
from order_recovery.core.records import OutboxBatch, OutgoingMessage

log = logging.getLogger(__name__)

#: Outbox batches this pipeline published and remembers, so that a batch meeting their events
#: again (an exact duplicate in the feed) does not resend them before their background mark lands;
#: a handful of batches is seconds of marks.
PUBLISHED_HERE_KEPT = 16


class Outbound:
    def __init__(
        self,
        settings: Settings,
        store: DecisionStore,
        publisher: Publisher,
        unsendable: UnsendableLetters,
        observer: BatchObserver,
        retry: Retry,
        mark_published: MarkPublished | None = None,
    ) -> None:
        self._topic = settings.outcome_topic
        self._store, self._publisher = store, publisher
        self._observer, self._retry = observer, retry
        self._dead_letters = DeadLetterSender(settings, publisher, unsendable, observer)
        # The worker marks published outbox batches in the background (OutboxMarker); without one,
        # the mark is a transaction of its own right here.
        self._mark_published = mark_published or self._mark_now
        self._published_here: deque[str] = deque(maxlen=PUBLISHED_HERE_KEPT)

    def published_here(self) -> list[str]:
        """The outbox batches this pipeline sent lately (their marks may still be on the way)."""
        return list(self._published_here)

    def publish(self, batch: Batch) -> None:
        """The batch's dead letters and outcomes, after any of its duplicates' outcomes that are
        still in the outbox unsent (those are then marked sent)."""
        if batch.duplicate_ids:
            resent = self._store.publish_unpublished_holding(
                batch.duplicate_ids, batch.published_here, self.publish_outbox
            )
            if resent:
                log.info("sent %d outcome(s) a crash had left in the outbox", resent)
        topic = self._topic
        outcomes = [
            OutgoingMessage(topic, d.event.envelope.order_id.encode(), d.outcome_payload)
            for d in batch.decided
        ]
        self._dead_letters.publish(batch.dead, outcomes)

    def publish_outbox(self, batches: list[OutboxBatch]) -> None:
        """Send outbox batches' outcomes, in order (the outbox relay's and the catch-up's)."""
        topic = self._topic
        messages = [OutgoingMessage(topic, k.encode(), v) for b in batches for k, v in b.messages]
        self._publisher.publish(messages)
        self._observer.outcomes_sent(sum(len(b.messages) for b in batches))

    def sent(self, outbox_batch: str) -> None:
        """The batch's outcomes are on the broker: remember it, and mark it published."""
        self._published_here.append(outbox_batch)
        self._mark_published([outbox_batch])

    def _mark_now(self, batch_ids: list[str]) -> None:
        self._retry.call(lambda: self._store.mark_published(batch_ids), "mark outbox published")

    def close(self) -> None:
        self._dead_letters.close()

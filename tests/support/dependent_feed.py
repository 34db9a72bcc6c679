"""A feed in which every batch depends on the one before it: each group of orders comes back in the
next batches with new events of the same orders (payment attempts pile up, a second compensation
is refused, buyers reach their refund limit), so a history that missed or double-counted the batch
in flight would decide differently from the reference (tests/support/reference.py). Shared by the
overlap tests on the fakes (tests/unit) and on the real services (tests/integration)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from order_recovery.core.batch import BatchResult
from order_recovery.domain.sample import sample_events

GROUP = 20  # orders per batch
ROUNDS = 4  # batches each group of orders appears in (the 4th crosses the 3-attempt limit)


def dependent_feed(groups: int, seed: int) -> list[dict[str, Any]]:
    """Batches of GROUP events; the ROUNDS-1 batches after each come back to the same orders
    with new events a few minutes later."""
    unique = {e["event_id"]: e for e in sample_events(2 * groups * GROUP, seed=seed)}
    base = list(unique.values())[: groups * GROUP]
    feed: list[dict[str, Any]] = []
    for g in range(0, len(base), GROUP):
        for round_ in range(ROUNDS):
            for event in base[g : g + GROUP]:
                later = datetime.fromisoformat(event["occurred_at"]) + timedelta(minutes=round_)
                feed.append(
                    {
                        **event,
                        "event_id": str(
                            uuid.uuid5(uuid.NAMESPACE_OID, f"{event['event_id']}/{round_}")
                        ),
                        "occurred_at": later.isoformat(),
                    }
                )
    return feed


def assert_results_in_order(results: list[BatchResult], batches: int, decided: int) -> None:
    """One result per batch of GROUP records, in offset order, deciding `decided` in all."""
    assert len(results) == batches
    offsets = [max(r.commit_offsets.values()) for r in results]
    assert offsets == sorted(offsets) and offsets[-1] == batches * GROUP
    assert sum(r.decided for r in results) == decided

"""The checks a record passes around decoding, on the record rather than on the event's schema:
its size (before anything reads it) and its event time against the broker's timestamp (after).
Both turn bad input into a typed error the pipeline dead-letters; neither reads the wall clock, so
a record redelivered or re-read from offset 0 is judged the same way every time."""

from __future__ import annotations

from order_recovery.core.records import SourceRecord
from order_recovery.domain.errors import EventFromFuture, OversizedRecord
from order_recovery.domain.events import Event
from order_recovery.domain.resolutions import Resolution


def check_size(record: SourceRecord, max_bytes: int) -> None:
    """Raise OversizedRecord when key, value and headers together exceed `max_bytes`."""
    size = record.size
    if size > max_bytes:
        raise OversizedRecord(
            "",
            f"record is {size} bytes (key, value and headers), over the limit of {max_bytes} "
            "(ORDER_RECOVERY_MAX_RECORD_BYTES)",
        )


def check_event_time(event: Event | Resolution, record: SourceRecord, max_skew_s: float) -> None:
    """Raise EventFromFuture when occurred_at is more than `max_skew_s` ahead of the record's
    broker timestamp. A record without a timestamp is not checked: Kafka's record format v2 (the
    only one Kafka 4 writes) stamps every record at produce() (CreateTime) or at append
    (LogAppendTime), so only a hand-made client sends none, and there is nothing to measure
    against that is not the wall clock (see docs/rules.md)."""
    if record.timestamp_ms is None:
        return
    occurred_at = event.envelope.occurred_at
    ahead_s = occurred_at.timestamp() - record.timestamp_ms / 1000
    if ahead_s > max_skew_s:
        raise EventFromFuture(
            "occurred_at",
            f"{occurred_at.isoformat()} is {ahead_s:.3f}s ahead of the record's timestamp "
            f"({record.timestamp_ms} ms), more than the {max_skew_s:g}s allowed "
            "(ORDER_RECOVERY_MAX_EVENT_SKEW_S)",
        )

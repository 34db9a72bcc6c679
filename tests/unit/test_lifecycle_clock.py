"""The lifecycle runtime's clock: deadlines wait for the slowest partition, not the wall clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from order_recovery.core.records import SourceRecord
from order_recovery.runtimes.lifecycle import StreamClock

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


def record(partition: int, at: datetime) -> SourceRecord:
    return SourceRecord(
        "orders.payment-completed", partition, 0, b"k", b"{}", int(at.timestamp() * 1000)
    )


def test_the_slowest_partition_holds_deadlines_back_by_its_record_time_less_the_skew():
    clock = StreamClock(grace_s=60)
    clock.assigned([("orders.payment-completed", 0), ("orders.payment-completed", 1)])
    assert clock.until(NOW) < NOW - timedelta(days=365)  # nothing read yet: nothing fires
    clock.read([record(0, NOW - timedelta(minutes=1)), record(1, NOW - timedelta(minutes=30))])
    assert clock.until(NOW) == NOW - timedelta(minutes=30, seconds=60)


def test_a_partition_read_to_its_end_counts_as_now_and_a_revoked_one_not_at_all():
    clock = StreamClock(grace_s=60)
    clock.assigned([("orders.payment-completed", 0), ("orders.payment-completed", 1)])
    clock.read([record(0, NOW - timedelta(minutes=5)), record(1, NOW - timedelta(hours=2))])
    clock.caught_up([("orders.payment-completed", 1)])
    assert clock.until(NOW) == NOW - timedelta(minutes=5, seconds=60)
    clock.revoked([("orders.payment-completed", 0)])
    assert clock.until(NOW) == NOW - timedelta(seconds=60)


def test_a_record_stamped_ahead_of_the_wall_clock_does_not_run_the_clock_ahead():
    clock = StreamClock(grace_s=0)
    clock.assigned([("orders.payment-completed", 0)])
    clock.read([record(0, NOW + timedelta(hours=1))])
    assert clock.until(NOW) == NOW

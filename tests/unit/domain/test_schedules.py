"""The schedules' slots: which run is due at an instant, and that downtime catches up once."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from order_recovery.domain.history import SHANGHAI
from order_recovery.domain.schedules import (
    DEFAULT_RECONCILE_AT,
    Job,
    due_slot,
    parse_time_of_day,
    reconciliation_day,
    reconciliation_slot,
    snapshot_slot,
)


def sh(*args: int) -> datetime:
    return datetime(*args, tzinfo=SHANGHAI)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("at", "slot"),
    [
        (sh(2026, 12, 2, 10, 0), sh(2026, 12, 2, 10, 0)),  # a boundary is its own slot
        (sh(2026, 12, 2, 10, 14, 59, 999999), sh(2026, 12, 2, 10, 0)),
        (sh(2026, 12, 2, 10, 15), sh(2026, 12, 2, 10, 15)),
        (sh(2026, 12, 2, 0, 7), sh(2026, 12, 2, 0, 0)),
        (sh(2026, 12, 2, 23, 59), sh(2026, 12, 2, 23, 45)),
    ],
)
def test_snapshot_slots_fall_on_the_quarter_hours(at: datetime, slot: datetime) -> None:
    assert snapshot_slot(at) == slot
    assert snapshot_slot(at.astimezone(UTC)) == slot  # the instant counts, not its zone


def test_snapshot_slots_are_fifteen_minutes_apart() -> None:
    at = sh(2026, 12, 2, 9, 0)
    slots = {snapshot_slot(at + timedelta(minutes=m)) for m in range(60)}
    assert sorted(slots) == [at + timedelta(minutes=15 * i) for i in range(4)]


@pytest.mark.parametrize(
    ("at", "slot"),
    [
        (sh(2026, 12, 2, 19, 59, 59), sh(2026, 12, 1, 20, 0)),  # before 20:00: yesterday's
        (sh(2026, 12, 2, 20, 0), sh(2026, 12, 2, 20, 0)),
        (sh(2026, 12, 2, 23, 30), sh(2026, 12, 2, 20, 0)),
        (sh(2026, 12, 3, 0, 30), sh(2026, 12, 2, 20, 0)),
        # 12:00 UTC is 20:00 in Shanghai: the instant decides, in Shanghai time.
        (datetime(2026, 12, 2, 12, 0, tzinfo=UTC), sh(2026, 12, 2, 20, 0)),
        (datetime(2026, 12, 2, 11, 59, tzinfo=UTC), sh(2026, 12, 1, 20, 0)),
    ],
)
def test_the_reconciliation_is_due_once_its_time_has_passed(at: datetime, slot: datetime) -> None:
    assert reconciliation_slot(at) == slot
    assert due_slot(Job.RECONCILIATION, at) == slot


def test_the_reconciliation_time_is_configurable() -> None:
    assert time(20, 0) == DEFAULT_RECONCILE_AT
    at = sh(2026, 12, 2, 7, 0)
    assert reconciliation_slot(at, time(6, 30)) == sh(2026, 12, 2, 6, 30)
    assert reconciliation_slot(at, time(7, 1)) == sh(2026, 12, 1, 7, 1)


def test_a_reconciliation_checks_the_day_before_its_slot() -> None:
    assert reconciliation_day(sh(2026, 12, 2, 20, 0)) == date(2026, 12, 1)
    assert reconciliation_day(sh(2027, 1, 1, 0, 30)) == date(2026, 12, 31)


def test_after_downtime_only_the_latest_slot_is_due() -> None:
    """The runner asks for the due slot only: a process down from 09:50 to 11:20 runs the 11:15
    snapshot once, not the five it missed; a reconciliation missed for three days runs once, for
    the last complete day."""
    assert due_slot(Job.SNAPSHOT, sh(2026, 12, 2, 11, 20)) == sh(2026, 12, 2, 11, 15)
    back = sh(2026, 12, 5, 9, 0)
    assert due_slot(Job.RECONCILIATION, back) == sh(2026, 12, 4, 20, 0)
    assert reconciliation_day(due_slot(Job.RECONCILIATION, back)) == date(2026, 12, 3)


def test_slots_need_an_instant() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        snapshot_slot(datetime(2026, 12, 2, 10, 0))


@pytest.mark.parametrize("text", ["20:00", "06:05", "23:59", " 7:30 "])
def test_time_of_day(text: str) -> None:
    hours, minutes = text.strip().split(":")
    assert parse_time_of_day(text) == time(int(hours), int(minutes))


@pytest.mark.parametrize("text", ["20", "24:00", "20:60", "8pm", "20:0", "-1:00", ""])
def test_bad_time_of_day(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time_of_day(text)

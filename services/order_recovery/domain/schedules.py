"""The seed's two schedules as pure time arithmetic: which slot each job is due for at an instant.

A slot is the instant a run is scheduled for; it names the run (one run per job and slot across
every process, `schedule_runs`). Only the latest slot at or before the instant is ever due: after
downtime the runner takes that one and skips the ones it missed, because a snapshot of the past
cannot be taken afterwards and one reconciliation of the last complete day covers the same ledger
as the missed ones would have.

Schedules are operational, not rules: the runner asks with the wall clock (the only place outside
a quiet partition's deadline where the service reads it), and this module takes the instant as an
argument, like every rule takes the event's time.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from enum import StrEnum

from order_recovery.domain.history import SHANGHAI
from order_recovery.domain.operations import RECONCILIATION_AT, SNAPSHOT_INTERVAL


class Job(StrEnum):
    SNAPSHOT = "snapshot"  # open cases by state and age, every SNAPSHOT_INTERVAL
    RECONCILIATION = "reconciliation"  # the day's money against the payment ledger, daily


#: The reconciliation's default time of day, Asia/Shanghai (ORDER_RECOVERY_RECONCILE_AT).
DEFAULT_RECONCILE_AT = RECONCILIATION_AT.replace(tzinfo=None)
_EPOCH = datetime(1970, 1, 1, tzinfo=SHANGHAI)


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("schedules need timezone-aware datetimes")
    return at


def snapshot_slot(at: datetime) -> datetime:
    """The latest SNAPSHOT_INTERVAL boundary at or before `at` (boundaries counted from a
    Shanghai midnight, so 15-minute slots fall on :00, :15, :30, :45)."""
    since = _aware(at) - _EPOCH
    return _EPOCH + (since // SNAPSHOT_INTERVAL) * SNAPSHOT_INTERVAL


def reconciliation_slot(at: datetime, reconcile_at: time = DEFAULT_RECONCILE_AT) -> datetime:
    """The latest `reconcile_at` (Shanghai wall time) at or before `at`."""
    local = _aware(at).astimezone(SHANGHAI)
    today = datetime.combine(local.date(), reconcile_at.replace(tzinfo=None), SHANGHAI)
    return today if today <= local else today - timedelta(days=1)


def due_slot(job: Job, at: datetime, reconcile_at: time = DEFAULT_RECONCILE_AT) -> datetime:
    """The slot `job` is due for at `at`: the latest one that has begun."""
    if job is Job.SNAPSHOT:
        return snapshot_slot(at)
    return reconciliation_slot(at, reconcile_at)


def reconciliation_day(slot: datetime) -> date:
    """The Shanghai calendar day a reconciliation slot checks: the day before the slot's (T+1).
    At 20:00 the day itself is four hours from its end, its ledger export incomplete and the
    executors' reports on its last decisions not in; the previous day is complete on both
    sides."""
    return _aware(slot).astimezone(SHANGHAI).date() - timedelta(days=1)


def parse_time_of_day(text: str) -> time:
    """`HH:MM` (24 h), Shanghai wall time; ValueError otherwise."""
    hours, sep, minutes = text.strip().partition(":")
    if not sep or len(minutes) != 2 or not (hours.isdigit() and minutes.isdigit()):
        raise ValueError(f"{text!r} is not a time of day HH:MM")
    return time(int(hours), int(minutes))  # ValueError past 23:59

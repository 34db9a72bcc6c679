"""Operations figures from the business reference that are not decision rules, kept here so the
dashboard, reconciliation and retention code quote one definition instead of re-typing numbers."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from order_recovery.domain.history import SHANGHAI

#: Target recovery success rate with proper tooling: 92 % (dashboard target line), in basis points.
RECOVERY_SUCCESS_TARGET_BP = 9_200
#: Mean time to recovery today, and the goal (measured exception event time -> decision).
MTTR_BASELINE = timedelta(minutes=47)
MTTR_TARGET = timedelta(minutes=15)
#: Daily reconciliation against the payment ledger, Beijing time.
RECONCILIATION_AT = time(20, 0, tzinfo=SHANGHAI)
RECONCILIATION_ENDPOINT = "/order/reconciliation"
#: Point-in-time snapshot of open cases.
SNAPSHOT_INTERVAL = timedelta(minutes=15)
#: Age buckets of open cases (the snapshot, the open-case gauge, `stats`): (label, upper bound),
#: the last unbounded. Age is the time since the exception's event time.
CASE_AGE_BUCKETS: tuple[tuple[str, timedelta | None], ...] = (
    ("lt_15m", timedelta(minutes=15)),
    ("lt_1h", timedelta(hours=1)),
    ("lt_6h", timedelta(hours=6)),
    ("lt_1d", timedelta(days=1)),
    ("lt_3d", timedelta(days=3)),
    ("ge_3d", None),
)
#: Append-only audit log retention: at least this long.
AUDIT_RETENTION = timedelta(days=180)
#: Share of failed payments the source reports recovered by re-querying the channel (83 %).
TRANSIENT_RETRY_RECOVERY_BP = 8_300


def age_bucket(age: timedelta) -> str:
    """The CASE_AGE_BUCKETS label of an open case's age (a negative age counts as the first)."""
    for label, bound in CASE_AGE_BUCKETS:
        if bound is None or age < bound:
            return label
    raise AssertionError("the last bucket is unbounded")


def age_bucket_sql(age: str) -> str:
    """The same bucketing as a SQL CASE over an interval expression, so Postgres and Python
    cannot disagree on a bound (a unit test compares them)."""
    whens = " ".join(
        f"WHEN {age} < interval '{int(bound.total_seconds())} seconds' THEN '{label}'"
        for label, bound in CASE_AGE_BUCKETS
        if bound is not None
    )
    return f"(CASE {whens} ELSE '{CASE_AGE_BUCKETS[-1][0]}' END)"


def time_to_recovery(exception_at: datetime, decided_at: datetime) -> timedelta:
    """MTTR sample: from the exception's event time to the decision that recovered it."""
    if exception_at.tzinfo is None or decided_at.tzinfo is None:
        raise ValueError("time_to_recovery needs timezone-aware datetimes")
    return decided_at - exception_at


def meets_mttr_target(exception_at: datetime, decided_at: datetime) -> bool:
    return time_to_recovery(exception_at, decided_at) < MTTR_TARGET


def success_rate_bp(recovered: int, total: int) -> int:
    """Recovered share in basis points (integer, floor); 0 when there were no cases."""
    if recovered < 0 or total < 0 or recovered > total:
        raise ValueError(f"bad counts: recovered={recovered} total={total}")
    return 0 if total == 0 else recovered * 10_000 // total

"""The recovery figures as Prometheus reads them, counted in Postgres from `cases`.

Why from Postgres and not from counters bumped where a case moves: a case is closed by whichever
process applies its last step (a lifecycle process on a resolution or a deadline, the worker when
the decision itself closes it, `recoveryctl review` run by an operator), and a counter in a
process that crashes between its commit and the increment, or in a command-line tool that nobody
scrapes, would be lost. The table is the truth, so the series are the table counted: exact,
whoever closed the case, after any crash.

`order_recovery_cases_closed_total` and `order_recovery_time_to_recovery_seconds` are counters
(monotonic: a closed case stays closed), so `rate()` and `increase()` work on them as on any
counter. Every lifecycle process exports the same values; the recording rules take the `max`
across instances before summing. A scrape re-counts at most every `refresh_s`, three aggregate
scans of `cases` (tens of milliseconds at a million cases; far beyond that, a per-day summary
table kept in the same transactions as the steps would replace the closed-case scan).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from order_recovery.domain.case import RECOVERED_STATES, TERMINAL, CaseState
from order_recovery.domain.operations import CASE_AGE_BUCKETS, age_bucket_sql

log = logging.getLogger(__name__)

PREFIX = "order_recovery"
#: Bucket bounds of time to recovery (seconds): the goal (15 min) and today's mean (47 min) among
#: them, so the alert and the dashboard count against them exactly.
TTR_BUCKETS: tuple[float, ...] = (
    60,
    300,
    600,
    900,
    1800,
    2820,
    3600,
    7200,
    21600,
    86400,
    259200,
    604800,
)
_RECOVERED = tuple(sorted(str(s) for s in RECOVERED_STATES))
OPEN_STATES = tuple(str(s) for s in CaseState if s not in TERMINAL)
CLOSED_STATES = tuple(sorted(str(s) for s in TERMINAL))

CLOSED = """SELECT exception_type, platform, state, count(*) FROM cases
    WHERE closed_at IS NOT NULL GROUP BY 1, 2, 3"""
_LE = ", ".join(
    f"count(*) FILTER (WHERE closed_at - opened_at <= interval '{b} seconds')" for b in TTR_BUCKETS
)
RECOVERED = f"""SELECT exception_type, platform, count(*),
        coalesce(sum(extract(epoch FROM closed_at - opened_at)), 0)::float8, {_LE}
    FROM cases WHERE closed_at IS NOT NULL AND state = ANY(%s) GROUP BY 1, 2"""
OPEN = f"""SELECT platform, state, {age_bucket_sql("now() - opened_at")}, count(*),
        coalesce(sum(amount_fen), 0)::bigint,
        count(*) FILTER (WHERE review_overdue)
    FROM cases WHERE closed_at IS NULL GROUP BY 1, 2, 3"""
UNSENT = "SELECT count(*) FROM case_commands WHERE published_at IS NULL"  # a partial index
SCHEDULES = """SELECT
    (SELECT extract(epoch FROM max(taken_at))::float8 FROM case_snapshots),
    r.ran_at_s, r.status, r.problems
    FROM (SELECT 1) one LEFT JOIN (
        SELECT extract(epoch FROM ran_at)::float8 AS ran_at_s, status,
               missing + extra + mismatched AS problems
        FROM reconciliations ORDER BY ran_at DESC LIMIT 1) r ON true"""


@dataclass
class CaseCounts:
    """One reading of the case figures (what a scrape exports)."""

    closed: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # (type, platform) -> (count, sum of seconds, cumulative count per TTR_BUCKETS bound)
    recovered: dict[tuple[str, str], tuple[int, float, tuple[int, ...]]] = field(
        default_factory=dict
    )
    # (platform, state, age bucket) -> (cases, order amount in fen, reviews overdue)
    open: dict[tuple[str, str, str], tuple[int, int, int]] = field(default_factory=dict)
    unsent_commands: int = 0
    snapshot_at: float | None = None  # epoch seconds of the latest snapshot
    # the latest reconciliation: when it ran, its status and how many lines differed
    reconciled_at: float | None = None
    reconciliation_status: str | None = None
    reconciliation_problems: int = 0


def read_counts(conn: psycopg.Connection[Any]) -> CaseCounts:
    counts = CaseCounts()
    for etype, platform, state, n in conn.execute(CLOSED):
        counts.closed[(etype, platform, state)] = n
    for etype, platform, n, total_s, *cumulative in conn.execute(RECOVERED, (list(_RECOVERED),)):
        counts.recovered[(etype, platform)] = (n, total_s, tuple(cumulative))
    for platform, state, bucket, n, fen, overdue in conn.execute(OPEN):
        counts.open[(platform, state, bucket)] = (n, fen, overdue)
    row = conn.execute(UNSENT).fetchone()
    counts.unsent_commands = row[0] if row else 0
    row = conn.execute(SCHEDULES).fetchone()
    if row is not None:
        counts.snapshot_at, counts.reconciled_at, counts.reconciliation_status = row[:3]
        counts.reconciliation_problems = row[3] or 0
    return counts


class CaseFigures(Collector):
    """A prometheus_client collector over `cases`, every (type, platform) series present from the
    first scrape (at 0) so `rate()` sees each first close."""

    def __init__(
        self,
        dsn: str,
        event_types: Iterable[str],
        platforms: Iterable[str],
        refresh_s: float = 10.0,
    ) -> None:
        self._dsn = dsn
        self._types, self._platforms = sorted(event_types), sorted(platforms)
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._counts: CaseCounts | None = None
        self._read_at = 0.0
        #: None until the first reading; then whether the last one succeeded (readiness).
        self.healthy: bool | None = None

    def counts(self) -> CaseCounts | None:
        """The last reading, re-read when older than refresh_s; None while Postgres never
        answered (the series are then absent, not zero: a zero would claim a rate)."""
        with self._lock:
            if self._counts is None or time.monotonic() - self._read_at >= self._refresh_s:
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = psycopg.connect(self._dsn, autocommit=True)
                    self._counts = read_counts(self._conn)
                    self._read_at = time.monotonic()
                    self.healthy = True
                except psycopg.Error as exc:
                    log.warning("case figures: %s", exc)
                    self.healthy = False
                    if self._conn is not None:
                        self._conn.close()
                        self._conn = None
            return self._counts

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()

    def describe(self) -> Iterator[Metric]:
        """Names only: no query at registration."""
        yield from self._families(CaseCounts())

    def collect(self) -> Iterator[Metric]:
        counts = self.counts()
        if counts is not None:
            yield from self._families(counts)

    def _families(self, counts: CaseCounts) -> Iterator[Metric]:
        closed = CounterMetricFamily(
            f"{PREFIX}_cases_closed",
            "Cases closed, by the state they closed in (recovered and refunded count as "
            "recovered). Counted in Postgres.",
            labels=["event_type", "platform", "state"],
        )
        ttr = HistogramMetricFamily(
            f"{PREFIX}_time_to_recovery_seconds",
            "Cases closed as recovered or refunded: event time of the exception to event time of "
            "the resolution that recovered the case. Counted in Postgres.",
            labels=["event_type", "platform"],
        )
        for etype in self._types:
            for platform in self._platforms:
                for state in CLOSED_STATES:
                    closed.add_metric(
                        [etype, platform, state], counts.closed.get((etype, platform, state), 0)
                    )
                n, total_s, cumulative = counts.recovered.get(
                    (etype, platform), (0, 0.0, (0,) * len(TTR_BUCKETS))
                )
                buckets = [(str(float(b)), c) for b, c in zip(TTR_BUCKETS, cumulative, strict=True)]
                ttr.add_metric([etype, platform], [*buckets, ("+Inf", n)], total_s)
        yield closed
        yield ttr
        open_cases = GaugeMetricFamily(
            f"{PREFIX}_cases_open",
            "Cases not closed yet, by state and age (since the exception's event time).",
            labels=["platform", "state", "age"],
        )
        held = GaugeMetricFamily(
            f"{PREFIX}_cases_awaiting_review_fen",
            "Order amounts of the cases waiting for a reviewer, in fen (the money held).",
            labels=["platform"],
        )
        overdue = GaugeMetricFamily(
            f"{PREFIX}_reviews_overdue",
            "Cases whose review was not taken within the policy's review deadline.",
            labels=["platform"],
        )
        for platform in self._platforms:
            money = overdue_n = 0
            for state in OPEN_STATES:
                for bucket, _ in CASE_AGE_BUCKETS:
                    n, fen, late = counts.open.get((platform, state, bucket), (0, 0, 0))
                    open_cases.add_metric([platform, state, bucket], n)
                    if state == CaseState.AWAITING_REVIEW:
                        money += fen
                    overdue_n += late
            held.add_metric([platform], money)
            overdue.add_metric([platform], overdue_n)
        yield open_cases
        yield held
        yield overdue
        unsent = GaugeMetricFamily(
            f"{PREFIX}_action_commands_unsent",
            "Action commands stored with their step and not yet acknowledged by the broker "
            "(the command outbox; the lifecycle tick relays it).",
        )
        unsent.add_metric([], counts.unsent_commands)
        yield unsent
        yield from _schedule_families(counts)


#: The statuses a reconciliation records (migration 0012).
RECONCILIATION_STATUSES = ("matched", "mismatched", "ledger_missing")


def _schedule_families(counts: CaseCounts) -> Iterator[Metric]:
    """When the schedules last ran, and what the latest reconciliation found: a series only once
    a run exists (a timestamp of 0 would read as "1970")."""
    snapshot = GaugeMetricFamily(
        f"{PREFIX}_snapshot_last_taken_timestamp_seconds",
        "When the latest snapshot of the open cases was taken (scheduled every 15 min).",
    )
    if counts.snapshot_at is not None:
        snapshot.add_metric([], counts.snapshot_at)
    yield snapshot
    ran = GaugeMetricFamily(
        f"{PREFIX}_reconciliation_last_run_timestamp_seconds",
        "When the latest reconciliation against the payment ledger ran (daily, 20:00).",
    )
    status = GaugeMetricFamily(
        f"{PREFIX}_reconciliation_status",
        "1 for the status of the latest reconciliation (matched, mismatched, ledger_missing).",
        labels=["status"],
    )
    problems = GaugeMetricFamily(
        f"{PREFIX}_reconciliation_problems",
        "Lines the latest reconciliation found missing, extra or different.",
    )
    if counts.reconciled_at is not None:
        ran.add_metric([], counts.reconciled_at)
        for name in RECONCILIATION_STATUSES:
            status.add_metric([name], 1 if name == counts.reconciliation_status else 0)
        problems.add_metric([], counts.reconciliation_problems)
    yield ran
    yield status
    yield problems

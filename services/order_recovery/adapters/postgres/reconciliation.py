"""Reconciliation on Postgres: what the ledger should show for a day (coupons and refunds
decided, with the executor's reports; payments that recovered a case), and the record of each run
(`reconciliations`). `reconcile_and_record` is the one code path of the daily schedule
(adapters.postgres.schedules) and of `recoveryctl reconcile --record`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from order_recovery.adapters.ledger import read_ledger
from order_recovery.core.reconciliation import Line, Reconciliation, reconcile
from order_recovery.domain.history import SHANGHAI

DECIDED = """SELECT c.order_id, c.exception_type, c.kind, c.amount_fen, c.event_id::text,
        coalesce(r.status, 'unreported')
    FROM compensations c
    LEFT JOIN LATERAL (
        -- The executor's word on the paying action: a completion wins over any failure, then
        -- a final failure; a failure it will retry is no answer yet.
        SELECT x.body->>'status' AS status FROM resolutions x
        WHERE x.event_type = 'action-report'
          AND (x.order_id, x.exception_type) = (c.order_id, c.exception_type)
          AND x.body->>'action' = CASE c.kind WHEN 'coupon' THEN 'issue_coupon'
                                              ELSE 'auto_refund' END
          AND (x.body->>'status' = 'completed'
               OR coalesce((x.body->>'final')::boolean, true))
        ORDER BY x.body->>'status' = 'completed' DESC, x.occurred_at DESC LIMIT 1
    ) r ON true
    WHERE c.decided_at >= %(start)s AND c.decided_at < %(end)s
    ORDER BY c.order_id, c.exception_type"""
#: Payments that recovered a case: the payment-completed resolutions whose step recovered it.
PAID = """SELECT r.order_id, r.exception_type, 'payment', (r.body->>'amount_fen')::bigint,
        r.event_id::text, 'completed'
    FROM resolutions r
    JOIN case_steps s ON (s.order_id, s.exception_type, s.seq)
                       = (r.order_id, r.exception_type, r.step_seq)
    WHERE r.event_type = 'payment-completed' AND s.to_state = 'recovered'
      AND r.occurred_at >= %(start)s AND r.occurred_at < %(end)s
    ORDER BY r.order_id, r.exception_type"""


def decided_on(conn: psycopg.Connection[Any], day: date) -> list[Line]:
    """What the ledger should show for a Shanghai day: the coupons and refunds decided that day
    (with the executor's report on each) and the payments that recovered a case that day."""
    start = datetime.combine(day, time(), SHANGHAI)
    span = {"start": start, "end": start + timedelta(days=1)}
    rows = conn.execute(DECIDED, span).fetchall() + conn.execute(PAID, span).fetchall()
    return [Line(*row) for row in rows]


def reconcile_and_record(
    conn: psycopg.Connection[Any],
    day: date,
    ledger_path: Path | None,
    source: str,
    ran_at: datetime,
) -> Reconciliation:
    """Reconcile a day against the ledger file (absent: status ledger_missing, not an error; a
    malformed one: LedgerError) and add the result to `reconciliations`, in the caller's
    transaction."""
    present = ledger_path is not None and ledger_path.is_file()
    ledger = read_ledger(ledger_path) if ledger_path is not None and present else None
    result = reconcile(decided_on(conn, day), day, ledger)
    conn.execute(
        """INSERT INTO reconciliations (day, ran_at, source, ledger, status, missing, extra,
               mismatched, summary) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (
            day,
            ran_at,
            source,
            None if ledger_path is None else str(ledger_path),
            result.status,
            len(result.missing),
            len(result.extra),
            len(result.mismatched) + len(result.booked_though_failed),
            Jsonb(result.to_json(), dumps=json_text),
        ),
    )
    return result


@dataclass(frozen=True, slots=True)
class Recorded:
    """A reconciliation run as `reconciliations` keeps it."""

    day: date
    ran_at: datetime
    source: str
    ledger: str | None
    status: str
    missing: int
    extra: int
    mismatched: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def latest_reconciliation(conn: psycopg.Connection[Any]) -> Recorded | None:
    """The most recent reconciliation run (scheduled or by hand); None before the first. For a
    gauge of the latest status: `status` is matched, mismatched or ledger_missing."""
    row = conn.execute(
        """SELECT day, ran_at, source, ledger, status, missing, extra, mismatched
           FROM reconciliations ORDER BY ran_at DESC LIMIT 1"""
    ).fetchone()
    return None if row is None else Recorded(*row)


def json_text(value: Any) -> str:
    """jsonb text of a record (orjson writes dates and datetimes as ISO 8601)."""
    return orjson.dumps(value).decode()

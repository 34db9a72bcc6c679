"""The point-in-time view of open cases the seed asks for every 15 minutes: counts and money by
state, exception type, platform and age bucket, stored in `case_snapshots` (header) and
`case_snapshot_rows`. Taken by the schedule runner (adapters/postgres/schedules.py) as the
worker, or by hand (`recoveryctl snapshot take`) as the operator: the same function either way.

Age is the snapshot's time minus the opening exception's event time, bucketed by
`domain.operations.age_bucket_sql` (the same bounds as the Python `age_bucket`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg

from order_recovery.domain.operations import age_bucket_sql

OPEN_CASES = f"""SELECT state, exception_type, platform,
        {age_bucket_sql("(%(at)s::timestamptz - opened_at)")} AS age_bucket,
        count(*)::int, coalesce(sum(amount_fen), 0)::bigint, min(opened_at)
    FROM cases WHERE closed_at IS NULL
    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"""
INSERT_HEAD = """INSERT INTO case_snapshots (taken_at, slot, source, open_cases, amount_fen)
    VALUES (%s, %s, %s, %s, %s)"""
INSERT_ROW = """INSERT INTO case_snapshot_rows (taken_at, state, exception_type, platform,
        age_bucket, cases, amount_fen, oldest_opened_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"""


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    state: str
    exception_type: str
    platform: str
    age_bucket: str
    cases: int
    amount_fen: int
    oldest_opened_at: datetime

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: datetime
    slot: datetime | None  # None: taken by hand
    source: str  # scheduled | manual
    rows: list[SnapshotRow]

    @property
    def open_cases(self) -> int:
        return sum(r.cases for r in self.rows)

    @property
    def amount_fen(self) -> int:
        return sum(r.amount_fen for r in self.rows)

    def by_state(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            out[r.state] = out.get(r.state, 0) + r.cases
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "taken_at": self.taken_at,
            "slot": self.slot,
            "source": self.source,
            "open_cases": self.open_cases,
            "amount_fen": self.amount_fen,
            "rows": [r.to_json() for r in self.rows],
        }


def take_snapshot(
    conn: psycopg.Connection[Any], taken_at: datetime, slot: datetime | None, source: str
) -> Snapshot:
    """Read the open cases and store them as one snapshot, in the caller's transaction (the
    runner commits it with its schedule_runs row). One SELECT: header and rows agree."""
    rows = [SnapshotRow(*r) for r in conn.execute(OPEN_CASES, {"at": taken_at}).fetchall()]
    snapshot = Snapshot(taken_at, slot, source, rows)
    conn.execute(INSERT_HEAD, (taken_at, slot, source, snapshot.open_cases, snapshot.amount_fen))
    with conn.cursor() as cur:
        cur.executemany(
            INSERT_ROW,
            [
                (taken_at, r.state, r.exception_type, r.platform, r.age_bucket, r.cases,
                 r.amount_fen, r.oldest_opened_at)
                for r in rows
            ],
        )  # fmt: skip
    return snapshot


def latest_snapshot(conn: psycopg.Connection[Any]) -> Snapshot | None:
    """The most recent snapshot, scheduled or by hand (None before the first)."""
    found = recent_snapshots(conn, 1)
    return found[0] if found else None


def recent_snapshots(conn: psycopg.Connection[Any], limit: int) -> list[Snapshot]:
    """The `limit` most recent snapshots, newest first, each with its rows."""
    heads = conn.execute(
        "SELECT taken_at, slot, source FROM case_snapshots ORDER BY taken_at DESC LIMIT %s",
        (limit,),
    ).fetchall()
    if not heads:
        return []
    rows: dict[datetime, list[SnapshotRow]] = {h[0]: [] for h in heads}
    for taken_at, *rest in conn.execute(
        """SELECT taken_at, state, exception_type, platform, age_bucket, cases, amount_fen,
               oldest_opened_at FROM case_snapshot_rows WHERE taken_at = ANY(%s)
           ORDER BY taken_at, state, exception_type, platform, age_bucket""",
        (list(rows),),
    ).fetchall():
        rows[taken_at].append(SnapshotRow(*rest))
    return [Snapshot(at, slot, source, rows[at]) for at, slot, source in heads]

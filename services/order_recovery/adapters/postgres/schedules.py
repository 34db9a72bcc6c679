"""The schedule runner: the seed's snapshot and reconciliation, run inside the service.

Every lifecycle process calls `ScheduleRunner.tick` from its loop; whichever gets there first runs
a due slot, and it runs once across all of them. One transaction per run:

1. `pg_try_advisory_xact_lock` on (job, slot): another process running it now makes this one
   skip (it looks again on a later tick), never wait;
2. a `schedule_runs` row for (job, slot) already there: done, by whoever;
3. run the job (inside a savepoint) and insert its `schedule_runs` row, with the job's outcome
   or its error, then commit.

So a slot is taken only when its result commits: a runner that dies mid-run (SIGKILL, lost
connection) leaves nothing, Postgres rolls its transaction back and frees the lock, and the next
tick of any runner runs that slot. A job that raises is logged and recorded with its error, and
not retried before its next slot (a retry every two seconds of a malformed ledger helps nobody;
an operator can run it by hand). `statement_timeout` bounds a stuck run.

Only the latest due slot is run (domain.schedules): after downtime the missed ones are skipped.
Which slots are known done is remembered in memory, so a tick costs a query only when a new slot
begins. The wall clock decides when a slot is due: schedules are operations, not rules.

Why not `procrastinate`: see docs/operations.md, Schedules.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from order_recovery.adapters.ledger import ledger_file
from order_recovery.adapters.postgres.reconciliation import json_text, reconcile_and_record
from order_recovery.adapters.postgres.snapshots import take_snapshot
from order_recovery.config import Settings
from order_recovery.domain.schedules import Job, due_slot, reconciliation_day

log = logging.getLogger(__name__)

#: The advisory lock class of schedule runs (the second key is hashtext of job and slot).
LOCK_CLASS = 0x5C4ED
#: Longest a run's statement may take before it is cancelled and recorded as failed.
STATEMENT_TIMEOUT_MS = 120_000
#: How long to leave Postgres alone after the runner could not reach it.
RECONNECT_AFTER_S = 30.0

RAN, FAILED, DONE, BUSY = "ran", "failed", "done", "busy"

INSERT_RUN = """INSERT INTO schedule_runs (job, slot, runner, started_at, finished_at, outcome)
    VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"""


class ScheduleRunner:
    """Runs the due slot of each job once across processes (see the module's doc)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runner = settings.worker_id
        self._conn: psycopg.Connection[Any] | None = None
        self._done: set[tuple[Job, datetime]] = set()
        self._retry_at = 0.0

    def tick(self, now: datetime | None = None) -> dict[Job, str]:
        """Run what is due; never raises (the lifecycle loop must go on). What each job did."""
        if time.monotonic() < self._retry_at:
            return {}
        try:
            return self.run_due(now or datetime.now(UTC))
        except Exception as exc:
            log.warning("schedules: %s; trying again in %.0f s", exc, RECONNECT_AFTER_S)
            self.close()
            self._retry_at = time.monotonic() + RECONNECT_AFTER_S
            return {}

    def run_due(self, now: datetime) -> dict[Job, str]:
        done: dict[Job, str] = {}
        for job in Job:
            slot = due_slot(job, now, self.settings.reconcile_at)
            if (job, slot) in self._done:
                continue
            done[job] = what = self._run(job, slot, now)
            if what != BUSY:
                self._done = {(j, s) for j, s in self._done if j != job} | {(job, slot)}
        return done

    def _run(self, job: Job, slot: datetime, now: datetime) -> str:
        conn = self._connection()
        with conn.transaction():
            (locked,) = conn.execute(
                "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))",
                (LOCK_CLASS, f"{job}/{slot.isoformat()}"),
            ).fetchone() or (False,)
            if not locked:
                return BUSY
            if conn.execute(
                "SELECT 1 FROM schedule_runs WHERE job = %s AND slot = %s", (job, slot)
            ).fetchone():
                return DONE
            started = datetime.now(UTC)
            try:
                with conn.transaction():  # a savepoint: a failed job leaves its row only
                    outcome = self._job(conn, job, slot, now)
                what = RAN
            except Exception as exc:
                if conn.broken:
                    raise
                log.exception("schedules: %s of slot %s failed", job, slot.isoformat())
                outcome, what = {"error": f"{type(exc).__name__}: {exc}"}, FAILED
            conn.execute(
                INSERT_RUN,
                (job, slot, self.runner, started, datetime.now(UTC), Jsonb(outcome, json_text)),
            )
        return what

    def _job(
        self, conn: psycopg.Connection[Any], job: Job, slot: datetime, now: datetime
    ) -> dict[str, Any]:
        if job is Job.SNAPSHOT:
            snap = take_snapshot(conn, now, slot, "scheduled")
            log.info("snapshot: %d open cases", snap.open_cases)
            return {"taken_at": now, "open_cases": snap.open_cases, "amount_fen": snap.amount_fen}
        day = reconciliation_day(slot)
        ledger = ledger_file(self.settings.ledger_dir, day)
        result = reconcile_and_record(conn, day, ledger, "scheduled", now)
        level = logging.INFO if result.status == "matched" else logging.WARNING
        log.log(level, "reconciliation of %s: %s", day, result.status)
        return {
            "day": day,
            "ledger": None if ledger is None else str(ledger),
            "status": result.status,
            "missing": len(result.missing),
            "extra": len(result.extra),
            "mismatched": len(result.mismatched) + len(result.booked_though_failed),
        }

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.settings.database_url,
                connect_timeout=5,
                autocommit=True,  # transactions are explicit (conn.transaction())
                options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass(frozen=True, slots=True)
class Run:
    job: str
    slot: datetime
    runner: str
    started_at: datetime
    finished_at: datetime
    outcome: dict[str, Any]

    @property
    def failed(self) -> bool:
        return "error" in self.outcome

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def last_runs(conn: psycopg.Connection[Any], per_job: int = 1) -> list[Run]:
    """The latest `per_job` runs of each job, newest first within a job."""
    rows = conn.execute(
        """SELECT job, slot, runner, started_at, finished_at, outcome FROM (
               SELECT *, row_number() OVER (PARTITION BY job ORDER BY slot DESC) AS n
               FROM schedule_runs) r
           WHERE n <= %s ORDER BY job, slot DESC""",
        (per_job,),
    ).fetchall()
    return [Run(*row) for row in rows]

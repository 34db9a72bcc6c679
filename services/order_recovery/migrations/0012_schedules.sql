-- The seed's schedules, run inside the service (adapters/postgres/schedules.py): the 15-minute snapshot of open
-- cases and the daily reconciliation against the payment ledger.
--
-- `schedule_runs` has one row per job and slot, written in the same transaction as the run's
-- result and under a transaction-scoped advisory lock: the slot is taken only when its result
-- commits, so each slot runs once across processes, and a runner that dies mid-run leaves no row
-- (its transaction is rolled back) and the next tick of any runner runs the slot again. A job
-- that fails is recorded with its error (outcome->>'error') and not retried until the next slot.
CREATE TABLE schedule_runs (
    job             text        NOT NULL CHECK (job IN ('snapshot', 'reconciliation')),
    slot            timestamptz NOT NULL,   -- the instant the run was scheduled for
    runner          text        NOT NULL,   -- the process (worker id) that ran it
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    outcome         jsonb       NOT NULL,   -- what it did, or {"error": ...}
    PRIMARY KEY (job, slot)
);

-- A snapshot: its header (a snapshot without open cases still has one) and one row per state,
-- exception type, platform and age bucket (domain.operations.CASE_AGE_BUCKETS, age = taken_at
-- minus the opening exception's event time).
CREATE TABLE case_snapshots (
    taken_at        timestamptz PRIMARY KEY,
    slot            timestamptz,            -- the schedule's slot; NULL: taken by hand
    source          text        NOT NULL CHECK (source IN ('scheduled', 'manual')),
    open_cases      integer     NOT NULL,
    amount_fen      bigint      NOT NULL
);
CREATE TABLE case_snapshot_rows (
    taken_at        timestamptz NOT NULL REFERENCES case_snapshots,
    state           text        NOT NULL,
    exception_type  text        NOT NULL,
    platform        text        NOT NULL,
    age_bucket      text        NOT NULL,
    cases           integer     NOT NULL,
    amount_fen      bigint      NOT NULL,
    oldest_opened_at timestamptz NOT NULL,
    PRIMARY KEY (taken_at, state, exception_type, platform, age_bucket)
);

-- Every reconciliation run, scheduled or by hand (`recoveryctl reconcile --record`).
CREATE TABLE reconciliations (
    day             date        NOT NULL,   -- the Asia/Shanghai day checked
    ran_at          timestamptz NOT NULL,
    source          text        NOT NULL CHECK (source IN ('scheduled', 'manual')),
    ledger          text,                   -- the ledger file's path
    status          text        NOT NULL
                    CHECK (status IN ('matched', 'mismatched', 'ledger_missing')),
    missing         integer     NOT NULL,
    extra           integer     NOT NULL,
    mismatched      integer     NOT NULL,
    summary         jsonb       NOT NULL,   -- totals per kind and the differing lines
    PRIMARY KEY (day, ran_at)
);
CREATE INDEX reconciliations_ran_at_idx ON reconciliations (ran_at);

-- The lifecycle process runs the schedules as the worker: it reads its runs back (has this slot
-- run?) and adds them, snapshots and reconciliations; all three are records, never changed. It
-- reads the latest snapshot and reconciliation too: its metrics export when they ran and what
-- the reconciliation found.
GRANT SELECT, INSERT ON schedule_runs TO recovery_write;
GRANT SELECT, INSERT ON case_snapshots, case_snapshot_rows, reconciliations TO recovery_write;
-- An operator runs either by hand (`recoveryctl snapshot take`, `reconcile --record`); reading
-- comes with recovery_read.
GRANT INSERT ON case_snapshots, case_snapshot_rows, reconciliations TO recovery_operate;

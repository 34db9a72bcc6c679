"""Least privilege: each role's DSN reaches its own role, and each role is refused what it must
never do. (That the worker may do everything it needs is proved by every pipeline and end-to-end
test: they run it through the `database_url` fixture, the worker's DSN.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from order_recovery.adapters.postgres.migrations import migrate
from order_recovery.adapters.postgres.store import PostgresStore
from order_recovery.config import Settings
from tests.support.databases import scratch_database

pytestmark = pytest.mark.integration

TABLES = (
    "decisions",
    "actions",
    "compensations",
    "audit_log",
    "recovery_cases",
    "outbox_batches",
    "limit_counters",
    "partition_leases",
    "unsendable_dead_letters",
    "cases",
    "case_steps",
    "resolutions",
    "case_commands",
    "schedule_runs",
    "case_snapshots",
    "case_snapshot_rows",
    "reconciliations",
    "schema_migrations",
)
EVENT_ID = "6f1d3c52-4a7e-4d1b-9a41-1f0c2b7d9e01"


def _seed(owner_url: str) -> None:
    """One row in each table, so that what a refused statement would have changed is there."""
    with psycopg.connect(owner_url) as conn:
        conn.execute(
            """INSERT INTO decisions (event_id, order_id, exception_type, platform, merchant_id,
                   buyer_id, category, amount_fen, occurred_at, outcome, rule_ids, risk_flags,
                   reason, policy_version, source_topic, source_partition, source_offset, event)
               VALUES (%(e)s, 'o1', 'shipping-delay', 'douyin', 'm1', 'b1', 'apparel', 2395,
                   now(), 'recovered', '{r1}', '{}', 'why', 'douyin-2026.1', 't', 0, 0, '{}')""",
            {"e": EVENT_ID},
        )
        conn.execute("INSERT INTO actions VALUES (%s, 0, 'issue_coupon')", (EVENT_ID,))
        conn.execute(
            """INSERT INTO compensations (order_id, exception_type, kind, amount_fen, buyer_id,
                   event_day, event_id)
               VALUES ('o1', 'shipping-delay', 'coupon', 500, 'b1', current_date, %s)""",
            (EVENT_ID,),
        )
        conn.execute(
            """INSERT INTO audit_log (order_id, exception_type, event_id, to_status)
               VALUES ('o1', 'shipping-delay', %s, 'recovered')""",
            (EVENT_ID,),
        )
        conn.execute(
            """INSERT INTO recovery_cases (order_id, exception_type, platform, merchant_id,
                   buyer_id, status, opened_at, updated_at, last_event_id)
               VALUES ('o1', 'shipping-delay', 'douyin', 'm1', 'b1', 'recovered', now(), now(),
                       %s)""",
            (EVENT_ID,),
        )
        conn.execute(
            """INSERT INTO outbox_batches (batch_id, event_ids, order_ids, payloads)
               VALUES (gen_random_uuid(), ARRAY[%s::uuid], '{o1}', ARRAY['{}'::bytea])""",
            (EVENT_ID,),
        )
        conn.execute(
            "INSERT INTO limit_counters (kind, subject, used, ceiling)"
            " VALUES ('buyer_refunds', 'b1 2026-12-02', 1, 5)"
        )
        conn.execute(
            "INSERT INTO partition_leases (topic, partition, epoch, owner)"
            " VALUES ('orders.shipping-delay', 0, 1, 'w1')"
        )
        conn.execute(
            """INSERT INTO unsendable_dead_letters (source_topic, source_partition,
                   source_offset, dlq_topic, error_class, error_message, refusal, header_names,
                   header_values, value_bytes, worker_id)
               VALUES ('orders.shipping-delay', 0, 7, 'orders.shipping-delay.dlq',
                   'malformed_json', 'm', 'too large', '{}', '{}', 9, 'w1')"""
        )
        conn.execute(
            """INSERT INTO cases (order_id, exception_type, platform, buyer_id, amount_fen,
                   opened_at, opened_by, state, seq, state_since)
               VALUES ('o1', 'shipping-delay', 'douyin', 'b1', 2395, now(), %s,
                   'awaiting_review', 1, now())""",
            (EVENT_ID,),
        )
        conn.execute(
            """INSERT INTO case_steps (order_id, exception_type, seq, rule_id, to_state,
                   cause_kind, cause_ref, cause_at, reason)
               VALUES ('o1', 'shipping-delay', 1, 'case.open.review', 'awaiting_review',
                   'exception', %s, now(), 'why')""",
            (EVENT_ID,),
        )
        conn.execute(
            """INSERT INTO resolutions (event_id, event_type, order_id, exception_type, platform,
                   occurred_at, rule_id, body)
               VALUES (gen_random_uuid(), 'parcel-handed-over', 'o1', 'shipping-delay',
                   'douyin', now(), 'case.ignored.not_awaited', '{}')"""
        )
        conn.execute(
            """INSERT INTO case_commands (action_key, order_id, exception_type, platform,
                   step_seq, action, rule_id, amount_fen, issued_at)
               VALUES ('o1/shipping-delay/1/freeze', 'o1', 'shipping-delay', 'douyin', 1,
                   'freeze', 'case.open.review', 2395, now())"""
        )
        conn.execute(
            """INSERT INTO schedule_runs (job, slot, runner, started_at, finished_at, outcome)
               VALUES ('snapshot', '2026-12-02 12:00+08', 'w1', now(), now(), '{}')"""
        )
        conn.execute(
            """INSERT INTO case_snapshots (taken_at, slot, source, open_cases, amount_fen)
               VALUES ('2026-12-02 12:00+08', '2026-12-02 12:00+08', 'scheduled', 1, 2395)"""
        )
        conn.execute(
            """INSERT INTO case_snapshot_rows (taken_at, state, exception_type, platform,
                   age_bucket, cases, amount_fen, oldest_opened_at)
               VALUES ('2026-12-02 12:00+08', 'awaiting_review', 'shipping-delay', 'douyin',
                   'lt_15m', 1, 2395, now())"""
        )
        conn.execute(
            """INSERT INTO reconciliations (day, ran_at, source, ledger, status, missing, extra,
                   mismatched, summary)
               VALUES ('2026-12-01', now(), 'scheduled', NULL, 'ledger_missing', 0, 0, 0, '{}')"""
        )


def _snapshot(owner_url: str) -> dict[str, list[tuple[object, ...]]]:
    with psycopg.connect(owner_url) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in TABLES}


@pytest.fixture(scope="module")
def seeded_database(
    postgres_admin_url: str, server_settings: Settings, migrated_template: str
) -> Iterator[Settings]:
    """One database for the module's refusals, with a row in every table: a refused statement
    changes nothing, so they can share it."""
    with scratch_database(
        postgres_admin_url, server_settings, "ortest", template=migrated_template
    ) as database:
        _seed(database.database_owner_url)
        yield database


@pytest.fixture
def seeded(seeded_database: Settings) -> Iterator[Settings]:
    """The seeded database; after the test, every row is as it was."""
    before = _snapshot(seeded_database.database_owner_url)
    yield seeded_database
    assert _snapshot(seeded_database.database_owner_url) == before


def _refused(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)


# --------------------------------------------------------------------------- who is who
def test_each_dsn_reaches_its_own_role(test_database: Settings) -> None:
    expected = {
        "DATABASE_URL": "recovery_worker",
        "DATABASE_OWNER_URL": "recovery_owner",
        "DATABASE_READER_URL": "recovery_reports",
        "DATABASE_OPERATOR_URL": "recovery_operator",
    }
    got = {}
    for variable, dsn in test_database.database_env().items():
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "SELECT current_user, r.rolsuper, r.rolcreaterole, r.rolcreatedb"
                " FROM pg_roles r WHERE r.rolname = current_user"
            ).fetchone()
        assert row is not None
        assert row[1:] == (False, False, False), f"{variable}: {row[0]} has powers it must not"
        got[variable] = row[0]
    assert got == expected


def test_the_owner_owns_every_object_and_no_service_role_owns_any(
    test_database: Settings,
) -> None:
    with psycopg.connect(test_database.database_owner_url) as conn:
        owners = conn.execute(
            """SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class
               WHERE relnamespace = 'public'::regnamespace
               UNION SELECT DISTINCT pg_get_userbyid(proowner) FROM pg_proc
               WHERE pronamespace = 'public'::regnamespace
               UNION SELECT pg_get_userbyid(datdba) FROM pg_database
               WHERE datname = current_database()"""
        ).fetchall()
    assert owners == [("recovery_owner",)]


# --------------------------------------------------------------------------- the worker
WORKER_REFUSED = (
    # The audit log and the compensations are evidence: never rewritten, never removed.
    "TRUNCATE audit_log",
    "UPDATE audit_log SET to_status = 'closed_no_recovery'",
    "DELETE FROM audit_log",
    "TRUNCATE compensations",
    "UPDATE compensations SET amount_fen = 0",
    "DELETE FROM compensations",
    # Neither is any decision or action.
    "TRUNCATE decisions",
    "UPDATE decisions SET outcome = 'expired'",
    "DELETE FROM decisions",
    "DELETE FROM actions",
    "UPDATE actions SET action = 'auto_refund'",
    # A case's state moves on; its identity is written once and the case is never removed.
    "UPDATE recovery_cases SET buyer_id = 'someone-else'",
    "DELETE FROM recovery_cases",
    # A lifecycle case moves on (state, step, deadline...); who and what it is stays, and it is
    # never removed. Its steps and the resolutions recorded are evidence.
    "UPDATE cases SET buyer_id = 'someone-else'",
    "UPDATE cases SET amount_fen = 0",
    "DELETE FROM cases",
    "TRUNCATE cases",
    "UPDATE case_steps SET to_state = 'recovered'",
    "DELETE FROM case_steps",
    "UPDATE resolutions SET body = '{}'",
    "UPDATE resolutions SET order_id = 'o2'",
    "DELETE FROM resolutions",
    # An action command is written with its step and only ever marked published: never
    # re-aimed at another order or action, never removed (its key is what an executor applies
    # once).
    "UPDATE case_commands SET action = 'auto_refund'",
    "UPDATE case_commands SET action_key = 'o2/shipping-delay/1/auto_refund'",
    "UPDATE case_commands SET amount_fen = 0",
    "DELETE FROM case_commands",
    "TRUNCATE case_commands",
    # The schedules' runs, snapshots and reconciliations are records: added, never changed or
    # removed.
    "UPDATE schedule_runs SET outcome = '{}'",
    "UPDATE schedule_runs SET slot = now()",
    "DELETE FROM schedule_runs",
    "TRUNCATE schedule_runs",
    "UPDATE case_snapshots SET open_cases = 0",
    "DELETE FROM case_snapshots",
    "UPDATE case_snapshot_rows SET cases = 0",
    "DELETE FROM case_snapshot_rows",
    "TRUNCATE case_snapshots, case_snapshot_rows",
    "UPDATE reconciliations SET status = 'matched'",
    "DELETE FROM reconciliations",
    "TRUNCATE reconciliations",
    # An outbox batch is only ever marked published.
    "UPDATE outbox_batches SET payloads = '{}'",
    "DELETE FROM outbox_batches",
    # A limit counter only moves on: never reset, re-keyed or removed (a refund cap reset by
    # hand would let a buyer be paid past it).
    "TRUNCATE limit_counters",
    "DELETE FROM limit_counters",
    "UPDATE limit_counters SET subject = 'someone-else 2026-12-02'",
    # A lease is claimed (new epoch, new owner), never removed or moved to another partition.
    "TRUNCATE partition_leases",
    "DELETE FROM partition_leases",
    "UPDATE partition_leases SET partition = 1",
    # A dead letter kept in Postgres is added once (ON CONFLICT DO NOTHING, no target), never
    # changed, removed, or read back by the worker.
    "UPDATE unsendable_dead_letters SET error_class = 'rule_error'",
    "DELETE FROM unsendable_dead_letters",
    "TRUNCATE unsendable_dead_letters",
    "SELECT * FROM unsendable_dead_letters",
    # What the worker does not need to read.
    "SELECT * FROM audit_log",
    "SELECT * FROM actions",
    "SELECT * FROM schema_migrations",
    # The schema is the owner's: the guard stays, nothing is altered or added.
    "DROP TRIGGER audit_log_append_only ON audit_log",
    "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
    "DROP FUNCTION audit_log_guard()",
    "CREATE OR REPLACE FUNCTION audit_log_guard() RETURNS trigger LANGUAGE plpgsql"
    " AS $$ BEGIN RETURN NULL; END $$",
    "ALTER TABLE compensations DROP CONSTRAINT compensations_pkey",
    "DROP TABLE audit_log",
    "CREATE TABLE public.scratch (id int)",
    "ALTER TABLE audit_log OWNER TO recovery_worker",
)


@pytest.mark.parametrize("statement", WORKER_REFUSED)
def test_the_worker_is_refused(seeded: Settings, statement: str) -> None:
    _refused(seeded.database_url, statement)


def test_the_worker_may_move_a_case_on_and_mark_a_batch_published(seeded: Settings) -> None:
    """The updates the pipeline makes, and only on the columns it makes them on."""
    with psycopg.connect(seeded.database_url) as conn:
        conn.execute("UPDATE recovery_cases SET status = 'pending', updated_at = now()")
        conn.execute("UPDATE outbox_batches SET published_at = now()")
        conn.execute("UPDATE limit_counters SET used = used + 1, ceiling = 5, updated_at = now()")
        conn.execute("UPDATE partition_leases SET epoch = epoch + 1, owner = 'w2'")
        conn.execute("SELECT 1 FROM partition_leases FOR SHARE")
        conn.execute(
            """UPDATE cases SET state = 'recovered', seq = seq + 1, state_since = now(),
                   deadline_kind = NULL, deadline_due_at = NULL, deadline_seq = NULL,
                   held_actions = '{}', fallback_actions = '{}', released = '{}',
                   review_overdue = false, closed_at = now(), updated_at = now()"""
        )
        conn.execute("SELECT 1 FROM cases FOR UPDATE")
        conn.execute("UPDATE resolutions SET rule_id = 'case.shipment.handed_over', step_seq = 2")
        conn.execute(  # the command relay's pass
            "SELECT id FROM case_commands WHERE published_at IS NULL FOR UPDATE SKIP LOCKED"
        )
        conn.execute("UPDATE case_commands SET published_at = now()")
        conn.execute(
            """INSERT INTO case_commands (action_key, order_id, exception_type, platform,
                   step_seq, action, rule_id, amount_fen, issued_at)
               VALUES ('o1/shipping-delay/2/auto_refund', 'o1', 'shipping-delay', 'douyin', 2,
                   'auto_refund', 'case.review.approved', 2395, now())"""
        )
        conn.rollback()  # the `seeded` fixture checks that nothing changed


def test_an_operator_approving_a_review_may_write_its_commands(seeded: Settings) -> None:
    """An approval releases the held actions as the operator: their commands go into the
    outbox in the review's transaction (the lifecycle process relays them)."""
    with psycopg.connect(seeded.database_operator_url) as conn:
        conn.execute(
            """INSERT INTO case_commands (action_key, order_id, exception_type, platform,
                   step_seq, action, rule_id, amount_fen, issued_at)
               VALUES ('o1/shipping-delay/2/issue_coupon', 'o1', 'shipping-delay', 'douyin',
                   2, 'issue_coupon', 'case.review.approved', 2395, now())"""
        )
        conn.rollback()


def test_the_worker_writes_through_its_temporary_stage_on_a_freshly_migrated_database(
    empty_database: Settings,
) -> None:
    """A database migrated from scratch, not a template's copy: CONNECT and TEMPORARY on the
    database come from migration 0006 alone, and PUBLIC has neither."""
    migrate(empty_database.database_owner_url)
    store = PostgresStore(empty_database.database_url)
    try:
        store.ping()  # creates the session's decision_stage
        assert store.outbox_backlog() == 0
    finally:
        store.close()
    _refused(empty_database.database_reader_url, "CREATE TEMP TABLE t (i int)")


def test_a_role_outside_the_services_groups_cannot_connect(
    postgres_admin_url: str, test_database: Settings
) -> None:
    name = f"stranger_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'stranger-pw'")
        try:
            dsn = make_conninfo(
                test_database.database_reader_url, user=name, password="stranger-pw"
            )
            with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                psycopg.connect(dsn).close()
        finally:
            admin.execute(f"DROP ROLE {name}")


def test_a_copy_of_the_template_has_the_databases_privileges(
    postgres_admin_url: str, test_database: Settings, migrated_template: str
) -> None:
    """The test databases are copies, and CREATE DATABASE does not copy privileges on the
    database itself: tests/support/databases.py repeats them, checked here."""
    copy = conninfo_to_dict(test_database.database_url)["dbname"]
    with psycopg.connect(postgres_admin_url) as admin:
        acl = dict(
            admin.execute(
                "SELECT datname, datacl::text FROM pg_database WHERE datname = ANY(%s)",
                ([copy, migrated_template],),
            ).fetchall()
        )
    assert acl[copy] is not None  # set by migration 0006
    assert acl[copy] == acl[migrated_template]


# --------------------------------------------------------------------------- reports, operators
#: What a review writes (recoveryctl review approve | reject): the case moved on, its step, its
#: audit row, and the commands of the actions an approval releases.
REVIEW_WRITES = {
    ("UPDATE", "cases"),
    ("INSERT", "case_steps"),
    ("INSERT", "audit_log"),
    ("INSERT", "case_commands"),
}
#: What running a schedule by hand writes (recoveryctl snapshot take, reconcile --record).
SCHEDULE_WRITES = {
    ("INSERT", "case_snapshots"),
    ("INSERT", "case_snapshot_rows"),
    ("INSERT", "reconciliations"),
}
READ_ONLY_REFUSED = (
    *(f"INSERT INTO {t} DEFAULT VALUES" for t in TABLES),
    *(f"UPDATE {t} SET {c} = {c}" for t, c in (
        ("decisions", "outcome"), ("actions", "action"), ("compensations", "amount_fen"),
        ("audit_log", "to_status"), ("recovery_cases", "status"),
        ("outbox_batches", "published_at"), ("schema_migrations", "name"),
        ("unsendable_dead_letters", "error_class"), ("cases", "state"),
        ("case_steps", "to_state"), ("resolutions", "rule_id"),
        ("case_commands", "published_at"),
        ("schedule_runs", "outcome"),
        ("case_snapshots", "open_cases"), ("case_snapshot_rows", "cases"),
        ("reconciliations", "status"),
    )),
    *(f"DELETE FROM {t}" for t in TABLES),
    *(f"TRUNCATE {t}" for t in TABLES),
    "CREATE TEMP TABLE scratch (id int)",
    "CREATE TABLE public.scratch (id int)",
    "DROP TRIGGER audit_log_append_only ON audit_log",
)  # fmt: skip


def _review_write(statement: str) -> bool:
    words = statement.split()
    return (words[0], words[2] if words[0] == "INSERT" else words[1]) in (
        REVIEW_WRITES | SCHEDULE_WRITES
    )


@pytest.mark.parametrize("statement", READ_ONLY_REFUSED)
def test_reports_change_nothing(seeded: Settings, statement: str) -> None:
    _refused(seeded.database_reader_url, statement)


OPERATOR_REFUSED = (
    *(s for s in READ_ONLY_REFUSED if not _review_write(s)),
    # A review moves a case on; it does not rewrite who or what the case is, nor a past step.
    "UPDATE cases SET buyer_id = 'someone-else'",
    "UPDATE cases SET amount_fen = 0",
    "UPDATE case_steps SET to_state = 'recovered'",
    # Nor does it relay, rewrite or remove a command (the lifecycle process relays them).
    "UPDATE case_commands SET action = 'auto_refund'",
    "SELECT id FROM case_commands FOR UPDATE",
)


@pytest.mark.parametrize("statement", OPERATOR_REFUSED)
def test_operators_change_nothing_but_a_review(seeded: Settings, statement: str) -> None:
    """`dlq replay` writes to Kafka, not here; a review writes a case's step (migration 0010), a
    schedule run by hand its snapshot or reconciliation (migration 0012)."""
    _refused(seeded.database_operator_url, statement)


@pytest.mark.parametrize("role", ["database_reader_url", "database_operator_url"])
def test_reports_and_operators_read_every_table(seeded: Settings, role: str) -> None:
    with psycopg.connect(getattr(seeded, role)) as conn:
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone() for t in TABLES}
    assert all(n is not None and n[0] >= 1 for n in counts.values()), counts


def test_a_table_a_later_migration_adds_is_readable_by_reports_and_closed_to_the_worker(
    test_database: Settings,
) -> None:
    """Default privileges: reports read what the owner creates next; the worker gets nothing
    until that migration grants it (migrations/README.md)."""
    with psycopg.connect(test_database.database_owner_url) as conn:
        conn.execute("CREATE TABLE later_table (id int)")
        conn.execute("INSERT INTO later_table VALUES (1)")
    with psycopg.connect(test_database.database_reader_url) as conn:
        assert conn.execute("SELECT id FROM later_table").fetchall() == [(1,)]
    _refused(test_database.database_url, "INSERT INTO later_table VALUES (2)")
    _refused(test_database.database_url, "SELECT * FROM later_table")


# --------------------------------------------------------------------------- authentication
@pytest.mark.parametrize("password", ["not-the-password", None])
def test_a_wrong_or_missing_password_is_refused(
    test_database: Settings, password: str | None
) -> None:
    params = conninfo_to_dict(test_database.database_url)
    params.pop("password", None)
    if password is not None:
        params["password"] = password
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(make_conninfo(**params), connect_timeout=5).close()
    assert "password authentication failed" in str(refused.value) or (
        password is None and "no password supplied" in str(refused.value)
    )


def test_every_tcp_connection_authenticates_with_scram(postgres_admin_url: str) -> None:
    """pg_hba.conf: no trust, no md5, and the roles' passwords stored as SCRAM verifiers."""
    with psycopg.connect(postgres_admin_url) as admin:
        methods = admin.execute(
            "SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE type LIKE 'host%'"
        ).fetchall()
        stored = admin.execute(
            """SELECT rolname, left(rolpassword, 14) FROM pg_authid
               WHERE rolname IN ('recovery_owner', 'recovery_worker', 'recovery_reports',
                                 'recovery_operator') ORDER BY 1"""
        ).fetchall()
    assert methods == [("scram-sha-256",)]
    assert [verifier for _, verifier in stored] == ["SCRAM-SHA-256$"] * 4

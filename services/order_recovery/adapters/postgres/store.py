"""The Postgres side of the pipeline: load what the rules need to know about a batch's orders, and
write a batch's decisions with all their effects in one transaction.

Round trips are per batch, not per event: the history is five SELECTs sent in one pipeline; the
write is one COPY of a row per decision into a session-local staging table and a pipeline of
INSERT ... SELECT statements that fan it out into the tables, so the per-row work of every table
happens inside Postgres rather than in the worker's Python thread. Every insert is keyed (decision
per event, compensation per order and exception type), and the counters of the limits that span
workers (`domain.limits`) are updated under a check of what the decisions relied on; the write
holds a share lock on its partitions' leases and checks their epochs. A batch that meets another
worker's commit on any of these (a unique key, a counter past its bound) is refused whole as a
WriteConflict and decided again on a fresh read; one whose partitions another worker claimed is
refused whole as Fenced. So a batch processed twice, or by two workers during a rebalance, or by a
zombie, writes its effects once; its outcomes go into the outbox as one row per batch.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from order_recovery.adapters.postgres.faults import transient
from order_recovery.core.faults import Fenced, WriteConflict
from order_recovery.core.ports import Publish
from order_recovery.core.records import Decided, HistoryKeys, OutboxBatch, Partition
from order_recovery.core.stored_history import StoredHistory
from order_recovery.domain.case import TERMINAL, Transition
from order_recovery.domain.decision import Decision
from order_recovery.domain.events import Event
from order_recovery.domain.history import business_day
from order_recovery.domain.limits import LimitClaim, LimitKind, buyer_day_subject

#: The staging table, created per session: temporary (no WAL), emptied when each batch's transaction
#: commits (ON COMMIT DELETE ROWS truncates it in place: half the Postgres time of a TRUNCATE
#: statement, which gives the table a new file every batch) or rolls back. It is filled
#: by a binary COPY, which psycopg formats in C about ten times faster than text (no timestamp,
#: number or bytea text conversions on either side), so every column has a plain scalar type:
#: event ids as text (cast once per statement), the three lists as text joined by LIST_SEPARATOR.
STAGE = (
    ("seq", "int4"), ("event_id", "text"), ("order_id", "text"), ("exception_type", "text"),
    ("platform", "text"), ("merchant_id", "text"), ("buyer_id", "text"), ("category", "text"),
    ("amount_fen", "int8"), ("occurred_at", "timestamptz"), ("outcome", "text"),
    ("rule_ids", "text"), ("risk_flags", "text"), ("reason", "text"),
    ("policy_version", "text"), ("actions", "text"), ("compensation_kind", "text"),
    ("compensation_fen", "int8"), ("event_day", "date"), ("source_topic", "text"),
    ("source_partition", "int4"), ("source_offset", "int8"), ("event", "text"),
    ("payload", "bytea"), ("from_status", "text"),
)  # fmt: skip
STAGE_COLUMNS = tuple(name for name, _ in STAGE)
NULLABLE_STAGE_COLUMNS = frozenset({"compensation_kind", "compensation_fen", "from_status"})
CREATE_STAGE = "CREATE TEMP TABLE IF NOT EXISTS decision_stage ({}) ON COMMIT DELETE ROWS".format(
    ", ".join(
        f"{name} {kind}{'' if name in NULLABLE_STAGE_COLUMNS else ' NOT NULL'}"
        for name, kind in STAGE
    )
)
COPY_STAGE = f"COPY decision_stage ({', '.join(STAGE_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
#: The cases the batch's decisions open (domain.case.open_case), one row per decision that is not
#: a rejection, beside its decision_stage row (same `seq`); the same binary COPY, the same lists.
CASE_STAGE = (
    ("seq", "int4"), ("state", "text"), ("rule_id", "text"), ("deadline_kind", "text"),
    ("deadline_due_at", "timestamptz"), ("held_actions", "text"), ("fallback_actions", "text"),
    ("released", "text"), ("payment_window_ends_at", "timestamptz"),
    ("shipping_window_ends_at", "timestamptz"),
)  # fmt: skip
NULLABLE_CASE_STAGE_COLUMNS = frozenset(
    {"deadline_kind", "deadline_due_at", "payment_window_ends_at", "shipping_window_ends_at"}
)
CREATE_CASE_STAGE = "CREATE TEMP TABLE IF NOT EXISTS case_stage ({}) ON COMMIT DELETE ROWS".format(
    ", ".join(
        f"{name} {kind}{'' if name in NULLABLE_CASE_STAGE_COLUMNS else ' NOT NULL'}"
        for name, kind in CASE_STAGE
    )
)
COPY_CASE_STAGE = (
    f"COPY case_stage ({', '.join(name for name, _ in CASE_STAGE)}) FROM STDIN (FORMAT BINARY)"
)
CASE_STAGE_TYPES = [kind for _, kind in CASE_STAGE]
#: Joins a row's rule ids, risk flags and actions into one stage column: the ASCII unit separator,
#: which no identifier contains (rule ids, action and flag names are lower-case words and dots).
LIST_SEPARATOR = "\x1f"


def _list(column: str) -> str:
    """SQL: a stage list column back as text[] (an empty string is the empty array)."""
    return f"string_to_array({column}, E'\\x1f')"


CLOSED_STATES = "({})".format(", ".join(f"'{s}'" for s in sorted(TERMINAL)))


_DECISION_COLUMNS = """decisions (event_id, order_id, exception_type, platform, merchant_id,
        buyer_id, category, amount_fen, occurred_at, outcome, rule_ids, risk_flags, reason,
        policy_version, source_topic, source_partition, source_offset, event)"""
_DECISION_VALUES = f"""SELECT event_id::uuid, order_id, exception_type, platform, merchant_id,
           buyer_id, category, amount_fen, occurred_at, outcome, {_list("rule_ids")},
           {_list("risk_flags")}, reason, policy_version, source_topic, source_partition,
           source_offset, event::json
    FROM decision_stage"""

#: No conflict handling at all. The history read already dropped every decision it knew of, so a
#: conflict here means another worker wrote one meanwhile: the unique key fails the whole
#: transaction (a WriteConflict) and the batch is decided again on a fresh read.
#: (ON CONFLICT's speculative insertion cost a fifth of the insert.)
INSERT_NEW_DECISIONS = f"INSERT INTO {_DECISION_COLUMNS}\n    {_DECISION_VALUES}"

#: The effects of the batch's decisions, which are all new. A compensation is unique per order and
#: exception type; the history read knew every earlier one, so a conflict here is another
#: worker's concurrent grant and fails the transaction like a decision's (never a silent skip:
#: the decision and its outcome would still say the money moved).
FAN_OUT = (
    f"""INSERT INTO actions (event_id, seq, action)
       SELECT s.event_id::uuid, a.n - 1, a.action
       FROM decision_stage s, unnest({_list("s.actions")}) WITH ORDINALITY AS a(action, n)""",
    """INSERT INTO compensations (order_id, exception_type, kind, amount_fen, buyer_id,
           event_day, event_id)
       SELECT order_id, exception_type, compensation_kind, compensation_fen, buyer_id,
              event_day, event_id::uuid
       FROM decision_stage WHERE compensation_kind IS NOT NULL ORDER BY seq""",
    f"""INSERT INTO audit_log (order_id, exception_type, event_id, from_status, to_status,
           detail)
       SELECT order_id, exception_type, event_id::uuid, from_status, outcome,
              jsonb_build_object('rule_ids', {_list("rule_ids")},
                                 'policy_version', policy_version,
                                 'actions', {_list("actions")})
       FROM decision_stage ORDER BY seq""",
    # One row per case (an upsert may touch a row once per statement): the batch's last
    # decision sets the status, its earliest event opens the case.
    """INSERT INTO recovery_cases AS c (order_id, exception_type, platform, merchant_id,
           buyer_id, status, opened_at, updated_at, recovered_at, last_event_id)
       SELECT DISTINCT ON (order_id, exception_type)
              order_id, exception_type, platform, merchant_id, buyer_id, outcome,
              min(occurred_at) OVER (PARTITION BY order_id, exception_type), now(),
              CASE WHEN outcome = 'recovered' THEN now() END, event_id::uuid
       FROM decision_stage ORDER BY order_id, exception_type, seq DESC
       ON CONFLICT (order_id, exception_type) DO UPDATE SET
           status = excluded.status,
           updated_at = excluded.updated_at,
           opened_at = least(c.opened_at, excluded.opened_at),
           recovered_at = coalesce(c.recovered_at, excluded.recovered_at),
           last_event_id = excluded.last_event_id""",
)

#: Open the cases of the batch: the first opening decision of each (order, exception type) that
#: has no case yet (a later exception leaves its case as it is); its step and audit row with it,
#: and the step's action commands into the command outbox (migration 0011; the same columns as
#: domain.commands.commands_of, which the store contract checks).
OPEN_CASES = f"""WITH first AS (
        SELECT DISTINCT ON (d.order_id, d.exception_type) d.*, c.state, c.rule_id,
               c.deadline_kind, c.deadline_due_at, c.held_actions AS held,
               c.fallback_actions AS fallback, c.released, c.payment_window_ends_at,
               c.shipping_window_ends_at
        FROM case_stage c JOIN decision_stage d USING (seq)
        ORDER BY d.order_id, d.exception_type, seq),
    opened AS (
        INSERT INTO cases (order_id, exception_type, platform, buyer_id, amount_fen, opened_at,
            opened_by, state, seq, state_since, deadline_kind, deadline_due_at, deadline_seq,
            held_actions, fallback_actions, released, payment_window_ends_at,
            shipping_window_ends_at, closed_at)
        SELECT order_id, exception_type, platform, buyer_id, amount_fen, occurred_at,
               event_id::uuid, state, 1, occurred_at, deadline_kind, deadline_due_at,
               CASE WHEN deadline_kind IS NOT NULL THEN 1 END, {_list("held")},
               {_list("fallback")}, {_list("released")}, payment_window_ends_at,
               shipping_window_ends_at,
               CASE WHEN state IN {CLOSED_STATES} THEN occurred_at END
        FROM first
        ON CONFLICT (order_id, exception_type) DO NOTHING
        RETURNING order_id, exception_type),
    steps AS (
        INSERT INTO case_steps (order_id, exception_type, seq, rule_id, to_state, cause_kind,
            cause_ref, cause_at, reason, actions, action_keys, deadline_kind, deadline_due_at)
        SELECT f.order_id, f.exception_type, 1, f.rule_id, f.state, 'exception', f.event_id,
               f.occurred_at, f.reason, {_list("f.actions")}, {_list("f.released")},
               f.deadline_kind, f.deadline_due_at
        FROM first f JOIN opened USING (order_id, exception_type)
        RETURNING order_id, exception_type, rule_id, to_state, cause_ref, cause_at, reason,
                  actions, action_keys),
    commands AS (
        INSERT INTO case_commands (action_key, order_id, exception_type, platform, step_seq,
            action, rule_id, amount_fen, issued_at)
        SELECT a.action_key, s.order_id, s.exception_type, f.platform, 1, a.action, s.rule_id,
               f.amount_fen, s.cause_at
        FROM steps s JOIN first f USING (order_id, exception_type),
             unnest(s.actions, s.action_keys) WITH ORDINALITY AS a(action, action_key, n)
        WHERE cardinality(s.action_keys) > 0
        ORDER BY s.order_id, s.exception_type, a.n)
    INSERT INTO audit_log (order_id, exception_type, event_id, from_status, to_status, detail)
    SELECT order_id, exception_type, cause_ref::uuid, NULL, to_state,
           jsonb_build_object('step', 1, 'rule_id', rule_id,
                              'cause', jsonb_build_object('kind', 'exception', 'ref', cause_ref,
                                                          'at', cause_at),
                              'reason', reason, 'actions', actions, 'action_keys', action_keys)
    FROM steps"""

#: The batch's outcomes as one outbox row (none when it decided nothing).
INSERT_OUTBOX_BATCH = """INSERT INTO outbox_batches (batch_id, event_ids, order_ids, payloads)
    SELECT %s, array_agg(event_id::uuid ORDER BY seq), array_agg(order_id ORDER BY seq),
           array_agg(payload ORDER BY seq)
    FROM decision_stage HAVING count(*) > 0"""

#: The batch's claims on the limit counters, one row per counter, locked in (kind, subject) order
#: so that two writers never wait on each other in a cycle. `ceiling` is what this batch relied
#: on; the table's check refuses the update when another worker's commit took the counter past it.
UPSERT_LIMITS = """INSERT INTO limit_counters AS c (kind, subject, used, ceiling)
    SELECT kind, subject, used, ceiling
    FROM unnest(%s::text[], %s::text[], %s::int4[], %s::int4[]) AS t(kind, subject, used, ceiling)
    ORDER BY kind, subject
    ON CONFLICT (kind, subject) DO UPDATE SET
        used = c.used + excluded.used, ceiling = excluded.ceiling, updated_at = now()"""
LIMIT_CHECK = "limit_counters_within_ceiling"

#: The leases of the batch's partitions that still carry the epochs this worker claimed, share
#: locked until the commit: a claim by another worker waits for this write, and a write after
#: such a claim finds fewer rows than partitions and is rolled back (see migration 0007).
HOLD_LEASES = """SELECT l.topic, l.partition FROM partition_leases l
    JOIN unnest(%s::text[], %s::int4[], %s::int8[]) AS m(topic, partition, epoch)
      ON l.topic = m.topic AND l.partition = m.partition AND l.epoch = m.epoch
    FOR SHARE OF l"""

#: Claim partitions for a pipeline (`owner` is unique per pipeline instance): a new epoch each,
#: waiting for any write in progress under the old one. A partition still leased to the same owner
#: keeps its epoch, so a runtime's revoke-and-assign of the same partition (an eager rebalance)
#: does not fence the owner's own batch in flight.
CLAIM_LEASES = """INSERT INTO partition_leases AS l (topic, partition, epoch, owner)
    SELECT topic, partition, 1, %s
    FROM unnest(%s::text[], %s::int4[]) AS t(topic, partition) ORDER BY topic, partition
    ON CONFLICT (topic, partition) DO UPDATE SET
        epoch = CASE WHEN l.owner = excluded.owner THEN l.epoch ELSE l.epoch + 1 END,
        owner = excluded.owner, claimed_at = now()
    RETURNING topic, partition, epoch"""

#: Unpublished outbox batches, locked (FOR UPDATE, in creation order, so two claimers never wait
#: in a cycle) while their outcomes are sent and the batch marked, in one transaction: one sender
#: per batch at a time, oldest first. A batch published meanwhile drops out when its lock is
#: released (Postgres re-checks the condition on the row's new version).
_LOCK_UNPUBLISHED = """SELECT batch_id::text, order_ids, payloads FROM outbox_batches
    WHERE published_at IS NULL AND {where} ORDER BY created_at {limit} FOR UPDATE"""
UNPUBLISHED_HOLDING = _LOCK_UNPUBLISHED.format(
    where="event_ids && %s::uuid[] AND batch_id <> ALL(%s::uuid[])", limit=""
)
UNPUBLISHED_OLDER_THAN = _LOCK_UNPUBLISHED.format(
    where="created_at < now() - make_interval(secs => %s)", limit="LIMIT %s"
)
MARK_PUBLISHED = """UPDATE outbox_batches SET published_at = now()
    WHERE batch_id = ANY(%s::uuid[]) AND published_at IS NULL"""
#: Held by the outbox relay for its transaction: one relay pass at a time across all workers, so
#: crash leftovers go out strictly oldest first.
RELAY_LOCK_KEY = 0x0DE5_1A7F


#: Longer than any pause between the statements of one of our transactions (they are sent in
#: pipelines; the longest wait inside one is a relay publish, bounded by the producer's 15 s).
IDLE_IN_TRANSACTION_S = 20


class PostgresStore:
    """The core's DecisionStore (and HistoryReader) on one connection, reopened after a fault;
    callers retry the whole unit of work. `on_transaction` hears each batch write's transaction
    time (the worker's metrics)."""

    def __init__(self, dsn: str, on_transaction: Callable[[float], None] | None = None) -> None:
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None
        self._on_transaction = on_transaction

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            # No server-side prepared statements: Postgres's generic plan for `= ANY($1)` on a
            # young table is a sequential scan testing every row against the whole array
            # (seconds per batch once the table grows); a custom plan per batch sees the array
            # and hashes it or uses the index. Planning these few statements costs ~1 ms.
            # Autocommit: every transaction here is explicit (conn.transaction(), or BEGIN and
            # COMMIT inside a pipeline), which saves the implicit BEGIN's round trip.
            conn = psycopg.connect(
                self._dsn, connect_timeout=5, autocommit=True, prepare_threshold=None
            )
            # A worker paused in the middle of a transaction (SIGSTOP, a stalled VM) would hold
            # its locks for as long as it sleeps: the lease share lock a new owner's claim waits
            # for, counter rows. Postgres ends such a session after this long; the zombie's
            # commit then fails, and its redo finds the partition claimed.
            conn.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_S}s'")
            conn.execute(CREATE_STAGE)
            conn.execute(CREATE_CASE_STAGE)
            self._conn = conn
        return self._conn

    def reset(self) -> None:
        """Drop the connection after a fault so the next attempt starts clean."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def close(self) -> None:
        self.reset()

    def ping(self) -> None:
        self._connection().execute("SELECT 1")

    def load_history(
        self, keys: HistoryKeys, pending: Sequence[tuple[Event, Decision]] = ()
    ) -> StoredHistory:
        """What the rules need to know about these keys. `pending` is a batch whose write may
        still be in flight on another connection: the history is read in one snapshot that
        also says whether that write is in it, and where it is not, the pending decisions are
        applied on top, so the result counts them exactly once either way."""
        with self._resetting():
            return self._load_history(keys, pending)

    def _load_history(
        self, keys: HistoryKeys, pending: Sequence[tuple[Event, Decision]]
    ) -> StoredHistory:
        conn = self._connection()
        orders, order_ids = _key_list(keys.order_ids)
        subjects = {buyer_day_subject(b, d): (b, d) for b, d in keys.buyer_days}
        refund_sql, refund_subjects = _key_list(list(subjects))
        queries: list[tuple[str, tuple[Any, ...]]] = [
            # One snapshot for every query and the probe; BEGIN and COMMIT ride in the same
            # pipeline, so the whole read is one round trip.
            ("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", ()),
            # Every query here looks keys up, a few thousand at most: an index probe per key is
            # right at any table size. Without column statistics (a young or fast-growing table
            # that autovacuum has not analysed yet) the planner prices `= ANY(<array>)` as most
            # of the table and scans all of it, and the read then grows with the table: 10 ms
            # to 90 ms per batch within one 20-second run at a moderate load.
            ("SET LOCAL enable_seqscan = off", ()),
            (
                f"""SELECT order_id, event_id::text, exception_type = 'payment-timeout',
                          'forged_logistics' = ANY(risk_flags)
                   FROM decisions WHERE order_id = ANY({orders})""",
                (order_ids,),
            ),
            (
                "SELECT order_id, exception_type, status FROM recovery_cases"
                f" WHERE order_id = ANY({orders})",
                (order_ids,),
            ),
            (
                "SELECT order_id, exception_type FROM compensations"
                f" WHERE order_id = ANY({orders})",
                (order_ids,),
            ),
            # The counter the write checks refunds against (domain.limits), not a count of
            # compensations: the two move together, and this is one index probe per buyer-day.
            (
                "SELECT subject, used FROM limit_counters"
                f" WHERE kind = '{LimitKind.BUYER_REFUNDS}' AND subject = ANY({refund_sql})",
                (refund_subjects,),
            ),
        ]
        if keys.event_ids is not None:
            ids_sql, ids = _key_list(keys.event_ids)
            queries.append(
                (f"SELECT event_id::text FROM decisions WHERE event_id = ANY({ids_sql}::uuid[])",
                 (ids,))
            )  # fmt: skip
        probe = pending[0][0].envelope.event_id if pending else None
        if probe is not None:
            queries.append(
                ("SELECT event_id::text FROM decisions WHERE event_id = %s::uuid", (probe,))
            )
        queries.append(("COMMIT", ()))
        _, _, decided, cases, compensated, refunds, *extra, _ = _fetch_pipelined(conn, queries)
        known = extra.pop(0) if keys.event_ids is not None else []
        history = StoredHistory(
            case_status={(o, t): s for o, t, s in cases},
            compensated={(o, t) for o, t in compensated},
            buyer_refunds={subjects[subject]: n for subject, n in refunds},
        )
        history.decided_event_ids.update(event_id for (event_id,) in known)
        # An event is known if its order's decisions include it: a redelivery keeps its order.
        # (An id reused under another order fails the insert's unique key; the read after that
        # conflict looks the batch's ids up themselves.)
        for order_id, event_id, payment, forged in decided:
            history.decided_event_ids.add(event_id)
            if payment:
                history.payment_attempts[order_id] = history.payment_attempts.get(order_id, 0) + 1
            if forged:
                history.revoked_orders.add(order_id)
        if probe is not None and not extra[0]:  # the pending batch is not committed yet
            for event, decision in pending:
                history.decided_event_ids.add(event.envelope.event_id)
                history.advance(event, decision)
        return history

    def claim_partitions(self, partitions: Iterable[Partition], owner: str) -> dict[Partition, int]:
        """Make this worker the owner of these partitions in Postgres: a new epoch each, taken
        after any write in progress under an older one has finished (see migration 0007)."""
        wanted = sorted(partitions)
        if not wanted:
            return {}
        with self._resetting():
            conn = self._connection()
            with conn.transaction():
                rows = conn.execute(
                    CLAIM_LEASES,
                    (owner, [t for t, _ in wanted], [p for _, p in wanted]),
                ).fetchall()
            return {(t, p): epoch for t, p, epoch in rows}

    def save_decisions(
        self,
        decided: Sequence[Decided],
        claims: Sequence[LimitClaim] = (),
        leases: Mapping[Partition, int] | None = None,
    ) -> str | None:
        """Write the batch in one transaction: its decisions and their effects, its claims on
        the limit counters, its outcomes as one outbox batch (whose id is returned; None when
        there were no rows). With `leases`, the transaction first checks that these partitions
        are still this worker's at these epochs. Raises WriteConflict when another worker's
        commit made the batch stale and Fenced when it claimed one of the partitions; either way
        nothing was written."""
        if not decided and not leases:
            return None
        with self._resetting():
            conn = self._connection()
            started = time.perf_counter()
            try:
                batch_id = self._write(conn, decided, claims, leases or {})
            except psycopg.errors.UniqueViolation as exc:
                raise WriteConflict(f"another worker wrote {exc.diag.constraint_name}") from exc
            except psycopg.errors.CheckViolation as exc:
                if exc.diag.constraint_name != LIMIT_CHECK:
                    raise
                raise WriteConflict("a limit counter moved past what the batch relied on") from exc
            if self._on_transaction is not None:
                self._on_transaction(time.perf_counter() - started)
            return batch_id

    def _write(
        self,
        conn: psycopg.Connection[Any],
        decided: Sequence[Decided],
        claims: Sequence[LimitClaim],
        leases: Mapping[Partition, int],
    ) -> str | None:
        """COPY the batch into the connection's staging table (one row per decision, the only
        per-event work on the Python side), then let Postgres fan it out into the tables with
        INSERT ... SELECT statements sent in one pipeline."""
        batch_id = str(uuid.uuid4()) if decided else None
        with conn.transaction(), conn.cursor() as cur:
            if decided:
                with cur.copy(COPY_STAGE) as copy:
                    copy.set_types(STAGE_TYPES)
                    write_row = copy.write_row
                    for seq, d in enumerate(decided):
                        write_row((seq, *_stage_values(d)))
                openings = [(seq, d.opening) for seq, d in enumerate(decided) if d.opening]
                if openings:
                    with cur.copy(COPY_CASE_STAGE) as copy:
                        copy.set_types(CASE_STAGE_TYPES)
                        for seq, opening in openings:
                            copy.write_row((seq, *_case_stage_values(opening)))
            with conn.pipeline():
                held = None
                if leases:
                    tps = sorted(leases)
                    held = conn.execute(
                        HOLD_LEASES,
                        ([t for t, _ in tps], [p for _, p in tps], [leases[tp] for tp in tps]),
                    )
                if decided:
                    conn.execute(INSERT_NEW_DECISIONS)
                    for statement in FAN_OUT:
                        conn.execute(statement)
                    if openings:
                        conn.execute(OPEN_CASES)
                    conn.execute(INSERT_OUTBOX_BATCH, (batch_id,))
                if claims:
                    conn.execute(
                        UPSERT_LIMITS,
                        (
                            [str(c.kind) for c in claims],
                            [c.subject for c in claims],
                            [c.delta for c in claims],
                            [c.ceiling for c in claims],
                        ),
                    )
            if held is not None:
                lost = set(leases) - set(held.fetchall())
                if lost:
                    raise Fenced(lost)  # rolls the transaction back
        return batch_id

    def mark_published(self, batch_ids: Sequence[str]) -> None:
        """Mark outbox batches published: one row per batch, whatever its size."""
        if not batch_ids:
            return
        with self._resetting():
            conn = self._connection()
            with conn.transaction():
                # Losing this mark in a crash only means a resend with the same outcome ids, so
                # it need not wait for the WAL flush.
                conn.execute("SET LOCAL synchronous_commit = off")
                conn.execute(MARK_PUBLISHED, (list(batch_ids),))

    def publish_unpublished_holding(
        self, event_ids: Sequence[str], published: Sequence[str], publish: Publish
    ) -> int:
        """Send the unpublished outbox batches holding any of these decisions, oldest first, and
        mark them; return how many outcomes went out. For a batch that met decisions already
        written: a crash (or a zombie) may have left their outcomes unsent, and they must reach
        the topic before anything newer of the same orders. `published`: batches the caller
        knows it sent (their marks may still be on the way)."""
        if not event_ids:
            return 0
        with self._resetting():
            conn = self._connection()
            with conn.transaction():
                params = (list(event_ids), list(published))
                return self._publish_locked(conn, UNPUBLISHED_HOLDING, params, publish)

    def relay_unpublished(self, older_than_s: float, limit: int, publish: Publish) -> int:
        """The outbox relay's pass: send outbox batches a crash left behind (older than
        `older_than_s`: younger ones are most likely being published by their own worker right
        now), oldest first, up to `limit` batches; return how many outcomes went out. One pass
        runs at a time across all workers; a worker whose relay finds another pass under way
        sends nothing (0)."""
        with self._resetting():
            conn = self._connection()
            with conn.transaction():
                row = conn.execute(
                    "SELECT pg_try_advisory_xact_lock(%s)", (RELAY_LOCK_KEY,)
                ).fetchone()
                if not (row and row[0]):
                    return 0
                return self._publish_locked(
                    conn, UNPUBLISHED_OLDER_THAN, (older_than_s, limit), publish
                )

    @staticmethod
    def _publish_locked(
        conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...], publish: Publish
    ) -> int:
        """Inside the caller's transaction: lock the batches, send them, mark them."""
        found = conn.execute(query, params).fetchall()
        if not found:
            return 0
        batches = [
            OutboxBatch(b, [(k, bytes(p)) for k, p in zip(keys, payloads, strict=True)])
            for b, keys, payloads in found
        ]
        publish(batches)
        conn.execute(MARK_PUBLISHED, ([b.batch_id for b in batches],))
        return sum(len(b.messages) for b in batches)

    def outbox_backlog(self) -> int:
        """Outcomes written but not yet marked published."""
        with self._resetting():
            conn = self._connection()
            with conn.transaction():
                row = conn.execute(
                    "SELECT coalesce(sum(cardinality(event_ids)), 0) FROM outbox_batches"
                    " WHERE published_at IS NULL"
                ).fetchone()
            return int(row[0]) if row else 0

    @contextmanager
    def _resetting(self) -> Iterator[None]:
        """Drop the connection after a driver error, so the caller's retry starts clean; one a
        retry may fix is raised as the core's Transient."""
        try:
            yield
        except psycopg.Error as exc:
            self.reset()
            fault = transient(exc)
            if fault is None:
                raise
            raise fault from exc


def _key_list(keys: list[str]) -> tuple[str, str | list[str]]:
    """A list of keys as a query parameter: (SQL, value). Normally one text of the keys joined by
    LIST_SEPARATOR, split by Postgres: dumping one string costs a quarter of dumping the list,
    and `string_to_array` of a parameter is folded into a constant array when the statement is
    planned, so the plan is the same index scan. (Never a text literal cast to an array type in
    a WHERE clause: that cast is not folded, and Postgres converts the whole array again for
    every row it scans.) A key that itself holds the separator, which the schema's identifier
    pattern rules out, falls back to a binary array."""
    joined = LIST_SEPARATOR.join(keys)
    if joined.count(LIST_SEPARATOR) == max(0, len(keys) - 1):
        return _list("%s"), joined
    return "%b::text[]", keys


def _fetch_pipelined(
    conn: psycopg.Connection[Any], queries: Sequence[tuple[str, tuple[Any, ...]]]
) -> list[list[tuple[Any, ...]]]:
    """Send every statement before reading any result: one network round trip for all of them.
    A statement without rows (BEGIN, COMMIT) gives an empty list."""
    cursors = [conn.cursor() for _ in queries]
    try:
        with conn.pipeline():
            for cursor, (sql, params) in zip(cursors, queries, strict=True):
                cursor.execute(sql, params)
        return [cursor.fetchall() if cursor.description else [] for cursor in cursors]
    finally:
        for cursor in cursors:
            cursor.close()


STAGE_TYPES = [kind for _, kind in STAGE]


def _case_stage_values(t: Transition) -> tuple[Any, ...]:
    """An opening's case_stage columns after `seq`, in CASE_STAGE order."""
    sep, case = LIST_SEPARATOR, t.case
    deadline = case.deadline
    return (
        case.state,
        t.rule_id,
        None if deadline is None else deadline.kind,
        None if deadline is None else deadline.due_at,
        sep.join(case.held_actions),
        sep.join(case.fallback_actions),
        sep.join(case.released),
        case.payment_window_ends_at,
        case.shipping_window_ends_at,
    )


def _stage_values(d: Decided) -> tuple[Any, ...]:
    """The decision's stage columns after `seq`, in STAGE order: the one per-event flattening of
    the write, straight from the domain's objects (the StrEnum members pass as they are: str)."""
    sep = LIST_SEPARATOR
    env, decision, record = d.event.envelope, d.decision, d.record
    comp = decision.compensation
    return (
        env.event_id,
        env.order_id,
        env.event_type,
        env.platform,
        env.merchant_id,
        env.buyer_id,
        env.category,
        env.amount_fen,
        env.occurred_at,
        decision.outcome,
        sep.join(decision.rule_ids),
        sep.join(decision.risk_flags),
        decision.reason,
        decision.policy_version,
        sep.join(decision.actions),
        None if comp is None else comp.kind,
        None if comp is None else comp.amount_fen,
        business_day(env.occurred_at),
        record.topic,
        record.partition,
        record.offset,
        (record.value or b"{}").decode(),  # the event as received (already validated JSON)
        d.outcome_payload,
        d.from_status,
    )

"""The Postgres side of the pipeline: load what the rules need to know about a batch's orders, and
write a batch's decisions with all their effects in one transaction.

Round trips are per batch, not per event: the history is five SELECTs sent in one pipeline; the
write is one COPY of a row per decision into a session-local staging table and a pipeline of
INSERT ... SELECT statements that fan it out into the tables, so the per-row work of every table
happens inside Postgres rather than in the worker's Python thread. Every insert is keyed (decision
per event, compensation per order and exception type) and decisions already present are dropped
from the stage before any effect is written, so a batch that is processed twice, or by two workers
during a rebalance, writes its effects once; its outcomes go into the outbox as one row per batch.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg
from msgspec import Struct

from order_recovery.domain.decision import Decision
from order_recovery.domain.events import Event
from order_recovery.stored_history import StoredHistory


@dataclass(frozen=True, slots=True)
class HistoryKeys:
    """A batch's orders and (buyer, business day) pairs. Its events need no key of their own:
    a redelivery keeps its order, so an event is known if its order's decisions include it."""

    order_ids: list[str]
    buyer_days: list[tuple[str, date]]


class DecisionRow(Struct, frozen=True, gc=False):
    """One decided event, flattened for the tables (a Struct: one is built per decision). The
    domain's StrEnum members pass as they are: they are str."""

    event_id: str
    order_id: str
    exception_type: str
    platform: str
    merchant_id: str
    buyer_id: str
    category: str
    amount_fen: int
    occurred_at: datetime
    outcome: str
    rule_ids: tuple[str, ...]
    risk_flags: tuple[str, ...]
    reason: str
    policy_version: str
    actions: tuple[str, ...]
    compensation_kind: str | None
    compensation_fen: int | None
    event_day: date
    source_topic: str
    source_partition: int
    source_offset: int
    event_json: str  # the event as received (already validated JSON)
    outcome_payload: bytes
    from_status: str | None


@dataclass(frozen=True, slots=True)
class OutboxBatch:
    """A written batch's outcomes, as (message key, payload) in decision order."""

    batch_id: str
    messages: list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Saved:
    """What one write inserted: the event ids (a decision already present, from a redelivery
    or another worker, is left untouched) and the outbox batch holding their outcomes."""

    event_ids: list[str]
    outbox_batch: str | None


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
#: Joins a row's rule ids, risk flags and actions into one stage column: the ASCII unit separator,
#: which no identifier contains (rule ids, action and flag names are lower-case words and dots).
LIST_SEPARATOR = "\x1f"


def _list(column: str) -> str:
    """SQL: a stage list column back as text[] (an empty string is the empty array)."""
    return f"string_to_array({column}, E'\\x1f')"


_DECISION_COLUMNS = """decisions (event_id, order_id, exception_type, platform, merchant_id,
        buyer_id, category, amount_fen, occurred_at, outcome, rule_ids, risk_flags, reason,
        policy_version, source_topic, source_partition, source_offset, event)"""
_DECISION_VALUES = f"""SELECT event_id::uuid, order_id, exception_type, platform, merchant_id,
           buyer_id, category, amount_fen, occurred_at, outcome, {_list("rule_ids")},
           {_list("risk_flags")}, reason, policy_version, source_topic, source_partition,
           source_offset, event::json
    FROM decision_stage"""

#: The fast path's insert: no conflict handling at all. The history read already dropped every
#: decision it knew of, so a conflict here means another worker wrote one meanwhile; the unique
#: key then fails the whole transaction and the batch is written again on the keyed path.
#: (ON CONFLICT's speculative insertion cost a fifth of the insert.)
INSERT_NEW_DECISIONS = f"INSERT INTO {_DECISION_COLUMNS}\n    {_DECISION_VALUES}"

#: The keyed path's insert: a decision already present is left untouched; the row count says
#: whether there was any.
INSERT_DECISIONS = f"""INSERT INTO {_DECISION_COLUMNS}
    {_DECISION_VALUES}
    ON CONFLICT (event_id) DO NOTHING"""

#: Only when some decision was already there: drop it from the stage (returning its id) so no
#: statement after this one writes its effects again. A row this transaction inserted carries its
#: transaction id as xmin; one found with another was there before.
DROP_EXISTING = """DELETE FROM decision_stage s USING decisions d
    WHERE d.event_id = s.event_id::uuid AND d.xmin <> pg_current_xact_id()::xid
    RETURNING s.event_id"""

#: The effects of the decisions left in the stage, which are all new: only the compensation,
#: unique per order and exception type across decisions, needs its key.
FAN_OUT = (
    f"""INSERT INTO actions (event_id, seq, action)
       SELECT s.event_id::uuid, a.n - 1, a.action
       FROM decision_stage s, unnest({_list("s.actions")}) WITH ORDINALITY AS a(action, n)""",
    """INSERT INTO compensations (order_id, exception_type, kind, amount_fen, buyer_id,
           event_day, event_id)
       SELECT order_id, exception_type, compensation_kind, compensation_fen, buyer_id,
              event_day, event_id::uuid
       FROM decision_stage WHERE compensation_kind IS NOT NULL ORDER BY seq
       ON CONFLICT (order_id, exception_type) DO NOTHING""",
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

#: The batch's outcomes as one outbox row (none when every decision was already there).
INSERT_OUTBOX_BATCH = """INSERT INTO outbox_batches (batch_id, event_ids, order_ids, payloads)
    SELECT %s, array_agg(event_id::uuid ORDER BY seq), array_agg(order_id ORDER BY seq),
           array_agg(payload ORDER BY seq)
    FROM decision_stage HAVING count(*) > 0
    ON CONFLICT (batch_id) DO NOTHING"""


class PostgresStore:
    """One connection, reopened after a fault; callers retry the whole unit of work."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None
        self.last_transaction_s = 0.0

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
            conn.execute(CREATE_STAGE)
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
        try:
            return self._load_history(keys, pending)
        except psycopg.Error:
            self.reset()
            raise

    def _load_history(
        self, keys: HistoryKeys, pending: Sequence[tuple[Event, Decision]]
    ) -> StoredHistory:
        conn = self._connection()
        orders, order_ids = _key_list(keys.order_ids)
        buyers, buyer_ids = _key_list([b for b, _ in keys.buyer_days])
        days = LIST_SEPARATOR.join(d.isoformat() for _, d in keys.buyer_days)
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
            (
                f"""SELECT c.buyer_id, c.event_day, count(*) FROM compensations c
                JOIN unnest({buyers}, {_list("%s")}::date[]) AS k(buyer_id, event_day)
                  ON c.buyer_id = k.buyer_id AND c.event_day = k.event_day
                WHERE c.kind = 'refund' GROUP BY 1, 2""",
                (buyer_ids, days),
            ),
        ]
        probe = pending[0][0].envelope.event_id if pending else None
        if probe is not None:
            queries.append(
                ("SELECT event_id::text FROM decisions WHERE event_id = %s::uuid", (probe,))
            )
        queries.append(("COMMIT", ()))
        _, _, decided, cases, compensated, refunds, *probed, _ = _fetch_pipelined(conn, queries)
        history = StoredHistory(
            case_status={(o, t): s for o, t, s in cases},
            compensated={(o, t) for o, t in compensated},
            buyer_refunds={(b, d): n for b, d, n in refunds},
        )
        # An event is known if its order's decisions include it: a redelivery keeps its order.
        # (An id reused under another order is still caught by the insert's ON CONFLICT.)
        for order_id, event_id, payment, forged in decided:
            history.decided_event_ids.add(event_id)
            if payment:
                history.payment_attempts[order_id] = history.payment_attempts.get(order_id, 0) + 1
            if forged:
                history.revoked_orders.add(order_id)
        if probe is not None and not probed[0]:  # the pending batch is not committed yet
            for event, decision in pending:
                history.decided_event_ids.add(event.envelope.event_id)
                history.advance(event, decision)
        return history

    def save_decisions(self, rows: Sequence[DecisionRow]) -> Saved:
        """Write the batch in one transaction, its outcomes as one outbox batch."""
        if not rows:
            return Saved([], None)
        try:
            return self._save(rows)
        except psycopg.Error:
            self.reset()
            raise

    def _save(self, rows: Sequence[DecisionRow]) -> Saved:
        """COPY the batch into the connection's staging table (one row per decision, the only
        per-event work on the Python side), then let Postgres fan it out into the tables with
        INSERT ... SELECT statements sent in one pipeline. The fast path assumes every decision is
        new (the history read said so); if another worker wrote one meanwhile, the unique key
        fails it and the keyed path writes the batch again, skipping what is there."""
        conn = self._connection()
        started = time.perf_counter()
        try:
            saved = self._write(conn, rows, keyed=False)
        except psycopg.errors.UniqueViolation:
            saved = self._write(conn, rows, keyed=True)
        self.last_transaction_s = time.perf_counter() - started
        return saved

    def _write(
        self, conn: psycopg.Connection[Any], rows: Sequence[DecisionRow], keyed: bool
    ) -> Saved:
        batch_id = str(uuid.uuid4())
        existing: set[str] = set()
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(COPY_STAGE) as copy:
                copy.set_types(STAGE_TYPES)
                write_row = copy.write_row
                for seq, r in enumerate(rows):
                    write_row((seq, *_stage_values(r)))
            if keyed and cur.execute(INSERT_DECISIONS).rowcount != len(rows):
                existing = {row[0] for row in cur.execute(DROP_EXISTING).fetchall()}
            with conn.pipeline():
                if not keyed:
                    conn.execute(INSERT_NEW_DECISIONS)
                for statement in FAN_OUT:
                    conn.execute(statement)
                outbox = conn.execute(INSERT_OUTBOX_BATCH, (batch_id,))
            written = outbox.rowcount == 1
        fresh = [r.event_id for r in rows if r.event_id not in existing]
        return Saved(fresh, batch_id if written else None)

    def mark_published(self, batch_ids: Sequence[str]) -> None:
        """Mark outbox batches published: one row per batch, whatever its size."""
        if not batch_ids:
            return
        try:
            conn = self._connection()
            with conn.transaction():
                # Losing this mark in a crash only means a resend with the same outcome ids, so
                # it need not wait for the WAL flush.
                conn.execute("SET LOCAL synchronous_commit = off")
                conn.execute(
                    "UPDATE outbox_batches SET published_at = now()"
                    " WHERE batch_id = ANY(%s::uuid[]) AND published_at IS NULL",
                    (list(batch_ids),),
                )
        except psycopg.Error:
            self.reset()
            raise

    def unpublished(self, older_than_s: float, limit: int) -> list[OutboxBatch]:
        """Outbox batches a crash left behind, oldest first, up to `limit` batches. Batches
        younger than `older_than_s` are skipped: their own worker is most likely publishing them
        right now."""
        try:
            conn = self._connection()
            with conn.transaction():
                found = conn.execute(
                    """SELECT batch_id::text, order_ids, payloads FROM outbox_batches
                       WHERE published_at IS NULL
                         AND created_at < now() - make_interval(secs => %s)
                       ORDER BY created_at LIMIT %s""",
                    (older_than_s, limit),
                ).fetchall()
            return [
                OutboxBatch(b, [(k, bytes(p)) for k, p in zip(keys, payloads, strict=True)])
                for b, keys, payloads in found
            ]
        except psycopg.Error:
            self.reset()
            raise

    def outbox_backlog(self) -> int:
        """Outcomes written but not yet marked published."""
        try:
            conn = self._connection()
            with conn.transaction():
                row = conn.execute(
                    "SELECT coalesce(sum(cardinality(event_ids)), 0) FROM outbox_batches"
                    " WHERE published_at IS NULL"
                ).fetchone()
            return int(row[0]) if row else 0
        except psycopg.Error:
            self.reset()
            raise


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


def _stage_values(r: DecisionRow) -> tuple[Any, ...]:
    """The row's stage columns after `seq`, in STAGE order."""
    sep = LIST_SEPARATOR
    return (
        r.event_id,
        r.order_id,
        r.exception_type,
        r.platform,
        r.merchant_id,
        r.buyer_id,
        r.category,
        r.amount_fen,
        r.occurred_at,
        r.outcome,
        sep.join(r.rule_ids),
        sep.join(r.risk_flags),
        r.reason,
        r.policy_version,
        sep.join(r.actions),
        r.compensation_kind,
        r.compensation_fen,
        r.event_day,
        r.source_topic,
        r.source_partition,
        r.source_offset,
        r.event_json,
        r.outcome_payload,
        r.from_status,
    )

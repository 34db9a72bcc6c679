"""The Postgres side of the pipeline: load what the rules need to know about a batch's orders, and
write a batch's decisions with all their effects in one transaction.

Round trips are per batch, not per event: the history is five SELECTs sent in one pipeline, and each
table is written by one INSERT whose rows arrive as a single jsonb array. Every insert is keyed
(decision per event, compensation per order and exception type, outbox row per event) and ignores
conflicts, so a batch that is processed twice, or by two workers during a rebalance, writes its
effects once.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from order_recovery.stored_history import StoredHistory


@dataclass(frozen=True, slots=True)
class HistoryKeys:
    event_ids: list[str]
    order_ids: list[str]
    buyer_days: list[tuple[str, date]]


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """One decided event, flattened for the tables."""

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
    rule_ids: list[str]
    risk_flags: list[str]
    reason: str
    policy_version: str
    actions: list[str]
    compensation_kind: str | None
    compensation_fen: int | None
    event_day: date
    source_topic: str
    source_partition: int
    source_offset: int
    event_json: str  # the event as received (already validated JSON)
    outcome_id: str
    outcome_payload: bytes
    from_status: str | None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    event_id: str
    outcome_id: str
    order_id: str
    payload: bytes


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _records(rows: Iterable[dict[str, Any]]) -> Jsonb:
    return Jsonb(list(rows), dumps=lambda v: orjson.dumps(v, default=_json_default).decode())


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
            self._conn = psycopg.connect(self._dsn, connect_timeout=5)
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
        self._connection().rollback()

    def load_history(self, keys: HistoryKeys) -> StoredHistory:
        try:
            return self._load_history(keys)
        except psycopg.Error:
            self.reset()
            raise

    def _load_history(self, keys: HistoryKeys) -> StoredHistory:
        conn = self._connection()
        buyers = [b for b, _ in keys.buyer_days]
        days = [d for _, d in keys.buyer_days]
        queries: list[tuple[str, tuple[Any, ...]]] = [
            (
                "SELECT event_id::text FROM decisions WHERE event_id = ANY(%s::uuid[])",
                (keys.event_ids,),
            ),
            (
                "SELECT order_id, exception_type, status FROM recovery_cases"
                " WHERE order_id = ANY(%s)",
                (keys.order_ids,),
            ),
            (
                "SELECT order_id, exception_type FROM compensations WHERE order_id = ANY(%s)",
                (keys.order_ids,),
            ),
            (
                """SELECT c.buyer_id, c.event_day, count(*) FROM compensations c
                JOIN unnest(%s::text[], %s::date[]) AS k(buyer_id, event_day)
                  ON c.buyer_id = k.buyer_id AND c.event_day = k.event_day
                WHERE c.kind = 'refund' GROUP BY 1, 2""",
                (buyers, days),
            ),
            (
                """SELECT order_id, count(*) FILTER (WHERE exception_type = 'payment-timeout'),
                       bool_or('forged_logistics' = ANY(risk_flags))
                FROM decisions WHERE order_id = ANY(%s) GROUP BY order_id""",
                (keys.order_ids,),
            ),
        ]
        with conn.transaction():
            decided, cases, compensated, refunds, orders = _fetch_pipelined(conn, queries)
        history = StoredHistory(
            decided_event_ids={row[0] for row in decided},
            case_status={(o, t): s for o, t, s in cases},
            compensated={(o, t) for o, t in compensated},
            buyer_refunds={(b, d): n for b, d, n in refunds},
        )
        for order_id, attempts, revoked in orders:
            history.payment_attempts[order_id] = attempts
            if revoked:
                history.revoked_orders.add(order_id)
        return history

    def save_decisions(self, rows: Sequence[DecisionRow]) -> list[str]:
        """Write the batch in one transaction; return the event ids this call inserted (a row
        already present, from a redelivery or another worker, is left untouched)."""
        if not rows:
            return []
        try:
            return self._save(rows)
        except psycopg.Error:
            self.reset()
            raise

    def _save(self, rows: Sequence[DecisionRow]) -> list[str]:
        conn = self._connection()
        started = time.perf_counter()
        try:
            self._save_by_copy(conn, rows)
            inserted = [r.event_id for r in rows]
        except psycopg.errors.UniqueViolation:
            # Another worker decided some of these between our history read and now (a
            # rebalance overlap): redo the batch on the keyed path, which skips what exists.
            inserted = self._save_keyed(conn, rows)
        self.last_transaction_s = time.perf_counter() - started
        return inserted

    def _save_by_copy(self, conn: psycopg.Connection[Any], rows: Sequence[DecisionRow]) -> None:
        """The fast path: the history read showed none of these exists, so COPY every row
        straight in; a unique violation (a concurrent worker) aborts the whole transaction."""
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy(
                """COPY decisions (event_id, order_id, exception_type, platform, merchant_id,
                       buyer_id, category, amount_fen, occurred_at, outcome, rule_ids,
                       risk_flags, reason, policy_version, source_topic, source_partition,
                       source_offset, event) FROM STDIN"""
            ) as copy:
                for r in rows:
                    copy.write_row(
                        (
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
                            r.rule_ids,
                            r.risk_flags,
                            r.reason,
                            r.policy_version,
                            r.source_topic,
                            r.source_partition,
                            r.source_offset,
                            r.event_json,
                        )
                    )
            with cur.copy("COPY actions (event_id, seq, action) FROM STDIN") as copy:
                for r in rows:
                    for i, action in enumerate(r.actions):
                        copy.write_row((r.event_id, i, action))
            with cur.copy(
                """COPY compensations (order_id, exception_type, kind, amount_fen, buyer_id,
                       event_day, event_id) FROM STDIN"""
            ) as copy:
                for r in rows:
                    if r.compensation_kind is not None:
                        copy.write_row(
                            (
                                r.order_id,
                                r.exception_type,
                                r.compensation_kind,
                                r.compensation_fen,
                                r.buyer_id,
                                r.event_day,
                                r.event_id,
                            )
                        )
            with cur.copy(
                """COPY audit_log (order_id, exception_type, event_id, from_status, to_status,
                       detail) FROM STDIN"""
            ) as copy:
                for r in rows:
                    copy.write_row(
                        (
                            r.order_id,
                            r.exception_type,
                            r.event_id,
                            r.from_status,
                            r.outcome,
                            _audit_detail(r),
                        )
                    )
            with cur.copy(
                "COPY outbox (outcome_id, event_id, order_id, payload) FROM STDIN"
            ) as copy:
                for r in rows:
                    copy.write_row((r.outcome_id, r.event_id, r.order_id, r.outcome_payload))
            self._upsert_cases(conn, rows)

    def _save_keyed(self, conn: psycopg.Connection[Any], rows: Sequence[DecisionRow]) -> list[str]:
        with conn.transaction():
            inserted = {
                r[0]
                for r in conn.execute(
                    """INSERT INTO decisions (event_id, order_id, exception_type, platform,
                           merchant_id, buyer_id, category, amount_fen, occurred_at, outcome,
                           rule_ids, risk_flags, reason, policy_version, source_topic,
                           source_partition, source_offset, event)
                       SELECT event_id, order_id, exception_type, platform, merchant_id, buyer_id,
                              category, amount_fen, occurred_at, outcome, rule_ids, risk_flags,
                              reason, policy_version, source_topic, source_partition,
                              source_offset, event
                       FROM jsonb_to_recordset(%s) AS r(event_id uuid, order_id text,
                           exception_type text, platform text, merchant_id text, buyer_id text,
                           category text, amount_fen bigint, occurred_at timestamptz,
                           outcome text, rule_ids text[], risk_flags text[], reason text,
                           policy_version text, source_topic text, source_partition int,
                           source_offset bigint, event jsonb)
                       ON CONFLICT (event_id) DO NOTHING
                       RETURNING event_id::text""",
                    (_records(_decision_record(r) for r in rows),),
                ).fetchall()
            }
            fresh = [r for r in rows if r.event_id in inserted]
            if fresh:
                self._write_effects(conn, fresh)
        return [r.event_id for r in fresh]

    def _write_effects(self, conn: psycopg.Connection[Any], rows: Sequence[DecisionRow]) -> None:
        with conn.pipeline():
            conn.execute(
                """INSERT INTO actions (event_id, seq, action)
                   SELECT event_id, seq, action FROM jsonb_to_recordset(%s)
                     AS r(event_id uuid, seq int, action text)
                   ON CONFLICT DO NOTHING""",
                (
                    _records(
                        {"event_id": r.event_id, "seq": i, "action": a}
                        for r in rows
                        for i, a in enumerate(r.actions)
                    ),
                ),
            )
            conn.execute(
                """INSERT INTO compensations (order_id, exception_type, kind, amount_fen,
                       buyer_id, event_day, event_id)
                   SELECT order_id, exception_type, kind, amount_fen, buyer_id, event_day,
                          event_id
                   FROM jsonb_to_recordset(%s) AS r(order_id text, exception_type text,
                       kind text, amount_fen bigint, buyer_id text, event_day date,
                       event_id uuid)
                   ON CONFLICT (order_id, exception_type) DO NOTHING""",
                (
                    _records(
                        {
                            "order_id": r.order_id,
                            "exception_type": r.exception_type,
                            "kind": r.compensation_kind,
                            "amount_fen": r.compensation_fen,
                            "buyer_id": r.buyer_id,
                            "event_day": r.event_day,
                            "event_id": r.event_id,
                        }
                        for r in rows
                        if r.compensation_kind is not None
                    ),
                ),
            )
            conn.execute(
                """INSERT INTO audit_log (order_id, exception_type, event_id, from_status,
                       to_status, detail)
                   SELECT order_id, exception_type, event_id, from_status, to_status, detail
                   FROM jsonb_to_recordset(%s) AS r(order_id text, exception_type text,
                       event_id uuid, from_status text, to_status text, detail jsonb)""",
                (
                    _records(
                        {
                            "order_id": r.order_id,
                            "exception_type": r.exception_type,
                            "event_id": r.event_id,
                            "from_status": r.from_status,
                            "to_status": r.outcome,
                            "detail": orjson.Fragment(_audit_detail(r)),
                        }
                        for r in rows
                    ),
                ),
            )
            self._upsert_cases(conn, rows)
            conn.execute(
                """INSERT INTO outbox (outcome_id, event_id, order_id, payload)
                   SELECT outcome_id, event_id, order_id, decode(payload, 'base64')
                   FROM jsonb_to_recordset(%s) AS r(outcome_id text, event_id uuid,
                       order_id text, payload text)
                   ON CONFLICT DO NOTHING""",
                (
                    _records(
                        {
                            "outcome_id": r.outcome_id,
                            "event_id": r.event_id,
                            "order_id": r.order_id,
                            "payload": _b64(r.outcome_payload),
                        }
                        for r in rows
                    ),
                ),
            )

    def _upsert_cases(self, conn: psycopg.Connection[Any], rows: Sequence[DecisionRow]) -> None:
        conn.execute(
            """INSERT INTO recovery_cases AS c (order_id, exception_type, platform,
                   merchant_id, buyer_id, status, opened_at, updated_at, recovered_at,
                   last_event_id)
               SELECT order_id, exception_type, platform, merchant_id, buyer_id, status,
                      opened_at, now(), CASE WHEN status = 'recovered' THEN now() END,
                      last_event_id
               FROM jsonb_to_recordset(%s) AS r(order_id text, exception_type text,
                   platform text, merchant_id text, buyer_id text, status text,
                   opened_at timestamptz, last_event_id uuid)
               ON CONFLICT (order_id, exception_type) DO UPDATE SET
                   status = excluded.status,
                   updated_at = excluded.updated_at,
                   opened_at = least(c.opened_at, excluded.opened_at),
                   recovered_at = coalesce(c.recovered_at, excluded.recovered_at),
                   last_event_id = excluded.last_event_id""",
            (_records(_case_records(rows)),),
        )

    def mark_published(self, event_ids: Sequence[str]) -> None:
        if not event_ids:
            return
        try:
            conn = self._connection()
            with conn.transaction():
                # Losing this mark in a crash only means a resend with the same outcome id, so
                # it need not wait for the WAL flush.
                conn.execute("SET LOCAL synchronous_commit = off")
                conn.execute(
                    "UPDATE outbox SET published_at = now()"
                    " WHERE event_id = ANY(%s::uuid[]) AND published_at IS NULL",
                    (list(event_ids),),
                )
        except psycopg.Error:
            self.reset()
            raise

    def unpublished(self, older_than_s: float, limit: int) -> list[OutboxRow]:
        """Outbox rows a crash left behind. Rows younger than `older_than_s` are skipped: their
        own worker is most likely publishing them right now."""
        try:
            conn = self._connection()
            with conn.transaction():
                found = conn.execute(
                    """SELECT event_id::text, outcome_id, order_id, payload FROM outbox
                       WHERE published_at IS NULL
                         AND created_at < now() - make_interval(secs => %s)
                       ORDER BY created_at LIMIT %s""",
                    (older_than_s, limit),
                ).fetchall()
            return [OutboxRow(e, o, k, bytes(p)) for e, o, k, p in found]
        except psycopg.Error:
            self.reset()
            raise

    def outbox_backlog(self) -> int:
        try:
            conn = self._connection()
            with conn.transaction():
                row = conn.execute(
                    "SELECT count(*) FROM outbox WHERE published_at IS NULL"
                ).fetchone()
            return int(row[0]) if row else 0
        except psycopg.Error:
            self.reset()
            raise


def _fetch_pipelined(
    conn: psycopg.Connection[Any], queries: Sequence[tuple[str, tuple[Any, ...]]]
) -> list[list[tuple[Any, ...]]]:
    """Send every query before reading any result: one network round trip for all of them."""
    cursors = [conn.cursor() for _ in queries]
    try:
        with conn.pipeline():
            for cursor, (sql, params) in zip(cursors, queries, strict=True):
                cursor.execute(sql, params)
        return [cursor.fetchall() for cursor in cursors]
    finally:
        for cursor in cursors:
            cursor.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _audit_detail(r: DecisionRow) -> str:
    return orjson.dumps(
        {"rule_ids": r.rule_ids, "policy_version": r.policy_version, "actions": r.actions}
    ).decode()


def _decision_record(r: DecisionRow) -> dict[str, Any]:
    return {
        "event_id": r.event_id,
        "order_id": r.order_id,
        "exception_type": r.exception_type,
        "platform": r.platform,
        "merchant_id": r.merchant_id,
        "buyer_id": r.buyer_id,
        "category": r.category,
        "amount_fen": r.amount_fen,
        "occurred_at": r.occurred_at,
        "outcome": r.outcome,
        "rule_ids": r.rule_ids,
        "risk_flags": r.risk_flags,
        "reason": r.reason,
        "policy_version": r.policy_version,
        "source_topic": r.source_topic,
        "source_partition": r.source_partition,
        "source_offset": r.source_offset,
        "event": orjson.Fragment(r.event_json),
    }


def _case_records(rows: Sequence[DecisionRow]) -> list[dict[str, Any]]:
    """One row per case (an upsert may touch a row once per statement): the batch's last
    decision sets the status, its earliest event opens the case."""
    cases: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        key = (r.order_id, r.exception_type)
        case = cases.get(key)
        opened = r.occurred_at if case is None else min(case["opened_at"], r.occurred_at)
        cases[key] = {
            "order_id": r.order_id,
            "exception_type": r.exception_type,
            "platform": r.platform,
            "merchant_id": r.merchant_id,
            "buyer_id": r.buyer_id,
            "status": r.outcome,
            "opened_at": opened,
            "last_event_id": r.event_id,
        }
    return list(cases.values())

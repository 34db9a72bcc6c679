"""The case store (core.ports.CaseStore) in Postgres: `cases`, `case_steps`, `resolutions` and
the audit log (migration 0010), and the command outbox `case_commands` (migration 0011): a step's
action commands are written in the step's transaction, and relayed from there.

A unit of work is one transaction on its own connection. Cases are locked `FOR UPDATE` in key
order (two units locking overlapping sets cannot deadlock), the deadline scan skips rows another
runner holds, and every write is checked rather than trusted: a case is updated only from the step
it was read at, a step is unique per case and step number, a review per review id, a resolution
per event id. Whatever another writer got to first is refused as the core's WriteConflict (or
ReviewRefused), and the caller's unit of work is done again on a fresh read.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import msgspec
import orjson
import psycopg

from order_recovery.adapters.postgres.faults import in_core_terms
from order_recovery.core.faults import WriteConflict
from order_recovery.core.ports import CaseKey, PublishCommands
from order_recovery.domain.case import (
    Case,
    CaseState,
    CauseKind,
    Deadline,
    DeadlineKind,
    ReviewRefused,
    Step,
    Transition,
)
from order_recovery.domain.commands import ActionCommand, commands_of
from order_recovery.domain.decision import ActionType
from order_recovery.domain.events import EventType
from order_recovery.domain.resolutions import CLASSES, Resolution, ResolutionType, case_type_of

_CASE_COLUMNS = (
    "order_id, exception_type, platform, buyer_id, amount_fen, opened_at, opened_by::text,"
    " state, seq, state_since, deadline_kind, deadline_due_at, deadline_seq, held_actions,"
    " fallback_actions, released, payment_window_ends_at, shipping_window_ends_at, review_overdue"
)
_KEYS = "(order_id, exception_type) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
LOCK = f"SELECT {_CASE_COLUMNS} FROM cases WHERE {_KEYS} ORDER BY 1, 2 FOR UPDATE"
DUE = f"""SELECT {_CASE_COLUMNS} FROM cases
    WHERE deadline_due_at <= %s ORDER BY deadline_due_at LIMIT %s FOR UPDATE SKIP LOCKED"""
READ = f"SELECT {_CASE_COLUMNS} FROM cases WHERE order_id = %s AND exception_type = %s"
KNOWN = "SELECT event_id::text FROM resolutions WHERE event_id = ANY(%s::uuid[])"
ORPHANS = """SELECT r.event_type, r.body::text FROM resolutions r
    JOIN cases c USING (order_id, exception_type)
    WHERE r.rule_id = 'case.ignored.unknown_case'
    ORDER BY r.occurred_at, r.event_id LIMIT %s FOR UPDATE OF r SKIP LOCKED"""
ADOPT = "UPDATE resolutions SET rule_id = %s, step_seq = %s WHERE event_id = %s"
INSERT_CASE = """INSERT INTO cases (order_id, exception_type, platform, buyer_id, amount_fen,
        opened_at, opened_by, state, seq, state_since, deadline_kind, deadline_due_at,
        deadline_seq, held_actions, fallback_actions, released, payment_window_ends_at,
        shipping_window_ends_at, review_overdue, closed_at)
    VALUES (%(order_id)s, %(exception_type)s, %(platform)s, %(buyer_id)s, %(amount_fen)s,
        %(opened_at)s, %(opened_by)s, %(state)s, %(seq)s, %(state_since)s, %(deadline_kind)s,
        %(deadline_due_at)s, %(deadline_seq)s, %(held_actions)s, %(fallback_actions)s,
        %(released)s, %(payment_window_ends_at)s, %(shipping_window_ends_at)s,
        %(review_overdue)s, %(closed_at)s)"""
UPDATE_CASE = """UPDATE cases SET state = %(state)s, seq = %(seq)s, state_since = %(state_since)s,
        deadline_kind = %(deadline_kind)s, deadline_due_at = %(deadline_due_at)s,
        deadline_seq = %(deadline_seq)s, held_actions = %(held_actions)s,
        fallback_actions = %(fallback_actions)s, released = %(released)s,
        review_overdue = %(review_overdue)s, closed_at = %(closed_at)s, updated_at = now()
    WHERE order_id = %(order_id)s AND exception_type = %(exception_type)s
      AND seq = %(seq)s - 1"""
#: The step's deadline columns are the case's after the step (`deadline_kind`, `deadline_due_at`
#: of _case_params): every step sets its new state's deadline, or none.
INSERT_STEP = """INSERT INTO case_steps (order_id, exception_type, seq, rule_id, from_state,
        to_state, cause_kind, cause_ref, cause_at, actor, reason, actions, action_keys,
        deadline_kind, deadline_due_at)
    VALUES (%(order_id)s, %(exception_type)s, %(seq)s, %(rule_id)s, %(from_state)s,
        %(to_state)s, %(cause_kind)s, %(cause_ref)s, %(cause_at)s, %(actor)s, %(reason)s,
        %(actions)s, %(action_keys)s, %(deadline_kind)s, %(deadline_due_at)s)"""
INSERT_AUDIT = """INSERT INTO audit_log (order_id, exception_type, event_id, from_status,
        to_status, detail)
    VALUES (%(order_id)s, %(exception_type)s, %(audit_id)s, %(from_state)s, %(to_state)s,
        %(detail)s::jsonb)"""
INSERT_RESOLUTION = """INSERT INTO resolutions (event_id, event_type, order_id, exception_type,
        platform, occurred_at, rule_id, step_seq, body)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)"""
INSERT_COMMAND = """INSERT INTO case_commands (action_key, order_id, exception_type, platform,
        step_seq, action, rule_id, amount_fen, issued_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"""
#: Held by the command relay for its transaction: one pass at a time across every process, so
#: the commands go out in outbox order (the outcome relay's key is another: they do not wait on
#: each other). SKIP LOCKED besides: a row some other transaction holds is left for later.
COMMAND_RELAY_LOCK_KEY = 0x0DE5_C0DE
UNPUBLISHED_COMMANDS = """SELECT id, action_key, order_id, exception_type, platform, step_seq,
        action, rule_id, amount_fen, issued_at
    FROM case_commands WHERE published_at IS NULL ORDER BY id LIMIT %s
    FOR UPDATE SKIP LOCKED"""
MARK_COMMANDS_PUBLISHED = "UPDATE case_commands SET published_at = now() WHERE id = ANY(%s)"
COMMAND_BACKLOG = "SELECT count(*) FROM case_commands WHERE published_at IS NULL"

#: The audit row's event id of a step no event caused (a deadline, a review): one per case and
#: step, so the same step always has the same id.
_STEP_NAMESPACE = uuid.UUID("0c7d5a3e-59f4-4c1e-9d0a-2b8e6f1c4a77")
_REVIEW_ONCE = "case_steps_review_idx"


def step_audit_id(t: Transition) -> str:
    if t.cause.kind in (CauseKind.EXCEPTION, CauseKind.RESOLUTION):
        return t.cause.ref
    order_id, exception_type = t.case.key
    return str(uuid.uuid5(_STEP_NAMESPACE, f"{order_id}/{exception_type}/{t.case.seq}"))


def case_from_row(row: Sequence[Any]) -> Case:
    (order_id, exception_type, platform, buyer_id, amount_fen, opened_at, opened_by, state, seq,
     state_since, deadline_kind, deadline_due_at, deadline_seq, held, fallback, released,
     pay_ends, ship_ends, overdue) = row  # fmt: skip
    deadline = (
        None
        if deadline_kind is None
        else Deadline(DeadlineKind(deadline_kind), deadline_due_at, deadline_seq)
    )
    return Case(
        order_id=order_id,
        exception_type=EventType(exception_type),
        platform=platform,
        buyer_id=buyer_id,
        amount_fen=amount_fen,
        opened_at=opened_at,
        opened_by=opened_by,
        state=CaseState(state),
        seq=seq,
        state_since=state_since,
        deadline=deadline,
        held_actions=tuple(ActionType(a) for a in held),
        fallback_actions=tuple(ActionType(a) for a in fallback),
        released=tuple(released),
        payment_window_ends_at=pay_ends,
        shipping_window_ends_at=ship_ends,
        review_overdue=overdue,
    )


def _case_params(case: Case) -> dict[str, Any]:
    deadline = case.deadline
    return {
        "order_id": case.order_id,
        "exception_type": str(case.exception_type),
        "platform": case.platform,
        "buyer_id": case.buyer_id,
        "amount_fen": case.amount_fen,
        "opened_at": case.opened_at,
        "opened_by": case.opened_by,
        "state": str(case.state),
        "seq": case.seq,
        "state_since": case.state_since,
        "deadline_kind": None if deadline is None else str(deadline.kind),
        "deadline_due_at": None if deadline is None else deadline.due_at,
        "deadline_seq": None if deadline is None else deadline.seq,
        "held_actions": [str(a) for a in case.held_actions],
        "fallback_actions": [str(a) for a in case.fallback_actions],
        "released": list(case.released),
        "payment_window_ends_at": case.payment_window_ends_at,
        "shipping_window_ends_at": case.shipping_window_ends_at,
        "review_overdue": case.review_overdue,
        "closed_at": case.state_since if case.closed else None,
    }


def _step_params(t: Transition) -> dict[str, Any]:
    cause = t.cause
    actions = [str(a) for a in t.actions]
    return {
        **_case_params(t.case),
        "rule_id": t.rule_id,
        "from_state": None if t.from_state is None else str(t.from_state),
        "to_state": str(t.to_state),
        "cause_kind": str(cause.kind),
        "cause_ref": cause.ref,
        "cause_at": cause.at,
        "actor": cause.actor,
        "reason": t.reason,
        "actions": actions,
        "action_keys": list(t.action_keys),
        "audit_id": step_audit_id(t),
        "detail": orjson.dumps(
            {
                "step": t.case.seq,
                "rule_id": t.rule_id,
                "cause": {"kind": cause.kind, "ref": cause.ref, "at": cause.at},
                "actor": cause.actor,
                "reason": t.reason,
                "actions": actions,
                "action_keys": t.action_keys,
            }
        ).decode(),
    }


class PostgresCaseWork:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def lock(self, keys: Collection[CaseKey]) -> dict[CaseKey, Case]:
        if not keys:
            return {}
        orders, types = zip(*sorted(keys), strict=True)
        rows = self._conn.execute(LOCK, (list(orders), list(types))).fetchall()
        return {(c.order_id, str(c.exception_type)): c for c in map(case_from_row, rows)}

    def due(self, until: datetime, limit: int) -> list[Case]:
        return [case_from_row(r) for r in self._conn.execute(DUE, (until, limit)).fetchall()]

    def orphans(self, limit: int) -> list[Resolution]:
        rows = self._conn.execute(ORPHANS, (limit,)).fetchall()
        return [msgspec.json.decode(body, type=CLASSES[ResolutionType(t)]) for t, body in rows]

    def read(self, key: CaseKey) -> Case | None:
        row = self._conn.execute(READ, key).fetchone()
        return None if row is None else case_from_row(row)

    def known(self, event_ids: Collection[str]) -> set[str]:
        if not event_ids:
            return set()
        return {r[0] for r in self._conn.execute(KNOWN, (list(event_ids),)).fetchall()}

    def save(
        self,
        transitions: Sequence[Transition],
        resolutions: Sequence[tuple[Resolution, Step]] = (),
        adopted: Sequence[tuple[Resolution, Step]] = (),
    ) -> None:
        with self._conn.cursor() as cur:
            for t in transitions:
                params = _step_params(t)
                if t.from_state is None:
                    cur.execute(INSERT_CASE, params)
                else:
                    cur.execute(UPDATE_CASE, params)
                    if cur.rowcount != 1:
                        raise WriteConflict(f"case {t.case.key} moved on before step {t.case.seq}")
                cur.execute(INSERT_STEP, params)
                cur.execute(INSERT_AUDIT, params)
                commands = commands_of(t)
                if commands:
                    cur.executemany(INSERT_COMMAND, [_command_params(c) for c in commands])
            for resolution, step in resolutions:
                env = resolution.envelope
                cur.execute(
                    INSERT_RESOLUTION,
                    (
                        env.event_id,
                        str(env.event_type),
                        env.order_id,
                        str(case_type_of(resolution)),
                        env.platform,
                        env.occurred_at,
                        step.rule_id,
                        _step_seq(step),
                        msgspec.json.encode(resolution).decode(),
                    ),
                )
            for resolution, step in adopted:
                cur.execute(ADOPT, (step.rule_id, _step_seq(step), resolution.envelope.event_id))


def _command_params(c: ActionCommand) -> tuple[Any, ...]:
    return (
        c.action_key,
        c.order_id,
        str(c.exception_type),
        c.platform,
        c.step,
        str(c.action),
        c.rule_id,
        c.amount_fen,
        c.issued_at,
    )


def command_from_row(row: Sequence[Any]) -> ActionCommand:
    """A command outbox row (after its id) as the domain's command."""
    key, order_id, exception_type, platform, step, action, rule_id, amount_fen, issued_at = row
    return ActionCommand(
        action_key=key,
        order_id=order_id,
        exception_type=EventType(exception_type),
        platform=platform,
        step=step,
        action=ActionType(action),
        rule_id=rule_id,
        amount_fen=amount_fen,
        issued_at=issued_at,
    )


def _step_seq(step: Step) -> int | None:
    return step.case.seq if isinstance(step, Transition) else None


class PostgresCaseStore:
    """One connection per store, reopened after a fault; a unit of work is one transaction."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = psycopg.connect(self._dsn, connect_timeout=5, autocommit=True)
        return self._conn

    @contextmanager
    def work(self) -> Iterator[PostgresCaseWork]:
        with in_core_terms():  # a fault a retry may fix becomes the core's Transient
            try:
                conn = self._connection()
                with conn.transaction():
                    yield PostgresCaseWork(conn)
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name == _REVIEW_ONCE:
                    raise ReviewRefused("this review was applied before") from exc
                raise WriteConflict(f"another writer stored it first: {exc}") from exc
            except psycopg.Error:
                self.close()  # the next unit of work starts on a fresh connection
                raise

    def case(self, key: CaseKey) -> Case | None:
        with self.work() as work:
            return work.read(key)

    def relay_commands(self, limit: int, publish: PublishCommands) -> int:
        """One pass of the command relay, in one transaction: up to `limit` unpublished commands,
        oldest first, locked, handed to `publish` (which returns once the broker has them all),
        then marked. A failed publish rolls back: nothing is marked, the next pass sends them
        again. Another pass under way (any process): 0, nothing sent."""
        with in_core_terms():
            try:
                conn = self._connection()
                with conn.transaction():
                    row = conn.execute(
                        "SELECT pg_try_advisory_xact_lock(%s)", (COMMAND_RELAY_LOCK_KEY,)
                    ).fetchone()
                    if not (row and row[0]):
                        return 0
                    rows = conn.execute(UNPUBLISHED_COMMANDS, (limit,)).fetchall()
                    if not rows:
                        return 0
                    publish([command_from_row(r[1:]) for r in rows])
                    conn.execute(MARK_COMMANDS_PUBLISHED, ([r[0] for r in rows],))
                    return len(rows)
            except psycopg.Error:
                self.close()
                raise

    def command_backlog(self) -> int:
        """Commands written and not yet acknowledged by the broker."""
        with in_core_terms():
            try:
                row = self._connection().execute(COMMAND_BACKLOG).fetchone()
                return int(row[0]) if row else 0
            except psycopg.Error:
                self.close()
                raise

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

"""`case show`, the lifecycle part: each case of an order (one per exception type) with its steps,
the resolutions received, the deadlines set and fired, the reviews, and what became of every
action a step released.

A step, a resolution's record and a deadline's firing are what the service did, so they are
listed at the wall time it did them (`recorded_at`, one instant per transaction); within one
instant they follow event time, the order the state machine applied them in: a deadline fired
on catching up before the resolution whose event time passed it, a resolution before the step
it caused, a step before the deadline it set. A redelivered resolution (same event id) was
recorded once and shows once; another event that changed nothing shows with the rule saying why.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, NamedTuple

import psycopg

from order_recovery.domain.case import CASE_RULES, CauseKind
from order_recovery.domain.resolutions import ActionStatus, ResolutionType
from order_recovery.ops.case_entry import Entry

CASES = """SELECT exception_type, platform, amount_fen, state, seq, opened_at, opened_by::text,
        state_since, closed_at, deadline_kind, deadline_due_at, deadline_seq, held_actions,
        released, review_overdue
    FROM cases WHERE order_id = %s ORDER BY opened_at, exception_type"""
STEPS = """SELECT exception_type, seq, rule_id, from_state, to_state, cause_kind, cause_ref,
        cause_at, actor, reason, actions, action_keys, deadline_kind, deadline_due_at,
        recorded_at
    FROM case_steps WHERE order_id = %s ORDER BY exception_type, seq"""
RESOLUTIONS = """SELECT event_id::text, event_type, exception_type, occurred_at, rule_id,
        step_seq, recorded_at, body->>'action', body->>'action_key', body->>'status',
        coalesce((body->>'final')::boolean, true), body->>'detail'
    FROM resolutions WHERE order_id = %s ORDER BY recorded_at, occurred_at, event_id"""

PENDING, COMPLETED, FAILED, RETRYING = "pending", "completed", "failed", "retrying"


@dataclass(frozen=True, slots=True)
class ActionState:
    """An action a step released to an executor, and what the executor reported on its key."""

    key: str
    action: str
    released_by: int  # the step
    status: str  # pending (no report) | completed | failed (for good) | retrying
    reported_at: datetime | None  # event time of the report that settled the status
    report_id: str | None


@dataclass(frozen=True, slots=True)
class CaseHeader:
    exception_type: str
    platform: str
    amount_fen: int
    state: str
    steps: int
    opened_at: datetime  # event time of the opening exception
    opened_by: str
    state_since: datetime
    closed_at: datetime | None
    deadline: dict[str, Any] | None  # the pending one: kind, due_at, set_by_step
    held_actions: list[str]
    released: list[str]  # action keys, in the order released
    review_overdue: bool
    actions: list[ActionState]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Report(NamedTuple):
    event_id: str
    occurred_at: datetime
    status: str
    final: bool


def _settle(reports: list[_Report]) -> tuple[str, _Report | None]:
    """An action's status from its reports: a completion is final whatever came after (the
    executor applies the key once); else the latest failure, for good or to be retried.
    `reports`: in the order they were recorded."""
    ordered = sorted(reports, key=lambda r: r.occurred_at)  # stable: as recorded at one time
    done = [r for r in ordered if r.status == ActionStatus.COMPLETED]
    if done:
        return COMPLETED, done[0]
    if not ordered:
        return PENDING, None
    last = ordered[-1]
    return (FAILED if last.final else RETRYING), last


def case_life(
    conn: psycopg.Connection[Any], order_id: str, audit_ids: Mapping[tuple[str, int], str]
) -> tuple[list[CaseHeader], list[Entry]]:
    """The order's cases and the timeline entries of their lives. `audit_ids`: the audit row's
    event id of each step, by (exception type, step), the id a step not caused by an event is
    known by."""
    cases = conn.execute(CASES, (order_id,)).fetchall()
    steps = conn.execute(STEPS, (order_id,)).fetchall()
    resolutions = conn.execute(RESOLUTIONS, (order_id,)).fetchall()

    reports: dict[str, list[_Report]] = defaultdict(list)
    for row in resolutions:
        event_id, event_type, occurred, key, status, final = (
            row[0], row[1], row[3], row[8], row[9], row[10]
        )  # fmt: skip
        if event_type == ResolutionType.ACTION_REPORT and key is not None:
            reports[key].append(_Report(event_id, occurred, status, final))

    entries: list[Entry] = []
    actions: dict[str, list[ActionState]] = defaultdict(list)
    by_case: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in steps:
        by_case[row[0]].append(row)
    for etype, rows in by_case.items():
        for i, row in enumerate(rows):
            following = rows[i + 1] if i + 1 < len(rows) else None
            released = _released(row, reports)
            actions[etype] += released
            entries += _step_entries(row, following, released, audit_ids)
    for row in resolutions:
        entries.append(_resolution_entry(row))

    headers = [_header(row, actions[row[0]]) for row in cases]
    return headers, entries


def _released(step: tuple[Any, ...], reports: Mapping[str, list[_Report]]) -> list[ActionState]:
    seq, names, keys = step[1], step[10], step[11]
    out = []
    for action, key in zip(names, keys, strict=True):
        status, report = _settle(reports.get(key, []))
        out.append(
            ActionState(
                key,
                action,
                seq,
                status,
                None if report is None else report.occurred_at,
                None if report is None else report.event_id,
            )
        )
    return out


def _step_entries(
    row: tuple[Any, ...],
    following: tuple[Any, ...] | None,
    released: list[ActionState],
    audit_ids: Mapping[tuple[str, int], str],
) -> list[Entry]:
    """The step; before it the deadline that fired it, after it the deadline it set."""
    (etype, seq, rule_id, from_state, to_state, cause_kind, cause_ref, cause_at, actor, reason,
     names, keys, deadline_kind, deadline_due_at, recorded_at) = row  # fmt: skip
    by_event = cause_kind in (CauseKind.EXCEPTION, CauseKind.RESOLUTION)
    event_id = cause_ref if by_event else audit_ids.get((etype, seq), cause_ref)
    out: list[Entry] = []
    if cause_kind == CauseKind.DEADLINE:
        out.append(
            Entry(
                recorded_at,
                "deadline_fired",
                etype,
                event_id,
                f"{cause_ref} due {cause_at.isoformat(timespec='seconds')} passed",
                {"kind": cause_ref, "due_at": cause_at, "set_by_step": seq - 1, "step": seq},
                seq,
                cause_at,
            )
        )
    deadline_set = (
        None if deadline_kind is None else {"kind": deadline_kind, "due_at": deadline_due_at}
    )
    out.append(
        Entry(
            recorded_at,
            "step",
            etype,
            event_id,
            f"{from_state or '(new)'} -> {to_state}: {rule_id}",
            {
                "step": seq,
                "from_status": from_state,
                "to_status": to_state,
                "rule_id": rule_id,
                "cause": {"kind": cause_kind, "ref": cause_ref, "at": cause_at},
                "actor": actor,
                "reason": reason,
                "actions": list(names),
                "action_keys": list(keys),
                "released": [{"key": a.key, "status": a.status} for a in released],
                "deadline_set": deadline_set,
            },
            seq,
            cause_at,
        )
    )
    if deadline_kind is not None:
        if following is None:
            fate = "pending"
        elif following[5] == CauseKind.DEADLINE:
            fate = "fired"
        else:
            fate = "cleared"  # the case moved on before it was due
        out.append(
            Entry(
                recorded_at,
                "deadline_set",
                etype,
                event_id,
                f"{deadline_kind} due {deadline_due_at.isoformat(timespec='seconds')} ({fate})",
                {"kind": deadline_kind, "due_at": deadline_due_at, "step": seq, "fate": fate},
                seq,
                cause_at,
            )
        )
    return out


def _resolution_entry(row: tuple[Any, ...]) -> Entry:
    (event_id, event_type, etype, occurred, rule_id, step_seq, recorded_at, action, key, status,
     final, detail) = row  # fmt: skip
    what = event_type
    extra: dict[str, Any] = {}
    if event_type == ResolutionType.ACTION_REPORT:
        retry = "" if final or status == ActionStatus.COMPLETED else ", will retry"
        what = f"{event_type} {key} {status}{retry}"
        extra = {
            "action": action,
            "action_key": key,
            "status": status,
            "final": final,
            "report_detail": detail,
        }
    effect = f"step {step_seq}, {rule_id}" if step_seq is not None else f"ignored, {rule_id}"
    return Entry(
        recorded_at,
        "resolution",
        etype,
        event_id,
        f"{what} ({effect})",
        {
            "event_type": event_type,
            "occurred_at": occurred,
            "rule_id": rule_id,
            "step": step_seq,
            "ignored": step_seq is None,
            "why": CASE_RULES.get(rule_id, ""),
            **extra,
        },
        0,
        occurred,
    )


def _header(row: tuple[Any, ...], actions: list[ActionState]) -> CaseHeader:
    (etype, platform, amount, state, seq, opened_at, opened_by, since, closed_at, deadline_kind,
     deadline_due_at, deadline_seq, held, released, overdue) = row  # fmt: skip
    deadline = (
        None
        if deadline_kind is None
        else {"kind": deadline_kind, "due_at": deadline_due_at, "set_by_step": deadline_seq}
    )
    return CaseHeader(
        etype,
        platform,
        amount,
        state,
        seq,
        opened_at,
        opened_by,
        since,
        closed_at,
        deadline,
        list(held),
        list(released),
        overdue,
        actions,
    )

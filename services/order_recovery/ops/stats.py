"""`stats`: how well recovery works, against the rules reference's targets.

The recovery figures are the cases' (domain.case): recovery rate = cases closed as recovered or
refunded over cases closed (a rejected non-exception opens no case, so it does not count); time
to recovery = the exception's event time (`cases.opened_at`) to the event time of the step that
recovered the case (`closed_at`); p90 is the nearest-rank 90th percentile (`percentile_disc`).
`--since` / `--until` select closed cases by `closed_at`, opened ones by `opened_at` and
decisions by `decided_at`; the open cases are always today's (the snapshot's view: by state and
by age since the exception). The decisions' figures (outcomes, compensation) stay beside them:
they say what was decided, the cases what came of it.

Grouping by rule counts a case under every rule its opening decision fired, and a decision under
every rule it fired.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from order_recovery.domain.case import RECOVERED_STATES, CaseState
from order_recovery.domain.operations import (
    MTTR_TARGET,
    RECOVERY_SUCCESS_TARGET_BP,
    age_bucket_sql,
)

#: The reference's targets (domain.operations), as the figures compare against them.
TARGET_RECOVERY_RATE = RECOVERY_SUCCESS_TARGET_BP / 10_000
TARGET_MEAN_TTR_S = int(MTTR_TARGET.total_seconds())
GROUPINGS = {"platform": "x.platform", "type": "x.exception_type", "rule": "r.rule_id"}
_RECOVERED = sorted(str(s) for s in RECOVERED_STATES)


@dataclass(slots=True)
class Figures:
    group: str | None
    # cases
    opened: int = 0
    closed: int = 0
    recovered: int = 0
    closed_states: dict[str, int] = field(default_factory=dict)
    mean_ttr_s: float | None = None
    p90_ttr_s: float | None = None
    open_states: dict[str, int] = field(default_factory=dict)
    open_ages: dict[str, int] = field(default_factory=dict)
    held_for_review: int = 0
    held_for_review_fen: int = 0
    reviews_overdue: int = 0
    # decisions
    decided: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    coupons: int = 0
    coupon_fen: int = 0
    refunds: int = 0
    refund_fen: int = 0

    @property
    def recovery_rate(self) -> float | None:
        return self.recovered / self.closed if self.closed else None

    @property
    def rate_ok(self) -> bool | None:
        rate = self.recovery_rate
        return None if rate is None else rate >= TARGET_RECOVERY_RATE

    @property
    def ttr_ok(self) -> bool | None:
        return None if self.mean_ttr_s is None else self.mean_ttr_s <= TARGET_MEAN_TTR_S

    @property
    def open(self) -> int:
        return sum(self.open_states.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "cases_opened": self.opened,
            "cases_closed": self.closed,
            "recovered": self.recovered,
            "recovery_rate": self.recovery_rate,
            "closed_states": self.closed_states,
            "mean_time_to_recovery_s": self.mean_ttr_s,
            "p90_time_to_recovery_s": self.p90_ttr_s,
            "open_cases": {
                "count": self.open,
                "states": self.open_states,
                "ages": self.open_ages,
                "awaiting_review": {
                    "count": self.held_for_review,
                    "amount_fen": self.held_for_review_fen,
                    "overdue": self.reviews_overdue,
                },
            },
            "decided": self.decided,
            "outcomes": self.outcomes,
            "compensation": {
                "coupon": {"count": self.coupons, "amount_fen": self.coupon_fen},
                "refund": {"count": self.refunds, "amount_fen": self.refund_fen},
            },
            "recovery_rate_target_met": self.rate_ok,
            "time_to_recovery_target_met": self.ttr_ok,
        }


def figures(
    conn: psycopg.Connection[Any],
    since: datetime | None = None,
    until: datetime | None = None,
    by: str | None = None,
) -> tuple[Figures, list[Figures]]:
    """The totals, and one row per group when `by` is given."""
    total = _query(conn, since, until, None)[None]
    groups = list(_query(conn, since, until, by).values()) if by else []
    return total, groups


def _window(column: str) -> sql.Composable:
    return sql.SQL(
        "(%(since)s::timestamptz IS NULL OR {c} >= %(since)s)"
        " AND (%(until)s::timestamptz IS NULL OR {c} < %(until)s)"
    ).format(c=sql.SQL(column))


def _query(
    conn: psycopg.Connection[Any], since: datetime | None, until: datetime | None, by: str | None
) -> dict[str | None, Figures]:
    key = sql.SQL(GROUPINGS[by]) if by else sql.SQL("NULL::text")
    params = {"since": since, "until": until, "recovered": _RECOVERED}
    rows: dict[str | None, Figures] = {} if by else {None: Figures(None)}

    def row(grp: str | None) -> Figures:
        return rows.setdefault(grp, Figures(grp))

    closed = _cases(
        key, by, "x.closed_at IS NOT NULL AND {w}", "closed_at", "x.state, count(*)", "x.state"
    )
    for grp, state, n in conn.execute(closed, params):
        f = row(grp)
        f.closed += n
        f.closed_states[state] = n
        if state in _RECOVERED:
            f.recovered += n
    ttr = "extract(epoch FROM x.closed_at - x.opened_at)::float8"
    for grp, mean, p90 in conn.execute(
        _cases(
            key,
            by,
            "x.state = ANY(%(recovered)s) AND {w}",
            "closed_at",
            f"avg({ttr}), percentile_disc(0.9) WITHIN GROUP (ORDER BY {ttr})",
            None,
        ),
        params,
    ):
        row(grp).mean_ttr_s, row(grp).p90_ttr_s = mean, p90
    for grp, n in conn.execute(_cases(key, by, "{w}", "opened_at", "count(*)", None), params):
        row(grp).opened = n
    age = age_bucket_sql("now() - x.opened_at")
    for grp, state, bucket, n, fen, overdue in conn.execute(
        _cases(
            key,
            by,
            "x.closed_at IS NULL",
            None,
            f"x.state, {age}, count(*), coalesce(sum(x.amount_fen), 0)::bigint,"
            " count(*) FILTER (WHERE x.review_overdue)",
            f"x.state, {age}",
        ),
        params,
    ):
        f = row(grp)
        f.open_states[state] = f.open_states.get(state, 0) + n
        f.open_ages[bucket] = f.open_ages.get(bucket, 0) + n
        if state == CaseState.AWAITING_REVIEW:
            f.held_for_review += n
            f.held_for_review_fen += fen
        f.reviews_overdue += overdue
    _decisions(conn, key, by, params, row)
    return rows


def _cases(
    key: sql.Composable,
    by: str | None,
    where: str,
    window: str | None,
    select: str,
    group: str | None,
) -> sql.Composable:
    """One aggregate over `cases` (as x), grouped by `key` (and `group`)."""
    rules = (
        "JOIN decisions d ON d.event_id = x.opened_by CROSS JOIN unnest(d.rule_ids) AS r(rule_id)"
        if by == "rule"
        else ""
    )
    condition = sql.SQL(where).format(w=_window(f"x.{window}") if window else sql.SQL("true"))
    return sql.SQL(
        "SELECT {key}, {select} FROM cases x {rules} WHERE {where} GROUP BY {group}"
    ).format(
        key=key,
        select=sql.SQL(select),
        rules=sql.SQL(rules),
        where=condition,
        group=sql.SQL(", ").join([sql.SQL("1"), *([sql.SQL(group)] if group else [])]),
    )


def _decisions(
    conn: psycopg.Connection[Any],
    key: sql.Composable,
    by: str | None,
    params: dict[str, Any],
    row: Callable[[str | None], Figures],
) -> None:
    """The outcome mix and the compensation of the decisions in the window."""
    query = sql.SQL(
        """SELECT {key} AS grp, x.outcome, count(*),
             count(*) FILTER (WHERE c.kind = 'coupon'),
             coalesce(sum(c.amount_fen) FILTER (WHERE c.kind = 'coupon'), 0)::bigint,
             count(*) FILTER (WHERE c.kind = 'refund'),
             coalesce(sum(c.amount_fen) FILTER (WHERE c.kind = 'refund'), 0)::bigint
           FROM decisions x LEFT JOIN compensations c ON c.event_id = x.event_id {unnest}
           WHERE {window} GROUP BY 1, 2 ORDER BY 1, 2"""
    ).format(
        key=key,
        unnest=sql.SQL("CROSS JOIN unnest(x.rule_ids) AS r(rule_id)" if by == "rule" else ""),
        window=_window("x.decided_at"),
    )
    for grp, outcome, n, coupons, coupon_fen, refunds, refund_fen in conn.execute(query, params):
        f = row(grp)
        f.decided += n
        f.outcomes[outcome] = n
        f.coupons += coupons
        f.coupon_fen += coupon_fen
        f.refunds += refunds
        f.refund_fen += refund_fen

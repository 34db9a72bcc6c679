"""`stats`: how well recovery works, against the rules reference's targets.

Recovery rate = decisions with outcome `recovered` over all decisions. Time to recovery =
`decided_at - occurred_at` of the recovered decisions (event time of the exception to the decision
that recovered it); p90 is the nearest-rank 90th percentile (Postgres `percentile_disc`).
Decisions are selected by `decided_at`. Grouping by rule counts a decision under every rule it
fired.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from order_recovery.domain.operations import MTTR_TARGET, RECOVERY_SUCCESS_TARGET_BP

#: The reference's targets (domain.operations), as the figures compare against them.
TARGET_RECOVERY_RATE = RECOVERY_SUCCESS_TARGET_BP / 10_000
TARGET_MEAN_TTR_S = int(MTTR_TARGET.total_seconds())
GROUPINGS = {"platform": "d.platform", "type": "d.exception_type", "rule": "r.rule_id"}


@dataclass(slots=True)
class Figures:
    group: str | None
    decided: int = 0
    recovered: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    coupons: int = 0
    coupon_fen: int = 0
    refunds: int = 0
    refund_fen: int = 0
    mean_ttr_s: float | None = None
    p90_ttr_s: float | None = None

    @property
    def recovery_rate(self) -> float | None:
        return self.recovered / self.decided if self.decided else None

    @property
    def rate_ok(self) -> bool | None:
        rate = self.recovery_rate
        return None if rate is None else rate >= TARGET_RECOVERY_RATE

    @property
    def ttr_ok(self) -> bool | None:
        return None if self.mean_ttr_s is None else self.mean_ttr_s <= TARGET_MEAN_TTR_S

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "decided": self.decided,
            "recovered": self.recovered,
            "recovery_rate": self.recovery_rate,
            "outcomes": self.outcomes,
            "compensation": {
                "coupon": {"count": self.coupons, "amount_fen": self.coupon_fen},
                "refund": {"count": self.refunds, "amount_fen": self.refund_fen},
            },
            "mean_time_to_recovery_s": self.mean_ttr_s,
            "p90_time_to_recovery_s": self.p90_ttr_s,
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
    total = _query(conn, since, until, None)[0]
    groups = _query(conn, since, until, by) if by else []
    return total, groups


def _query(
    conn: psycopg.Connection[Any], since: datetime | None, until: datetime | None, by: str | None
) -> list[Figures]:
    picked = sql.SQL(
        """WITH picked AS (
             SELECT {key} AS grp, d.outcome, c.kind, c.amount_fen,
                    extract(epoch FROM d.decided_at - d.occurred_at)::float8 AS ttr
             FROM decisions d LEFT JOIN compensations c ON c.event_id = d.event_id {unnest}
             WHERE (%(since)s::timestamptz IS NULL OR d.decided_at >= %(since)s)
               AND (%(until)s::timestamptz IS NULL OR d.decided_at < %(until)s))"""
    ).format(
        key=sql.SQL(GROUPINGS[by]) if by else sql.SQL("NULL::text"),
        unnest=sql.SQL("CROSS JOIN unnest(d.rule_ids) AS r(rule_id)" if by == "rule" else ""),
    )
    params = {"since": since, "until": until}
    counts = sql.SQL(
        """{picked} SELECT grp, outcome, count(*),
             count(*) FILTER (WHERE kind = 'coupon'),
             coalesce(sum(amount_fen) FILTER (WHERE kind = 'coupon'), 0)::bigint,
             count(*) FILTER (WHERE kind = 'refund'),
             coalesce(sum(amount_fen) FILTER (WHERE kind = 'refund'), 0)::bigint
           FROM picked GROUP BY grp, outcome ORDER BY grp, outcome"""
    ).format(picked=picked)
    ttr = sql.SQL(
        """{picked} SELECT grp, avg(ttr), percentile_disc(0.9) WITHIN GROUP (ORDER BY ttr)
           FROM picked WHERE outcome = 'recovered' GROUP BY grp"""
    ).format(picked=picked)
    rows: dict[str | None, Figures] = {}
    for grp, outcome, n, coupons, coupon_fen, refunds, refund_fen in conn.execute(counts, params):
        f = rows.setdefault(grp, Figures(grp))
        f.decided += n
        f.outcomes[outcome] = n
        if outcome == "recovered":
            f.recovered = n
        f.coupons += coupons
        f.coupon_fen += coupon_fen
        f.refunds += refunds
        f.refund_fen += refund_fen
    for grp, mean, p90 in conn.execute(ttr, params):
        rows[grp].mean_ttr_s, rows[grp].p90_ttr_s = mean, p90
    if by is None and not rows:
        return [Figures(None)]
    return list(rows.values())

"""`reconcile`: the money decided on one day against the payment ledger's export of that day.

The day is the Asia/Shanghai calendar day of `compensations.decided_at` (when the service decided
to pay, which is when the payment side was asked to pay). Every coupon and refund is keyed by
(order_id, exception_type, kind): the service grants at most one compensation per order and
exception type. Ledger lines with the same key are added up, so a double payment shows as a
mismatch.

Ledger CSV (UTF-8, a header row, columns in any order, extra columns ignored):
    order_id,exception_type,kind,amount_fen
    ord-1-00000001,shipping-delay,coupon,500
`kind` is `coupon` or `refund`; `amount_fen` is an integer number of fen (1 yuan = 100 fen).
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import psycopg

from order_recovery.ops.output import UsageError
from order_recovery.ops.when import shanghai_day

LEDGER_COLUMNS = ("order_id", "exception_type", "kind", "amount_fen")
KINDS = ("coupon", "refund")
Key = tuple[str, str, str]  # order_id, exception_type, kind


@dataclass(frozen=True, slots=True)
class Line:
    order_id: str
    exception_type: str
    kind: str
    amount_fen: int
    where: str  # event id (decided) or ledger line numbers

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Reconciliation:
    day: date
    decided: list[Line]
    ledger: list[Line] | None
    missing: list[Line] = field(default_factory=list)  # decided, not in the ledger
    extra: list[Line] = field(default_factory=list)  # in the ledger, not decided that day
    mismatched: list[tuple[Line, Line]] = field(default_factory=list)  # (decided, ledger)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.extra or self.mismatched)

    def totals(self, lines: list[Line] | None) -> dict[str, dict[str, int]]:
        out = {k: {"count": 0, "amount_fen": 0} for k in KINDS}
        for line in lines or []:
            out[line.kind]["count"] += 1
            out[line.kind]["amount_fen"] += line.amount_fen
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "timezone": "Asia/Shanghai",
            "decided": self.totals(self.decided),
            "ledger": None if self.ledger is None else self.totals(self.ledger),
            "clean": self.clean,
            "missing": [x.to_json() for x in self.missing],
            "extra": [x.to_json() for x in self.extra],
            "mismatched": [
                {**d.to_json(), "ledger_amount_fen": g.amount_fen, "ledger_where": g.where}
                for d, g in self.mismatched
            ],
        }


def decided_on(conn: psycopg.Connection[Any], day: date) -> list[Line]:
    start, end = shanghai_day(day)
    rows = conn.execute(
        """SELECT order_id, exception_type, kind, amount_fen, event_id::text FROM compensations
           WHERE decided_at >= %s AND decided_at < %s ORDER BY order_id, exception_type""",
        (start, end),
    ).fetchall()
    return [Line(*row) for row in rows]


def read_ledger(path: Path) -> list[Line]:
    """The ledger's lines, one per key (amounts of repeated keys added up); a malformed file is a
    usage error naming the line."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            table = csv.DictReader(f)
            rows = list(table)
            columns = set(table.fieldnames or ())
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"cannot read ledger {path}: {exc}") from None
    lacking = [c for c in LEDGER_COLUMNS if c not in columns]
    if lacking:
        raise UsageError(f"ledger {path} lacks column(s) {', '.join(lacking)}")
    merged: dict[Key, Line] = {}
    for number, row in enumerate(rows, start=2):
        kind, raw = (row["kind"] or "").strip(), (row["amount_fen"] or "").strip()
        if kind not in KINDS:
            raise UsageError(f"ledger {path} line {number}: kind {kind!r} is not coupon or refund")
        if not raw.isdigit():
            raise UsageError(f"ledger {path} line {number}: amount_fen {raw!r} is not whole fen")
        key = ((row["order_id"] or "").strip(), (row["exception_type"] or "").strip(), kind)
        seen = merged.get(key)
        amount = int(raw) + (seen.amount_fen if seen else 0)
        where = f"{seen.where},{number}" if seen else f"line {number}"
        merged[key] = Line(*key, amount, where)
    return list(merged.values())


def reconcile(decided: list[Line], day: date, ledger: list[Line] | None) -> Reconciliation:
    result = Reconciliation(day, decided, ledger)
    if ledger is None:
        return result
    booked = {(x.order_id, x.exception_type, x.kind): x for x in ledger}
    expected = {(x.order_id, x.exception_type, x.kind): x for x in decided}
    for key, line in expected.items():
        other = booked.get(key)
        if other is None:
            result.missing.append(line)
        elif other.amount_fen != line.amount_fen:
            result.mismatched.append((line, other))
    result.extra = [line for key, line in booked.items() if key not in expected]
    return result

"""Reconciliation: the money decided on one day against the payment ledger's export of that day.

The day is the Asia/Shanghai calendar day of `compensations.decided_at` (when the service decided
to pay, which is when the payment side was asked to pay). Every coupon and refund is keyed by
(order_id, exception_type, kind): the service grants at most one compensation per order and
exception type. Ledger lines with the same key are added up, so a double payment shows as a
mismatch.

Ledger CSV (UTF-8, a header row, columns in any order, extra columns ignored):
    order_id,exception_type,kind,amount_fen
    ord-1-00000001,shipping-delay,coupon,500
`kind` is `coupon`, `refund` or `payment`; `amount_fen` is an integer number of fen (1 yuan =
100 fen).

What the ledger owes, since the case lifecycle: a coupon or refund the executor reported failed
(its final `action-report`, `status` failed) was never paid, and must be absent from the ledger
(booked anyway, it is listed as `booked_though_failed`); one reported completed, or not reported
yet, must be there (a compensation not reported yet is counted as `unreported`, so a missing line
can be told from a late report). A payment recovered later (a `payment-completed` resolution whose
step recovered the case) is kind `payment`, keyed by the case's order id and exception type, on
the Shanghai day of the payment's event time, for the amount the event carries.

`adapters.postgres.reconciliation.reconcile_and_record` is what the schedule runs and what
`recoveryctl reconcile --record` runs by hand: one code path, one row in `reconciliations` per
run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

KINDS = ("coupon", "refund", "payment")
#: What the executor said of a compensation's action (a payment recovered is always completed).
COMPLETED, FAILED, UNREPORTED = "completed", "failed", "unreported"
MATCHED, MISMATCHED, LEDGER_MISSING = "matched", "mismatched", "ledger_missing"
Key = tuple[str, str, str]  # order_id, exception_type, kind


@dataclass(frozen=True, slots=True)
class Line:
    order_id: str
    exception_type: str
    kind: str
    amount_fen: int
    where: str  # event id (decided) or ledger line numbers
    status: str = UNREPORTED  # expected lines: completed | failed | unreported

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
    booked_though_failed: list[tuple[Line, Line]] = field(default_factory=list)  # (decided, ledger)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.extra or self.mismatched or self.booked_though_failed)

    @property
    def status(self) -> str:
        if self.ledger is None:
            return LEDGER_MISSING
        return MATCHED if self.clean else MISMATCHED

    def reported(self) -> dict[str, int]:
        """Expected lines by what the executor reported (failed ones are owed nothing)."""
        out = {COMPLETED: 0, FAILED: 0, UNREPORTED: 0}
        for line in self.decided:
            out[line.status] += 1
        return out

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
            "status": self.status,
            "reported": self.reported(),
            "missing": [x.to_json() for x in self.missing],
            "extra": [x.to_json() for x in self.extra],
            "mismatched": [
                {**d.to_json(), "ledger_amount_fen": g.amount_fen, "ledger_where": g.where}
                for d, g in self.mismatched
            ],
            "booked_though_failed": [
                {**d.to_json(), "ledger_amount_fen": g.amount_fen, "ledger_where": g.where}
                for d, g in self.booked_though_failed
            ],
        }


def reconcile(decided: list[Line], day: date, ledger: list[Line] | None) -> Reconciliation:
    result = Reconciliation(day, decided, ledger)
    if ledger is None:
        return result
    booked = {(x.order_id, x.exception_type, x.kind): x for x in ledger}
    expected = {(x.order_id, x.exception_type, x.kind): x for x in decided}
    for key, line in expected.items():
        other = booked.get(key)
        if line.status == FAILED:
            if other is not None:
                result.booked_though_failed.append((line, other))
        elif other is None:
            result.missing.append(line)
        elif other.amount_fen != line.amount_fen:
            result.mismatched.append((line, other))
    result.extra = [line for key, line in booked.items() if key not in expected]
    return result

"""The payment ledger's daily export, a CSV file (format: core.reconciliation and
docs/operations.md, Ledger CSV format)."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

from order_recovery.core.reconciliation import KINDS, Key, Line

LEDGER_COLUMNS = ("order_id", "exception_type", "kind", "amount_fen")


class LedgerError(ValueError):
    """The ledger file cannot be read or is malformed; the message names the file and line."""


def ledger_file(ledger_dir: Path | None, day: date) -> Path | None:
    """Where the scheduled run looks for a day's ledger: `<dir>/<YYYY-MM-DD>.csv`."""
    return None if ledger_dir is None else ledger_dir / f"{day.isoformat()}.csv"


def read_ledger(path: Path) -> list[Line]:
    """The ledger's lines, one per key (amounts of repeated keys added up); a malformed file is a
    LedgerError naming the line."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            table = csv.DictReader(f)
            rows = list(table)
            columns = set(table.fieldnames or ())
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LedgerError(f"cannot read ledger {path}: {exc}") from None
    lacking = [c for c in LEDGER_COLUMNS if c not in columns]
    if lacking:
        raise LedgerError(f"ledger {path} lacks column(s) {', '.join(lacking)}")
    merged: dict[Key, Line] = {}
    for number, row in enumerate(rows, start=2):
        kind, raw = (row["kind"] or "").strip(), (row["amount_fen"] or "").strip()
        if kind not in KINDS:
            raise LedgerError(
                f"ledger {path} line {number}: kind {kind!r} is not coupon, refund or payment"
            )
        if not raw.isdigit():
            raise LedgerError(f"ledger {path} line {number}: amount_fen {raw!r} is not whole fen")
        key = ((row["order_id"] or "").strip(), (row["exception_type"] or "").strip(), kind)
        seen = merged.get(key)
        amount = int(raw) + (seen.amount_fen if seen else 0)
        where = f"{seen.where},{number}" if seen else f"line {number}"
        merged[key] = Line(*key, amount, where)
    return list(merged.values())

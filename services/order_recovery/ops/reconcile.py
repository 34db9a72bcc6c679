"""`recoveryctl reconcile`: the comparison is core.reconciliation, the queries and the record
adapters.postgres.reconciliation, the ledger file adapters.ledger; here a malformed ledger becomes
a usage error (exit 2, one line)."""

from __future__ import annotations

from pathlib import Path

from order_recovery.adapters import ledger
from order_recovery.adapters.ledger import LEDGER_COLUMNS, ledger_file
from order_recovery.adapters.postgres.reconciliation import (
    Recorded,
    decided_on,
    latest_reconciliation,
    reconcile_and_record,
)
from order_recovery.core.reconciliation import KINDS, Line, Reconciliation, reconcile
from order_recovery.ops.output import UsageError

__all__ = [
    "KINDS",
    "LEDGER_COLUMNS",
    "Line",
    "Reconciliation",
    "Recorded",
    "decided_on",
    "latest_reconciliation",
    "ledger_file",
    "read_ledger",
    "reconcile",
    "reconcile_and_record",
]


def read_ledger(path: Path) -> list[Line]:
    """The ledger's lines, one per key; a malformed file is a usage error naming the line."""
    try:
        return ledger.read_ledger(path)
    except ledger.LedgerError as exc:
        raise UsageError(str(exc)) from None

"""How the schedules' results look in a terminal (`snapshot`, `schedules`); the same values go
out as JSON with `--json`."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from order_recovery.adapters.postgres.schedules import Run
from order_recovery.adapters.postgres.snapshots import Snapshot
from order_recovery.domain.operations import CASE_AGE_BUCKETS
from order_recovery.ops.output import fen, when
from order_recovery.ops.reconcile import Recorded

_BUCKETS = [label for label, _ in CASE_AGE_BUCKETS]


def snapshot(out: Console, snap: Snapshot) -> None:
    """Open cases by state (rows) and age bucket (columns), then the total."""
    cells: dict[tuple[str, str], int] = {}
    money: dict[str, int] = {}
    for r in snap.rows:
        cells[(r.state, r.age_bucket)] = cells.get((r.state, r.age_bucket), 0) + r.cases
        money[r.state] = money.get(r.state, 0) + r.amount_fen
    how = "by hand" if snap.slot is None else f"slot {when(snap.slot)}"
    table = Table(
        "state", *_BUCKETS, "open", "amount", title=f"open cases at {when(snap.taken_at)}"
    )
    for state, count in sorted(snap.by_state().items()):
        row = [str(cells.get((state, b), 0) or "-") for b in _BUCKETS]
        table.add_row(state, *row, str(count), fen(money[state]))
    out.print(table)
    out.print(f"{snap.open_cases} open case(s), {fen(snap.amount_fen)} ({snap.source}, {how})")


def snapshots(out: Console, snaps: Sequence[Snapshot]) -> None:
    table = Table("taken at", "source", "slot", "open cases", "amount", *_BUCKETS)
    for s in snaps:
        buckets = {b: 0 for b in _BUCKETS}
        for r in s.rows:
            buckets[r.age_bucket] += r.cases
        table.add_row(
            when(s.taken_at),
            s.source,
            when(s.slot),
            str(s.open_cases),
            fen(s.amount_fen),
            *(str(buckets[b]) for b in _BUCKETS),
        )
    out.print(table)
    out.print(f"{len(snaps)} snapshot(s)")


def schedules(out: Console, runs: Sequence[Run], latest: Recorded | None) -> None:
    table = Table("job", "slot", "runner", "took", "outcome")
    for r in runs:
        took = f"{(r.finished_at - r.started_at).total_seconds():.2f} s"
        outcome = escape(", ".join(f"{k}={v}" for k, v in r.outcome.items()))
        table.add_row(
            r.job, when(r.slot), r.runner, took, f"[red]{outcome}[/]" if r.failed else outcome
        )
    out.print(table)
    if not runs:
        out.print("no scheduled run yet (the lifecycle process runs them)")
    if latest is not None:
        counts = f"{latest.missing} missing, {latest.extra} extra, {latest.mismatched} mismatched"
        out.print(
            f"latest reconciliation: {latest.day} {latest.status} ({counts}; {latest.source} "
            f"at {when(latest.ran_at)})"
        )

"""Printing for `recoveryctl`: rich tables for people, JSON for scripts, from one data value.

Colour and progress bars appear only on a terminal (rich detects it and honours NO_COLOR), so a
command piped into a file or another program prints plain text and never control codes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

#: Called with the number of records (or events) handled so far.
Advance = Callable[[int], None]


class UsageError(Exception):
    """The operator asked for something that cannot be done as asked; exit 2, one line."""


def console() -> Console:
    """Wide enough when not a terminal that tables are not folded into a file or a pipe."""
    tty = sys.stdout.isatty()
    return Console(highlight=False, width=None if tty else 160, soft_wrap=not tty)


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return escape_bytes(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, default=_default, option=orjson.OPT_INDENT_2).decode())
    sys.stdout.write("\n")


def escape_bytes(raw: bytes) -> str:
    """Printable ASCII as is, other bytes as \\xNN, \\n, \\t, a backslash doubled: unambiguous,
    and what an operator can paste into a bug report."""
    return raw.decode("latin-1").encode("unicode_escape").decode("ascii")


def fen(amount: int) -> str:
    """Money stays int fen everywhere; only printing shows yuan, exactly (no float)."""
    sign = "-" if amount < 0 else ""
    yuan, cents = divmod(abs(amount), 100)
    return f"{sign}¥{yuan:,}.{cents:02d}"


def percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.1f}%"


def minutes(seconds: float | None) -> str:
    """Minutes, the unit of the reference's goal; seconds under a minute (the local stack's
    simulated platform answers within seconds, and "0.0 min" would hide it)."""
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def when(at: datetime | None) -> str:
    return "-" if at is None else at.isoformat(timespec="seconds")


@contextmanager
def progress(description: str, total: int | None) -> Iterator[Advance]:
    """A progress bar on stderr for long work, shown only when stderr is a terminal."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    with bar:
        task = bar.add_task(description, total=total)

        def advance(done: int) -> None:
            bar.update(task, completed=done)

        yield advance

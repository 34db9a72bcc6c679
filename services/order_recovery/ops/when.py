"""Time arguments. Operators think in the platform's day, so a bare date means midnight in
Asia/Shanghai (the same calendar the rules count refunds over), and a time without an offset is
Shanghai time too."""

from __future__ import annotations

import argparse
from datetime import date, datetime, timedelta

from order_recovery.domain.history import SHANGHAI


def parse_when(text: str) -> datetime:
    """argparse type: YYYY-MM-DD or an ISO 8601 date-time."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), SHANGHAI)
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not YYYY-MM-DD or an ISO 8601 date-time"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=SHANGHAI)


def parse_day(text: str) -> date:
    """argparse type: YYYY-MM-DD."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def shanghai_day(day: date) -> tuple[datetime, datetime]:
    """[start, end) of an Asia/Shanghai calendar day."""
    start = datetime.combine(day, datetime.min.time(), SHANGHAI)
    return start, start + timedelta(days=1)

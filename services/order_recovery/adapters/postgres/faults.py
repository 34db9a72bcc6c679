"""psycopg's errors in the core's terms (`core.faults`), so nothing above the adapters needs to know
the driver: what a retry may fix becomes `Transient` with its cause, anything else stays as it is
(a bug, or a refusal the caller handles itself)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from order_recovery.core.faults import Transient


def transient(exc: psycopg.Error) -> Transient | None:
    """The core's fault for a driver error worth retrying, None for any other."""
    if isinstance(exc, psycopg.errors.SerializationFailure):
        return Transient(str(exc), "pg_serialization")
    if isinstance(exc, psycopg.errors.DeadlockDetected):
        return Transient(str(exc), "pg_deadlock")
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return Transient(str(exc), "pg_unavailable")
    return None


@contextmanager
def in_core_terms() -> Iterator[None]:
    """Re-raise a transient driver error as the core's `Transient` (chained to it)."""
    try:
        yield
    except psycopg.Error as exc:
        fault = transient(exc)
        if fault is None:
            raise
        raise fault from exc

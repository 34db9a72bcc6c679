"""Typed failures of the event contract and of policy loading.

The worker routes on the type (dead-letter, metrics label) and logs `.field` and `.reason`; the
`error_class` string is what ends up in DLQ headers and metric labels, so it must stay stable
even if the Python class is renamed.
"""

from __future__ import annotations


class InvalidEvent(ValueError):
    """An event the worker cannot decide on. `field` is a dotted path into the event
    (`amount_fen`, `evidence.1.uri`), or "" when the whole message is at fault."""

    error_class = "invalid_event"

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        where = field or "<message>"
        super().__init__(f"{self.error_class}: {where}: {reason}")

    def __reduce__(self) -> tuple[object, ...]:
        # Keep the exception picklable (multiprocessing, logging handlers) despite the custom init.
        return (type(self), (self.field, self.reason))


class MalformedJson(InvalidEvent):
    """Not UTF-8, not JSON, or JSON whose top-level value is not an object."""

    error_class = "malformed_json"


class SchemaViolation(InvalidEvent):
    """Well-formed JSON that breaks the event's JSON Schema (or holds an impossible date)."""

    error_class = "schema_violation"


class UnknownEventType(InvalidEvent):
    """An event type, or a schema_version of a known type, that this build has no schema for.
    Separate from SchemaViolation because it is fixed by deploying, not by the producer."""

    error_class = "unknown_event_type"


class UnknownPlatform(InvalidEvent):
    """A platform with no loaded policy. Fixed by an operator adding a policy file, after which a
    replay of the dead-lettered event succeeds: the schema deliberately does not enumerate
    platforms."""

    error_class = "unknown_platform"


class OversizedRecord(InvalidEvent):
    """A record larger than ORDER_RECOVERY_MAX_RECORD_BYTES (key, value and headers), turned away
    before it is decoded: no valid event comes near the limit, and a record near the broker's own
    limit could not be dead-lettered whole (its dead letter adds headers)."""

    error_class = "oversized_record"


class EventFromFuture(InvalidEvent):
    """An event whose occurred_at is more than ORDER_RECOVERY_MAX_EVENT_SKEW_S ahead of its
    record's broker timestamp. Every rule measures to occurred_at, and the per-day refund cap is
    keyed on its day, so a producer's clock running ahead would move money decisions."""

    error_class = "event_from_future"


class PolicyError(ValueError):
    """A policy file is unusable; the message names the file and the key."""

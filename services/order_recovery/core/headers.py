"""The names of the record headers the project writes, in one place: the worker writes the `dlq.*`
headers on a dead letter, `recoveryctl dlq` reads them, `recoveryctl dlq replay` writes the
`replay.*` headers. Operators, dashboards and other teams' consumers read these names: they are a
contract, pinned by a unit test, and are never renamed."""

from __future__ import annotations

DLQ_PREFIX = "dlq."
#: The dead letter's identity, `<original topic>/<partition>/<offset>` of the record that failed:
#: a dead letter written twice (a worker that died between producing it and committing the
#: offset) carries the same id both times, and `dlq list/show/replay` count and send it once.
DLQ_ID = "dlq.id"
DLQ_ERROR_CLASS = "dlq.error.class"
DLQ_ERROR_MESSAGE = "dlq.error.message"
DLQ_ORIGINAL_TOPIC = "dlq.original.topic"
DLQ_ORIGINAL_PARTITION = "dlq.original.partition"
DLQ_ORIGINAL_OFFSET = "dlq.original.offset"
DLQ_ORIGINAL_TIMESTAMP = "dlq.original.timestamp"
#: 1, plus one per replay that failed again (the one `dlq.*` header a replay keeps).
DLQ_ATTEMPT = "dlq.attempt"
DLQ_FAILED_AT = "dlq.failed.at"
DLQ_WORKER_ID = "dlq.worker.id"
#: "true" when the dead letter's value is only the first bytes of the record's value (the record
#: was too large to be sent whole); the whole record is at dlq.original.topic/partition/offset.
DLQ_VALUE_TRUNCATED = "dlq.value.truncated"
#: The size in bytes of the record's whole value (set with DLQ_VALUE_TRUNCATED).
DLQ_VALUE_BYTES = "dlq.value.bytes"

REPLAY_PREFIX = "replay."
REPLAY_ID = "replay.id"
REPLAY_AT = "replay.at"
REPLAY_SOURCE_TOPIC = "replay.source.topic"
REPLAY_SOURCE_PARTITION = "replay.source.partition"
REPLAY_SOURCE_OFFSET = "replay.source.offset"


def dead_letter_id(topic: str, partition: int, offset: int) -> str:
    """The value of DLQ_ID for the record at this place."""
    return f"{topic}/{partition}/{offset}"


#: On an action command (the command topic): its action key, the idempotency key an executor
#: applies it under, readable without decoding the value.
ACTION_KEY = "action.key"

"""Dead letters the broker refused even truncated, which the worker kept in Postgres
(`unsendable_dead_letters`, see order_recovery.core.dead_letters): counted by `dlq list`, shown by
`dlq unsendable`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg

from order_recovery.ops.dlq import record_json


@dataclass(frozen=True, slots=True)
class Unsendable:
    source_topic: str
    source_partition: int
    source_offset: int
    dlq_topic: str
    error_class: str
    error_message: str
    refusal: str
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    value_prefix: bytes | None
    value_bytes: int
    failed_at: datetime
    worker_id: str

    def decoded(self) -> Any | None:
        """The kept value as JSON when it is JSON whole (it is a prefix when the value was
        longer than what was kept); None otherwise."""
        if self.value_prefix is None or len(self.value_prefix) < self.value_bytes:
            return None
        try:
            return orjson.loads(self.value_prefix)
        except orjson.JSONDecodeError:
            return None

    def to_json(self) -> dict[str, Any]:
        return {
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "dlq_topic": self.dlq_topic,
            "error_class": self.error_class,
            "error_message": self.error_message,
            "refusal": self.refusal,
            "failed_at": self.failed_at,
            "worker_id": self.worker_id,
            "value_bytes": self.value_bytes,
            **record_json(self.key, self.headers, self.decoded(), self.value_prefix),
        }


def counts(conn: psycopg.Connection[Any], dlq_topics: Sequence[str]) -> dict[str, int]:
    """Rows per dead-letter topic."""
    rows = conn.execute(
        """SELECT dlq_topic, count(*) FROM unsendable_dead_letters
           WHERE dlq_topic = ANY(%s) GROUP BY dlq_topic""",
        (list(dlq_topics),),
    ).fetchall()
    return {topic: int(n) for topic, n in rows}


def read(
    conn: psycopg.Connection[Any], dlq_topics: Sequence[str], limit: int
) -> tuple[int, list[Unsendable]]:
    """How many rows there are for these topics, and the newest `limit` of them."""
    (matched,) = conn.execute(
        "SELECT count(*) FROM unsendable_dead_letters WHERE dlq_topic = ANY(%s)",
        (list(dlq_topics),),
    ).fetchone() or (0,)
    rows = conn.execute(
        """SELECT source_topic, source_partition, source_offset, dlq_topic, error_class,
                  error_message, refusal, record_key, header_names, header_values, value_prefix,
                  value_bytes, failed_at, worker_id
           FROM unsendable_dead_letters WHERE dlq_topic = ANY(%s)
           ORDER BY failed_at DESC, source_topic, source_partition, source_offset LIMIT %s""",
        (list(dlq_topics), limit),
    ).fetchall()
    return int(matched), [_unsendable(row) for row in rows]


def _unsendable(row: tuple[Any, ...]) -> Unsendable:
    """A row in the column order of `read`'s query: the leading ones as they are."""
    *place_and_why, key, names, values, value, size, failed_at, worker = row
    return Unsendable(
        *place_and_why,
        None if key is None else bytes(key),
        tuple(zip(names, (bytes(v) for v in values), strict=True)),
        None if value is None else bytes(value),
        size,
        failed_at,
        worker,
    )

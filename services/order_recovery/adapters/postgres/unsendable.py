"""The last-resort store of the dead-letter path: `unsendable_dead_letters` (migration 0009).

Written only when the broker refused a dead letter even truncated, which should never happen with
sane topic settings, so the connection is opened on first use and a worker that never needs it
never holds one."""

from __future__ import annotations

from typing import Any

import psycopg

from order_recovery.adapters.postgres.faults import in_core_terms
from order_recovery.core.records import DeadLetter, OutgoingMessage

INSERT = """INSERT INTO unsendable_dead_letters (
        source_topic, source_partition, source_offset, dlq_topic, error_class, error_message,
        refusal, record_key, header_names, header_values, value_prefix, value_bytes, worker_id)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT DO NOTHING"""  # the key is the only unique one; naming it would need SELECT


def _text(value: str) -> str:
    """Text Postgres accepts: no NUL characters, no lone surrogates (both are possible in what a
    producer sent as a header name, and in messages quoting it)."""
    return value.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")


class UnsendableStore:
    """The core's UnsendableLetters in Postgres."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None

    def record(
        self, letter: DeadLetter, sent: OutgoingMessage, refusal: str, worker_id: str
    ) -> bool:
        """Keep the dead letter as last tried (`sent`: its value already bounded); True when this
        call added the row, False when a redelivery of the record had already."""
        with in_core_terms():
            return self._insert(letter, sent, refusal, worker_id)

    def _insert(
        self, letter: DeadLetter, sent: OutgoingMessage, refusal: str, worker_id: str
    ) -> bool:
        r = letter.record
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = psycopg.connect(self._dsn, connect_timeout=5, autocommit=True)
            cursor = self._conn.execute(
                INSERT,
                (
                    _text(r.topic),
                    r.partition,
                    r.offset,
                    _text(sent.topic),
                    _text(letter.error_class),
                    _text(letter.message),
                    _text(refusal),
                    r.key,
                    [_text(k) for k, _ in sent.headers],
                    [v for _, v in sent.headers],
                    sent.value,
                    len(r.value or b""),
                    _text(worker_id),
                ),
            )
            return cursor.rowcount == 1
        except psycopg.Error:
            self.close()
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

"""One read connection per command, as the reports role (DATABASE_READER_URL), which holds
nothing but SELECT, and in a read-only transaction besides: a mistake in an operator's tool can
never change the service's records."""

from __future__ import annotations

from typing import Any

import psycopg


def connect(database_url: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(database_url, connect_timeout=5)
    conn.read_only = True
    return conn

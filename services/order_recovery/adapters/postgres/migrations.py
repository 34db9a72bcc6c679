"""Versioned SQL migrations with a schema-version table.

Files are `NNNN_name.sql` in `order_recovery/migrations`; each is applied once, in its own
transaction, under an advisory lock so two workers starting together do not race. A file whose
content changed after it was applied is an error: migrations are append-only history. They run as
the database's owner and no one else (see migrations/README.md), so everything they create has
that one owner and the service's roles only hold what the migrations grant them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg

_LOCK_KEY = 0x0DE5_1A7E  # any constant shared by every worker of this project
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The database's migration history disagrees with the files shipped."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def shipped_migrations(directory: Path | None = None) -> list[Migration]:
    root = directory or Path(str(resources.files("order_recovery") / "migrations"))
    found = []
    for path in sorted(root.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        found.append(Migration(match[1], match[2], path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {root}")
    return found


def migrate(dsn: str, directory: Path | None = None) -> list[str]:
    """Apply what is missing; return the versions applied now (empty when up to date)."""
    applied_now: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        _check_owner(conn)
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    text PRIMARY KEY,
                       name       text NOT NULL,
                       checksum   text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
            for migration in shipped_migrations(directory):
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version}_{migration.name} was edited after it "
                            "was applied; add a new migration instead"
                        )
                    continue
                _apply(conn, migration)
                applied_now.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def _check_owner(conn: psycopg.Connection[Any]) -> None:
    """Refuse to migrate as anyone but the database's owner: a superuser's migration would leave
    objects that the owner's later migrations cannot alter or grant on."""
    row = conn.execute(
        "SELECT pg_get_userbyid(datdba), current_user FROM pg_database"
        " WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    owner, user = row
    if owner != user:
        raise MigrationError(
            f"migrations run as the database's owner, {owner} (DATABASE_OWNER_URL); "
            f"connected as {user}"
        )


def _apply(conn: psycopg.Connection[Any], migration: Migration) -> None:
    try:
        with conn.transaction():
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
    except psycopg.DatabaseError as exc:
        hint = exc.diag.message_hint
        raise MigrationError(
            f"migration {migration.version}_{migration.name} failed: "
            f"{exc.diag.message_primary or exc}{f' ({hint})' if hint else ''}"
        ) from exc

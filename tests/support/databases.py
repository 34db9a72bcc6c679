"""Scratch databases for the tests, the bench and the dashboard renderer. The cluster's superuser
(DATABASE_ADMIN_URL) makes and drops them, nothing else: each is owned by recovery_owner, migrated
by it, and used through every role's own DSN, exactly like the service's database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from order_recovery.adapters.postgres.migrations import migrate
from order_recovery.config import Settings

OWNER = "recovery_owner"
#: The local stack's superuser (deploy/local/stack.sh; the Makefile exports the same).
LOCAL_ADMIN_URL = "postgresql://postgres:admin-local-only@127.0.0.1:55432/postgres"
#: The environment deploy/postgres/roles.sql reads each login role's password from, and the DSN
#: that carries that password.
PASSWORD_VARIABLES = {
    "RECOVERY_OWNER_PASSWORD": "database_owner_url",
    "RECOVERY_WORKER_PASSWORD": "database_url",
    "RECOVERY_REPORTS_PASSWORD": "database_reader_url",
    "RECOVERY_OPERATOR_PASSWORD": "database_operator_url",
}


def admin_url(env: Mapping[str, str] = os.environ) -> str:
    return env.get("DATABASE_ADMIN_URL") or LOCAL_ADMIN_URL


def role_passwords(settings: Settings) -> dict[str, str]:
    """roles.sql's environment for the passwords in these settings' DSNs."""
    return {
        variable: str(conninfo_to_dict(getattr(settings, field)).get("password", ""))
        for variable, field in PASSWORD_VARIABLES.items()
    }


def create_database(admin: str, name: str, template: str | None = None) -> None:
    statement = sql.SQL("CREATE DATABASE {} OWNER {}").format(
        sql.Identifier(name), sql.Identifier(OWNER)
    )
    if template is not None:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(statement)
        if template is not None:
            _copy_database_privileges(conn, template, name)


def _copy_database_privileges(conn: psycopg.Connection[object], template: str, name: str) -> None:
    """CREATE DATABASE copies a template's contents but not the privileges on the database itself
    (pg_database.datacl, set by migration 0006): grant the copy the same, so that it refuses
    the same connections as a database migrated from scratch."""
    entries = conn.execute(
        """SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
                  a.privilege_type
           FROM pg_database d, aclexplode(d.datacl) AS a
           WHERE d.datname = %s""",
        (template,),
    ).fetchall()
    if not entries:  # the default privileges, as the copy has
        return
    database = sql.Identifier(name)
    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
    for grantee, privilege in entries:
        conn.execute(
            sql.SQL("GRANT {} ON DATABASE {} TO {}").format(
                sql.SQL(privilege),  # a keyword from the catalog: CONNECT, TEMPORARY, CREATE
                database,
                sql.SQL("PUBLIC") if grantee == "PUBLIC" else sql.SQL(grantee),
            )
        )


def drop_database(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextmanager
def scratch_database(
    admin: str,
    settings: Settings,
    prefix: str,
    template: str | None = None,
    migrated: bool = True,
) -> Iterator[Settings]:
    """A fresh database, dropped however the caller ends (a failed or interrupted bench run once
    left 200,000-decision databases behind, and autovacuum kept visiting them): a copy of
    `template`, else migrated by its owner (unless `migrated` is False). Yields `settings` with
    every role's DSN pointing at it."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    create_database(admin, name, template)
    try:
        scratch = settings.with_database(name)
        if template is None and migrated:
            migrate(scratch.database_owner_url)
        yield scratch
    finally:
        drop_database(admin, name)

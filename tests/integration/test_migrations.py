from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from order_recovery.adapters.postgres.migrations import MigrationError, migrate, shipped_migrations
from order_recovery.config import Settings


def _schema_fingerprint(dsn: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            """SELECT table_name, column_name, data_type FROM information_schema.columns
               WHERE table_schema = 'public' ORDER BY 1, 2"""
        ).fetchall()


def test_migrations_apply_once_then_are_a_no_op(empty_database_url: str) -> None:
    first = migrate(empty_database_url)
    assert first == [m.version for m in shipped_migrations()]
    before = _schema_fingerprint(empty_database_url)
    assert migrate(empty_database_url) == []
    assert _schema_fingerprint(empty_database_url) == before
    with psycopg.connect(empty_database_url) as conn:
        count = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert count == (len(first),)


def test_an_edited_applied_migration_is_refused(empty_database_url: str, tmp_path: Path) -> None:
    (tmp_path / "0001_demo.sql").write_text("CREATE TABLE demo (id int);")
    assert migrate(empty_database_url, tmp_path) == ["0001"]
    (tmp_path / "0001_demo.sql").write_text("CREATE TABLE demo (id bigint);")
    with pytest.raises(MigrationError, match="edited after it was applied"):
        migrate(empty_database_url, tmp_path)


@pytest.mark.parametrize("who", ["worker", "superuser"])
def test_only_the_databases_owner_migrates(
    empty_database: Settings, postgres_admin_url: str, who: str
) -> None:
    """Objects a superuser created would be out of reach of the owner's later migrations; the
    worker must not even try."""
    dsn = (
        empty_database.database_url
        if who == "worker"
        else make_conninfo(
            postgres_admin_url, dbname=conninfo_to_dict(empty_database.database_url)["dbname"]
        )
    )
    with pytest.raises(MigrationError, match="run as the database's owner, recovery_owner"):
        migrate(dsn)
    assert migrate(empty_database.database_owner_url)


def test_a_failing_migration_is_named_and_leaves_nothing(
    empty_database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "0001_fine.sql").write_text("CREATE TABLE fine (id int);")
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE half (id int); SELECT nope;")
    with pytest.raises(MigrationError, match=r"0002_broken failed: column \"nope\" does not exist"):
        migrate(empty_database_url, tmp_path)
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == [("0001",)]
        assert conn.execute("SELECT to_regclass('half')").fetchone() == (None,)

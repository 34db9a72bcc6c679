from pathlib import Path

import psycopg
import pytest

from order_recovery.adapters.postgres.migrations import MigrationError, migrate, shipped_migrations


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

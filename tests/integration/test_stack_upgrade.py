"""A developer's Postgres cluster made before the database roles (trust auth, one superuser
`recovery` that migrated and owned everything) is upgraded in place by `stack.sh up`, whether it
was stopped or still running: its data stays, every login needs a password, its objects pass to
recovery_owner, and the owner's `db migrate` then brings the grants."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from order_recovery.adapters.postgres.migrations import migrate, shipped_migrations
from order_recovery.config import Settings
from tests.support.worker_process import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deploy/local/stack.sh"
EVENT_ID = "0b6f2d1e-6c1a-4f7e-8d0e-3b9a5c2e7f10"


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else Path(found[-1]).parent


def _os_user() -> str | None:
    """Whom the server runs as: stack.sh's choice when root (initdb refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get("LOCAL_PG_OS_USER", "postgres"), "order-recovery-pg"):
        try:
            return pwd.getpwnam(name).pw_name
        except KeyError:
            continue
    raise AssertionError("no user to run Postgres as; `make test` runs stack.sh, which makes one")


def _as_pg(user: str | None, *command: str | Path) -> None:
    argv = [str(c) for c in command]
    subprocess.run(["runuser", "-u", user, "--", *argv] if user else argv, check=True)


class LegacyCluster:
    """What the old stack.sh made: `initdb --auth=trust -U recovery`, the service's database
    created and migrated (as it was then: up to 0005) by that one superuser."""

    def __init__(self, local: Path, port: int) -> None:
        self.local, self.port = local, port
        self.data, self.bin, self.user = local / "pg", _pg_bin(), _os_user()
        self.env = {
            **os.environ,
            "ORDER_RECOVERY_LOCAL_DIR": str(local),
            "LOCAL_PG_PORT": str(port),
        }

    def create(self) -> None:
        for d in (self.data, self.local / "pgsock", self.local / "logs"):
            d.mkdir(parents=True)
            if self.user:
                shutil.chown(d, self.user)
        if self.user:  # the server's user must reach its directory (pytest's are mode 700)
            for d in self.local.parents:
                d.chmod(d.stat().st_mode | 0o001)
            (self.local).chmod(0o755)
        _as_pg(self.user, self.bin / "initdb", "-D", self.data, "-U", "recovery", "--auth=trust",
               "-E", "UTF8", "--no-locale")  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.local / 'pgsock'}'\n"
            )
        self.start()
        legacy = f"postgresql://recovery@127.0.0.1:{self.port}"
        with psycopg.connect(f"{legacy}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE order_recovery")
        old = self.local / "migrations-then"
        old.mkdir()
        for m in shipped_migrations():
            if m.version <= "0005":
                (old / f"{m.version}_{m.name}.sql").write_text(m.sql)
        migrate(f"{legacy}/order_recovery", old)
        with psycopg.connect(f"{legacy}/order_recovery") as conn:
            conn.execute(
                """INSERT INTO audit_log (order_id, exception_type, event_id, to_status)
                   VALUES ('o-old', 'shipping-delay', %s, 'recovered')""",
                (EVENT_ID,),
            )

    def start(self) -> None:
        log = self.local / "logs/legacy.log"
        _as_pg(self.user, self.bin / "pg_ctl", "-D", self.data, "-l", log, "-w", "start")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            _as_pg(self.user, self.bin / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def stack(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(STACK), *args], env=self.env, capture_output=True, text=True, timeout=120
        )


@pytest.fixture
def legacy(tmp_path: Path) -> Iterator[LegacyCluster]:
    cluster = LegacyCluster(tmp_path / "local", free_port())
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.parametrize("state", ["stopped", "running"])
def test_stack_up_upgrades_a_cluster_from_before_the_roles(
    legacy: LegacyCluster, state: str
) -> None:
    if state == "stopped":
        legacy.stop()
    up = legacy.stack("up", "postgres")
    assert up.returncode == 0, up.stderr
    assert "upgrading it to password (SCRAM) auth" in up.stderr

    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(f"postgresql://recovery@127.0.0.1:{legacy.port}/order_recovery").close()
    roles = Settings().with_database("order_recovery", port=str(legacy.port))
    after_the_legacy = [m.version for m in shipped_migrations() if m.version > "0005"]
    assert migrate(roles.database_owner_url) == after_the_legacy
    with psycopg.connect(roles.database_reader_url) as conn:
        assert conn.execute("SELECT order_id FROM audit_log").fetchall() == [("o-old",)]
    with (
        psycopg.connect(roles.database_url) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("TRUNCATE audit_log")

    again = legacy.stack("up", "postgres")  # already upgraded: nothing more to do
    assert again.returncode == 0 and "upgrading" not in again.stderr, again.stderr
    down = legacy.stack("down", "postgres")
    assert down.returncode == 0, down.stderr

"""recoveryctl connects as the least role each command needs, and says so in one line when a
DSN names a role without the privilege."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from order_recovery.config import Settings
from tests.integration.recoveryctl.conftest import Run

pytestmark = pytest.mark.integration

Ctl = Callable[..., Run]


def test_reports_work_as_the_reports_role_alone(
    ctl: Ctl, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's and the owner's DSNs point nowhere: a report needs neither."""
    for variable in ("DATABASE_URL", "DATABASE_OWNER_URL"):
        monkeypatch.setenv(variable, "postgresql://nobody:wrong@127.0.0.1:1/none")
    run = ctl("stats", "--json")
    assert run.code == 0, run.err
    assert run.json["total"]["decided"] == 0


def test_a_report_through_the_workers_dsn_is_refused_in_one_line(
    ctl: Ctl, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker may not read the audit log, which `case show` prints."""
    monkeypatch.setenv("DATABASE_READER_URL", settings.database_url)
    run = ctl("case", "show", "ord-none")
    assert run.code == 2
    assert run.err.startswith("recoveryctl: Postgres refused: permission denied for table")
    assert run.err.count("\n") == 1 and "Traceback" not in run.err


def test_migrating_as_anyone_but_the_owner_is_refused_in_one_line(
    ctl: Ctl, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_OWNER_URL", settings.database_url)
    run = ctl("db", "migrate")
    assert run.code == 2
    assert run.err == (
        "recoveryctl: migrations run as the database's owner, recovery_owner "
        "(DATABASE_OWNER_URL); connected as recovery_worker\n"
    )
    monkeypatch.setenv("DATABASE_OWNER_URL", settings.database_owner_url)
    assert ctl("db", "migrate").out == "database schema up to date\n"

"""The Docker Compose stack runs Postgres with the settings of the local stack's config file, and
both stacks make the same database roles with the passwords the configuration logs in with."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from psycopg.conninfo import conninfo_to_dict

from order_recovery.config import DATABASE_URLS, Settings
from tests.support.databases import LOCAL_ADMIN_URL, PASSWORD_VARIABLES, role_passwords

ROOT = Path(__file__).resolve().parents[2]


def _conf(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, value = (part.strip() for part in line.split("=", 1))
            pairs[key] = value
    return pairs


def test_compose_postgres_has_the_local_stack_settings():
    local = _conf(ROOT / "deploy/local/postgres/order-recovery.conf")
    command = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())["services"][
        "postgres"
    ]["command"]
    flags = dict(command[i + 1].split("=", 1) for i, a in enumerate(command) if a == "-c")
    assert local and flags == local


# ------------------------------------------------------------------ database roles and passwords
ROLES_SQL = ROOT / "deploy/postgres/roles.sql"
_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")


def _expand(text: str) -> str:
    """Compose's `${VAR:-default}` as it reads with nothing set."""
    return _DEFAULTED.sub(lambda m: m[2], text)


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())["services"]


def _password_variable(role: str) -> str:
    """roles.sql's variable for a login role's password: recovery_worker ->
    RECOVERY_WORKER_PASSWORD."""
    return f"{role.upper()}_PASSWORD"


def test_roles_sql_reads_a_password_for_every_role_the_configuration_logs_in_as():
    read = set(re.findall(r"^\\getenv \w+ (\w+)$", ROLES_SQL.read_text(), re.M))
    users = {conninfo_to_dict(dsn)["user"] for dsn in Settings().database_env().values()}
    assert read == {_password_variable(u) for u in users} == set(PASSWORD_VARIABLES)


def test_the_local_stack_gives_each_role_the_password_of_its_default_dsn():
    stack = (ROOT / "deploy/local/stack.sh").read_text()
    defaults = dict(re.findall(r"^export (RECOVERY_\w+_PASSWORD)=\$\{\1:-(.*)\}$", stack, re.M))
    assert defaults == role_passwords(Settings())


def test_the_makefile_dsns_are_the_configurations_defaults():
    makefile = (ROOT / "Makefile").read_text().replace("$(PG_AT)", "127.0.0.1:55432")
    exported = dict(re.findall(r"^export (DATABASE_\w*URL) \?= (\S+)$", makefile, re.M))
    assert {k: exported[k] for k in DATABASE_URLS} == Settings().database_env()
    stack = (ROOT / "deploy/local/stack.sh").read_text()
    (superuser,) = re.findall(r"LOCAL_PG_SUPERUSER_PASSWORD:-([^}]*)\}", stack)
    assert exported["DATABASE_ADMIN_URL"] == LOCAL_ADMIN_URL
    assert conninfo_to_dict(LOCAL_ADMIN_URL)["password"] == superuser


def test_compose_creates_the_roles_with_scram_and_each_service_logs_in_as_its_own():
    services = _compose()
    postgres = services["postgres"]
    env = {k: _expand(str(v)) for k, v in postgres["environment"].items()}
    assert (
        "./postgres/roles.sql:/docker-entrypoint-initdb.d/10-roles.sql:ro" in (postgres["volumes"])
    )
    assert env["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
    assert "trust" not in env["POSTGRES_INITDB_ARGS"]
    assert set(PASSWORD_VARIABLES) <= set(env)
    logins = {}
    for name, service in services.items():
        for variable, value in (service.get("environment") or {}).items():
            if variable in DATABASE_URLS:
                dsn = conninfo_to_dict(_expand(value))
                assert dsn["password"] == env[_password_variable(dsn["user"])], (name, variable)
                logins.setdefault(name, {})[variable] = dsn["user"]
    assert logins == {
        "setup": {"DATABASE_OWNER_URL": "recovery_owner"},
        "lifecycle": {"DATABASE_URL": "recovery_worker"},
        "worker": {"DATABASE_URL": "recovery_worker"},
        "recoveryctl": {
            "DATABASE_READER_URL": "recovery_reports",
            "DATABASE_OPERATOR_URL": "recovery_operator",
        },
    }


def test_the_local_stack_accepts_only_scram():
    rules = [
        line.split()
        for line in (ROOT / "deploy/local/postgres/pg_hba.conf").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert rules and {rule[-1] for rule in rules} == {"scram-sha-256"}

"""The Docker Compose stack runs Postgres with the settings of the local stack's config file, and
both stacks make the same database roles with the passwords the configuration logs in with. The
image (Dockerfile) installs the locked dependencies only, from a pinned base, as a user that is not
root, and checks its own health where the worker serves it. No Docker engine here: these tests read
the files."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from order_recovery.config import DATABASE_URLS, Settings
from tests.support.build_files import Stage, dockerfile_stages, makefile_variables, pip_installs
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


# ------------------------------------------------------------------ the image
STAGES = dockerfile_stages((ROOT / "Dockerfile").read_text())
RUNTIME = STAGES[-1]
# An exact release (python:3.11.14-slim-bookworm) or a digest; never a moving tag such as 3.11-slim.
_PINNED = re.compile(
    r"^[\w./-]+:(\d+\.\d+\.\d+)-[\w.-]+$|^[\w./-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}$"
)


def _copied(stage: Stage) -> dict[str, str]:
    """What a stage copies from the build context: destination -> source (COPY src... dest)."""
    copied = {}
    for args in stage.all("COPY"):
        if args.startswith("--from"):
            continue
        *sources, destination = shlex.split(args)
        for source in sources:
            copied[destination.rstrip("/") + "/" + Path(source).name] = source
            copied[destination] = source
    return copied


def _env(stage: Stage) -> dict[str, str]:
    env = {}
    for args in stage.all("ENV"):
        env.update(word.split("=", 1) for word in shlex.split(args))
    return env


def test_the_base_image_is_pinned_and_its_python_is_the_one_the_locks_are_for():
    locked = makefile_variables((ROOT / "Makefile").read_text())["LOCK_PYTHON"]
    for stage in STAGES:
        match = _PINNED.match(stage.image)
        assert match, f"base image not pinned by exact tag or digest: {stage.image}"
        assert stage.image.startswith(f"python:{locked}."), (stage.image, locked)
    assert len({stage.image for stage in STAGES}) == 1, "build and runtime on one base"


@pytest.mark.parametrize("stage", range(len(STAGES)), ids=lambda i: STAGES[i].name or "runtime")
def test_every_pip_install_takes_hashed_locks_or_the_projects_own_wheel(stage: int):
    runs = STAGES[stage].all("RUN")
    installs = [args for run in runs for args in pip_installs(run)]
    assert installs
    copied = _copied(STAGES[stage])
    for args in installs:
        assert "-e" not in args and "--editable" not in args, args
        if "-r" in args:
            lock = args[args.index("-r") + 1]
            assert copied.get(lock, "").startswith("requirements/"), (lock, copied)
            assert "--require-hashes" in args and "--only-binary" in args, args
        else:
            # Only the wheel the build stage made, and nothing it would pull in.
            assert "--no-deps" in args and args[-1].endswith(".whl"), args


def test_the_runtime_installs_the_runtime_lock_and_the_build_stage_the_build_lock():
    def locks(stage: Stage) -> set[str]:
        copied = _copied(stage)
        return {
            copied[args[args.index("-r") + 1]]
            for run in stage.all("RUN")
            for args in pip_installs(run)
            if "-r" in args
        }

    assert locks(RUNTIME) == {"requirements/runtime.txt"}
    assert {lock for stage in STAGES[:-1] for lock in locks(stage)} == {"requirements/build.txt"}
    assert any("pip check" in run for run in RUNTIME.all("RUN"))


def test_the_image_runs_as_a_user_that_is_not_root_and_the_one_kubernetes_runs_as():
    users = RUNTIME.all("USER")
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    # A number: Kubernetes' runAsNonRoot cannot verify a user name. The same as the pods'.
    user, group = users[-1].split(":")
    assert re.search(rf"useradd .*--uid {user} .*recovery", " ".join(RUNTIME.all("RUN")))
    pods = [
        document["spec"]["template"]["spec"]["securityContext"]
        for path in sorted((ROOT / "deploy/k8s/base").glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document and "template" in document.get("spec", {})
    ]
    assert pods
    for context in pods:
        assert (context["runAsUser"], context["runAsGroup"]) == (int(user), int(group)), context
    # Nothing after the switch needs root, and nothing runs as root after it.
    keywords = [key for key, _ in RUNTIME.instructions]
    assert "RUN" not in keywords[keywords.index("USER") :]


def test_the_healthcheck_asks_the_workers_healthz_on_its_port():
    (check,) = RUNTIME.all("HEALTHCHECK")
    command = json.loads(check.split("CMD", 1)[1])
    assert command[:2] == ["python", "-c"], "the slim image has no curl"
    port = Settings().metrics_port
    assert "/healthz" in command[2] and f"'ORDER_RECOVERY_METRICS_PORT', '{port}'" in command[2]
    assert str(port) in RUNTIME.all("EXPOSE")[0].split()
    assert _env(RUNTIME)["ORDER_RECOVERY_METRICS_HOST"] == "0.0.0.0"
    (entrypoint,) = RUNTIME.all("ENTRYPOINT")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(entrypoint) == ["recovery-worker"] and "recovery-worker" in scripts


def test_the_image_says_where_the_schemas_are():
    """They sit at the repository's root, outside the installed package, so the installed code
    cannot find them by its own path."""
    directory = _env(RUNTIME)["ORDER_RECOVERY_SCHEMAS_DIR"]
    workdir = RUNTIME.all("WORKDIR")[-1]
    copied = {str(Path(workdir, d)): s for d, s in _copied(RUNTIME).items()}
    assert copied.get(directory) == "schemas"


def test_compose_services_on_the_image_check_their_own_port_or_none():
    """The image's HEALTHCHECK is the worker's; a service that runs another command from it either
    checks its own /healthz or turns the check off."""
    settings = Settings()
    for name, service in _compose().items():
        if "build" not in service:
            continue
        entrypoint = service.get("entrypoint")
        check = service.get("healthcheck")
        if entrypoint is None or entrypoint == ["recovery-worker"]:
            assert check is None, name
        elif entrypoint == ["recovery-lifecycle"]:
            test = " ".join(check["test"])
            assert f"127.0.0.1:{settings.lifecycle_metrics_port}/healthz" in test, name
        else:
            assert check == {"disable": True}, name

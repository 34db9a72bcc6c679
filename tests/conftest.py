"""Fixtures on top of the real services. Each test gets its own topics (a unique prefix) and its
own database (a copy of a migrated template), so tests never see each other's data. The database
is used through the service's roles (deploy/postgres/roles.sql): `database_url` and `settings`
connect as the worker; the superuser only makes and drops databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from psycopg.conninfo import conninfo_to_dict

from order_recovery.adapters.postgres.migrations import migrate
from order_recovery.config import DATABASE_URLS, Settings
from tests.support.backends import ServicesUnavailable, choose_backend, docker_available
from tests.support.databases import (
    create_database,
    drop_database,
    role_passwords,
    scratch_database,
)
from tests.support.kafka_io import own_topics
from tests.support.pipelines import PipelineBuilder

ROLES_SQL = Path(__file__).resolve().parents[1] / "deploy/postgres/roles.sql"

# `make fuzz` runs the fuzz tests (marker `fuzz`) under this profile: many more examples than the
# quick runs of `make test` (see tests/support/fuzz.py).
hypothesis_settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "2000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def _choose(variable: str) -> str:
    try:
        return choose_backend(variable, os.environ, docker_available)
    except ServicesUnavailable as exc:
        reason = str(exc)
    pytest.fail(reason, pytrace=False)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if _choose("KAFKA_BOOTSTRAP_SERVERS") == "env":
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer().with_kraft() as kafka:
        yield kafka.get_bootstrap_server()


@pytest.fixture(scope="session")
def role_settings() -> Settings:
    """Defaults, but every role's DSN from the environment (`make test` exports them)."""
    return Settings.from_env({k: os.environ[k] for k in DATABASE_URLS if k in os.environ})


@pytest.fixture(scope="session")
def postgres_admin_url(role_settings: Settings) -> Iterator[str]:
    """The cluster's superuser: it makes and drops the tests' databases, and nothing else."""
    if _choose("DATABASE_ADMIN_URL") == "env":
        yield os.environ["DATABASE_ADMIN_URL"]
        return
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer("postgres:16", driver=None).with_volume_mapping(
        str(ROLES_SQL), "/docker-entrypoint-initdb.d/10-roles.sql"
    )
    for variable, password in role_passwords(role_settings).items():
        container = container.with_env(variable, password)
    with container as pg:
        yield pg.get_connection_url()


@pytest.fixture(scope="session")
def server_settings(role_settings: Settings, postgres_admin_url: str) -> Settings:
    """Every role's DSN on the server the admin URL names (the database is each test's own)."""
    admin = conninfo_to_dict(postgres_admin_url)
    return role_settings.with_database(
        str(admin.get("dbname", "postgres")), host=str(admin["host"]), port=str(admin["port"])
    )


@pytest.fixture(scope="session")
def migrated_template(postgres_admin_url: str, server_settings: Settings) -> Iterator[str]:
    name = f"ortest_tmpl_{uuid.uuid4().hex[:10]}"
    create_database(postgres_admin_url, name)
    migrate(server_settings.with_database(name).database_owner_url)
    yield name
    drop_database(postgres_admin_url, name)


@pytest.fixture
def empty_database(postgres_admin_url: str, server_settings: Settings) -> Iterator[Settings]:
    """A fresh database with no migrations applied, as every role's DSN."""
    with scratch_database(postgres_admin_url, server_settings, "ortest", migrated=False) as db:
        yield db


@pytest.fixture
def empty_database_url(empty_database: Settings) -> str:
    """The fresh database as its owner, the role that migrates."""
    return empty_database.database_owner_url


@pytest.fixture
def test_database(
    postgres_admin_url: str, server_settings: Settings, migrated_template: str
) -> Iterator[Settings]:
    """A fresh, migrated database for this test alone, as every role's DSN."""
    with scratch_database(
        postgres_admin_url, server_settings, "ortest", template=migrated_template
    ) as db:
        yield db


@pytest.fixture
def database_url(test_database: Settings) -> str:
    """The test's database as the worker: what the pipeline runs as, so every test that drives
    it proves the worker's privileges suffice."""
    return test_database.database_url


@pytest.fixture
def owner_database_url(test_database: Settings) -> str:
    """As the owner: for a test's set-up that no service role may do (rewriting history)."""
    return test_database.database_owner_url


@pytest.fixture
def reader_database_url(test_database: Settings) -> str:
    return test_database.database_reader_url


@pytest.fixture
def operator_database_url(test_database: Settings) -> str:
    return test_database.database_operator_url


@pytest.fixture
def build(settings: Settings) -> Iterator[PipelineBuilder]:
    """Builds in-process pipelines on this test's settings (see tests/support/pipelines.py)."""
    builder = PipelineBuilder(settings)
    yield builder
    builder.close()


@pytest.fixture
def settings(kafka_bootstrap: str, test_database: Settings) -> Iterator[Settings]:
    """Settings for this test: its own topics (created here, deleted after) and database."""
    with own_topics(kafka_bootstrap, test_database) as test_settings:
        yield test_settings

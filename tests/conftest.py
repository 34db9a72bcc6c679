"""Fixtures on top of the real services. Each test gets its own topics (a unique prefix) and its
own database (a copy of a migrated template), so tests never see each other's data."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import replace

import psycopg
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from psycopg.conninfo import make_conninfo

from order_recovery.adapters.kafka_admin import delete_topics, ensure_topics
from order_recovery.adapters.postgres.migrations import migrate
from order_recovery.config import Settings
from tests.support.backends import ServicesUnavailable, choose_backend, docker_available

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
def postgres_admin_url() -> Iterator[str]:
    if _choose("DATABASE_URL") == "env":
        yield os.environ["DATABASE_URL"]
        return
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16", driver=None) as pg:
        yield pg.get_connection_url()


def _admin_execute(admin_url: str, sql: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="session")
def migrated_template(postgres_admin_url: str) -> Iterator[str]:
    name = f"ortest_tmpl_{uuid.uuid4().hex[:10]}"
    _admin_execute(postgres_admin_url, f'CREATE DATABASE "{name}"')
    migrate(make_conninfo(postgres_admin_url, dbname=name))
    yield name
    _admin_execute(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh database with no migrations applied."""
    name = f"ortest_{uuid.uuid4().hex[:12]}"
    _admin_execute(postgres_admin_url, f'CREATE DATABASE "{name}"')
    yield make_conninfo(postgres_admin_url, dbname=name)
    _admin_execute(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(postgres_admin_url: str, migrated_template: str) -> Iterator[str]:
    """A fresh, migrated database for this test alone."""
    name = f"ortest_{uuid.uuid4().hex[:12]}"
    _admin_execute(postgres_admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template}"')
    yield make_conninfo(postgres_admin_url, dbname=name)
    _admin_execute(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(kafka_bootstrap: str, database_url: str) -> Iterator[Settings]:
    """Settings for this test: its own topics (created here, deleted after) and database."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    test_settings = replace(
        Settings.from_env({}),
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=database_url,
        topic_prefix=prefix,
        topic_partitions=3,
        consumer_group=f"{prefix}group",
    )
    ensure_topics(kafka_bootstrap, test_settings.all_topics, 3, 1)
    yield test_settings
    delete_topics(kafka_bootstrap, test_settings.all_topics)

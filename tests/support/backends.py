"""Where the tests find Kafka and Postgres: the environment `make test` sets, else containers when
a Docker engine answers, else a loud failure that says what to run. Never a skip."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

Backend = Literal["env", "docker"]


class ServicesUnavailable(RuntimeError):
    pass


def choose_backend(
    variable: str, environ: Mapping[str, str], docker_available: Callable[[], bool]
) -> Backend:
    """The environment wins so `make test` never pays for containers; Docker is only asked when
    the variable is missing."""
    if environ.get(variable):
        return "env"
    if docker_available():
        return "docker"
    raise ServicesUnavailable(
        f"{variable} is not set and no Docker engine answers. Run `make test`: it starts the "
        "local Kafka and Postgres and sets KAFKA_BOOTSTRAP_SERVERS and the DATABASE_*_URL "
        "variables (DATABASE_ADMIN_URL, the superuser that makes the tests' databases, among them)."
    )


def docker_available() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        return bool(client.ping())
    except Exception:
        return False

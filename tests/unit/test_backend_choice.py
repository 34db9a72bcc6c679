import pytest

from tests.support.backends import ServicesUnavailable, choose_backend


def _docker_must_not_be_asked() -> bool:
    raise AssertionError("Docker was probed although the environment names the service")


def test_environment_wins_without_asking_docker() -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092"}
    assert choose_backend("KAFKA_BOOTSTRAP_SERVERS", env, _docker_must_not_be_asked) == "env"


@pytest.mark.parametrize("env", [{}, {"DATABASE_ADMIN_URL": ""}])
def test_docker_when_the_variable_is_missing_or_empty(env: dict[str, str]) -> None:
    assert choose_backend("DATABASE_ADMIN_URL", env, lambda: True) == "docker"


def test_clear_failure_when_neither_is_there() -> None:
    with pytest.raises(ServicesUnavailable, match=r"DATABASE_ADMIN_URL is not set.*`make test`"):
        choose_backend("DATABASE_ADMIN_URL", {}, lambda: False)

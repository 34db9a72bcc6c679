from pathlib import Path

import pytest

from order_recovery.config import ConfigError, Settings


def test_defaults_point_at_the_local_stack() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_bootstrap_servers == "127.0.0.1:19092"
    assert settings.database_url.startswith("postgresql://recovery@127.0.0.1:55432/")
    assert settings.metrics_host == "127.0.0.1"
    assert settings.source_topics == (
        "orders.payment-timeout",
        "orders.shipping-delay",
        "orders.logistics-exception",
    )
    assert "orders.payment-timeout.dlq" in settings.all_topics
    assert settings.outcome_topic == "orders.recovery-outcome"


def test_environment_overrides() -> None:
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "k:1",
            "ORDER_RECOVERY_TOPIC_PREFIX": "",
            "ORDER_RECOVERY_BATCH_SIZE": "50",
            "ORDER_RECOVERY_POLICY_DIR": "/etc/policies",
        }
    )
    assert settings.kafka_bootstrap_servers == "k:1"
    assert settings.source_topic("shipping-delay") == "shipping-delay"
    assert settings.batch_size == 50
    assert settings.policy_dir == Path("/etc/policies")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ORDER_RECOVERY_BATCH_SIZE", "0"),
        ("ORDER_RECOVERY_METRICS_PORT", "x"),
        ("ORDER_RECOVERY_BATCH_TIMEOUT_S", "-1"),
        ("ORDER_RECOVERY_MAX_RECORD_BYTES", "100"),
        ("ORDER_RECOVERY_MAX_EVENT_SKEW_S", "0"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_runtime_defaults_to_confluent_and_rejects_unknown_names() -> None:
    assert Settings.from_env({}).runtime == "confluent"
    assert Settings.from_env({"ORDER_RECOVERY_RUNTIME": "faust"}).runtime == "faust"
    with pytest.raises(ConfigError, match="ORDER_RECOVERY_RUNTIME"):
        Settings.from_env({"ORDER_RECOVERY_RUNTIME": "kafka-streams"})

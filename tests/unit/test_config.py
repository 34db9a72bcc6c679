import sys
from datetime import time
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from order_recovery.config import DATABASE_URLS, ConfigError, Settings


def test_defaults_point_at_the_local_stack() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_bootstrap_servers == "127.0.0.1:19092"
    assert settings.database_url.startswith("postgresql://recovery_worker:")
    assert settings.metrics_host == "127.0.0.1"
    assert settings.source_topics == (
        "orders.payment-timeout",
        "orders.shipping-delay",
        "orders.logistics-exception",
    )
    assert "orders.payment-timeout.dlq" in settings.all_topics
    assert settings.outcome_topic == "orders.recovery-outcome"


def test_each_role_has_its_own_dsn_on_the_local_stack() -> None:
    urls = {
        name: conninfo_to_dict(dsn) for name, dsn in Settings.from_env({}).database_env().items()
    }
    assert {name: url["user"] for name, url in urls.items()} == {
        "DATABASE_URL": "recovery_worker",
        "DATABASE_OWNER_URL": "recovery_owner",
        "DATABASE_READER_URL": "recovery_reports",
        "DATABASE_OPERATOR_URL": "recovery_operator",
    }
    assert {(u["host"], u["port"], u["dbname"]) for u in urls.values()} == {
        ("127.0.0.1", "55432", "order_recovery")
    }
    assert len({u["password"] for u in urls.values()}) == 4


def test_each_dsn_comes_from_its_own_variable() -> None:
    env = {name: f"postgresql://{name.lower()}@db:5432/x" for name in DATABASE_URLS}
    assert Settings.from_env(env).database_env() == env


def test_with_database_points_every_role_at_it_and_keeps_the_role() -> None:
    moved = Settings.from_env({}).with_database("scratch", port="6000")
    for name, dsn in moved.database_env().items():
        parts = conninfo_to_dict(dsn)
        assert (parts["dbname"], parts["port"]) == ("scratch", "6000"), name
        assert parts["user"] == conninfo_to_dict(Settings().database_env()[name])["user"]


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
        ("ORDER_RECOVERY_RECONCILE_AT", "8pm"),
        ("ORDER_RECOVERY_RECONCILE_AT", "24:00"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_the_schedules_settings() -> None:
    defaults = Settings.from_env({})
    assert (defaults.reconcile_at, defaults.ledger_dir) == (time(20, 0), None)
    set_ = Settings.from_env(
        {"ORDER_RECOVERY_RECONCILE_AT": "06:30", "ORDER_RECOVERY_LEDGER_DIR": "/srv/ledger"}
    )
    assert (set_.reconcile_at, set_.ledger_dir) == (time(6, 30), Path("/srv/ledger"))


def test_runtime_defaults_to_confluent_and_rejects_unknown_names() -> None:
    assert Settings.from_env({}).runtime == "confluent"
    assert Settings.from_env({"ORDER_RECOVERY_RUNTIME": "faust"}).runtime == "faust"
    with pytest.raises(ConfigError, match="ORDER_RECOVERY_RUNTIME"):
        Settings.from_env({"ORDER_RECOVERY_RUNTIME": "kafka-streams"})


def test_static_membership_only_when_an_instance_id_is_set() -> None:
    from order_recovery.runtimes.confluent import consumer_config

    dynamic = Settings.from_env({})
    assert dynamic.group_instance_id is None
    assert "group.instance.id" not in consumer_config(dynamic)
    static = Settings.from_env({"ORDER_RECOVERY_GROUP_INSTANCE_ID": "order-recovery-0"})
    assert consumer_config(static)["group.instance.id"] == "order-recovery-0"


def test_the_gil_switch_interval_defaults_to_1_ms_and_refuses_zero() -> None:
    assert Settings.from_env({}).gil_switch_interval_s == 0.001
    env = {"ORDER_RECOVERY_GIL_SWITCH_INTERVAL_S": "0.002"}
    assert Settings.from_env(env).gil_switch_interval_s == 0.002
    with pytest.raises(ConfigError, match="must be > 0"):
        Settings.from_env({"ORDER_RECOVERY_GIL_SWITCH_INTERVAL_S": "0"})


def test_the_worker_runs_its_runtime_with_the_configured_switch_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import order_recovery.runtimes.confluent as confluent
    from order_recovery.entrypoints import worker

    seen: list[float] = []
    monkeypatch.setattr(confluent, "run", lambda _settings: seen.append(sys.getswitchinterval()))
    monkeypatch.setenv("ORDER_RECOVERY_GIL_SWITCH_INTERVAL_S", "0.003")
    before = sys.getswitchinterval()
    try:
        worker.main(["--runtime", "confluent"])
    finally:
        sys.setswitchinterval(before)
    assert seen == [pytest.approx(0.003)]

"""The one place configuration comes from: environment variables with defaults that run against
the local stack `make up` starts, so a newcomer configures nothing."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import time
from pathlib import Path

from order_recovery.domain.events import EventType
from order_recovery.domain.resolutions import ResolutionType
from order_recovery.domain.schedules import DEFAULT_RECONCILE_AT, parse_time_of_day

#: The source topics' event types, as the contract names them (one topic each).
EXCEPTION_TYPES: tuple[str, ...] = tuple(str(t) for t in EventType)
#: The resolution events' types (domain.resolutions), each on a topic of its own.
RESOLUTION_TYPES: tuple[str, ...] = tuple(str(t) for t in ResolutionType)
#: Half the broker's default message.max.bytes (1 MiB): a record under it always fits in its dead
#: letter whole (value plus a few KiB of headers) on a topic with the broker's defaults, while a
#: real event is about 1 KiB (only a contrived valid one, twenty 2048-character evidence URIs
#: written as escaped surrogate pairs, comes near 500 KiB).
DEFAULT_MAX_RECORD_BYTES = 512 * 1024
#: How far occurred_at may run ahead of the record's broker timestamp. NTP keeps clocks within
#: milliseconds; a minute tolerates a badly synced producer while moving no rule limit by more
#: than a fifteenth of the shortest one (15 min), and no refund onto the next day's cap unless the
#: event was within a minute of midnight.
DEFAULT_MAX_EVENT_SKEW_S = 60.0
OUTCOME_TOPIC_SUFFIX = "recovery-outcome"
COMMAND_TOPIC_SUFFIX = "action-commands"
DLQ_SUFFIX = ".dlq"


#: One DSN per database role (deploy/postgres/roles.sql), each used by what needs that role: the
#: worker's is DATABASE_URL, the one every deployment sets. The defaults reach the local stack with
#: its local-only passwords.
_LOCAL_PG = "127.0.0.1:55432/order_recovery"
DATABASE_URLS: dict[str, str] = {
    "DATABASE_URL": "database_url",  # recovery_worker: the pipeline
    "DATABASE_OWNER_URL": "database_owner_url",  # recovery_owner: migrations
    "DATABASE_READER_URL": "database_reader_url",  # recovery_reports: recoveryctl's reports
    "DATABASE_OPERATOR_URL": "database_operator_url",  # recovery_operator: operators' writes
}


class ConfigError(ValueError):
    """A variable is set to something the worker cannot use; the message names it."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be >= {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name}={value} must be > 0")
    return value


def _time_of_day(env: Mapping[str, str], name: str, default: time) -> time:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse_time_of_day(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a time of day HH:MM (Asia/Shanghai)") from None


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(allowed)}")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    database_url: str = f"postgresql://recovery_worker:worker-local-only@{_LOCAL_PG}"
    database_owner_url: str = f"postgresql://recovery_owner:owner-local-only@{_LOCAL_PG}"
    database_reader_url: str = f"postgresql://recovery_reports:reports-local-only@{_LOCAL_PG}"
    database_operator_url: str = f"postgresql://recovery_operator:operator-local-only@{_LOCAL_PG}"
    topic_prefix: str = "orders."
    topic_partitions: int = 6
    topic_replication_factor: int = 1
    consumer_group: str = "order-recovery"
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # Static group membership (KIP-345): a stable id per replica (a pod name, a systemd instance
    # name), never shared by two running workers. None: dynamic membership, as before.
    group_instance_id: str | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    # The lifecycle process's /metrics (the case figures), /healthz and /readyz.
    lifecycle_metrics_port: int = 9465
    batch_size: int = 2000
    batch_timeout_s: float = 0.05
    # librdkafka's prefetch (`queued.max.messages.kbytes`) of the confluent runtime. What it
    # holds costs several times its size in resident memory (the fetch buffers its messages
    # point into): 16 MB made the worker's peak 208 MB on the bench's backlog; 3 MB, with the
    # runtime's smaller fetches, about 124 MB at the same rate (docs/performance.md). 3 MB is
    # about two and a half batches of the bench's events; 2 MB cost 7% of the rate.
    prefetch_kbytes: int = 3072
    # How long a thread may hold the GIL while another waits for it (`sys.setswitchinterval`).
    # The writer thread's Postgres round trips each wait for the GIL while the main thread
    # decides the next batch, up to CPython's 5 ms each. 1 ms gave the worker 4-12% more
    # decisions/s (four alternating pairs) and a p99 of 101 ms instead of 118 at 4,900/s (medians
    # of six pairs), for 0-2 us more CPU a decision (docs/performance.md).
    gil_switch_interval_s: float = 0.001
    max_poll_interval_ms: int = 300_000
    policy_dir: Path | None = None
    runtime: str = "confluent"  # the faster of the two in `make bench`; see docs/performance.md
    log_level: str = "INFO"
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    max_event_skew_s: float = DEFAULT_MAX_EVENT_SKEW_S
    # The daily reconciliation's time (Asia/Shanghai), and where the payment ledger's daily
    # exports are (<YYYY-MM-DD>.csv); None: every scheduled run records the ledger missing.
    reconcile_at: time = DEFAULT_RECONCILE_AT
    ledger_dir: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()
        policy_dir = env.get("ORDER_RECOVERY_POLICY_DIR") or None
        ledger_dir = env.get("ORDER_RECOVERY_LEDGER_DIR") or None
        return cls(
            kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS")
            or defaults.kafka_bootstrap_servers,
            **{
                field_name: env.get(variable) or getattr(defaults, field_name)
                for variable, field_name in DATABASE_URLS.items()
            },
            topic_prefix=env.get("ORDER_RECOVERY_TOPIC_PREFIX", defaults.topic_prefix),
            topic_partitions=_int(env, "ORDER_RECOVERY_TOPIC_PARTITIONS", 6, minimum=1),
            topic_replication_factor=_int(env, "ORDER_RECOVERY_TOPIC_REPLICATION", 1, minimum=1),
            consumer_group=env.get("ORDER_RECOVERY_CONSUMER_GROUP") or defaults.consumer_group,
            worker_id=env.get("ORDER_RECOVERY_WORKER_ID") or defaults.worker_id,
            group_instance_id=env.get("ORDER_RECOVERY_GROUP_INSTANCE_ID") or None,
            metrics_host=env.get("ORDER_RECOVERY_METRICS_HOST") or defaults.metrics_host,
            metrics_port=_int(env, "ORDER_RECOVERY_METRICS_PORT", 9464),
            lifecycle_metrics_port=_int(env, "ORDER_RECOVERY_LIFECYCLE_METRICS_PORT", 9465),
            batch_size=_int(env, "ORDER_RECOVERY_BATCH_SIZE", 2000, minimum=1),
            batch_timeout_s=_float(env, "ORDER_RECOVERY_BATCH_TIMEOUT_S", 0.05),
            prefetch_kbytes=_int(env, "ORDER_RECOVERY_PREFETCH_KBYTES", 3072, minimum=64),
            gil_switch_interval_s=_float(env, "ORDER_RECOVERY_GIL_SWITCH_INTERVAL_S", 0.001),
            max_poll_interval_ms=_int(
                env, "ORDER_RECOVERY_MAX_POLL_INTERVAL_MS", 300_000, minimum=1000
            ),
            policy_dir=Path(policy_dir) if policy_dir else None,
            log_level=(env.get("ORDER_RECOVERY_LOG_LEVEL") or "INFO").upper(),
            runtime=_choice(env, "ORDER_RECOVERY_RUNTIME", "confluent", ("confluent", "faust")),
            max_record_bytes=_int(
                env, "ORDER_RECOVERY_MAX_RECORD_BYTES", DEFAULT_MAX_RECORD_BYTES, minimum=1024
            ),
            max_event_skew_s=_float(
                env, "ORDER_RECOVERY_MAX_EVENT_SKEW_S", DEFAULT_MAX_EVENT_SKEW_S
            ),
            reconcile_at=_time_of_day(env, "ORDER_RECOVERY_RECONCILE_AT", DEFAULT_RECONCILE_AT),
            ledger_dir=Path(ledger_dir) if ledger_dir else None,
        )

    def database_env(self) -> dict[str, str]:
        """Every role's DSN as the environment variables a child process reads."""
        return {variable: getattr(self, name) for variable, name in DATABASE_URLS.items()}

    def with_database(self, dbname: str, **conninfo: str) -> Settings:
        """These settings with every role's DSN pointing at another database (the tests' and the
        bench's scratch databases), and at another server if `conninfo` says so."""
        # Imported here: the core reads Settings, and importing the core loads no driver.
        from psycopg.conninfo import make_conninfo

        return replace(
            self,
            **{
                name: make_conninfo(getattr(self, name), dbname=dbname, **conninfo)
                for name in DATABASE_URLS.values()
            },
        )

    def source_topic(self, event_type: str) -> str:
        return f"{self.topic_prefix}{event_type}"

    def event_type_of(self, topic: str) -> str:
        """The event type a source topic carries (the topic itself if it is not one)."""
        return topic.removeprefix(self.topic_prefix)

    @property
    def source_topics(self) -> tuple[str, ...]:
        return tuple(self.source_topic(t) for t in EXCEPTION_TYPES)

    @property
    def resolution_topics(self) -> tuple[str, ...]:
        return tuple(self.source_topic(t) for t in RESOLUTION_TYPES)

    @property
    def lifecycle_group(self) -> str:
        """The resolution consumers' group (not the deciders': they scale apart)."""
        return f"{self.consumer_group}.lifecycle"

    @property
    def outcome_topic(self) -> str:
        return f"{self.topic_prefix}{OUTCOME_TOPIC_SUFFIX}"

    @property
    def command_topic(self) -> str:
        """The action commands executors apply (schemas/action-command.v1.schema.json)."""
        return f"{self.topic_prefix}{COMMAND_TOPIC_SUFFIX}"

    @property
    def executor_group(self) -> str:
        """The reference executor's group on the command topic (a real executor has its own)."""
        return f"{self.consumer_group}.reference-executor"

    @staticmethod
    def dlq_topic(source_topic: str) -> str:
        return f"{source_topic}{DLQ_SUFFIX}"

    @property
    def all_topics(self) -> tuple[str, ...]:
        """Every topic the project owns: sources, their dead-letter topics, outcomes, action
        commands, and the resolution topics with theirs."""
        return (
            *self.source_topics,
            *(self.dlq_topic(t) for t in self.source_topics),
            self.outcome_topic,
            self.command_topic,
            *self.resolution_topics,
            *(self.dlq_topic(t) for t in self.resolution_topics),
        )

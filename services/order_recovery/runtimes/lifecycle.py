"""`recovery-lifecycle`: the process that moves cases after their decision.

It consumes the resolution topics in a group of its own (it scales apart from the deciders), and
for each batch: decode (bad records dead-lettered like exception events), apply them through the
lifecycle service in one transaction, send the dead letters, and only then commit the offsets.
Between batches it ticks: resolutions that came before their case are adopted, deadlines fire
once the stream has passed them, and the command relay sends the action commands every step
stored (the decisions' included) to the command topic (core/commands.py).

When has the stream passed a deadline? Rules read event time, so a deadline fires when no
resolution dated before it can still be unread: `StreamClock` keeps, per assigned partition, the
timestamp of the last record read, and a partition read to its end counts as the wall clock.
The clock is the earliest of those, less `ORDER_RECOVERY_MAX_EVENT_SKEW_S` (an event may be
dated that far past its record). So a lagging consumer (a peak, a restart) holds deadlines back
instead of expiring cases whose payment is still in the topic, and a quiet topic does not stop
them. A deadline is fired by whichever process's tick reaches it first; the case's row lock and
step number make it take effect once. The tick also runs the seed's schedules
(adapters/postgres/schedules.py), once per slot across every lifecycle process.
"""

from __future__ import annotations

import collections
import logging
import signal
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import FrameType

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from order_recovery.adapters.http_server import HealthServer
from order_recovery.adapters.kafka_messages import source_record
from order_recovery.adapters.kafka_producer import KafkaPublisher
from order_recovery.adapters.metrics import LifecycleMetrics
from order_recovery.adapters.postgres.case_figures import CaseFigures
from order_recovery.adapters.postgres.cases import PostgresCaseStore
from order_recovery.adapters.postgres.schedules import ScheduleRunner
from order_recovery.adapters.postgres.unsendable import UnsendableStore
from order_recovery.adapters.retry import RetryPolicy
from order_recovery.config import EXCEPTION_TYPES, Settings
from order_recovery.core.commands import CommandRelay
from order_recovery.core.dead_letters import DeadLetterSender
from order_recovery.core.lifecycle import Lifecycle, decode_resolutions
from order_recovery.core.records import SourceRecord
from order_recovery.domain.policy import load_policies
from order_recovery.runtimes.confluent import consumer_config

log = logging.getLogger(__name__)

BATCH = 500
POLL_S = 0.5
TICK_S = 2.0
FIGURES_REFRESH_S = 5.0
#: A partition assigned and not read yet: nothing may fire on its account.
NOTHING_READ = datetime(1970, 1, 1, tzinfo=UTC)


class StreamClock:
    """How far the resolution stream has been read, in record time (see the module's doc)."""

    def __init__(self, grace_s: float) -> None:
        self._grace = timedelta(seconds=grace_s)
        self._read: dict[tuple[str, int], datetime | None] = {}  # None: read to its end

    def assigned(self, partitions: Sequence[tuple[str, int]]) -> None:
        for tp in partitions:
            self._read.setdefault(tp, NOTHING_READ)

    def revoked(self, partitions: Sequence[tuple[str, int]]) -> None:
        for tp in partitions:
            self._read.pop(tp, None)

    def read(self, records: Sequence[SourceRecord]) -> None:
        for r in records:
            if r.timestamp_ms is not None:
                self._read[(r.topic, r.partition)] = datetime.fromtimestamp(
                    r.timestamp_ms / 1000, UTC
                )

    def caught_up(self, partitions: Sequence[tuple[str, int]]) -> None:
        for tp in partitions:
            if tp in self._read:
                self._read[tp] = None

    def until(self, now: datetime) -> datetime:
        times = [now if at is None else min(at, now) for at in self._read.values()]
        return min(times, default=now) - self._grace


#: Not ready once a loop iteration has taken this long (a fault being retried, a stuck call).
READY_WITHIN_S = 30.0


class LifecycleRuntime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        policies = load_policies(settings.policy_dir)
        self.store = PostgresCaseStore(settings.database_url)
        self.lifecycle = Lifecycle(self.store, policies)
        self.policies = policies
        self.publisher = KafkaPublisher(
            settings.kafka_bootstrap_servers, f"order-recovery-lifecycle-{settings.worker_id}"
        )
        self.unsendable = UnsendableStore(settings.database_url)
        self.figures = CaseFigures(
            settings.database_url, EXCEPTION_TYPES, policies, refresh_s=FIGURES_REFRESH_S
        )
        self.metrics = LifecycleMetrics(self.figures)
        self.metrics.ready.set_function(lambda: 1.0 if self.is_ready() else 0.0)
        self.dead_letters = DeadLetterSender(
            settings, self.publisher, self.unsendable, self.metrics
        )
        # A wait longer than max.poll.interval.ms drops the member: its partitions go to
        # another, which re-reads what was not committed, and the resolutions table makes
        # that a no-op. (Polling here could hand over a record this loop would never see.)
        self.retry = RetryPolicy(
            self.stopping, on_retry=lambda cause: self.metrics.retries.labels(cause).inc()
        )
        self.commands = CommandRelay(settings, self.store, self.publisher, self.retry)
        config = {
            **consumer_config(settings),
            "group.id": settings.lifecycle_group,
            "enable.partition.eof": True,  # a partition read to its end: the clock's "now"
        }
        config.pop("group.instance.id", None)
        self.consumer = Consumer(config, logger=log)
        self.clock = StreamClock(settings.max_event_skew_s)
        self.schedules = ScheduleRunner(settings)  # the seed's snapshot and reconciliation
        self._assigned: set[tuple[str, int]] = set()
        self._last_tick = 0.0
        self._alive_at = 0.0  # monotonic time the loop last went round
        self._http: HealthServer | None = None

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        self.consumer.subscribe(
            list(self.settings.resolution_topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self._http = HealthServer(
            self.settings.metrics_host,
            self.settings.lifecycle_metrics_port,
            self.metrics.registry,
            self.is_ready,
        ).start()
        host, port = self._http.address
        log.info("lifecycle: metrics, /healthz and /readyz on http://%s:%d", host, port)
        try:
            while not self.stopping.is_set():
                messages = self.consumer.consume(BATCH, POLL_S)
                records = self._records(messages)
                if records:
                    self._process(records)
                self._tick()
                self._alive_at = time.monotonic()
        finally:
            self._http.stop()
            self.figures.close()
            self.consumer.close()
            self.publisher.close()
            self.store.close()
            self.unsendable.close()
            self.schedules.close()
        return 0

    def _records(self, messages: list[Message]) -> list[SourceRecord]:
        records = []
        for msg in messages:
            err = msg.error()
            if err is None:
                records.append(source_record(msg))
            elif err.code() == KafkaError._PARTITION_EOF:
                self.clock.caught_up([(msg.topic() or "", msg.partition() or 0)])
            elif err.fatal():
                raise KafkaException(err)
            else:
                log.warning("consumer: %s", err)
        return records

    def _process(self, records: list[SourceRecord]) -> None:
        """Apply, dead-letter, then commit: offsets only move once both are done."""
        topics = collections.Counter(r.topic for r in records)
        for topic, n in topics.items():
            self.metrics.resolutions.labels(self.settings.event_type_of(topic)).inc(n)
        resolutions, dead = decode_resolutions(records, self.policies, self.settings)
        if resolutions:
            steps = self.retry.call(
                lambda: self.lifecycle.resolve(resolutions), "apply resolutions"
            )
            self.metrics.stepped(s.rule_id for s in steps)
        if dead:
            self.retry.call(lambda: self.dead_letters.publish(dead, []), "dead-letter")
            self.metrics.dead_letters(dead)
        self.clock.read(records)
        ends: dict[tuple[str, int], int] = {}
        for r in records:
            ends[(r.topic, r.partition)] = r.offset + 1
        offsets = [
            TopicPartition(t, p, o) for (t, p), o in ends.items() if (t, p) in self._assigned
        ]
        if offsets:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:  # revoked meanwhile: its new owner re-reads it
                log.warning("commit refused: %s", exc)

    def _tick(self) -> None:
        if time.monotonic() - self._last_tick < TICK_S:
            return
        self._last_tick = time.monotonic()
        until = self.clock.until(datetime.now(UTC))
        adopted = self.retry.call(self.lifecycle.adopt_orphans, "adopt orphans")
        fired = self.retry.call(lambda: self.lifecycle.fire_due(until), "fire deadlines")
        self.metrics.stepped(s.rule_id for s in (*adopted, *fired))
        if adopted or fired:
            log.info("lifecycle tick: %d adopted, %d deadline steps", len(adopted), len(fired))
        self.commands.run()  # the action commands of every step stored since (all processes')
        self.schedules.tick()  # never raises: a failed job is logged and recorded

    # ------------------------------------------------------------------ the group
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._assigned.update(tps)
        self.clock.assigned(tps)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._assigned.difference_update(tps)
        self.clock.revoked(tps)

    def is_ready(self) -> bool:
        """Consuming, and the loop went round lately (a Postgres or Kafka fault being retried
        holds it); the figures' own reading failing counts too."""
        alive = time.monotonic() - self._alive_at < READY_WITHIN_S
        return alive and not self.stopping.is_set() and self.figures.healthy is not False

    def stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()


def run(settings: Settings) -> int:
    runtime = LifecycleRuntime(settings)
    signal.signal(signal.SIGTERM, runtime.stop)
    signal.signal(signal.SIGINT, runtime.stop)
    log.info("lifecycle: consuming %s", ", ".join(settings.resolution_topics))
    return runtime.run()

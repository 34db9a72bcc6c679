"""The composition root: the one place where adapters are chosen and wired to the core.

`bootstrap(settings, runtime=...)` builds a worker process: policies, the Postgres store (and a
second connection for history reads beside a write), the Kafka publisher, the metrics, retries, the
pipeline, the health listener and the outbox relay, shared by every consumer runtime. Any part can
be passed in instead (a test's fake, a slowed-down adapter), and what a runtime must do while a
batch waits out an outage (`on_wait`) is passed in too, never patched in afterwards.
`build_pipeline` is the pipeline alone, for tests that drive one in-process.

The layers, each importing only those before it: domain (the rules) <- core (the pipeline, typed
on its ports) <- adapters (Postgres, Kafka, Prometheus, tenacity) <- bootstrap (here) <- runtimes
(confluent, faust) <- entrypoints (`recovery-worker`, `recoveryctl`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from order_recovery.adapters.http_server import HealthServer
from order_recovery.adapters.kafka_producer import KafkaPublisher
from order_recovery.adapters.metrics import WorkerMetrics
from order_recovery.adapters.postgres.outbox_marker import OutboxMarker
from order_recovery.adapters.postgres.store import PostgresStore
from order_recovery.adapters.postgres.unsendable import UnsendableStore
from order_recovery.adapters.retry import RetryPolicy
from order_recovery.config import EXCEPTION_TYPES, Settings
from order_recovery.core import ports
from order_recovery.core.dead_letters import DEAD_LETTER_REASONS, RULE_ERROR
from order_recovery.core.faults import TRANSIENT_CAUSES, transient_cause
from order_recovery.core.pipeline import Pipeline
from order_recovery.domain.decision import Outcome
from order_recovery.domain.policy import Policy, load_policies

log = logging.getLogger(__name__)

RELAY_INTERVAL_S = 5.0
RELAY_MIN_AGE_S = 30.0
RELAY_BATCHES = 10  # outbox batches per pass (a batch holds up to a consumer batch of outcomes)
#: The exit code of a worker whose pipeline failed outside any single event: a bug. Nothing after
#: it is trusted or committed; the supervisor restarts the worker and the batch is redelivered.
EXIT_BUG = 70
#: The exit code of a worker whose consumer the group fenced for good (a static member whose
#: instance id another process took over): restart it; nothing unfinished was committed.
EXIT_FENCED = 75


class _Closeable(Protocol):
    def close(self) -> None: ...


def build_pipeline(
    settings: Settings,
    policies: Mapping[str, Policy] | None = None,
    *,
    store: ports.DecisionStore | None = None,
    reader: ports.HistoryReader | None = None,
    publisher: ports.Publisher | None = None,
    unsendable: ports.UnsendableLetters | None = None,
    metrics: WorkerMetrics | None = None,
    retry: ports.Retry | None = None,
    mark_published: ports.MarkPublished | None = None,
    clock: ports.Clock | None = None,
) -> Pipeline:
    """A pipeline on these parts, the real adapters for those not given (no reader: batches are
    not overlapped; no `mark_published`: each outbox batch is marked in its own transaction)."""
    metrics = metrics or WorkerMetrics()
    return Pipeline(
        settings,
        load_policies(settings.policy_dir) if policies is None else policies,
        store or PostgresStore(settings.database_url, metrics.pg_transaction_seconds.observe),
        publisher
        or KafkaPublisher(settings.kafka_bootstrap_servers, f"order-recovery-{settings.worker_id}"),
        metrics,
        retry or RetryPolicy(threading.Event()),
        unsendable or UnsendableStore(settings.database_url),
        mark_published=mark_published,
        reader=reader,
        clock=clock,
    )


def bootstrap(
    settings: Settings,
    *,
    runtime: str,
    on_wait: Callable[[], None] = lambda: None,
    store: ports.DecisionStore | None = None,
    reader: ports.HistoryReader | None = None,
    relay_store: ports.DecisionStore | None = None,
    publisher: ports.Publisher | None = None,
    unsendable: ports.UnsendableLetters | None = None,
    metrics: WorkerMetrics | None = None,
) -> Worker:
    """A worker process's parts, built and wired; its background threads start with
    `Worker.start_background`. Refuses (PolicyError) to build on a bad policy file: better no
    worker than wrong money decisions."""
    metrics = metrics or WorkerMetrics()
    policies = load_policies(settings.policy_dir)
    dsn = settings.database_url
    store = store or PostgresStore(dsn, metrics.pg_transaction_seconds.observe)
    reader = reader or PostgresStore(dsn)  # history reads beside a write
    publisher = publisher or KafkaPublisher(
        settings.kafka_bootstrap_servers, f"order-recovery-{settings.worker_id}"
    )
    stop = threading.Event()
    readiness = Readiness(metrics, stop)
    retry = RetryPolicy(stop, readiness.retried, readiness.recovered, on_wait=on_wait)
    marker = OutboxMarker(dsn)
    pipeline = build_pipeline(
        settings,
        policies,
        store=store,
        reader=reader,
        publisher=publisher,
        unsendable=unsendable,
        metrics=metrics,
        retry=retry,
        mark_published=marker.mark,
    )
    metrics.initialise(
        EXCEPTION_TYPES,
        policies,
        [str(o) for o in Outcome],
        [*DEAD_LETTER_REASONS, RULE_ERROR],
        TRANSIENT_CAUSES,
    )
    versions = ",".join(f"{k}={p.version}" for k, p in sorted(policies.items()))
    metrics.info.labels(runtime, versions).set(1)
    return Worker(
        settings,
        pipeline,
        metrics,
        readiness,
        relay_store or PostgresStore(dsn),
        closing=(pipeline, publisher, marker, store, reader),
    )


class Readiness:
    """What `/readyz` and `order_recovery_ready` say: consuming, with every dependency answering,
    and not stopping. Retries of an outage make it not ready until the fault has passed."""

    def __init__(self, metrics: WorkerMetrics, stop: threading.Event) -> None:
        self._metrics, self.stop = metrics, stop
        self._consuming = False
        self._healthy = True

    def is_ready(self) -> bool:
        return self._consuming and self._healthy and not self.stop.is_set()

    def set_consuming(self, consuming: bool) -> None:
        self._consuming = consuming
        self.update()

    def retried(self, cause: str) -> None:
        self._metrics.retries.labels(cause).inc()
        if cause == "write_conflict":  # another worker's commit, not an outage
            return
        self._healthy = False
        self.update()

    def recovered(self) -> None:
        self._healthy = True
        self.update()

    def update(self) -> None:
        self._metrics.ready.set(1 if self.is_ready() else 0)


class Worker:
    """A worker process's built parts and their lifecycle: the health listener, the outbox relay,
    the exit code after a failure, closing everything."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        metrics: WorkerMetrics,
        readiness: Readiness,
        relay_store: ports.DecisionStore,
        closing: Sequence[_Closeable] = (),
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = metrics
        self.readiness = readiness
        self.stop = readiness.stop
        self._relay_store = relay_store
        self._closing = closing
        self._http: HealthServer | None = None
        self._relay = threading.Thread(target=self._relay_loop, name="outbox-relay", daemon=True)

    # ------------------------------------------------------------------ failure
    def exit_code_for(self, exc: Exception) -> int:
        """The process's exit code after the pipeline raised: 0 when a stop gave up a batch that
        was waiting out an outage (it is redelivered), EXIT_BUG for anything else."""
        if self.stop.is_set() and transient_cause(exc):
            log.warning("stopped while a batch waited out an outage; it will be redelivered")
            return 0
        log.critical(
            "pipeline failed outside any single event; exiting without committing", exc_info=exc
        )
        return EXIT_BUG

    # ------------------------------------------------------------------ readiness
    def is_ready(self) -> bool:
        return self.readiness.is_ready()

    def set_consuming(self, consuming: bool) -> None:
        self.readiness.set_consuming(consuming)

    # ------------------------------------------------------------------ lifecycle
    def start_background(self) -> None:
        self._http = HealthServer(
            self.settings.metrics_host,
            self.settings.metrics_port,
            self.metrics.registry,
            self.is_ready,
        ).start()
        host, port = self._http.address
        log.info("metrics, /healthz and /readyz on http://%s:%d", host, port)
        self._relay.start()

    def close(self) -> None:
        self.stop.set()
        self.readiness.update()
        if self._http is not None:
            self._http.stop()
        for part in self._closing:
            part.close()
        if not self._relay.is_alive():  # else the relay closes its store on its way out
            self._relay_store.close()

    # ------------------------------------------------------------------ outbox relay
    def _relay_loop(self) -> None:
        """Publishes outcomes a crash left in the outbox (committed, never published) and keeps
        the backlog gauge current. Runs beside the batches, on its own connection."""
        store = self._relay_store
        try:
            while not self.stop.wait(RELAY_INTERVAL_S):
                try:
                    self.relay_once(store)
                except Exception as exc:
                    cause = transient_cause(exc)
                    if cause is None:
                        log.exception("outbox relay failed")
                    else:
                        self.metrics.retries.labels(cause).inc()
                    store.reset()
        finally:
            store.close()

    def relay_once(self, store: ports.DecisionStore) -> int:
        """Publish what crashes left in the outbox; return how many outcomes were sent. One
        worker's relay runs at a time (see `DecisionStore.relay_unpublished`)."""
        sent = store.relay_unpublished(
            RELAY_MIN_AGE_S, RELAY_BATCHES, self.pipeline.outbound.publish_outbox
        )
        if sent:
            log.info("outbox relay published %d outcome(s) left behind", sent)
        self.metrics.outbox_backlog.set(store.outbox_backlog())
        return sent

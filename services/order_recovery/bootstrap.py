"""The composition root of a worker process: configuration, policies, store, publisher, metrics,
the pipeline, the health listener and the outbox relay, shared by every consumer runtime."""

from __future__ import annotations

import logging
import threading

from order_recovery.adapters.http_server import HealthServer
from order_recovery.adapters.kafka_producer import KafkaPublisher
from order_recovery.adapters.metrics import WorkerMetrics
from order_recovery.adapters.postgres.outbox_marker import OutboxMarker
from order_recovery.adapters.postgres.store import PostgresStore
from order_recovery.adapters.retry import TRANSIENT_CAUSES, RetryPolicy, transient_cause
from order_recovery.config import EXCEPTION_TYPES, Settings
from order_recovery.core.pipeline import DEAD_LETTER_REASONS, RULE_ERROR, Pipeline
from order_recovery.domain.decision import Outcome
from order_recovery.domain.policy import load_policies

log = logging.getLogger(__name__)

RELAY_INTERVAL_S = 5.0
RELAY_MIN_AGE_S = 30.0
RELAY_BATCHES = 10  # outbox batches per pass (a batch holds up to a consumer batch of outcomes)
#: The exit code of a worker whose pipeline failed outside any single event: a bug. Nothing after
#: it is trusted or committed; the supervisor restarts the worker and the batch is redelivered.
EXIT_BUG = 70


class Worker:
    def __init__(self, settings: Settings, runtime: str) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self.metrics = WorkerMetrics()
        # Refuse to start on a bad policy file: better no worker than wrong money decisions.
        self.policies = load_policies(settings.policy_dir)
        self.store = PostgresStore(settings.database_url)
        self.reader = PostgresStore(settings.database_url)  # history reads beside a write
        self.publisher = KafkaPublisher(
            settings.kafka_bootstrap_servers, f"order-recovery-{settings.worker_id}"
        )
        self.retry = RetryPolicy(self.stop, self._on_retry, self._on_recovered)
        self.marker = OutboxMarker(settings.database_url)
        self.pipeline = Pipeline(
            settings,
            self.policies,
            self.store,
            self.publisher,
            self.metrics,
            self.retry,
            mark_published=self.marker.mark,
            reader=self.reader,
        )
        self.metrics.initialise(
            EXCEPTION_TYPES,
            self.policies,
            [str(o) for o in Outcome],
            [*DEAD_LETTER_REASONS, RULE_ERROR],
            TRANSIENT_CAUSES,
        )
        versions = ",".join(f"{k}={p.version}" for k, p in sorted(self.policies.items()))
        self.metrics.info.labels(runtime, versions).set(1)
        self._consuming = False
        self._healthy = True
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
        return self._consuming and self._healthy and not self.stop.is_set()

    def set_consuming(self, consuming: bool) -> None:
        self._consuming = consuming
        self._update_ready()

    def _on_retry(self, cause: str) -> None:
        self.metrics.retries.labels(cause).inc()
        if cause == "write_conflict":  # another worker's commit, not an outage
            return
        self._healthy = False
        self._update_ready()

    def _on_recovered(self) -> None:
        self._healthy = True
        self._update_ready()

    def _update_ready(self) -> None:
        self.metrics.ready.set(1 if self.is_ready() else 0)

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
        self._update_ready()
        if self._http is not None:
            self._http.stop()
        self.pipeline.close()
        self.publisher.close()
        self.marker.close()
        self.store.close()
        self.reader.close()

    # ------------------------------------------------------------------ outbox relay
    def _relay_loop(self) -> None:
        """Publishes outcomes a crash left in the outbox (committed, never published) and keeps
        the backlog gauge current. Runs beside the batches, on its own connection."""
        store = PostgresStore(self.settings.database_url)
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

    def relay_once(self, store: PostgresStore) -> int:
        """Publish what crashes left in the outbox; return how many outcomes were sent. One
        worker's relay runs at a time (see `PostgresStore.relay_unpublished`)."""
        sent = store.relay_unpublished(RELAY_MIN_AGE_S, RELAY_BATCHES, self.pipeline.publish_outbox)
        if sent:
            log.info("outbox relay published %d outcome(s) left behind", sent)
        self.metrics.outbox_backlog.set(store.outbox_backlog())
        return sent

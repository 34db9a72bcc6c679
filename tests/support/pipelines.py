"""One way to build a pipeline in-process for the integration tests: the composition root's
`build_pipeline` on the test's settings with the real Postgres and Kafka adapters (or the ones a
test passes), retries that back off briefly, every store closed afterwards."""

from __future__ import annotations

import threading

from order_recovery.adapters.kafka_producer import KafkaPublisher
from order_recovery.adapters.metrics import WorkerMetrics
from order_recovery.adapters.postgres.store import PostgresStore
from order_recovery.adapters.retry import RetryPolicy
from order_recovery.bootstrap import build_pipeline
from order_recovery.config import Settings
from order_recovery.core.pipeline import Pipeline
from order_recovery.core.ports import MarkPublished
from order_recovery.domain.policy import load_policies


class PipelineBuilder:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._opened: list[PostgresStore] = []

    def __call__(
        self,
        store: PostgresStore | None = None,
        *,
        reader: PostgresStore | None = None,
        publisher: KafkaPublisher | None = None,
        mark_published: MarkPublished | None = None,
        metrics: WorkerMetrics | None = None,
        retry: RetryPolicy | None = None,
    ) -> Pipeline:
        """A pipeline on `store` (a fresh one by default); with `reader`, overlapped."""
        store = store or PostgresStore(self.settings.database_url)
        self._opened += [s for s in (store, reader) if s is not None]
        return build_pipeline(
            self.settings,
            load_policies(),
            store=store,
            reader=reader,
            publisher=publisher or KafkaPublisher(self.settings.kafka_bootstrap_servers, "test"),
            metrics=metrics or WorkerMetrics(),
            retry=retry or RetryPolicy(threading.Event(), initial_s=0.01),
            mark_published=mark_published,
        )

    def close(self) -> None:
        for store in self._opened:
            store.close()

"""The pipeline in-process on a test's topics and database, fed so that a batch that does not
finish (a publish retried for ever) fails the test instead of hanging it."""

from __future__ import annotations

import threading

import pytest

from order_recovery.adapters.metrics import WorkerMetrics
from order_recovery.adapters.retry import RetryPolicy
from order_recovery.config import Settings
from order_recovery.core.batch import BatchResult
from order_recovery.core.records import SourceRecord
from tests.support.pipelines import PipelineBuilder

#: The records' broker timestamp: after every sample event (June 2025).
PRODUCED_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
#: How long a batch may take here before the test calls it stuck.
STUCK_S = 30.0


class Run:
    """A pipeline (tests.support.pipelines), its metrics and the stop event of its retries."""

    def __init__(self, settings: Settings, stuck_s: float = STUCK_S) -> None:
        self.settings = settings
        self.stuck_s = stuck_s
        self.stop = threading.Event()
        self.metrics = WorkerMetrics()
        self._build = PipelineBuilder(settings)
        self.pipeline = self._build(
            metrics=self.metrics, retry=RetryPolicy(self.stop, initial_s=0.01)
        )

    def process(self, records: list[SourceRecord]) -> BatchResult:
        done: list[BatchResult | BaseException] = []

        def work() -> None:
            try:
                done.append(self.pipeline.process(records))
            except BaseException as exc:
                done.append(exc)

        thread = threading.Thread(target=work)
        thread.start()
        thread.join(self.stuck_s)
        if thread.is_alive():
            self.stop.set()  # the retry gives up and raises its last fault
            thread.join(30)
            pytest.fail(f"the batch did not finish in {self.stuck_s}s: {done}")
        (result,) = done
        if isinstance(result, BaseException):
            raise result
        return result

    def close(self) -> None:
        self.pipeline.close()
        self._build.close()

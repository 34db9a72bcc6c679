"""Retrying the core's transient faults (`core.faults.Transient`: Postgres unreachable or dropped,
serialization failures, deadlocks, Kafka produce timeouts, and a write that lost a race to another
worker, whose batch is decided again): the core's Retry port on tenacity. Exponential backoff with
jitter, capped, for as long as the fault lasts, so the partition waits and nothing is lost or
dead-lettered for an outage. A stop request (SIGTERM) ends the wait at once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_when_event_set,
    wait_random_exponential,
)

from order_recovery.core.faults import transient_cause

log = logging.getLogger(__name__)
T = TypeVar("T")


class RetryPolicy:
    def __init__(
        self,
        stop: threading.Event,
        on_retry: Callable[[str], None] = lambda cause: None,
        on_recovered: Callable[[], None] = lambda: None,
        initial_s: float = 0.05,
        max_delay_s: float = 5.0,
        on_wait: Callable[[], None] = lambda: None,
    ) -> None:
        self.stop = stop
        self._on_retry = on_retry
        self._on_recovered = on_recovered
        self._initial_s = initial_s
        self._max_delay_s = max_delay_s
        # What the runtime must do while a batch waits (the confluent one keeps its group
        # membership by polling with its partitions paused).
        self._on_wait = on_wait

    def _sleep(self, seconds: float) -> None:
        """Sleep in short steps, keeping the runtime alive, and wake at once on stop."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.stop.wait(min(left, 1.0))
            self._on_wait()

    def call(self, fn: Callable[[], T], what: str, after: BaseException | None = None) -> T:
        """Run fn until it succeeds, retrying transient faults; re-raise anything else, and the
        last fault when a stop is requested. `after`: a transient fault of an attempt made
        elsewhere (the pipeline's writer thread), counted and reported like one of ours."""
        failed = False
        if after is not None:
            failed = True
            self._on_retry(transient_cause(after) or "unknown")
            log.warning("%s failed (%s: %s); retrying", what, transient_cause(after), after)

        def before_sleep(state: RetryCallState) -> None:
            nonlocal failed
            failed = True
            exc = state.outcome.exception() if state.outcome else None
            cause = transient_cause(exc) if exc else None
            self._on_retry(cause or "unknown")
            self._on_wait()
            log.warning(
                "%s failed (%s: %s); retry %d in %.2fs",
                what,
                cause,
                exc,
                state.attempt_number,
                state.next_action.sleep if state.next_action else 0.0,
            )

        retrying = Retrying(
            retry=retry_if_exception(lambda e: transient_cause(e) is not None),
            wait=wait_random_exponential(multiplier=self._initial_s, max=self._max_delay_s),
            stop=stop_when_event_set(self.stop),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        result = retrying(fn)
        if failed:
            log.info("%s recovered", what)
            self._on_recovered()
        return result

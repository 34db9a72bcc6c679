"""The faust-streaming runtime: one agent over the three source topics feeding the pipeline in
batches, overlapped like the confluent runtime's (batch N written while N+1 is decided).

The agent body only hands each batch to a thread of its own (`PipelineThread`) and returns, so
faust goes on fetching and buffering the next batch while the pipeline decides and writes this one;
faust's per-event machinery, the rules and Postgres then work at the same time. A batch's events
are acknowledged only once the pipeline has returned its result: before handing a batch over, the
body takes one more reference on each message, which keeps `take_events`' own ack on resume from
being the final one; the final ack comes from the pipeline's result, in batch order, on the loop.

Guards against faust's known traps: concurrency stays 1 (with more, faust commits past an event
still in flight, faust#606); batches come from `take_events` (plain `take()` acks even under
`noack`), and its ack on resume is held back as above, so nothing is committed before its batch is
written and published; and no exception from the pipeline reaches faust with a batch in hand,
because faust would ack (and commit) the unprocessed batch on the way out (#315) or stop consuming
silently (#175). Instead the process exits at once without acking, and the events are redelivered
when it restarts; the decisions table makes that harmless.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, NoReturn

import faust

from order_recovery.adapters.retry import transient_cause
from order_recovery.config import Settings
from order_recovery.pipeline import BatchResult, Pipeline, SourceRecord
from order_recovery.worker import Worker

log = logging.getLogger(__name__)

EXIT_BUG = 70
LAG_REFRESH_S = 5.0
#: Batches handed to the pipeline thread and not yet finished: one being written, one being
#: decided, one waiting. More only holds more memory; fewer leaves the pipeline idle.
MAX_BATCHES_IN_HAND = 3


class PipelineThread:
    """Drives `Pipeline.submit`/`drain` from one thread (the pipeline is not thread-safe), fed by
    the event loop. Each batch's result goes back to `on_done` on the loop, in the order the
    batches came in; a batch left in flight is finished once no new one has come for `idle_s`.
    A failure goes to `on_failure`, which must end the process: nothing after it is trusted."""

    _IDLE = object()

    def __init__(
        self,
        pipeline: Pipeline,
        loop: asyncio.AbstractEventLoop,
        on_done: Callable[[Any, BatchResult], None],
        on_failure: Callable[[BaseException], None],
        idle_s: float,
    ) -> None:
        self._pipeline = pipeline
        self._loop = loop
        self._on_done = on_done
        self._on_failure = on_failure
        self._idle_s = idle_s
        self._queue: queue.Queue[Any] = queue.Queue()
        self._handed: deque[Any] = deque()  # what each batch in the pipeline stands for
        self._thread = threading.Thread(target=self._run, name="faust-pipeline", daemon=True)
        self._thread.start()

    def submit(self, token: Any, records: Sequence[SourceRecord]) -> None:
        """Queue a batch; `token` comes back to `on_done` with its result."""
        self._queue.put((token, records))

    def drain(self) -> Future[None]:
        """Finish every batch queued so far; the future completes after their `on_done` calls
        were scheduled on the loop."""
        done: Future[None] = Future()
        self._queue.put(done)
        return done

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._idle_s if self._handed else None)
            except queue.Empty:
                item = self._IDLE
            try:
                if isinstance(item, tuple):
                    token, records = item
                    self._handed.append(token)
                    results = self._pipeline.submit(records)
                else:
                    results = self._pipeline.drain()
            except BaseException as exc:
                self._on_failure(exc)
                return
            for result in results:
                self._loop.call_soon_threadsafe(self._on_done, self._handed.popleft(), result)
            if isinstance(item, Future):
                self._loop.call_soon_threadsafe(item.set_result, None)


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{hostport.strip()}" for hostport in bootstrap.split(",") if hostport.strip()]


def create_app(settings: Settings) -> faust.App:
    """A faust app bound to loopback, creating no topics of its own."""
    return faust.App(
        settings.consumer_group,
        broker=broker_urls(settings.kafka_bootstrap_servers),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        # faust's web server would bind 0.0.0.0; /metrics etc. are served by HealthServer.
        web_enabled=False,
        web_bind=settings.metrics_host,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        datadir=f"/tmp/order-recovery-faust-{settings.worker_id}",
        broker_commit_every=settings.batch_size,
        # faust's 60 s default keeps a crashed worker's partitions unassigned for a minute.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=max(4096, settings.batch_size * 2),
    )


def _record(event: Any) -> SourceRecord:
    message = event.message
    timestamp = message.timestamp
    return SourceRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        timestamp_ms=int(timestamp * 1000) if timestamp else None,
        headers=tuple((k, v) for k, v in (message.headers or ())),
    )


def run(settings: Settings) -> int:
    worker = Worker(settings, runtime="faust")
    app = create_app(settings)
    source = app.topic(*settings.source_topics, value_type=bytes, key_type=bytes)

    processed: dict[tuple[str, int], int] = {}
    draining = asyncio.Event()  # set once a stop signal arrived
    drained = asyncio.Event()  # set once the drain committed what was done
    slots = asyncio.Semaphore(MAX_BATCHES_IN_HAND)  # bounds the batches handed over
    threads: list[PipelineThread] = []  # the agent's, started on faust's loop

    def exit_now(code: int, why: str) -> NoReturn:
        """Leave without letting faust ack (and commit) anything more: what was not finished is
        redelivered to the next owner, and the decisions table makes that harmless."""
        log.warning("%s; exiting %d without acknowledging further", why, code)
        logging.shutdown()
        os._exit(code)

    def on_failure(exc: BaseException) -> None:
        """On the pipeline thread: a batch that could not finish must not be acked."""
        if worker.stop.is_set() and transient_cause(exc):
            exit_now(0, "stopped while a batch waited out an outage")
        log.critical("pipeline failed outside any single event", exc_info=exc)
        exit_now(EXIT_BUG, "bug")

    def on_done(events: Sequence[Any], result: BatchResult) -> None:
        """On the loop: the batch is written and published, so its events may be committed. Our
        release of the extra reference is the final ack once `take_events` has resumed."""
        consumer = app.consumer
        for event in events:
            event.message.ack(consumer)
        processed.update(result.commit_offsets)
        slots.release()

    @app.agent(source, concurrency=1)
    async def recover(stream: faust.StreamT[bytes]) -> None:
        thread = PipelineThread(
            worker.pipeline,
            asyncio.get_running_loop(),
            on_done,
            on_failure,
            idle_s=settings.batch_timeout_s,
        )
        threads.append(thread)
        async for events in stream.take_events(
            settings.batch_size, within=settings.batch_timeout_s
        ):
            if draining.is_set():
                # Arrived after the stop began: leave it unacked for the next owner.
                while not drained.is_set():
                    await asyncio.sleep(0.02)
                exit_now(0, "stop requested")
            for event in events:
                event.message.incref()  # held until the pipeline's result releases it
            await slots.acquire()
            thread.submit(events, [_record(e) for e in events])

    async def drain_then_stop(stop: Callable[[], None]) -> None:
        """SIGTERM/SIGINT: stop taking batches, let the batches in hand finish (retries give up
        once `worker.stop` is set), commit their offsets, then run faust's own shutdown."""
        draining.set()
        worker.stop.set()
        for thread in threads:
            await asyncio.wrap_future(thread.drain())
        # A commit already under way makes commit() wait for it and return without committing
        # (faust's consumer), so the second call is the one that surely includes our acks.
        await app.consumer.commit()
        await app.consumer.commit()
        drained.set()
        stop()

    class DrainingWorker(faust.Worker):
        def _on_sigterm(self) -> None:
            self.loop.create_task(drain_then_stop(super()._on_sigterm))

        def _on_sigint(self) -> None:
            self.loop.create_task(drain_then_stop(super()._on_sigint))

    @app.timer(LAG_REFRESH_S)
    async def refresh_lag() -> None:
        """On the event loop, which stays free while a batch waits out an outage on the pipeline
        thread: a stalled worker shows its lag growing instead of a frozen gauge."""
        for tp in app.consumer.assignment():
            highwater = app.consumer.highwater(tp)
            if highwater is None:
                continue
            done = processed.get((tp.topic, tp.partition), 0)
            worker.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                max(0, highwater - done)
            )

    @app.on_partitions_assigned.connect
    async def on_assigned(app: faust.App, assigned: Any, **kwargs: Any) -> None:
        worker.set_consuming(True)

    @app.task
    async def started() -> None:
        worker.start_background()

    faust_worker = DrainingWorker(
        app, loglevel=_faust_loglevel(settings.log_level), redirect_stdouts=False
    )
    try:
        faust_worker.execute_from_commandline()
    finally:
        worker.close()
    return 0


def _faust_loglevel(level: str) -> str:
    return {"WARNING": "warn", "CRITICAL": "crit"}.get(level, level.lower())

"""The faust-streaming runtime: one agent over the three source topics feeding the pipeline in
batches.

Guards against faust's known traps: concurrency stays 1 (with more, faust commits past an event
still in flight, faust#606); batches come from `take_events`, which acks only after our loop body
returns (plain `take()` acks even under `noack`); and the body never lets an exception escape with a
batch in hand, because faust would ack (and commit) the unprocessed batch on the way out (#315) or
stop consuming silently (#175). Instead the process exits at once without acking, and the events
are redelivered when it restarts; the decisions table makes that harmless.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

import faust

from order_recovery.adapters.retry import transient_cause
from order_recovery.config import Settings
from order_recovery.pipeline import BatchResult, SourceRecord
from order_recovery.worker import Worker

log = logging.getLogger(__name__)

EXIT_BUG = 70
LAG_REFRESH_S = 5.0


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
    executor = ThreadPoolExecutor(1, thread_name_prefix="pipeline")
    source = app.topic(*settings.source_topics, value_type=bytes, key_type=bytes)

    processed: dict[tuple[str, int], int] = {}
    in_flight = asyncio.Event()  # set while a batch is in the pipeline
    draining = asyncio.Event()  # set once a stop signal arrived
    drained = asyncio.Event()  # set once the drain committed what was done

    def exit_now(code: int, why: str) -> NoReturn:
        """Leave without letting faust ack (and commit) anything more: what was not finished is
        redelivered to the next owner, and the decisions table makes that harmless."""
        log.warning("%s; exiting %d without acknowledging further", why, code)
        logging.shutdown()
        os._exit(code)

    async def process_batch(records: Sequence[SourceRecord]) -> BatchResult:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(executor, worker.pipeline.process, records)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # Cancelled without our drain (faust stopping on its own): finish the batch in
            # hand, then let faust ack it; a batch that could not finish must not be acked.
            worker.stop.set()
            while not future.done():
                await asyncio.sleep(0.05)
            if future.exception() is not None:
                exit_now(0, "stopped with an unfinished batch")
            raise
        except Exception as exc:
            if worker.stop.is_set() and transient_cause(exc):
                exit_now(0, "stopped while the batch waited out an outage")
            log.critical("pipeline failed outside any single event", exc_info=True)
            exit_now(EXIT_BUG, "bug")

    @app.agent(source, concurrency=1)
    async def recover(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(
            settings.batch_size, within=settings.batch_timeout_s
        ):
            if draining.is_set():
                # Arrived after the stop began: leave it unacked for the next owner.
                while not drained.is_set():
                    await asyncio.sleep(0.02)
                exit_now(0, "stop requested")
            in_flight.set()
            try:
                result = await process_batch([_record(e) for e in events])
                # Ack now rather than when take_events resumes, so the drain can commit it.
                for event in events:
                    app.consumer.ack(event.message)
                processed.update(result.commit_offsets)
            finally:
                in_flight.clear()

    async def drain_then_stop(stop: Callable[[], None]) -> None:
        """SIGTERM/SIGINT: stop taking batches, let the batch in hand finish (retries give up
        once `worker.stop` is set), commit its offsets, then run faust's own shutdown."""
        draining.set()
        worker.stop.set()
        while in_flight.is_set():
            await asyncio.sleep(0.02)
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
        """On the event loop, which stays free while a batch waits in the executor: a stalled
        worker shows its lag growing instead of a frozen gauge."""
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
        executor.shutdown(wait=True)
    return 0


def _faust_loglevel(level: str) -> str:
    return {"WARNING": "warn", "CRITICAL": "crit"}.get(level, level.lower())

"""The faust-streaming runtime: one agent over the three source topics, feeding the pipeline in
batches; the pipeline itself runs in a process of its own (`pipeline_process`).

faust's per-event machinery and the pipeline are both Python; in one process they share one GIL and
the faust runtime ran at a third of faust's own counting floor. Here this process only runs the
consumer protocol (group membership, fetching, acks, commits): the agent body sends each batch's
raw records to the pipeline process and returns, so faust fetches and buffers the next batch while
the pipeline decides and writes this one (overlapped there as in the confluent runtime: batch N
written while N+1 is decided). A batch's events are acknowledged only when the pipeline process
says the batch is finished: before sending a batch, the body takes one more reference on each
message, which keeps `take_events`' own ack on resume from being the final one; the final ack
comes with the batch's `Finished`, in batch order.

Guards against faust's known traps: concurrency stays 1 (with more, faust commits past an event
still in flight, faust#606); batches come from `take_events` (plain `take()` acks even under
`noack`), and its ack on resume is held back as above, so nothing is committed before its batch is
written and published; and no pipeline failure reaches faust with a batch in hand, because faust
would ack (and commit) the unprocessed batch on the way out (#315) or stop consuming silently
(#175). Instead the pipeline process exits with a code that says why, this process exits with the
same code without acknowledging anything more, and the events are redelivered to the restart; the
decisions table makes that harmless.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from order_recovery.config import Settings
from order_recovery.core.records import SourceRecord
from order_recovery.domain.policy import load_policies
from order_recovery.runtimes.pipeline_process import (
    Assigned,
    Consuming,
    Drain,
    Finished,
    Lag,
    PipelineProcess,
    Revoked,
    Stopping,
)

log = logging.getLogger(__name__)

LAG_REFRESH_S = 5.0
#: Batches sent to the pipeline process and not finished yet: one being written, one being
#: decided, one waiting. More only holds more memory; fewer leaves the pipeline idle.
MAX_BATCHES_IN_HAND = 3


class _ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust builds aiokafka's consumer with `isolation_level="read_uncommitted"` (aiokafka's
    default) unless the app runs faust's own exactly-once mode, which we do not use (it commits
    through a transactional producer per partition, and our effects are in Postgres). Reading
    uncommitted, the worker decides the records of an aborted transaction, e.g. an interrupted
    `recoveryctl dlq replay`. faust's only switch for the isolation level is the consumer's
    `in_transaction` flag, read once while the consumer is built: raised for that call alone."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = self.consumer
        in_transaction = consumer.in_transaction
        consumer.in_transaction = True
        try:
            return super()._create_worker_consumer(transport)
        finally:
            consumer.in_transaction = in_transaction


class _ReadCommittedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _ReadCommittedTransport(faust_aiokafka.Transport):
    Consumer = _ReadCommittedConsumer


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{hostport.strip()}" for hostport in bootstrap.split(",") if hostport.strip()]


def create_app(settings: Settings) -> faust.App:
    """A faust app bound to loopback, creating no topics of its own, reading only committed
    records (like the confluent runtime: librdkafka's default)."""
    app = faust.App(
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
        # aiokafka hands over everything fetched at once otherwise: with a backlog that held
        # 100 MB of records in this process for no gain in throughput.
        broker_max_poll_records=500,
        # Static membership when configured (see consumer_config of the confluent runtime).
        consumer_group_instance_id=settings.group_instance_id,
    )
    app.transport = _ReadCommittedTransport(app.conf.broker_consumer, app)
    return app


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
    load_policies(settings.policy_dir)  # a bad policy file stops the worker here, before anything
    app = create_app(settings)
    source = app.topic(*settings.source_topics, value_type=bytes, key_type=bytes)

    processed: dict[tuple[str, int], int] = {}
    handed: deque[Sequence[Any]] = deque()  # the events of each batch sent, oldest first
    slots = asyncio.Semaphore(MAX_BATCHES_IN_HAND)
    draining = asyncio.Event()  # set once a stop signal arrived
    drained = asyncio.Event()  # set once the drain committed what was done
    drains: deque[asyncio.Future[None]] = deque()  # Drain requests waiting for their Drained

    def exit_now(code: int, why: str) -> NoReturn:
        """Leave without letting faust ack (and commit) anything more: what was not finished is
        redelivered to the next owner, and the decisions table makes that harmless."""
        log.warning("%s; exiting %d without acknowledging further", why, code)
        logging.shutdown()
        os._exit(code)

    def on_finished(message: Finished) -> None:
        """On the loop: the oldest batch sent is written and published, so its events may be
        committed. Releasing our extra reference is the final ack (`take_events` has resumed
        long since: the body returns as soon as the batch is sent). Only the partitions the
        pipeline finished: records of one it found taken over by another worker are left
        unacknowledged, for their new owner."""
        consumer = app.consumer
        finished = {(t, p) for t, p, _ in message.offsets}
        for event in handed.popleft():
            if (event.message.topic, event.message.partition) in finished:
                event.message.ack(consumer)
        processed.update(((t, p), o) for t, p, o in message.offsets)
        slots.release()

    def on_drained() -> None:
        drains.popleft().set_result(None)

    loop: asyncio.AbstractEventLoop | None = None

    def from_reader(callback: Callable[..., None]) -> Callable[..., None]:
        """The pipeline's messages arrive on its reader thread; they are handled on the loop."""
        return lambda *args: loop.call_soon_threadsafe(callback, *args)  # type: ignore[union-attr]

    pipeline = PipelineProcess(
        settings,
        on_finished=from_reader(on_finished),
        on_drained=from_reader(on_drained),
        on_exit=lambda code: exit_now(code, f"the pipeline process exited with {code}"),
    )

    @app.agent(source, concurrency=1)
    async def recover(stream: faust.StreamT[bytes]) -> None:
        nonlocal loop
        loop = asyncio.get_running_loop()  # before any batch, so before any of its answers
        async for events in stream.take_events(
            settings.batch_size, within=settings.batch_timeout_s
        ):
            # A slot frees when a batch finishes, so this returns during a drain at the latest.
            await slots.acquire()
            if draining.is_set():
                # Arrived, or got its slot, after the stop began: a batch sent after the Drain
                # would be written but never acknowledged. Leave it unacked for the next owner.
                while not drained.is_set():
                    await asyncio.sleep(0.02)
                exit_now(0, "stop requested")
            for event in events:
                event.message.incref()  # held until the batch's Finished releases it
            handed.append(events)
            pipeline.submit([_record(e) for e in events])

    async def drain_then_stop(stop: Callable[[], None]) -> None:
        """SIGTERM/SIGINT: stop taking batches, let the batches in hand finish (retries give up
        once the pipeline is stopping), commit their offsets, then run faust's own shutdown."""
        draining.set()
        pipeline.send(Stopping())
        drained_future = asyncio.get_running_loop().create_future()
        drains.append(drained_future)
        pipeline.send(Drain())
        await drained_future
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
        """Also while a batch waits out an outage: a stalled worker shows its lag growing
        instead of a frozen gauge."""
        lags = []
        for tp in app.consumer.assignment():
            highwater = app.consumer.highwater(tp)
            if highwater is not None:
                done = processed.get((tp.topic, tp.partition), 0)
                lags.append((tp.topic, tp.partition, max(0, highwater - done)))
        pipeline.send(Lag(lags))

    @app.on_partitions_assigned.connect
    async def on_assigned(app: faust.App, assigned: Any, **kwargs: Any) -> None:
        pipeline.send(Assigned([(tp.topic, tp.partition) for tp in assigned]))
        pipeline.send(Consuming(True))

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        pipeline.send(Revoked([(tp.topic, tp.partition) for tp in revoked]))

    faust_worker = DrainingWorker(
        app, loglevel=_faust_loglevel(settings.log_level), redirect_stdouts=False
    )
    try:
        faust_worker.execute_from_commandline()
    finally:
        pipeline.close()
    return 0


def _faust_loglevel(level: str) -> str:
    return {"WARNING": "warn", "CRITICAL": "crit"}.get(level, level.lower())

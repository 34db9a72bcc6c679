"""The pipeline in a process of its own, fed batches by a consumer runtime in another.

faust's per-event machinery is pure Python on its event loop; run in the same process as the
pipeline, the two share one GIL, and each waits for the other (faust's floor alone is about one
core's worth of Python at its top rate). So the faust runtime keeps the consumer protocol (group
membership, fetching, acks, commits) in its own process and hands each batch's raw records to this
one, which owns everything else of a worker: the pipeline with its Postgres store and Kafka
publisher, the metrics and the health listener, the outbox relay.

The two talk over a pipe in msgpack (msgspec): `Batch` in, `Finished` back per batch in the order
the batches came, plus a few control messages. The parent acknowledges a batch's events only on
its `Finished`, so what this process did not finish is never committed. This process never decides
on its own to stop: it ignores SIGINT and SIGTERM (a terminal's Ctrl-C or a supervisor's signal to
the whole group reaches both processes, and the parent drains first), and it exits when told to,
on a pipeline failure (its exit code tells the parent why), or when the parent is gone.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from order_recovery.bootstrap import EXIT_BUG, Worker, bootstrap
from order_recovery.config import Settings
from order_recovery.core.batch import BatchResult
from order_recovery.core.records import SourceRecord

log = logging.getLogger(__name__)

PARENT_CHECK_S = 0.5


# ---------------------------------------------------------------------------- the protocol
class Batch(msgspec.Struct, tag="batch", array_like=True):
    records: list[SourceRecord]


class Consuming(msgspec.Struct, tag="consuming", array_like=True):
    consuming: bool


class Assigned(msgspec.Struct, tag="assigned", array_like=True):
    """These partitions are this worker's (see `Pipeline.assigned`); in order with batches."""

    partitions: list[tuple[str, int]]


class Revoked(msgspec.Struct, tag="revoked", array_like=True):
    """These partitions went to another worker (see `Pipeline.revoked`); in order with batches."""

    partitions: list[tuple[str, int]]


class Lag(msgspec.Struct, tag="lag", array_like=True):
    partitions: list[tuple[str, int, int]]  # topic, partition, records behind


class Stopping(msgspec.Struct, tag="stopping", array_like=True):
    """Stop retrying: a batch stuck on an outage is given up (and redelivered later)."""


class Drain(msgspec.Struct, tag="drain", array_like=True):
    """Finish every batch received so far, then say `Drained`."""


class Exit(msgspec.Struct, tag="exit", array_like=True):
    pass


class Finished(msgspec.Struct, tag="finished", array_like=True):
    """The oldest unfinished batch is written and published: these are its next offsets."""

    offsets: list[tuple[str, int, int]]


class Drained(msgspec.Struct, tag="drained", array_like=True):
    pass


ToPipeline = Batch | Assigned | Revoked | Consuming | Lag | Stopping | Drain | Exit
FromPipeline = Finished | Drained

_encode = msgspec.msgpack.Encoder().encode
_decode_in = msgspec.msgpack.Decoder(ToPipeline).decode
_decode_out = msgspec.msgpack.Decoder(FromPipeline).decode


def _finished(result: BatchResult) -> Finished:
    return Finished([(t, p, o) for (t, p), o in result.commit_offsets.items()])


# ---------------------------------------------------------------------------- this process
def serve(settings: Settings, conn: Connection, parent_pid: int) -> None:
    """The pipeline process's main: build the worker, then serve the parent until told to exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.setswitchinterval(settings.gil_switch_interval_s)  # a new interpreter: see Settings
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    worker = bootstrap(settings, runtime="faust")
    worker.start_background()
    try:
        code = _serve(worker, conn, settings.batch_timeout_s)
    finally:
        worker.close()
    logging.shutdown()
    os._exit(code)


def _exit_with_parent(parent_pid: int) -> None:
    """A parent killed outright leaves no one to acknowledge anything: stop at once (even in the
    middle of a retry), and the next owner of the partitions redoes what was in flight."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_S)
    os._exit(0)


def _serve(worker: Worker, conn: Connection, idle_s: float) -> int:
    """The exit code: 0 when told to exit or orphaned, else `Worker.exit_code_for` the failure
    (EXIT_BUG for a bug outside any single event: the batch is redelivered to a restart).

    Control messages are handled by a reader thread as they arrive, so a batch waiting out an
    outage still gets its lag reported and still hears `Stopping`; batches and drains queue up
    for this thread, which is the only one that drives the pipeline."""
    work: queue.Queue[Batch | Assigned | Revoked | Drain | Exit] = queue.Queue()
    threading.Thread(
        target=_read_controls, args=(worker, conn, work), name="pipeline-controls", daemon=True
    ).start()
    pipeline = worker.pipeline
    in_flight = False
    while True:
        try:
            message = work.get(timeout=idle_s if in_flight else None)
            idle = False
        except queue.Empty:
            message, idle = Drain(), True  # nothing new for a while: finish the batch in flight
        if isinstance(message, Exit):
            return 0
        if isinstance(message, Assigned | Revoked):
            partitions = [(t, p) for t, p in message.partitions]
            if isinstance(message, Assigned):
                pipeline.assigned(partitions)
            else:
                pipeline.revoked(partitions)
            continue
        try:
            if isinstance(message, Batch):
                results = pipeline.submit(message.records)
            else:
                results = pipeline.drain()
        except Exception as exc:
            return worker.exit_code_for(exc)
        in_flight = isinstance(message, Batch)
        for result in results:
            conn.send_bytes(_encode(_finished(result)))
        if isinstance(message, Drain) and not idle:
            conn.send_bytes(_encode(Drained()))


def _read_controls(worker: Worker, conn: Connection, work: queue.Queue[Any]) -> None:
    while True:
        try:
            message = _decode_in(conn.recv_bytes())
        except (EOFError, OSError):  # the parent is gone: what is not finished is redelivered
            worker.stop.set()
            work.put(Exit())
            return
        if isinstance(message, Consuming):
            worker.set_consuming(message.consuming)
        elif isinstance(message, Lag):
            for topic, partition, behind in message.partitions:
                worker.metrics.consumer_lag.labels(topic, str(partition)).set(behind)
        elif isinstance(message, Stopping):
            worker.stop.set()
        else:
            work.put(message)


# ---------------------------------------------------------------------------- the parent's side
class PipelineProcess:
    """The parent's handle: starts the pipeline process, sends it batches and control messages,
    and calls back with each batch's `Finished` (in batch order) from a reader thread. If the
    pipeline process ends without being told to, `on_exit` gets its exit code: the parent must
    then end too, acknowledging nothing more."""

    def __init__(
        self,
        settings: Settings,
        on_finished: Callable[[Finished], None],
        on_drained: Callable[[], None],
        on_exit: Callable[[int], None],
    ) -> None:
        context = multiprocessing.get_context("spawn")  # no inherited threads or client state
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=serve, args=(settings, child, os.getpid()), name="order-recovery-pipeline"
        )
        self._process.start()
        child.close()
        self._on_finished, self._on_drained, self._on_exit = on_finished, on_drained, on_exit
        self._closing = False
        self._send_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="pipeline-reader", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def send(self, message: ToPipeline) -> None:
        with self._send_lock:
            self._conn.send_bytes(_encode(message))

    def submit(self, records: Sequence[SourceRecord]) -> None:
        self.send(Batch(list(records)))

    def close(self, timeout_s: float = 15.0) -> None:
        """Tell the pipeline process to exit and wait for it (its batches are finished or given
        up by now, see `Drain` and `Stopping`)."""
        self._closing = True
        with contextlib.suppress(OSError):  # already gone
            self.send(Exit())
        self._process.join(timeout_s)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)

    def _read(self) -> None:
        while True:
            try:
                message = _decode_out(self._conn.recv_bytes())
            except (EOFError, OSError):
                break
            if isinstance(message, Finished):
                self._on_finished(message)
            else:
                self._on_drained()
        self._process.join(10)
        code = self._process.exitcode
        if not self._closing:
            self._on_exit(EXIT_BUG if code is None else code)

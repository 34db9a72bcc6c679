"""The confluent-kafka runtime: batch consume, the pipeline (batches overlapped: see
`Pipeline.submit`), then a commit of exactly the offsets the pipeline finished.

librdkafka's traps and how this avoids them:
- auto offset store would save offsets before they are processed: `enable.auto.offset.store` and
  `enable.auto.commit` are off; a batch's offsets are committed explicitly once the pipeline hands
  back its result (from `submit` of the next batch, or `drain`), i.e. after the Postgres commit
  and the broker's acknowledgement of its outcomes and dead letters. Those commits are
  asynchronous; the last one, on a clean stop, waits for the broker.
- committing a partition that was revoked meanwhile errors: only partitions still assigned are
  committed; the rest will be re-read by their new owner and deduplicated by the decisions table.
- processing longer than `max.poll.interval.ms` drops the consumer from its group: while a batch
  waits out an outage, the retry loop pauses the assignment and polls, which keeps the membership
  alive without fetching anything new.
Rebalancing is cooperative (incremental): a rebalance only moves the partitions that must move, and
callbacks run inside `consume`/`poll`, so the batch in hand is either committed before a revoke is
handled or, when revoked mid-retry, its revoked partitions are simply not committed.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from order_recovery.adapters.kafka_messages import source_record
from order_recovery.bootstrap import EXIT_FENCED, bootstrap
from order_recovery.config import Settings
from order_recovery.core.batch import BatchResult
from order_recovery.core.records import SourceRecord

log = logging.getLogger(__name__)

LAG_REFRESH_S = 5.0
RECOMMIT_AFTER_S = 1.0


def consumer_config(settings: Settings) -> dict[str, object]:
    config: dict[str, object] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": settings.consumer_group,
        "client.id": f"order-recovery-{settings.worker_id}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # librdkafka's default, stated: the records of an aborted transaction (an interrupted
        # `recoveryctl dlq replay`) are never decided.
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 2_000,
        "max.poll.interval.ms": settings.max_poll_interval_ms,
        "fetch.wait.max.ms": 50,
        # Prefetch per consumer (`Settings.prefetch_kbytes`): a batch or two, so the next one is
        # fetched while this one is decided; more only holds memory. A fetch response is kept
        # whole while any of its records waits, and librdkafka's defaults (50 MB a fetch, 1 MB
        # a partition: 18 MB for the 18 partitions of a worker's topics) overshoot the prefetch
        # bound by a fetch: 2 MB and 256 KB took a worker's peak from 147 to 124 MB at the same
        # rate (docs/performance.md). A record larger than either is still fetched (KIP-74).
        "queued.max.messages.kbytes": settings.prefetch_kbytes,
        "fetch.max.bytes": 2 * 1024 * 1024,
        "max.partition.fetch.bytes": 256 * 1024,
    }
    if settings.group_instance_id:
        # Static membership: a restarted worker takes its partitions back without a rebalance
        # (a dynamic member's restart joined as a stranger, and the group waited out the dead
        # member's session before assigning anything). The price: a static member that stops
        # for good, even cleanly, keeps its partitions until session.timeout.ms runs out.
        config["group.instance.id"] = settings.group_instance_id
    return config


class ConfluentRuntime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # The worker's retries call back between attempts so the consumer keeps its membership.
        self.worker = bootstrap(settings, runtime="confluent", on_wait=self._keep_membership)
        self.stopping = threading.Event()
        self.consumer = Consumer(
            {**consumer_config(settings), "on_commit": self._on_commit}, logger=log
        )
        self._assigned: set[tuple[str, int]] = set()
        self._committed: dict[tuple[str, int], int] = {}
        self._recommit_at: float | None = None  # a commit was refused: when to try again
        self._lag_refreshed = 0.0
        self._paused = False
        self._fatal: KafkaError | None = None

    # ------------------------------------------------------------------ rebalance callbacks
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = {(tp.topic, tp.partition) for tp in partitions}
        self._assigned |= tps
        self.worker.pipeline.assigned(tps)
        if self._paused and partitions:
            consumer.pause(partitions)
        self.worker.set_consuming(bool(self._assigned))
        log.info("assigned %s", sorted(self._assigned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = {(tp.topic, tp.partition) for tp in partitions}
        self._assigned -= tps
        # What we finished on them is the past once another member owns them: committed again
        # after they come back (a retry, the final commit on stop) it would move the group's
        # offset backwards past the other owner's progress.
        for tp in tps:
            self._committed.pop(tp, None)
        self.worker.pipeline.revoked(tps)
        self.worker.set_consuming(bool(self._assigned))
        log.info("revoked %s", [(tp.topic, tp.partition) for tp in partitions])

    def _keep_membership(self) -> None:
        """Called between retries of a batch: poll with the assignment paused so the group keeps
        us (and may rebalance us) while fetching nothing."""
        assignment = self.consumer.assignment()
        if assignment and not self._paused:
            self.consumer.pause(assignment)
            self._paused = True
        self._refresh_lag()
        msg = self.consumer.poll(0)
        if msg is not None and msg.error() is None:
            # Paused partitions deliver nothing new; anything here was already buffered and will
            # be fetched again after the batch (we never store its offset).
            self.consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))

    def _resume(self) -> None:
        if self._paused:
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.resume(assignment)
            self._paused = False

    # ------------------------------------------------------------------ main loop
    def run(self) -> int:
        self.consumer.subscribe(
            list(self.settings.source_topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        try:
            while not self.stopping.is_set():
                messages = self._next_batch()
                records = [source_record(m) for m in messages if self._usable(m)]
                if self._fatal is not None:
                    return self._give_up(self._fatal)
                self._refresh_lag()
                self._retry_refused_commit()
                exit_code = self._advance(records)
                if exit_code is not None:
                    return exit_code
            # Stopping: finish the batch being written, then commit everything finished, this
            # time waiting for the broker (earlier asynchronous commits may still be under way).
            exit_code = self._advance([])
            if exit_code is None:
                self._commit_finished()
            return exit_code or 0
        finally:
            self.consumer.close()

    def _advance(self, records: list[SourceRecord]) -> int | None:
        """Hand a batch to the pipeline (or, with none, finish the one being written) and commit
        what finished. An exit code when the worker must exit now, without committing."""
        pipeline = self.worker.pipeline
        try:
            done = pipeline.submit(records) if records else pipeline.drain()
        except Exception as exc:
            return self.worker.exit_code_for(exc)
        finally:
            self._resume()
        for result in done:
            self._commit(result)
        return None

    def _next_batch(self) -> list[Message]:
        """What is already fetched, up to a batch, without waiting; only an empty queue waits
        (up to the batch timeout) for its first record. Batches stay small and latency low at a
        light load, and grow by themselves under a backlog, where they amortise the per-batch
        round trips."""
        size = self.settings.batch_size
        messages = self.consumer.consume(size, timeout=0)
        if not messages:
            messages = self.consumer.consume(1, timeout=self.settings.batch_timeout_s)
            if messages:
                messages += self.consumer.consume(size - 1, timeout=0)
        return messages

    def _usable(self, msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return True
        if err.fatal() or err.code() == KafkaError._FATAL:  # consume() reports it as _FATAL
            self._fatal = err
        elif err.code() != KafkaError._PARTITION_EOF:
            log.warning("consume error: %s", err)
        return False

    def _give_up(self, err: KafkaError) -> int:
        """The consumer failed for good (librdkafka's fatal errors: a static member fenced by
        another process with its group instance id). It can neither fetch nor commit again, so
        finish the batch being written (its decisions and outcomes are worth keeping) and exit
        for the supervisor to restart us; the next owner re-reads what was not committed."""
        log.critical("the consumer cannot go on (%s); exiting for a restart", err)
        try:
            self.worker.pipeline.drain()
        except Exception as exc:
            log.warning("the batch in hand was not finished: %s", exc)
        return EXIT_FENCED

    def _commit(self, result: BatchResult) -> None:
        """Asynchronous: a commit lost in a crash only means a redelivery, which the decisions
        table absorbs, and waiting for the broker after every batch cost 7% of the main thread.
        Failures are logged by `_on_commit`."""
        for tp in self._commit_assigned(result.commit_offsets, asynchronous=True):
            self._committed[(tp.topic, tp.partition)] = tp.offset
        self._refresh_lag(force=True)

    def _commit_finished(self) -> None:
        """On the way out: every finished offset of a partition still ours, synchronously, so a
        clean stop leaves nothing decided uncommitted."""
        self._commit_assigned(self._committed, asynchronous=False)

    def _commit_assigned(
        self, finished: dict[tuple[str, int], int], asynchronous: bool
    ) -> list[TopicPartition]:
        """Commit the offsets of partitions still assigned; return them."""
        offsets = [
            TopicPartition(topic, partition, offset)
            for (topic, partition), offset in finished.items()
            if (topic, partition) in self._assigned
        ]
        if offsets:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=asynchronous)
            except KafkaException as exc:
                # Revoked between the check and the commit: the new owner re-reads and dedups.
                log.warning("commit of %d partition(s) failed: %s", len(offsets), exc)
        return offsets

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None:
            log.warning("offset commit failed (retried once the group settles): %s", err)
            self._recommit_at = time.monotonic() + RECOMMIT_AFTER_S

    def _retry_refused_commit(self) -> None:
        """A commit refused during a rebalance (ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS) is not
        retried by librdkafka, and on a partition that then goes quiet no later commit covers it:
        its lag would stay, and its events come back at the next restart. So the finished
        offsets of the partitions still ours are committed again a moment later."""
        if self._recommit_at is not None and time.monotonic() >= self._recommit_at:
            self._recommit_at = None
            self._commit_assigned(self._committed, asynchronous=True)

    def _refresh_lag(self, force: bool = False) -> None:
        """Lag per assigned partition (high watermark - our committed offset), at most every
        few seconds, also while a batch waits out an outage: a stalled worker shows lag growing
        instead of a frozen gauge."""
        now = time.monotonic()
        if not force and now - self._lag_refreshed < LAG_REFRESH_S:
            return
        self._lag_refreshed = now
        for topic, partition in sorted(self._assigned):
            low, high = self.consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
            if high is None or high < 0:
                continue
            done = self._committed.get((topic, partition), max(low, 0))
            self.worker.metrics.consumer_lag.labels(topic, str(partition)).set(max(0, high - done))

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT: stop fetching, finish (or give up retrying) the batch in hand."""
        log.info("signal %d: finishing the batch in hand, then stopping", signum)
        self.stopping.set()
        self.worker.stop.set()


def run(settings: Settings) -> int:
    runtime = ConfluentRuntime(settings)
    worker = runtime.worker
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, runtime.request_stop)
    worker.start_background()
    try:
        return runtime.run()
    finally:
        worker.close()

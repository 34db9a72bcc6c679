"""The consumer group's progress, sampled twice a second: its committed offset and the end offset
of every source partition. Catch-up after a fault is measured on these samples.

Catch-up, as measured here: the time from a fault until the group has committed every record
that was on the source topics when the fault struck (the end offsets taken just before it), on
every partition. A worker commits only after its Postgres commit and the broker's
acknowledgement of its outcomes, so a committed offset means decided and published. In steady
state this is one batch cycle plus the commit (well under a second for the confluent runtime,
up to faust's one-second commit interval); after a fault it adds the time the fault stalled the
partitions it touched. It needs no threshold and does not depend on the feed rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

Partition = tuple[str, int]

SAMPLE_EVERY_S = 0.5


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # monotonic
    committed: dict[Partition, int]
    ends: dict[Partition, int]

    @property
    def lag(self) -> int:
        return sum(max(0, end - max(0, self.committed.get(p, 0))) for p, end in self.ends.items())


class GroupMonitor:
    def __init__(self, bootstrap: str, group: str, topics: Iterable[str]) -> None:
        self._bootstrap = bootstrap
        self._admin = self._new_admin()
        self._group = group
        self._topics = list(topics)
        self._partitions: list[TopicPartition] = []
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-monitor", daemon=True)

    def start(self) -> GroupMonitor:
        metadata = self._admin.list_topics(timeout=10)
        self._partitions = [
            TopicPartition(topic, p)
            for topic in self._topics
            for p in sorted(metadata.topics[topic].partitions)
        ]
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    # ------------------------------------------------------------------ reading the group
    def end_offsets(self, timeout_s: float = 5.0) -> dict[Partition, int]:
        return self._retried(self._end_offsets, timeout_s)

    def committed(self, timeout_s: float = 5.0) -> dict[Partition, int]:
        return self._retried(self._committed, timeout_s)

    def _new_admin(self) -> AdminClient:
        # log_level 2: the outages are the campaign's own, no connection errors on the terminal.
        return AdminClient({"bootstrap.servers": self._bootstrap, "log_level": 2})

    def _retried(
        self, read: Callable[[float], dict[Partition, int]], timeout_s: float
    ) -> dict[Partition, int]:
        """Retried until `timeout_s` with a new client each time: after a broker restart the
        admin client keeps failing on the leader epochs it cached (FENCED_LEADER_EPOCH)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return read(max(1.0, min(5.0, deadline - time.monotonic())))
            except (KafkaException, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                self._admin = self._new_admin()
                time.sleep(0.2)

    def _end_offsets(self, timeout_s: float) -> dict[Partition, int]:
        futures = self._admin.list_offsets(
            {
                TopicPartition(tp.topic, tp.partition): OffsetSpec.latest()
                for tp in self._partitions
            },
            request_timeout=timeout_s,
        )
        # With a timeout: after a broker restart a future can stay pending for good.
        return {
            (tp.topic, tp.partition): f.result(timeout=timeout_s + 1).offset
            for tp, f in futures.items()
        }

    def _committed(self, timeout_s: float) -> dict[Partition, int]:
        request = ConsumerGroupTopicPartitions(
            self._group, [TopicPartition(tp.topic, tp.partition) for tp in self._partitions]
        )
        (future,) = self._admin.list_consumer_group_offsets(
            [request], request_timeout=timeout_s
        ).values()
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in future.result(timeout=timeout_s + 1).topic_partitions
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                ends = self._end_offsets(2.0)
                committed = self._committed(2.0)
            except Exception:  # the broker is down or busy: no sample this time
                self._admin = self._new_admin()
            else:
                self.samples.append(Sample(time.monotonic(), committed, ends))
            self._stop.wait(max(0.0, SAMPLE_EVERY_S - (time.monotonic() - started)))

    # ------------------------------------------------------------------ catch-up
    def caught_up_at(self, since: float, ends: dict[Partition, int]) -> float | None:
        """The first sample after `since` whose committed offsets reach `ends` everywhere."""
        for sample in list(self.samples):
            if sample.at >= since and all(
                sample.committed.get(p, -1) >= end for p, end in ends.items() if end > 0
            ):
                return sample.at
        return None

    def wait_caught_up(self, ends: dict[Partition, int], since: float, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.caught_up_at(since, ends) is not None:
                return True
            time.sleep(SAMPLE_EVERY_S)
        return False

    def regressions(self) -> list[str]:
        """Committed offsets that went backwards between two samples: a commit by a member that
        no longer owned the partition (or one that had not seen its new owner's progress)."""
        found = []
        last: dict[Partition, int] = {}
        for sample in self.samples:
            for partition, offset in sample.committed.items():
                before = last.get(partition, -1)
                if 0 <= offset < before:
                    found.append(f"{partition[0]}[{partition[1]}]: {before} -> {offset}")
                last[partition] = max(before, offset)
        return found

    def latest_lag(self) -> int | None:
        return self.samples[-1].lag if self.samples else None

"""The confluent runtime's offset commits around rebalances, on a fake consumer (no broker): a
commit the broker refused during a rebalance is made again a moment later, and the finished
offsets of a revoked partition are never committed again, even after it comes back (a chaos
run found both: a partition gone quiet kept its lag, and a late commit could move the group's
offset back past another owner's progress)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from order_recovery.core.batch import BatchResult
from order_recovery.runtimes import confluent
from order_recovery.runtimes.confluent import ConfluentRuntime

TOPIC = "orders.payment-timeout"


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[tuple[dict[tuple[str, int], int], bool]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append(({(tp.topic, tp.partition): tp.offset for tp in offsets}, asynchronous))

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        return 0, 100


class FakeGauge:
    def labels(self, *_: str) -> FakeGauge:
        return self

    def set(self, _: float) -> None:
        pass


class FakeWorker:
    def __init__(self) -> None:
        self.pipeline = self
        self.metrics = self
        self.consumer_lag = FakeGauge()

    def assigned(self, _: Any) -> None:
        pass

    def revoked(self, _: Any) -> None:
        pass

    def set_consuming(self, _: bool) -> None:
        pass


@pytest.fixture
def runtime() -> ConfluentRuntime:
    """The runtime's commit bookkeeping, without a broker or a database behind it."""
    rt = ConfluentRuntime.__new__(ConfluentRuntime)
    rt.consumer = FakeConsumer()  # type: ignore[assignment]
    rt.worker = FakeWorker()  # type: ignore[assignment]
    rt._assigned = set()
    rt._committed = {}
    rt._recommit_at = None
    rt._lag_refreshed = 0.0
    rt._paused = False
    return rt


def tps(*partitions: int) -> list[TopicPartition]:
    return [TopicPartition(TOPIC, p) for p in partitions]


def finished(rt: ConfluentRuntime, **offsets: int) -> None:
    """A batch whose results are in: its offsets committed (asynchronously)."""
    commit = {(TOPIC, int(p[1:])): o for p, o in offsets.items()}
    rt._commit(
        BatchResult(records=1, decided=1, duplicates=0, dead_letters=(), commit_offsets=commit)
    )


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The runtime's monotonic clock, moved by the test (`clock[0] += seconds`)."""
    now = [1000.0]
    monkeypatch.setattr(confluent.time, "monotonic", lambda: now[0])
    return now


def assign(rt: ConfluentRuntime, *partitions: int) -> None:
    rt._on_assign(rt.consumer, tps(*partitions))  # type: ignore[arg-type]


def refused(rt: ConfluentRuntime, code: int) -> None:
    """Partitions 0 and 1 assigned, a batch finished at 10 and 20, its commit refused."""
    assign(rt, 0, 1)
    finished(rt, p0=10, p1=20)
    rt._on_commit(KafkaError(code), tps(0, 1))


def commits(rt: ConfluentRuntime) -> list[dict[tuple[str, int], int]]:
    return [c for c, _ in rt.consumer.commits]  # type: ignore[attr-defined]


def test_a_refused_commit_is_made_again_a_moment_later(
    runtime: ConfluentRuntime, clock: list[float]
) -> None:
    refused(runtime, KafkaError.REBALANCE_IN_PROGRESS)

    runtime._retry_refused_commit()
    assert len(commits(runtime)) == 1, "not before RECOMMIT_AFTER_S"

    clock[0] += confluent.RECOMMIT_AFTER_S
    runtime._retry_refused_commit()
    assert commits(runtime)[-1] == {(TOPIC, 0): 10, (TOPIC, 1): 20}

    clock[0] += 10 * confluent.RECOMMIT_AFTER_S
    runtime._retry_refused_commit()
    assert len(commits(runtime)) == 2, "once per refusal"


def test_a_commit_that_succeeds_is_not_made_again(
    runtime: ConfluentRuntime, clock: list[float]
) -> None:
    assign(runtime, 0)
    finished(runtime, p0=10)
    runtime._on_commit(None, tps(0))
    clock[0] += 60
    runtime._retry_refused_commit()
    assert commits(runtime) == [{(TOPIC, 0): 10}]


def test_a_revoked_partitions_offsets_are_never_committed_again(
    runtime: ConfluentRuntime, clock: list[float]
) -> None:
    refused(runtime, KafkaError.ILLEGAL_GENERATION)
    runtime._on_revoke(runtime.consumer, tps(1))  # type: ignore[arg-type]
    # Partition 1 went to another member, which moved on to offset 50, and came back to us.
    assign(runtime, 1)

    clock[0] += confluent.RECOMMIT_AFTER_S
    runtime._retry_refused_commit()
    assert commits(runtime)[-1] == {(TOPIC, 0): 10}, (
        "20 would undo the other owner's progress to 50"
    )

    runtime._commit_finished()  # the final, synchronous commit on stop
    assert commits(runtime)[-1] == {(TOPIC, 0): 10}
    assert runtime.consumer.commits[-1][1] is False  # type: ignore[attr-defined]


def test_only_partitions_still_assigned_are_committed(runtime: ConfluentRuntime) -> None:
    assign(runtime, 0, 1)
    runtime._on_revoke(runtime.consumer, tps(1))  # type: ignore[arg-type]
    finished(runtime, p0=10, p1=20)  # a batch read before the revoke, finished after it
    assert commits(runtime) == [{(TOPIC, 0): 10}]

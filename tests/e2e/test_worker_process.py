"""The worker as a process against the real broker and database: what an operator would see.

Every test feeds events, waits for the decisions to land, and checks exactly-once effects in
Postgres and on the outcomes topic. The reference for "what should have been decided" is computed
here with the pure rules over the same events, in per-order order (the order Kafka guarantees).
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from order_recovery.bootstrap import EXIT_FENCED
from order_recovery.config import Settings
from order_recovery.domain.policy import load_policies
from order_recovery.domain.sample import sample_events
from tests.chaos.feed import FeedProducer, plain_feed
from tests.chaos.monitor import GroupMonitor
from tests.support.commit_order import assert_decided_like_the_rules_in_commit_order
from tests.support.kafka_io import (
    committed_offsets,
    produce_events,
    produce_in_transaction,
    produce_raw,
    read_topic,
    wait_until,
)
from tests.support.reference import expected_decisions
from tests.support.worker_process import WorkerProcess, alive
from tests.unit.domain.factories import H, logistics_exception, shipping_delay

ROOT = Path(__file__).resolve().parents[2]


def feed(count: int, seed: int) -> list[dict[str, Any]]:
    """Sample events with one buyer per order, so no decision depends on the interleaving of
    partitions (a buyer's refunds across orders are covered by the unit tests)."""
    events = sample_events(count, seed=seed)
    for event in events:
        event["buyer_id"] = f"buyer-of-{event['order_id']}"
    return events


def db_rows(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    """What the test checks, read as the reports role (the worker may not read everything)."""
    with psycopg.connect(settings.database_reader_url) as conn:
        return conn.execute(sql).fetchall()


def decision_count(settings: Settings) -> int:
    return int(db_rows(settings, "SELECT count(*) FROM decisions")[0][0])


def published_outcomes(settings: Settings, want: set[str]) -> list[dict[str, Any]]:
    """The outcomes topic once it holds an outcome for every wanted event: the worker publishes
    a batch just after its Postgres commit, so the decisions can be visible a moment before."""
    outcomes: list[dict[str, Any]] = []

    def complete() -> bool:
        nonlocal outcomes
        records = read_topic(settings.kafka_bootstrap_servers, settings.outcome_topic)
        outcomes = [orjson.loads(m.value()) for m in records]
        return want <= {o["source_event_id"] for o in outcomes}

    wait_until(complete, 60, "an outcome on the topic for every decision")
    return outcomes


def assert_exactly_once(
    settings: Settings, events: list[dict[str, Any]], resent_after_kill: bool = False
) -> None:
    """Postgres holds each decision once. The topic holds each outcome once, except after a
    SIGKILL: a batch committed but not yet marked published is sent again by the next worker,
    and then only as the same outcome (same id, same bytes) that consumers dedupe on."""
    expected = expected_decisions(events)
    rows = db_rows(
        settings,
        "SELECT event_id::text, outcome, rule_ids FROM decisions",
    )
    assert len(rows) == len(expected)
    by_id = {r[0]: r for r in rows}
    for event_id, decision in expected.items():
        _, outcome, rule_ids = by_id[event_id]
        assert (outcome, tuple(rule_ids)) == (str(decision.outcome), decision.rule_ids), event_id
    comp = db_rows(
        settings,
        "SELECT kind, count(*), sum(amount_fen) FROM compensations GROUP BY kind",
    )
    want: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for decision in expected.values():
        if decision.compensation is not None:
            want[str(decision.compensation.kind)][0] += 1
            want[str(decision.compensation.kind)][1] += decision.compensation.amount_fen
    assert {k: [n, s] for k, n, s in comp} == dict(want)
    outcomes = published_outcomes(settings, set(expected))
    source_ids = [o["source_event_id"] for o in outcomes]
    if not resent_after_kill:
        assert Counter(source_ids) == Counter(set(expected)), "one outcome per decided event"
        return
    assert set(source_ids) == set(expected)
    copies: dict[str, set[bytes]] = defaultdict(set)
    for o in outcomes:
        copies[o["source_event_id"]].add(orjson.dumps(o, option=orjson.OPT_SORT_KEYS))
    assert all(len(c) == 1 for c in copies.values()), "a resent outcome differs from the first"
    # In flight at a kill: the batch being published, the outbox batches being marked and those
    # queued behind them, all batches of 50 here. An unmarked outbox would resend all >300 decided.
    resent = len(source_ids) - len(expected)
    assert resent <= 4 * 50, f"{resent} outcomes resent: more than the batches in flight"


class Workers:
    """The worker processes of one test, all on the runtime the test is parametrised with."""

    def __init__(self, settings: Settings, log_dir: Path, runtime: str) -> None:
        self.settings, self.log_dir, self.runtime = settings, log_dir, runtime
        self.started: list[WorkerProcess] = []

    def start(self, name: str = "worker", **env: str) -> WorkerProcess:
        worker = WorkerProcess(
            self.settings, self.log_dir, name=name, runtime=self.runtime, extra_env=env
        ).start()
        self.started.append(worker)
        return worker.wait_ready()


def _worker_group(settings: Settings, log_dir: Path, runtime: str) -> Iterator[Workers]:
    group = Workers(settings, log_dir, runtime)
    yield group
    for worker in group.started:
        worker.stop()


@pytest.fixture(params=["faust", "confluent"])
def workers(
    request: pytest.FixtureRequest, settings: Settings, tmp_path: Path
) -> Iterator[Workers]:
    yield from _worker_group(settings, tmp_path, request.param)


def test_mixed_feed_is_decided_exactly_once_and_measured(
    settings: Settings, workers: Workers
) -> None:
    events = feed(3000, seed=11)
    worker = workers.start()
    # Producers upstream compress; both runtimes must read every codec librdkafka writes.
    produce_events(settings, events[:1000], compression="lz4")
    produce_events(settings, events[1000:2000], compression="zstd")
    produce_events(settings, events[2000:], compression="snappy")
    unique = len({e["event_id"] for e in events})
    wait_until(lambda: decision_count(settings) == unique, 120, "all decisions")
    assert_exactly_once(settings, events)

    expected = expected_decisions(events)
    wait_until(
        lambda: worker.metric("order_recovery_events_decided_total") == len(expected),
        10,
        "metrics to catch up",
    )
    assert worker.metric("order_recovery_events_consumed_total") == len(events)
    assert worker.metric("order_recovery_duplicate_events_total") == len(events) - unique
    for outcome in {str(d.outcome) for d in expected.values()}:
        assert worker.metric("order_recovery_events_decided_total", outcome=outcome) == sum(
            1 for d in expected.values() if str(d.outcome) == outcome
        )
    coupons = sum(
        d.compensation.amount_fen
        for d in expected.values()
        if d.compensation is not None and str(d.compensation.kind) == "coupon"
    )
    assert worker.metric("order_recovery_compensation_fen_total", kind="coupon") == coupons
    fired = Counter(r for d in expected.values() for r in d.rule_ids)
    for rule_id, n in fired.items():
        assert worker.metric("order_recovery_rules_fired_total", rule_id=rule_id) == n
    assert worker.metric("order_recovery_ready") == 1
    assert worker.get("/healthz")[0] == 200
    assert "order_recovery_batch_duration_seconds_bucket" in worker.metrics()
    assert "order_recovery_consumer_lag" in worker.metrics()


def test_redelivery_and_a_full_reconsume_change_nothing(
    settings: Settings, workers: Workers
) -> None:
    events = feed(500, seed=5)
    worker = workers.start()
    produce_events(settings, events)
    unique = len({e["event_id"] for e in events})
    wait_until(lambda: decision_count(settings) == unique, 60, "decisions")
    produce_events(settings, events[:50])  # the same event ids again
    wait_until(
        lambda: worker.metric("order_recovery_events_consumed_total") == len(events) + 50,
        60,
        "redelivered events consumed",
    )
    worker.stop()
    before = db_rows(settings, "SELECT count(*), sum(amount_fen) FROM compensations")

    # A new consumer group re-reads every topic from offset 0.
    again = workers.start(
        name="reader-2",
        ORDER_RECOVERY_CONSUMER_GROUP=f"{settings.consumer_group}-again",
    )
    wait_until(
        lambda: again.metric("order_recovery_events_consumed_total") == len(events) + 50,
        60,
        "full re-consume",
    )
    assert again.metric("order_recovery_events_decided_total") == 0
    assert decision_count(settings) == unique
    assert db_rows(settings, "SELECT count(*), sum(amount_fen) FROM compensations") == before
    assert_exactly_once(settings, events)


def test_poison_is_dead_lettered_and_its_neighbours_decided(
    settings: Settings, workers: Workers
) -> None:
    events = feed(200, seed=8)
    workers.start()
    topic = settings.source_topic("shipping-delay")
    produce_events(settings, events[:100])
    produce_raw(settings, topic, b"bad-1", b"{not json")
    produce_raw(settings, topic, b"bad-2", orjson.dumps({"event_type": "shipping-delay"}))
    unknown = dict(events[0], platform="jingdong")
    unknown["event_id"] = "00000000-0000-4000-8000-00000000beef"
    produce_raw(
        settings, settings.source_topic(unknown["event_type"]), b"bad-3", orjson.dumps(unknown)
    )
    produce_events(settings, events[100:])
    unique = len({e["event_id"] for e in events})
    wait_until(lambda: decision_count(settings) == unique, 60, "decisions")
    assert_exactly_once(settings, events)
    letters = [
        m
        for t in settings.source_topics
        for m in read_topic(settings.kafka_bootstrap_servers, settings.dlq_topic(t))
    ]
    classes = {m.key(): dict(m.headers())["dlq.error.class"] for m in letters}
    assert classes == {
        b"bad-1": b"malformed_json",
        b"bad-2": b"schema_violation",
        b"bad-3": b"unknown_platform",
    }


def test_records_of_an_aborted_transaction_are_never_decided(
    settings: Settings, workers: Workers
) -> None:
    """An interrupted `dlq replay` (or any transactional producer that aborts) leaves its records
    in the log with an abort marker after them: a consumer reading uncommitted data decides them
    anyway. aiokafka reads uncommitted by default, librdkafka reads committed."""
    events = list({e["event_id"]: e for e in feed(500, seed=99)}.values())
    aborted, committed = events[:200], events[200:]
    workers.start()
    transactional_id = f"{settings.topic_prefix}aborting-producer"
    produce_in_transaction(settings, aborted, commit=False, transactional_id=transactional_id)
    produce_in_transaction(settings, committed, commit=True, transactional_id=transactional_id)
    want = {e["event_id"] for e in committed}

    def decided() -> set[str]:
        rows = db_rows(settings, "SELECT event_id::text FROM decisions")
        return {r[0] for r in rows}

    # The aborted records come first in every partition: once the committed ones are decided,
    # the aborted ones have been read (and skipped, or not).
    wait_until(lambda: want <= decided(), 60, "the committed events' decisions")
    leaked = decided() & {e["event_id"] for e in aborted}
    assert not leaked, f"{len(leaked)} event(s) of the aborted transaction decided"
    assert_exactly_once(settings, committed)


@contextmanager
def postgres_down() -> Iterator[None]:
    """Postgres stopped for the body, started again however the body ends."""
    stack = str(ROOT / "deploy/local/stack.sh")
    subprocess.run([stack, "down", "postgres"], check=True)
    try:
        yield
    finally:
        subprocess.run([stack, "up", "postgres"], check=True)


def test_postgres_outage_loses_nothing_and_dead_letters_nothing(
    settings: Settings, workers: Workers
) -> None:
    events = feed(1500, seed=21)
    worker = workers.start()
    produce_events(settings, events[:500])
    wait_until(lambda: decision_count(settings) > 0, 60, "first decisions")
    with postgres_down():
        produce_events(settings, events[500:])
        time.sleep(10)
        assert worker.get("/readyz")[0] == 503
        assert worker.metric("order_recovery_retries_total") > 0
        assert worker.metric("order_recovery_consumer_lag") > 0, "a stall must show as lag"
    unique = len({e["event_id"] for e in events})
    wait_until(lambda: decision_count(settings) == unique, 120, "all decisions")
    assert_exactly_once(settings, events)
    assert worker.metric("order_recovery_dead_lettered_total") == 0
    assert worker.metric("order_recovery_retries_total", cause="pg_unavailable") > 0
    wait_until(lambda: worker.get("/readyz")[0] == 200, 30, "ready again")


def test_sigkill_mid_feed_then_restart_decides_everything_once(
    settings: Settings, workers: Workers
) -> None:
    events = feed(20000, seed=33)
    unique = len({e["event_id"] for e in events})
    worker = workers.start(ORDER_RECOVERY_BATCH_SIZE="50")
    produce_events(settings, events)
    wait_until(lambda: decision_count(settings) > 300, 60, "some decisions")
    helpers = worker.children()
    assert helpers or worker.runtime == "confluent", "the faust runtime runs its pipeline apart"
    worker.signal(signal.SIGKILL)
    worker.wait_exit(10)
    # A process the worker started (faust's pipeline) must not outlive it: it would go on
    # holding the metrics port and a batch nobody will acknowledge.
    wait_until(lambda: not any(map(alive, helpers)), 10, "the killed worker's processes to end")
    at_kill = decision_count(settings)
    assert at_kill < unique, "the kill came too late to interrupt anything"
    workers.start(name="worker-restarted")
    wait_until(lambda: decision_count(settings) == unique, 180, "all decisions")
    assert_exactly_once(settings, events, resent_after_kill=True)


def test_a_static_member_restarted_at_once_takes_its_partitions_back_without_waiting(
    settings: Settings, workers: Workers
) -> None:
    """A killed dynamic member stays in the group until its session times out, and its
    replacement joins as a stranger: nothing of the dead member's partitions moves for the whole
    session timeout (10 s) plus a rebalance. With a group instance id the replacement is
    recognised and gets the same partitions at once: catch-up is its start-up time."""
    events = feed(2000, seed=88)
    for name in ("w1", "w2"):
        workers.start(name, ORDER_RECOVERY_GROUP_INSTANCE_ID=name)
    monitor = GroupMonitor(
        settings.kafka_bootstrap_servers, settings.consumer_group, settings.source_topics
    ).start()
    producer = FeedProducer(settings, plain_feed(events), rate=100).start()
    try:
        wait_until(lambda: decision_count(settings) > 300, 60, "steady state")
        killed_at = time.monotonic()
        victim = workers.started[1]
        victim.signal(signal.SIGKILL)
        victim.wait_exit(10)
        time.sleep(1)
        workers.start("w2", ORDER_RECOVERY_GROUP_INSTANCE_ID="w2")
        restarted, ends = time.monotonic(), monitor.end_offsets()
        assert monitor.wait_caught_up(ends, restarted, 60), "never caught up after the kill"
        caught_up = (monitor.caught_up_at(restarted, ends) or 0) - killed_at
    finally:
        producer.join(60)
        monitor.stop()
    unique = len({e["event_id"] for e in events})
    wait_until(lambda: decision_count(settings) == unique, 120, "all decisions")
    assert_exactly_once(settings, events, resent_after_kill=True)
    assert caught_up < 8, f"{caught_up:.1f} s to catch up after a kill and an immediate restart"


def test_a_member_fenced_by_its_own_instance_id_exits_for_a_restart(
    settings: Settings, confluent_workers: Workers
) -> None:
    """A static member can be fenced: a second process started with its instance id (a
    misconfigured deployment), or the coordinator handing its id to its own rejoin after a
    broker restart (seen in the fault campaign). librdkafka's consumer is then unusable for
    good; the worker must exit, not go on polling a dead consumer while its partitions stall.
    (aiokafka never fences: it answers a taken id by rejoining and taking it back.)"""
    workers = confluent_workers
    events = feed(600, seed=12)
    first = workers.start("first", ORDER_RECOVERY_GROUP_INSTANCE_ID="replica-0")
    produce_events(settings, events[:300])
    wait_until(lambda: decision_count(settings) > 0, 60, "first decisions")
    second = workers.start("second", ORDER_RECOVERY_GROUP_INSTANCE_ID="replica-0")
    assert first.wait_exit(60) == EXIT_FENCED, first.log()[-3000:]
    produce_events(settings, events[300:])
    unique = len({e["event_id"] for e in events})
    wait_until(lambda: decision_count(settings) == unique, 120, "all decisions")
    assert_exactly_once(settings, events, resent_after_kill=True)
    assert second.metric("order_recovery_ready") == 1


def test_two_workers_split_partitions_and_decide_each_event_once(
    settings: Settings, workers: Workers
) -> None:
    events = feed(3000, seed=44)
    first = workers.start(name="w1")
    second = workers.start(name="w2")
    time.sleep(3)  # let the group settle with both members
    produce_events(settings, events)
    unique = len({e["event_id"] for e in events})
    wait_until(lambda: decision_count(settings) == unique, 120, "all decisions")
    assert_exactly_once(settings, events)
    consumed = [w.metric("order_recovery_events_consumed_total") for w in (first, second)]
    assert all(n > 0 for n in consumed), f"partitions not split: {consumed}"
    assert sum(consumed) == len(events)


def refunds_on_two_topics(buyers: int) -> list[dict[str, Any]]:
    """Each buyer gets 4 fresh-goods shipping delays and 4 pinduoduo logistics exceptions
    (refund first) on 8 orders the same day: 8 refunds due, on 6 partitions of two topics."""
    fresh = shipping_delay("douyin", category="fresh", paid_ago=3 * H)
    lost = logistics_exception("pinduoduo")
    events = []
    for b in range(buyers):
        for i, doc in enumerate([fresh] * 4 + [lost] * 4):
            n = f"{b}-{i}"
            events.append(
                {
                    **doc,
                    "event_id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"two-topic-refunds/{n}")),
                    "order_id": f"ord-refund-{n}",
                    "buyer_id": f"buyer-{b}",
                }
            )
    return events


def test_two_workers_hold_a_buyers_refunds_to_the_cap_across_topics(
    settings: Settings, workers: Workers
) -> None:
    """Both workers decide one buyer's refunds at once in steady state (events are keyed by
    order): each must see the other's, so every buyer gets exactly the cap, no more."""
    events = refunds_on_two_topics(40)
    first = workers.start(name="w1")
    second = workers.start(name="w2")
    time.sleep(3)  # let the group settle with both members
    produce_events(settings, events)
    wait_until(lambda: decision_count(settings) == len(events), 120, "all decisions")
    cap = load_policies()["douyin"].risk.max_buyer_refunds_per_day
    per_buyer = db_rows(
        settings,
        "SELECT buyer_id, count(*) FROM compensations WHERE kind = 'refund' GROUP BY buyer_id",
    )
    assert sorted(n for _, n in per_buyer) == [cap] * 40
    outcomes = published_outcomes(settings, {e["event_id"] for e in events})
    buyer_of = {e["event_id"]: e["buyer_id"] for e in events}
    refunded = Counter(
        buyer_of[o["source_event_id"]]
        for o in outcomes
        if o["decision"]["compensation"] is not None
    )
    assert sorted(refunded.values()) == [cap] * 40, "an outcome grants more than the cap"
    assert_decided_like_the_rules_in_commit_order(settings.database_reader_url)
    consumed = [w.metric("order_recovery_events_consumed_total") for w in (first, second)]
    assert all(n > 0 for n in consumed), f"partitions not split: {consumed}"


def test_sigterm_exits_within_10s_with_its_batch_committed(
    settings: Settings, workers: Workers
) -> None:
    events = list({e["event_id"]: e for e in feed(20000, seed=55)}.values())  # no duplicates
    worker = workers.start(ORDER_RECOVERY_BATCH_SIZE="50")
    produce_events(settings, events)
    wait_until(lambda: decision_count(settings) > 200, 60, "some decisions")
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(10) == 0, worker.log()
    assert time.monotonic() - started < 10
    decided = decision_count(settings)
    assert decided < len(events), "SIGTERM came too late to find a batch in hand"
    committed = committed_offsets(
        settings.kafka_bootstrap_servers, settings.consumer_group, settings.source_topics
    )
    # Every decided event's offset is committed, and no offset past an undecided one.
    assert sum(max(0, o) for o in committed.values()) == decided, worker.log()[-4000:]
    # ... and nothing decided is left uncommitted: a restart decides the rest, redoing nothing.
    restarted = workers.start(name="after-term")
    wait_until(lambda: decision_count(settings) == len(events), 120, "the rest")
    assert restarted.metric("order_recovery_duplicate_events_total") == 0
    assert_exactly_once(settings, events)


def test_a_bug_outside_any_event_stops_the_worker_without_skipping_the_batch(
    settings: Settings, workers: Workers
) -> None:
    """faust#315/#175 and librdkafka's early offset store: a failure that is no single event's
    fault must neither be skipped on restart nor stop consumption silently."""
    events = list({e["event_id"]: e for e in feed(300, seed=66)}.values())
    victim = events[150]
    with psycopg.connect(settings.database_owner_url, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE decisions ADD CONSTRAINT simulated_bug CHECK (order_id <> %s)".replace(
                "%s", "'" + victim["order_id"] + "'"
            )
        )
    worker = workers.start()
    produce_events(settings, events)
    assert worker.wait_exit(60) == 70, worker.log()
    assert not db_rows(
        settings,
        f"SELECT 1 FROM decisions WHERE order_id = '{victim['order_id']}'",
    )
    with psycopg.connect(settings.database_owner_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE decisions DROP CONSTRAINT simulated_bug")
    workers.start(name="after-fix")
    wait_until(lambda: decision_count(settings) == len(events), 60, "all decisions")
    assert_exactly_once(settings, events)


@pytest.fixture
def confluent_workers(settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    yield from _worker_group(settings, tmp_path, "confluent")


def test_an_outage_longer_than_the_poll_interval_keeps_the_group(
    settings: Settings, confluent_workers: Workers
) -> None:
    """librdkafka drops a consumer that does not poll within max.poll.interval.ms; a batch that
    waits out an outage must keep polling (paused) so it stays in the group and loses nothing.
    (The setting is the confluent runtime's; faust's fetcher polls apart from the agent.)"""
    workers = confluent_workers
    events = feed(600, seed=77)
    worker = workers.start(ORDER_RECOVERY_MAX_POLL_INTERVAL_MS="10000")
    produce_events(settings, events[:100])
    wait_until(lambda: decision_count(settings) > 0, 60, "first decisions")
    with postgres_down():
        produce_events(settings, events[100:])
        time.sleep(16)
    unique = len({e["event_id"] for e in events})
    wait_until(lambda: decision_count(settings) == unique, 120, "all decisions")
    assert_exactly_once(settings, events)
    log = worker.log()
    assert "MAXPOLL" not in log and "maximum poll interval" not in log.lower(), log[-3000:]
    assert "revoked" not in log, "the outage cost the worker its partitions"

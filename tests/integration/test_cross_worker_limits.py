"""Limits that span workers, against the real Postgres and Kafka: two pipelines (two workers) read
their histories at the same moment, so each misses the other's batch, and then write one after
the other. Whatever each read, what is stored and published must be what the rules decide for the
events in commit order, and no money limit may be exceeded.

Kafka keys events by order, so one buyer's refunds arrive on several partitions and topics, and are
decided by several workers at once in steady state; one order's events on two topics, or on one
partition moving between workers in a rebalance, likewise."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import psycopg

from order_recovery.adapters.postgres.store import PostgresStore
from order_recovery.config import Settings
from order_recovery.core.batch import BatchResult
from order_recovery.core.records import SourceRecord
from order_recovery.domain.policy import load_policies
from tests.support.commit_order import assert_decided_like_the_rules_in_commit_order
from tests.support.kafka_io import read_topic
from tests.support.pipelines import PipelineBuilder
from tests.support.racing import RacingStore
from tests.unit.domain.factories import H, logistics_exception, payment_timeout, shipping_delay

CAP = load_policies()["douyin"].risk.max_buyer_refunds_per_day


def event(doc: dict[str, Any], n: str, **over: Any) -> dict[str, Any]:
    """A factory event with its own id and order (and buyer, when given)."""
    event_id = str(uuid.uuid5(uuid.NAMESPACE_OID, f"cross-worker-limits/{n}"))
    return {**doc, "event_id": event_id, "order_id": f"ord-{n}", **over}


def records(settings: Settings, events: list[dict[str, Any]], partition: int) -> list[SourceRecord]:
    return [
        SourceRecord(
            settings.source_topic(e["event_type"]),
            partition,
            offset,
            e["order_id"].encode(),
            orjson.dumps(e),
        )
        for offset, e in enumerate(events)
    ]


def race(
    settings: Settings,
    build: PipelineBuilder,
    first: list[SourceRecord],
    second: list[SourceRecord],
) -> tuple[BatchResult, BatchResult, RacingStore]:
    """Both read before either writes; the first writes first, the second only after it."""
    barrier, first_done = threading.Barrier(2), threading.Event()
    one = build(RacingStore(PostgresStore(settings.database_url), barrier))  # type: ignore[arg-type]
    second_store = RacingStore(PostgresStore(settings.database_url), barrier, first_done)
    two = build(second_store)  # type: ignore[arg-type]

    def run_first() -> BatchResult:
        try:
            return one.process(first)
        finally:
            first_done.set()

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.submit(run_first), pool.submit(two.process, second)
        return a.result(30), b.result(30), second_store


def outcomes(settings: Settings) -> list[dict[str, Any]]:
    messages = read_topic(settings.kafka_bootstrap_servers, settings.outcome_topic)
    return [orjson.loads(m.value()) for m in messages]


def compensations(dsn: str, where: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT order_id, kind FROM compensations WHERE {where}").fetchall()


def test_one_buyers_refunds_on_two_topics_stop_at_the_cap(
    settings: Settings, build: PipelineBuilder
) -> None:
    """Fresh-goods shipping delays on one worker, pinduoduo refund-first logistics exceptions on
    the other, all the same buyer's on the same day: one refund per event would be 8."""
    buyer = {"buyer_id": "buyer-racing"}
    fresh = shipping_delay("douyin", category="fresh", paid_ago=3 * H)
    lost = logistics_exception("pinduoduo")
    shipping = [event(fresh, f"s{i}", **buyer) for i in range(4)]
    logistics = [event(lost, f"l{i}", **buyer) for i in range(4)]
    first, second, store = race(
        settings, build, records(settings, shipping, 0), records(settings, logistics, 0)
    )
    assert (first.decided, second.decided) == (4, 4)
    refunds = compensations(settings.database_reader_url, "buyer_id = 'buyer-racing'")
    assert len(refunds) == CAP and {kind for _, kind in refunds} == {"refund"}
    published = [o for o in outcomes(settings) if o["decision"]["compensation"] is not None]
    assert len(published) == CAP
    intercepted = [o for o in outcomes(settings) if "refund_abuse" in o["decision"]["risk_flags"]]
    assert len(intercepted) == 8 - CAP
    assert store.reads == 2, "the second worker's stale batch was written as it was"
    assert_decided_like_the_rules_in_commit_order(settings.database_reader_url)


def test_a_second_coupon_decided_by_another_worker_is_refused(
    settings: Settings, build: PipelineBuilder
) -> None:
    """Two delays of one order, decided by two workers at once (a partition moving between them,
    or a producer keying by something else): one coupon, whatever each read."""
    delay = shipping_delay("taobao")
    _, _, store = race(
        settings,
        build,
        records(settings, [event(delay, "c1", order_id="ord-coupon")], 0),
        records(settings, [event(delay, "c2", order_id="ord-coupon")], 1),
    )
    assert compensations(settings.database_reader_url, "order_id = 'ord-coupon'") == [
        ("ord-coupon", "coupon")
    ]
    coupons = Counter(
        o["decision"]["compensation"]["kind"]
        for o in outcomes(settings)
        if o["decision"]["compensation"] is not None
    )
    assert coupons == Counter({"coupon": 1})
    assert store.reads == 2
    assert_decided_like_the_rules_in_commit_order(settings.database_reader_url)


def test_money_is_refused_once_another_worker_froze_the_order(
    settings: Settings, build: PipelineBuilder
) -> None:
    """Three payment attempts are on record; the fourth (frozen) and a shipping delay's coupon
    of the same order are decided at once on two topics."""
    attempt = {"order_id": "ord-frozen"}
    earlier = [event(payment_timeout("douyin", attempts=i), f"p{i}", **attempt) for i in (1, 2, 3)]
    plain = build(PostgresStore(settings.database_url))
    assert plain.process(records(settings, earlier, 2)).decided == 3
    fourth = event(payment_timeout("douyin", attempts=4), "p4", **attempt)
    coupon = event(shipping_delay("douyin"), "s-frozen", **attempt)
    _, _, store = race(
        settings, build, records(settings, [fourth], 2), records(settings, [coupon], 0)
    )
    assert compensations(settings.database_reader_url, "order_id = 'ord-frozen'") == []
    (decided,) = [o for o in outcomes(settings) if o["source_event_id"] == coupon["event_id"]]
    assert "risk.payment_attempts_freeze" in decided["decision"]["rule_ids"]
    assert store.reads == 2
    assert_decided_like_the_rules_in_commit_order(settings.database_reader_url)


def test_money_is_refused_once_another_worker_revoked_the_order(
    settings: Settings, build: PipelineBuilder
) -> None:
    """Forged tracking (the right to recovery revoked) and a shipping delay's coupon of the same
    order, decided at once on two topics."""
    forged = event(logistics_exception("douyin", forged=True), "f1", order_id="ord-forged")
    coupon = event(shipping_delay("douyin"), "s-forged", order_id="ord-forged")
    race(settings, build, records(settings, [forged], 0), records(settings, [coupon], 0))
    assert compensations(settings.database_reader_url, "order_id = 'ord-forged'") == []
    assert_decided_like_the_rules_in_commit_order(settings.database_reader_url)


def test_a_worker_on_a_fresh_counter_is_not_held_up(
    settings: Settings, build: PipelineBuilder
) -> None:
    """Two buyers' refunds raced: nothing depends on the other worker, nothing is decided twice."""
    fresh = shipping_delay("douyin", category="fresh", paid_ago=3 * H)
    mine = [event(fresh, f"a{i}", buyer_id="buyer-a") for i in range(3)]
    theirs = [event(fresh, f"b{i}", buyer_id="buyer-b") for i in range(3)]
    _, _, store = race(settings, build, records(settings, mine, 0), records(settings, theirs, 1))
    assert store.reads == 1, "a batch relying on nothing the other wrote was decided again"
    assert len(compensations(settings.database_reader_url, "kind = 'refund'")) == 6

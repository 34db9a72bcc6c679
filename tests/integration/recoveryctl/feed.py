"""Hand-made events whose decisions are known in advance, and the helpers the recoveryctl tests
share: a policy directory with changes, and the real worker deciding a feed."""

from __future__ import annotations

import re
import shutil
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, Message, TopicPartition

from order_recovery.config import Settings
from order_recovery.domain.history import SHANGHAI
from order_recovery.domain.policy import DEFAULT_POLICY_DIR
from tests.support.kafka_io import produce_events, produce_raw, wait_until
from tests.support.worker_process import WorkerProcess

T0 = datetime(2025, 6, 2, 10, 0, tzinfo=SHANGHAI)
H = timedelta(hours=1)


def _envelope(
    event_type: str, order_id: str, at: datetime, created: datetime, **over: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": at.isoformat(),
        "order_id": order_id,
        "platform": "douyin",
        "merchant_id": "m-001",
        "buyer_id": f"buyer-of-{order_id}",
        "category": "standard",
        "amount_fen": 20_000,
        "currency": "CNY",
        "order_created_at": created.isoformat(),
        "merchant_dsr": 4.9,
    }
    doc.update(over)
    return doc


def payment_timeout(
    order_id: str, since_failure: timedelta, at: datetime = T0, **over: Any
) -> dict[str, Any]:
    """Standard goods, stock available, no channel code: recovered by a recall within 2 h, by a
    new order and payment link after 2 h inside the window, expired outside it."""
    failed = at - since_failure
    created = failed - timedelta(minutes=31)
    return {
        **_envelope("payment-timeout", order_id, at, created, **over),
        "payment_failed_at": failed.isoformat(),
        "payment_attempt_count": 1,
        "stock_available": True,
        "payment_channel": "alipay",
        "channel_return_code": None,
    }


def shipping_delay(
    order_id: str, at: datetime = T0, fresh: bool = False, **over: Any
) -> dict[str, Any]:
    """Standard goods unshipped 50 h inside the 7-day window: a 5 % coupon (within 3..50 yuan).
    Fresh produce unshipped 50 h: a full refund."""
    paid = at - 50 * H
    return {
        **_envelope(
            "shipping-delay",
            order_id,
            at,
            paid - H,
            category="fresh" if fresh else "standard",
            **over,
        ),
        "paid_at": paid.isoformat(),
        "carrier_pickup_status": "not_picked_up",
    }


def policy_dir(tmp_path: Path, *, jingdong: bool = False, **edits: str) -> Path:
    """A copy of the shipped policies. `edits` maps "<platform>" to a list of `key = value`
    lines replacing the same keys; `jingdong` adds a policy for platform jingdong."""
    target = tmp_path / f"policies-{uuid.uuid4().hex[:6]}"
    shutil.copytree(DEFAULT_POLICY_DIR, target)
    if jingdong:
        text = (target / "douyin.toml").read_text()
        text = text.replace('version = "douyin-2026.1"', 'version = "jingdong-test.1"')
        text = text.replace('platform = "douyin"', 'platform = "jingdong"')
        (target / "jingdong.toml").write_text(text)
    for platform, lines in edits.items():
        path = target / f"{platform}.toml"
        text = path.read_text()
        for line in lines.strip().splitlines():
            key = line.split("=", 1)[0].strip()
            text, n = re.subn(rf"(?m)^{re.escape(key)}\s*=.*$", line.strip(), text, count=1)
            assert n == 1, f"no key {key} in {path}"
        path.write_text(text)
    return target


def decision_count(settings: Settings) -> int:
    with psycopg.connect(settings.database_reader_url) as conn:
        row = conn.execute("SELECT count(*) FROM decisions").fetchone()
    return int(row[0]) if row else 0


def start_worker(
    settings: Settings, log_dir: Path, name: str = "worker", policies: Path | None = None
) -> WorkerProcess:
    env = {"ORDER_RECOVERY_POLICY_DIR": str(policies)} if policies else {}
    return WorkerProcess(settings, log_dir, name, runtime="confluent", extra_env=env).start()


def decide(settings: Settings, log_dir: Path, events: list[dict[str, Any]]) -> None:
    """The real worker decides `events`; returns once every one is in Postgres."""
    worker = start_worker(settings, log_dir).wait_ready()
    try:
        before = decision_count(settings)
        produce_events(settings, events)
        wait_until(lambda: decision_count(settings) == before + len(events), 90, "decisions stored")
    finally:
        worker.stop()


def dead_letter(
    settings: Settings,
    event_type: str,
    key: bytes | None,
    value: bytes | None,
    error_class: str,
    failed_at: str,
    extra: list[tuple[str, bytes]] | None = None,
) -> None:
    """A record in a DLQ with the headers the pipeline writes (as if a worker dead-lettered it)."""
    source = settings.source_topic(event_type)
    headers = [
        *(extra or []),
        ("dlq.error.class", error_class.encode()),
        ("dlq.error.message", f"test: {error_class}".encode()),
        ("dlq.original.topic", source.encode()),
        ("dlq.original.partition", b"0"),
        ("dlq.original.offset", b"0"),
        ("dlq.original.timestamp", b""),
        ("dlq.attempt", b"1"),
        ("dlq.failed.at", failed_at.encode()),
        ("dlq.worker.id", b"test"),
    ]
    produce_raw(settings, settings.dlq_topic(source), key, value, headers)


def read_all(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Message]:
    """Every committed record of `topic`. Unlike tests.support.kafka_io.read_topic this ends on
    the consumer's position, so a topic written by transactions (whose last offsets are commit
    markers, never delivered) is read to its end too."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        out: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while True:
            out += [m for m in consumer.consume(500, timeout=0.5) if not m.error()]
            positions = consumer.position([TopicPartition(topic, p) for p in ends])
            if all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in positions):
                return out
            assert time.monotonic() < deadline, f"timed out reading {topic}"
    finally:
        consumer.close()

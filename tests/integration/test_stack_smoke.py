"""The stack itself: the real broker and the real database answer the clients we use."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
from confluent_kafka import Consumer, Producer

from order_recovery.config import Settings

PROBE_APP = Path(__file__).with_name("faust_probe_app.py")


def test_confluent_produce_and_consume(settings: Settings) -> None:
    topic = settings.source_topics[0]
    sent = {f"order-{i}".encode(): f"value-{i}".encode() for i in range(20)}
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "acks": "all"})
    for key, value in sent.items():
        producer.produce(topic, key=key, value=value)
    assert producer.flush(10) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": settings.consumer_group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received: dict[bytes, bytes] = {}
    deadline = time.monotonic() + 30
    try:
        while len(received) < len(sent) and time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=0.5):
                assert msg.error() is None, msg.error()
                received[msg.key()] = msg.value()
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert received == sent


def test_faust_agent_receives_from_the_real_broker(settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "received.txt"
    topic = settings.source_topics[1]
    env = {
        **os.environ,
        "PROBE_BOOTSTRAP": settings.kafka_bootstrap_servers,
        "PROBE_TOPIC": topic,
        "PROBE_GROUP": settings.consumer_group,
        "PROBE_OUT": str(out),
        "PROBE_DATADIR": str(tmp_path / "faust"),
    }
    worker = subprocess.Popen(
        [sys.executable, str(PROBE_APP), "worker", "--loglevel", "warn"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        marker = uuid.uuid4().hex.encode()
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
        producer.produce(topic, key=b"order-1", value=marker)
        assert producer.flush(10) == 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and worker.poll() is None:
            if out.exists() and marker in out.read_bytes():
                break
            time.sleep(0.2)
        assert worker.poll() is None, worker.stdout.read().decode() if worker.stdout else ""
        assert out.exists() and marker in out.read_bytes()
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_postgres_round_trip_after_migrations(owner_database_url: str) -> None:
    event_id = uuid.uuid4()
    with psycopg.connect(owner_database_url) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
        assert versions and versions == sorted(versions)
        conn.execute(
            """INSERT INTO recovery_cases (order_id, exception_type, platform, merchant_id,
                   buyer_id, status, opened_at, updated_at, last_event_id)
               VALUES (%s, 'payment-timeout', 'douyin', 'm1', 'b1', 'pending', now(), now(), %s)""",
            ("order-42", event_id),
        )
        row = conn.execute(
            "SELECT status, last_event_id FROM recovery_cases WHERE order_id = %s", ("order-42",)
        ).fetchone()
    assert row == ("pending", event_id)

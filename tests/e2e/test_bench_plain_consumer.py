"""The bench's plain consumer (bench/plain_consumer.py, issue 19's baseline) writes exactly the rows
the worker writes, table by table, for the same topic: otherwise the worker / plain consumer ratio
would compare different work. The worker runs as a process (the confluent runtime), the plain
consumer in this process, each into its own database."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg

from bench.plain_consumer import run
from order_recovery.config import Settings
from order_recovery.domain.sample import sample_events
from tests.support.databases import scratch_database
from tests.support.kafka_io import produce_events, wait_until
from tests.support.worker_process import WorkerProcess

#: Every table a decision writes to, as rows to compare (ids and times that are the writer's own,
#: such as a row's recorded_at or the outbox batch id, left out).
TABLES = {
    "decisions": """SELECT event_id, order_id, exception_type, outcome, rule_ids, risk_flags,
        reason, policy_version, source_topic, source_partition, source_offset, event::text
        FROM decisions""",
    "actions": "SELECT event_id, seq, action FROM actions",
    "compensations": """SELECT order_id, exception_type, kind, amount_fen, buyer_id, event_day,
        event_id FROM compensations""",
    "audit_log": """SELECT order_id, exception_type, event_id, from_status, to_status,
        detail::text FROM audit_log""",
    "recovery_cases": """SELECT order_id, exception_type, platform, merchant_id, buyer_id, status,
        opened_at, recovered_at IS NULL, last_event_id FROM recovery_cases""",
    "cases": """SELECT order_id, exception_type, platform, buyer_id, amount_fen, opened_at,
        opened_by, state, seq, state_since, deadline_kind, deadline_due_at, deadline_seq,
        held_actions, fallback_actions, released, payment_window_ends_at,
        shipping_window_ends_at, closed_at FROM cases""",
    "case_steps": """SELECT order_id, exception_type, seq, rule_id, to_state, cause_kind,
        cause_ref, cause_at, reason, actions, action_keys, deadline_kind, deadline_due_at
        FROM case_steps""",
    "case_commands": """SELECT action_key, order_id, exception_type, platform, step_seq, action,
        rule_id, amount_fen, issued_at FROM case_commands""",
    "limit_counters": "SELECT kind, subject, used, ceiling FROM limit_counters",
    "outcomes published": """SELECT e FROM outbox_batches, unnest(event_ids) AS e
        WHERE published_at IS NOT NULL""",
}


def rows(owner_url: str) -> dict[str, list[str]]:
    with psycopg.connect(owner_url) as conn:
        return {
            table: sorted(repr(row) for row in conn.execute(sql).fetchall())
            for table, sql in TABLES.items()
        }


def decided(owner_url: str) -> int:
    with psycopg.connect(owner_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM outbox_batches, unnest(event_ids) WHERE published_at IS NOT NULL"
        ).fetchone()
    return int(row[0]) if row else 0


def test_the_plain_consumer_writes_the_rows_the_worker_writes(
    settings: Settings, postgres_admin_url: str, tmp_path: Path
) -> None:
    # One buyer per order: a buyer's refund limit then never depends on how the two consumers
    # interleave partitions (each keeps per-order order, as Kafka does).
    events: list[dict[str, Any]] = sample_events(400, seed=19)
    for event in events:
        event["buyer_id"] = f"buyer-of-{event['order_id']}"
    distinct = len({e["event_id"] for e in events})
    assert distinct < len(events)  # redeliveries are in the feed: both must skip them
    produce_events(settings, events)

    worker = WorkerProcess(settings, tmp_path, runtime="confluent").start()
    try:
        wait_until(lambda: decided(settings.database_owner_url) == distinct, 120, "the worker")
    finally:
        worker.stop()

    with scratch_database(postgres_admin_url, settings, "plain") as plain_db:
        plain = replace(plain_db, consumer_group=f"{settings.consumer_group}-plain")
        result = run(plain, distinct)
        assert result["decisions"] == distinct
        assert distinct <= result["records"] <= len(events)
        assert result["rps"] > 0 and result["cpu_us_per_decision"] > 0
        by_worker, by_plain = rows(settings.database_owner_url), rows(plain.database_owner_url)

    assert by_worker["cases"] and by_worker["case_commands"] and by_worker["compensations"]
    for table in TABLES:
        assert by_plain[table] == by_worker[table], table

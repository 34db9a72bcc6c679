"""The plain consumer: the baseline of issue 19, what a team would write in a day with the same
libraries, measured by `bench/run.py` in the same run as the worker, on the same preloaded topic.

One record at a time: consume it (confluent-kafka), decode and validate it with the project's
decoder, read the order's history from Postgres with simple SELECTs, run the worker's rules
(`domain.rules.decide`, the case opening `domain.case.open_case`, the limit uses), insert the rows
the worker writes for it with one statement each (decision, actions, compensation, audit, the
case summary, the case with its first step, commands and audit row, the limit counters, an outbox
row), commit the transaction, publish the outcome and mark the outbox row, then commit the offset.
It shares the rules and the schema (a migrated scratch database, the worker's role) and nothing of
the worker's batching. Not a second implementation to keep: it is a yardstick, and when the two
disagree on a row the worker is right.

    python bench/plain_consumer.py <decisions> <result.json>

with KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, ORDER_RECOVERY_TOPIC_PREFIX and
ORDER_RECOVERY_CONSUMER_GROUP set as for the worker. Stops after `decisions` decisions and writes
{"rps", "decisions", "records", "cpu_us_per_decision"} (its own CPU, from the first decision on).
"""

from __future__ import annotations

import itertools
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition
from psycopg.types.json import Jsonb

from order_recovery.config import Settings
from order_recovery.core.intake import check_event_time, check_size
from order_recovery.core.records import SourceRecord
from order_recovery.core.stored_history import StoredHistory
from order_recovery.domain.case import TERMINAL, Transition, open_case
from order_recovery.domain.contract import decode_event
from order_recovery.domain.errors import InvalidEvent
from order_recovery.domain.events import Event
from order_recovery.domain.history import business_day
from order_recovery.domain.limits import (
    LimitKind,
    buyer_day_subject,
    fold_claims,
    limit_uses,
)
from order_recovery.domain.outcome import outcome_json
from order_recovery.domain.policy import Policy, load_policies, policy_for
from order_recovery.domain.rules import decide

# ---------------------------------------------------------------------------- the history
SEEN = "SELECT 1 FROM decisions WHERE event_id = %s"
ORDER_PAST = """SELECT count(*) FILTER (WHERE exception_type = 'payment-timeout'),
                       coalesce(bool_or('forged_logistics' = ANY(risk_flags)), false)
                FROM decisions WHERE order_id = %s"""
CASE_STATUS = "SELECT status FROM recovery_cases WHERE order_id = %s AND exception_type = %s"
COMPENSATED = "SELECT 1 FROM compensations WHERE order_id = %s AND exception_type = %s"
REFUNDS = "SELECT used FROM limit_counters WHERE kind = %s AND subject = %s"

# ---------------------------------------------------------------------------- the rows
INSERT_DECISION = """INSERT INTO decisions (event_id, order_id, exception_type, platform,
    merchant_id, buyer_id, category, amount_fen, occurred_at, outcome, rule_ids, risk_flags,
    reason, policy_version, source_topic, source_partition, source_offset, event)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::json)"""
INSERT_ACTION = "INSERT INTO actions (event_id, seq, action) VALUES (%s, %s, %s)"
INSERT_COMPENSATION = """INSERT INTO compensations (order_id, exception_type, kind, amount_fen,
    buyer_id, event_day, event_id) VALUES (%s, %s, %s, %s, %s, %s, %s)"""
INSERT_AUDIT = """INSERT INTO audit_log (order_id, exception_type, event_id, from_status,
    to_status, detail) VALUES (%s, %s, %s, %s, %s, %s)"""
#: The case's audit row: its detail built by Postgres, as the worker's OPEN_CASES builds it (the
#: cause's time as Postgres writes a timestamptz in JSON).
INSERT_CASE_AUDIT = """INSERT INTO audit_log (order_id, exception_type, event_id, from_status,
    to_status, detail)
    VALUES (%s, %s, %s, NULL, %s, jsonb_build_object('step', 1, 'rule_id', %s::text,
        'cause', jsonb_build_object('kind', 'exception', 'ref', %s::text, 'at', %s::timestamptz),
        'reason', %s::text, 'actions', %s::text[], 'action_keys', %s::text[]))"""
UPSERT_RECOVERY_CASE = """INSERT INTO recovery_cases AS c (order_id, exception_type, platform,
    merchant_id, buyer_id, status, opened_at, updated_at, recovered_at, last_event_id)
    VALUES (%s, %s, %s, %s, %s, %s, %s, now(), CASE WHEN %s = 'recovered' THEN now() END, %s)
    ON CONFLICT (order_id, exception_type) DO UPDATE SET
        status = excluded.status, updated_at = excluded.updated_at,
        opened_at = least(c.opened_at, excluded.opened_at),
        recovered_at = coalesce(c.recovered_at, excluded.recovered_at),
        last_event_id = excluded.last_event_id"""
INSERT_CASE = """INSERT INTO cases (order_id, exception_type, platform, buyer_id, amount_fen,
    opened_at, opened_by, state, seq, state_since, deadline_kind, deadline_due_at, deadline_seq,
    held_actions, fallback_actions, released, payment_window_ends_at, shipping_window_ends_at,
    closed_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 1, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (order_id, exception_type) DO NOTHING RETURNING 1"""
INSERT_STEP = """INSERT INTO case_steps (order_id, exception_type, seq, rule_id, to_state,
    cause_kind, cause_ref, cause_at, reason, actions, action_keys, deadline_kind, deadline_due_at)
    VALUES (%s, %s, 1, %s, %s, 'exception', %s, %s, %s, %s, %s, %s, %s)"""
INSERT_COMMAND = """INSERT INTO case_commands (action_key, order_id, exception_type, platform,
    step_seq, action, rule_id, amount_fen, issued_at) VALUES (%s, %s, %s, %s, 1, %s, %s, %s, %s)"""
UPSERT_LIMIT = """INSERT INTO limit_counters AS c (kind, subject, used, ceiling)
    VALUES (%s, %s, %s, %s)
    ON CONFLICT (kind, subject) DO UPDATE SET
        used = c.used + excluded.used, ceiling = excluded.ceiling, updated_at = now()"""
INSERT_OUTBOX = """INSERT INTO outbox_batches (batch_id, event_ids, order_ids, payloads)
    VALUES (%s, ARRAY[%s::uuid], ARRAY[%s], ARRAY[%s::bytea])"""
MARK_PUBLISHED = "UPDATE outbox_batches SET published_at = now() WHERE batch_id = %s"


def history(cur: psycopg.Cursor[Any], event: Event) -> tuple[bool, StoredHistory]:
    """(already decided, what the rules need to know): one SELECT per question."""
    env = event.envelope
    kind = str(env.event_type)
    if cur.execute(SEEN, (env.event_id,)).fetchone():
        return True, StoredHistory()
    stored = StoredHistory()
    row = cur.execute(ORDER_PAST, (env.order_id,)).fetchone()
    assert row is not None
    if row[0]:
        stored.payment_attempts[env.order_id] = int(row[0])
    if row[1]:
        stored.revoked_orders.add(env.order_id)
    status = cur.execute(CASE_STATUS, (env.order_id, kind)).fetchone()
    if status:
        stored.case_status[(env.order_id, kind)] = status[0]
    if cur.execute(COMPENSATED, (env.order_id, kind)).fetchone():
        stored.compensated.add((env.order_id, kind))
    day = business_day(env.occurred_at)
    used = cur.execute(
        REFUNDS, (str(LimitKind.BUYER_REFUNDS), buyer_day_subject(env.buyer_id, day))
    ).fetchone()
    if used:
        stored.buyer_refunds[(env.buyer_id, day)] = int(used[0])
    return False, stored


def write(
    cur: psycopg.Cursor[Any],
    record: SourceRecord,
    event: Event,
    policy: Policy,
    stored: StoredHistory,
    decided_at: datetime,
) -> tuple[str, bytes]:
    """Decide the event and insert its rows, one statement each; (outbox id, outcome bytes)."""
    env = event.envelope
    kind = str(env.event_type)
    decision = decide(event, stored.order_history(event), policy)
    from_status = stored.case_status.get((env.order_id, kind))
    payload = outcome_json(event, decision, decided_at=decided_at)
    comp = decision.compensation
    cur.execute(
        INSERT_DECISION,
        (
            env.event_id, env.order_id, kind, env.platform, env.merchant_id, env.buyer_id,
            env.category, env.amount_fen, env.occurred_at, str(decision.outcome),
            [str(r) for r in decision.rule_ids], [str(f) for f in decision.risk_flags],
            decision.reason, decision.policy_version, record.topic, record.partition,
            record.offset, (record.value or b"{}").decode(),
        ),
    )  # fmt: skip
    for seq, action in enumerate(decision.actions):
        cur.execute(INSERT_ACTION, (env.event_id, seq, str(action)))
    if comp is not None:
        cur.execute(
            INSERT_COMPENSATION,
            (env.order_id, kind, str(comp.kind), comp.amount_fen, env.buyer_id,
             business_day(env.occurred_at), env.event_id),
        )  # fmt: skip
    actions = [str(a) for a in decision.actions]
    cur.execute(
        INSERT_AUDIT,
        (env.order_id, kind, env.event_id, from_status, str(decision.outcome),
         Jsonb({"rule_ids": list(decision.rule_ids), "policy_version": decision.policy_version,
                "actions": actions})),
    )  # fmt: skip
    cur.execute(
        UPSERT_RECOVERY_CASE,
        (env.order_id, kind, env.platform, env.merchant_id, env.buyer_id, str(decision.outcome),
         env.occurred_at, str(decision.outcome), env.event_id),
    )  # fmt: skip
    opening = open_case(event, decision, policy)
    if isinstance(opening, Transition):
        open_the_case(cur, event, decision.reason, actions, opening)
    for claim in fold_claims(limit_uses(event, decision, policy)):
        cur.execute(UPSERT_LIMIT, (str(claim.kind), claim.subject, claim.delta, claim.ceiling))
    batch_id = str(uuid.uuid4())
    cur.execute(INSERT_OUTBOX, (batch_id, env.event_id, env.order_id, payload))
    return batch_id, payload


def open_the_case(
    cur: psycopg.Cursor[Any], event: Event, reason: str, actions: list[str], t: Transition
) -> None:
    """What the worker's OPEN_CASES writes for a case that has none yet: the case, its first
    step, the step's action commands and its audit row."""
    env, case = event.envelope, t.case
    kind, state = str(env.event_type), str(case.state)
    deadline = case.deadline
    deadline_kind = None if deadline is None else str(deadline.kind)
    due = None if deadline is None else deadline.due_at
    released = list(case.released)
    opened = cur.execute(
        INSERT_CASE,
        (env.order_id, kind, env.platform, env.buyer_id, env.amount_fen, env.occurred_at,
         env.event_id, state, env.occurred_at, deadline_kind, due,
         None if deadline is None else 1, [str(a) for a in case.held_actions],
         [str(a) for a in case.fallback_actions], released, case.payment_window_ends_at,
         case.shipping_window_ends_at, env.occurred_at if case.state in TERMINAL else None),
    ).fetchone()  # fmt: skip
    if opened is None:
        return
    cur.execute(
        INSERT_STEP,
        (env.order_id, kind, t.rule_id, state, env.event_id, env.occurred_at, reason, actions,
         released, deadline_kind, due),
    )  # fmt: skip
    if released:
        for action, key in itertools.zip_longest(actions, released):
            cur.execute(
                INSERT_COMMAND,
                (key, env.order_id, kind, env.platform, action, t.rule_id, env.amount_fen,
                 env.occurred_at),
            )  # fmt: skip
    cur.execute(
        INSERT_CASE_AUDIT,
        (env.order_id, kind, env.event_id, state, t.rule_id, env.event_id, env.occurred_at,
         reason, actions, released),
    )  # fmt: skip


def run(settings: Settings, decisions: int) -> dict[str, float]:
    policies = load_policies(settings.policy_dir)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": settings.consumer_group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe(list(settings.source_topics))
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    outcomes = settings.outcome_topic
    conn = psycopg.connect(settings.database_url, autocommit=True)
    done = records = 0
    started = cpu_started = 0.0
    try:
        while done < decisions:
            message = consumer.poll(1.0)
            if message is None or message.error() is not None:
                continue
            records += 1
            record = SourceRecord(
                message.topic(),
                message.partition(),
                message.offset(),
                message.key(),
                message.value(),
                message.timestamp()[1],
                tuple(message.headers() or ()),
            )
            published = None
            try:
                check_size(record, settings.max_record_bytes)
                event = decode_event(record.value or b"")
                check_event_time(event, record, settings.max_event_skew_s)
                policy = policy_for(policies, event.envelope.platform)
            except InvalidEvent:
                event = None  # a team's first version would dead-letter it; the sample has none
            if event is not None:
                with conn.transaction(), conn.cursor() as cur:
                    seen, stored = history(cur, event)
                    if not seen:
                        published = write(cur, record, event, policy, stored, datetime.now(UTC))
            if published is not None:
                batch_id, payload = published
                producer.produce(outcomes, key=event.envelope.order_id.encode(), value=payload)
                producer.flush(15)
                with conn.transaction():
                    # As the worker marks its outbox: a lost mark only means a resend.
                    conn.execute("SET LOCAL synchronous_commit = off")
                    conn.execute(MARK_PUBLISHED, (batch_id,))
                done += 1
                if done == 1:
                    started, cpu_started = time.perf_counter(), time.process_time()
            consumer.commit(
                offsets=[TopicPartition(record.topic, record.partition, record.offset + 1)],
                asynchronous=False,
            )
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        counted = max(1, done - 1)  # the first decision starts the clocks
        return {
            "rps": counted / elapsed if elapsed > 0 else 0.0,
            "decisions": done,
            "records": records,
            "cpu_us_per_decision": cpu * 1e6 / counted,
        }
    finally:
        conn.close()
        consumer.close()


def main() -> int:
    decisions, out = int(sys.argv[1]), Path(sys.argv[2])
    result = run(Settings.from_env(), decisions)
    out.write_text(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cases through their whole life, as `make run` runs them: the worker decides (and opens the
cases), the lifecycle process applies what the reference platform answers, a reviewer approves,
and every case ends where the state machine says it must."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from order_recovery.adapters.reference_platform import Odds, ReferencePlatform
from order_recovery.config import Settings
from order_recovery.domain.case import ReviewVerdict
from order_recovery.domain.commands import decode_command
from order_recovery.domain.sample import moved_to
from order_recovery.ops.reviews import decide_review
from tests.integration.recoveryctl.feed import policy_dir
from tests.support.kafka_io import produce_events, read_topic, wait_until
from tests.support.worker_process import WorkerProcess
from tests.unit.domain.factories import (
    POLICIES,
    T0,
    H,
    M,
    logistics_exception,
    payment_timeout,
    shipping_delay,
)

pytestmark = pytest.mark.e2e


def _now(order_id: str, doc: dict[str, Any], shift: Any) -> dict[str, Any]:
    """The factory's event moved to the present (deadlines run on the stream's time) under its
    own order id and event id."""
    at = datetime.fromisoformat(doc["occurred_at"]) + shift
    return {**moved_to(doc, at), "order_id": order_id, "event_id": _event_id(order_id)}


def _event_id(order_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"lifecycle-e2e:{order_id}"))


#: order -> (event, the state its case must end in with a platform that always answers well)
FEED = {
    "e2e-recall": (payment_timeout(failed_ago=10 * M), "recovered"),
    "e2e-requery": (payment_timeout(code="ERR_TIMEOUT"), "recovered"),
    "e2e-coupon": (shipping_delay(), "recovered"),
    "e2e-fresh": (shipping_delay(category="fresh", paid_ago=3 * H), "refunded"),
    "e2e-appeal": (logistics_exception("douyin"), "recovered"),
    "e2e-evidence": (logistics_exception("taobao", evidence=[]), "recovered"),
    "e2e-expired": (payment_timeout("taobao", failed_ago=40 * M), "expired"),
    "e2e-big": (payment_timeout(amount_fen=600_000), "recovered"),  # after an approval
}


class LifecycleProcess(WorkerProcess):
    def start(self) -> LifecycleProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "order_recovery.entrypoints.lifecycle"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self


@pytest.fixture
def running(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    worker = WorkerProcess(settings, tmp_path, runtime="confluent").start()
    lifecycle = LifecycleProcess(settings, tmp_path, name="lifecycle").start()
    always = Odds(
        action_fails=0.0,
        buyer_pays=1.0,
        channel_finds_payment=1.0,
        merchant_ships=1.0,
        evidence_arrives=1.0,
        verdict_won=1.0,
    )
    platform = ReferencePlatform(settings, odds=always, interval_s=0.5)
    thread = threading.Thread(target=platform.run, daemon=True)
    worker.wait_ready()
    thread.start()
    try:
        yield settings
    finally:
        platform.stop.set()
        thread.join(30)
        lifecycle.stop()
        worker.stop()
        print(lifecycle.log()[-4000:])


def _states(settings: Settings) -> dict[str, str]:
    with psycopg.connect(settings.database_owner_url) as conn:
        return dict(conn.execute("SELECT order_id, state FROM cases").fetchall())


def test_every_case_ends_where_the_state_machine_says(running: Settings) -> None:
    shift = datetime.now(UTC) - T0
    produce_events(running, [_now(order, doc, shift) for order, (doc, _) in FEED.items()])
    wait_until(lambda: _states(running).get("e2e-big") == "awaiting_review", 60, "the review")
    decide_review(
        running.database_operator_url,
        POLICIES,
        ("e2e-big", "payment-timeout"),
        ReviewVerdict.APPROVE,
        "alice",
        "known buyer",
    )
    expected = {order: end for order, (_, end) in FEED.items()}
    wait_until(lambda: _states(running) == expected, 90, f"every case closed as {expected}")
    with psycopg.connect(running.database_owner_url) as conn:
        steps = conn.execute(
            "SELECT order_id, array_agg(rule_id ORDER BY seq) FROM case_steps GROUP BY 1"
        ).fetchall()
    assert dict(steps) == {
        "e2e-recall": ["case.open.payment", "case.payment.completed"],
        "e2e-requery": ["case.open.channel_query", "case.channel.paid"],
        "e2e-coupon": ["case.open.shipment", "case.shipment.handed_over"],
        "e2e-fresh": ["case.open.refund", "case.action.refund_completed"],
        "e2e-appeal": ["case.open.verdict", "case.verdict.won"],
        "e2e-evidence": ["case.open.evidence", "case.evidence.uploaded", "case.verdict.won"],
        "e2e-expired": ["case.open.expired"],
        "e2e-big": ["case.open.review", "case.review.approved", "case.payment.completed"],
    }
    _every_released_action_went_out_once(running)


def _every_released_action_went_out_once(settings: Settings) -> None:
    """The executor learnt of the actions from the command topic alone: each key there once."""

    def backlog() -> int:
        with psycopg.connect(settings.database_owner_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM case_commands WHERE published_at IS NULL"
            ).fetchone()
        return row[0] if row else -1

    wait_until(lambda: backlog() == 0, 30, "the command outbox relayed")
    with psycopg.connect(settings.database_owner_url) as conn:
        released = [k for (k,) in conn.execute("SELECT unnest(action_keys) FROM case_steps")]
    messages = read_topic(settings.kafka_bootstrap_servers, settings.command_topic)
    on_topic = [decode_command(m.value() or b"").action_key for m in messages]
    assert released and sorted(on_topic) == sorted(released)


def test_deadlines_fire_once_across_a_sigkill_and_a_second_lifecycle_process(
    settings: Settings, tmp_path: Path
) -> None:
    """Thirty re-queries nobody answers: each case's 3-second deadline must run its recall
    exactly once, while one of two lifecycle processes is killed and restarted."""
    policies = policy_dir(tmp_path, douyin="channel_query_timeout_s = 3")
    env = {"ORDER_RECOVERY_POLICY_DIR": str(policies), "ORDER_RECOVERY_MAX_EVENT_SKEW_S": "1"}
    worker = WorkerProcess(settings, tmp_path, runtime="confluent", extra_env=env).start()
    first = LifecycleProcess(settings, tmp_path, name="lifecycle-1", extra_env=env).start()
    second = LifecycleProcess(settings, tmp_path, name="lifecycle-2", extra_env=env)
    orders = [f"e2e-deadline-{i}" for i in range(30)]
    try:
        worker.wait_ready()
        shift = datetime.now(UTC) - T0
        doc = payment_timeout(code="ERR_TIMEOUT")
        produce_events(settings, [_now(order, doc, shift) for order in orders])
        wait_until(lambda: len(_states(settings)) == 30, 60, "30 cases opened")
        second.start()
        first.signal(signal.SIGKILL)
        first.wait_exit(10)
        first.start()
        wait_until(
            lambda: set(_states(settings).values()) == {"awaiting_payment"},
            60,
            "every re-query's deadline fired",
        )
    finally:
        for process in (first, second, worker):
            process.stop()
    with psycopg.connect(settings.database_owner_url) as conn:
        fired = conn.execute(
            """SELECT order_id, count(*) FROM case_steps
               WHERE rule_id = 'case.deadline.channel_query' GROUP BY 1"""
        ).fetchall()
        seqs = conn.execute("SELECT DISTINCT seq FROM cases").fetchall()
        audited = conn.execute(
            "SELECT count(*) FROM audit_log WHERE detail->>'rule_id' = %s",
            ("case.deadline.channel_query",),
        ).fetchone()
    assert dict(fired) == dict.fromkeys(orders, 1)
    assert seqs == [(2,)] and audited == (30,)

"""Cases through their whole life, as `make run` runs them: the worker decides (and opens the
cases), the lifecycle process applies what the reference platform answers, a reviewer approves
one and rejects another, and every case ends where the state machine says it must; the recovery
figures agree from the inputs, in Postgres, in `recoveryctl stats` and in Prometheus."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
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
from tests.support.prometheus import PrometheusServer
from tests.support.worker_process import LifecycleProcess, WorkerProcess
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
    "e2e-refused": (payment_timeout(amount_fen=700_000), "closed_no_recovery"),  # rejected
}
#: Not an exception yet (unpaid for 10 of its 30 minutes): decided, opens no case, and so does not
#: count in the recovery rate.
TOO_EARLY = payment_timeout(failed_ago=None, created_ago=10 * M)
#: The resolution that recovers a case, by the rule of its last step.
RECOVERED_BY = {
    "case.payment.completed": "payment-completed",
    "case.channel.paid": "channel-query-result",
    "case.shipment.handed_over": "parcel-handed-over",
    "case.action.refund_completed": "action-report",
    "case.verdict.won": "platform-verdict",
}


@dataclass(frozen=True)
class Running:
    settings: Settings
    prometheus: PrometheusServer


@pytest.fixture
def running(settings: Settings, tmp_path: Path) -> Iterator[Running]:
    worker = WorkerProcess(settings, tmp_path, runtime="confluent").start()
    lifecycle = LifecycleProcess(settings, tmp_path, name="lifecycle").start()
    prometheus = PrometheusServer(
        tmp_path / "prometheus", [f"127.0.0.1:{worker.port}"], [f"127.0.0.1:{lifecycle.port}"]
    ).start()
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
    # The figures' first sample before any case closes: the rules' windows then hold every close.
    prometheus.wait_for(
        "count(order_recovery_cases_closed_total) > bool 0", 1, 60, "a scrape of the case figures"
    )
    thread.start()
    try:
        yield Running(settings, prometheus)
    finally:
        prometheus.stop()
        platform.stop.set()
        thread.join(30)
        lifecycle.stop()
        worker.stop()
        print(lifecycle.log()[-4000:])


def _states(settings: Settings) -> dict[str, str]:
    with psycopg.connect(settings.database_owner_url) as conn:
        return dict(conn.execute("SELECT order_id, state FROM cases").fetchall())


def test_every_case_ends_where_the_state_machine_says(running: Running) -> None:
    settings = running.settings
    shift = datetime.now(UTC) - T0
    exceptions = {order: _now(order, doc, shift) for order, (doc, _) in FEED.items()}
    produce_events(settings, [*exceptions.values(), _now("e2e-too-early", TOO_EARLY, shift)])
    waiting = {"e2e-big", "e2e-refused"}
    wait_until(
        lambda: {o for o, s in _states(settings).items() if s == "awaiting_review"} == waiting,
        60,
        "the reviews",
    )
    for order, verdict in (
        ("e2e-big", ReviewVerdict.APPROVE),
        ("e2e-refused", ReviewVerdict.REJECT),
    ):
        decide_review(
            settings.database_operator_url,
            POLICIES,
            (order, "payment-timeout"),
            verdict,
            "alice",
            "known buyer" if verdict is ReviewVerdict.APPROVE else "stolen card",
        )
    expected = {order: end for order, (_, end) in FEED.items()}
    wait_until(lambda: _states(settings) == expected, 90, f"every case closed as {expected}")
    with psycopg.connect(settings.database_owner_url) as conn:
        steps = dict(
            conn.execute(
                "SELECT order_id, array_agg(rule_id ORDER BY seq) FROM case_steps GROUP BY 1"
            ).fetchall()
        )
    assert steps == {
        "e2e-recall": ["case.open.payment", "case.payment.completed"],
        "e2e-requery": ["case.open.channel_query", "case.channel.paid"],
        "e2e-coupon": ["case.open.shipment", "case.shipment.handed_over"],
        "e2e-fresh": ["case.open.refund", "case.action.refund_completed"],
        "e2e-appeal": ["case.open.verdict", "case.verdict.won"],
        "e2e-evidence": ["case.open.evidence", "case.evidence.uploaded", "case.verdict.won"],
        "e2e-expired": ["case.open.expired"],
        "e2e-big": ["case.open.review", "case.review.approved", "case.payment.completed"],
        "e2e-refused": ["case.open.review", "case.review.rejected"],
    }
    _figures_agree(running, exceptions, steps)
    _every_released_action_went_out_once(running.settings)


def _figures_agree(
    running: Running, exceptions: dict[str, dict[str, Any]], steps: dict[str, list[str]]
) -> None:
    """Recovery rate and mean time to recovery worked out here from what went into Kafka (the
    exceptions produced, the resolutions the reference platform sent), then read from Postgres,
    from `recoveryctl stats` and from Prometheus: all four agree."""
    settings = running.settings
    answered: dict[tuple[str, str], datetime] = {}  # (order, resolution type) -> first event time
    for event_type in set(RECOVERED_BY.values()):
        for msg in read_topic(settings.kafka_bootstrap_servers, settings.source_topic(event_type)):
            doc = orjson.loads(msg.value() or b"{}")
            at = datetime.fromisoformat(doc["occurred_at"])
            key = (doc["order_id"], event_type)
            answered[key] = min(at, answered.get(key, at))
    ttrs = [
        (
            answered[(order, RECOVERED_BY[rules[-1]])]
            - datetime.fromisoformat(exceptions[order]["occurred_at"])
        ).total_seconds()
        for order, rules in steps.items()
        if rules[-1] in RECOVERED_BY
    ]
    rate, mean_ttr = len(ttrs) / len(steps), sum(ttrs) / len(ttrs)
    assert (len(ttrs), len(steps)) == (7, 9), "recovered (the refund too) of closed; no rejection"

    with psycopg.connect(settings.database_reader_url) as conn:
        row = conn.execute(
            """SELECT count(*) FILTER (WHERE state IN ('recovered', 'refunded'))::float8
                      / count(*),
                      avg(extract(epoch FROM closed_at - opened_at))
                          FILTER (WHERE state IN ('recovered', 'refunded'))::float8
               FROM cases WHERE closed_at IS NOT NULL"""
        ).fetchone()
    assert row is not None
    assert row[0] == pytest.approx(rate) and row[1] == pytest.approx(mean_ttr, abs=1e-3)

    stats = subprocess.run(
        [sys.executable, "-m", "order_recovery.entrypoints.cli", "stats", "--json"],
        env={**os.environ, **settings.database_env()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    total = json.loads(stats.stdout)["total"]
    assert total["recovery_rate"] == pytest.approx(rate)
    assert total["mean_time_to_recovery_s"] == pytest.approx(mean_ttr, abs=1e-3)
    assert total["decided"] == len(FEED) + 1 and total["outcomes"]["rejected"] == 1

    prom = running.prometheus
    closed = "max by (event_type, platform, state) (order_recovery_cases_closed_total)"
    prom.wait_for(f"sum({closed})", len(steps), 60, "every closed case scraped")
    ttr = "max by (event_type, platform) (order_recovery_time_to_recovery_seconds_{})"
    recovered = closed.replace("_total", '_total{state=~"recovered|refunded"}')
    assert prom.scalar(f"sum({recovered}) / sum({closed})") == pytest.approx(rate)
    mean = f"sum({ttr.format('sum')}) / sum({ttr.format('count')})"
    assert prom.scalar(mean) == pytest.approx(mean_ttr, abs=1e-3)
    # The recording rules over their 5-minute window, which holds the whole run.
    time.sleep(3)  # evaluated (every second) on the last scrapes
    assert prom.scalar("order_recovery:recovered:ratio_rate5m") == pytest.approx(rate)
    assert prom.scalar("order_recovery:time_to_recovery_seconds:mean5m") == pytest.approx(
        mean_ttr, rel=1e-6
    )


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

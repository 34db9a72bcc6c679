"""Action commands against the real Postgres and Kafka: every action a stored step released reaches
the command topic exactly once per action key, whether one relay runs twice or two relays (two
lifecycle processes) run at once; keyed by order id, the key in a header, a valid command."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest

from order_recovery.adapters.kafka_producer import KafkaPublisher
from order_recovery.adapters.postgres.cases import PostgresCaseStore
from order_recovery.adapters.postgres.store import PostgresStore
from order_recovery.adapters.retry import RetryPolicy
from order_recovery.config import Settings
from order_recovery.core.commands import CommandRelay
from order_recovery.core.headers import ACTION_KEY
from order_recovery.core.lifecycle import Lifecycle
from order_recovery.domain.case import Review, ReviewVerdict
from order_recovery.domain.commands import decode_command
from tests.contracts.store import decided
from tests.support.kafka_io import read_topic
from tests.unit.domain.factories import POLICIES, T0, M, payment_timeout, shipping_delay

pytestmark = pytest.mark.integration

RELAYS = 2


def _released(settings: Settings) -> list[str]:
    """Every action key the stored steps released, as case_steps has them."""
    with psycopg.connect(settings.database_owner_url) as conn:
        rows = conn.execute("SELECT unnest(action_keys) FROM case_steps").fetchall()
    return sorted(k for (k,) in rows)


@pytest.fixture
def stored_steps(settings: Settings) -> Iterator[Settings]:
    """Cases opened on the decision hot path (one escalated), and a reviewer's approval of the
    escalated one through the case store, as the operator."""
    store = PostgresStore(settings.database_url)
    cases = PostgresCaseStore(settings.database_operator_url)
    try:
        batch = [
            decided(shipping_delay(), order_id="cmd-coupon"),
            decided(payment_timeout(failed_ago=10 * M), order_id="cmd-recall"),
            decided(payment_timeout(code="ERR_TIMEOUT"), order_id="cmd-requery"),
            decided(payment_timeout(amount_fen=600_000), order_id="cmd-big"),
        ]
        store.save_decisions(batch)
        review = Review("rev-cmd-big", "alice", ReviewVerdict.APPROVE, "known", T0 + 10 * M)
        approved = Lifecycle(cases, POLICIES).review(("cmd-big", "payment-timeout"), review)
        assert approved.action_keys
        yield settings
    finally:
        store.close()
        cases.close()


def _relay(settings: Settings) -> tuple[CommandRelay, PostgresCaseStore, KafkaPublisher]:
    store = PostgresCaseStore(settings.database_url)
    publisher = KafkaPublisher(settings.kafka_bootstrap_servers, "command-relay-test")
    retry = RetryPolicy(threading.Event(), initial_s=0.01)
    return CommandRelay(settings, store, publisher, retry, pass_size=2), store, publisher


def _on_topic(settings: Settings) -> list[str]:
    messages = read_topic(settings.kafka_bootstrap_servers, settings.command_topic)
    keys = []
    for m in messages:
        command = decode_command(m.value() or b"")
        assert m.key() == command.order_id.encode()
        assert m.headers() == [(ACTION_KEY, command.action_key.encode())]
        keys.append(command.action_key)
    return keys


def test_a_relay_run_twice_sends_each_action_key_once(stored_steps: Settings) -> None:
    settings = stored_steps
    released = _released(settings)
    assert len(released) >= 5
    relay, store, publisher = _relay(settings)
    try:
        assert relay.run() == len(released)
        assert relay.run() == 0
        assert store.command_backlog() == 0
    finally:
        store.close()
        publisher.close()
    assert sorted(_on_topic(settings)) == released


def test_two_relays_at_once_send_each_action_key_once(stored_steps: Settings) -> None:
    settings = stored_steps
    released = _released(settings)
    relays = [_relay(settings) for _ in range(RELAYS)]
    start = threading.Barrier(RELAYS)
    sent = [0] * RELAYS

    def run(i: int) -> None:
        start.wait(10)
        for _ in range(20):  # small passes, over and over, against each other
            sent[i] += relays[i][0].run(passes=1)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(RELAYS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert sum(sent) == len(released)
        assert relays[0][1].command_backlog() == 0
    finally:
        for _, store, publisher in relays:
            store.close()
            publisher.close()
    on_topic = _on_topic(settings)
    assert Counter(on_topic) == Counter(released)  # each key once: no loss, no double

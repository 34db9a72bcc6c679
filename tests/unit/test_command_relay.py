"""The command relay (core/commands.py) on the fakes: each stored step's actions reach the command
topic once, keyed by order id with the action key in a header, and a broker outage only delays
them."""

from __future__ import annotations

import threading

from order_recovery.adapters.retry import RetryPolicy
from order_recovery.config import Settings
from order_recovery.core.commands import CommandRelay
from order_recovery.core.headers import ACTION_KEY
from order_recovery.core.lifecycle import Lifecycle
from order_recovery.domain.case import Transition
from order_recovery.domain.commands import commands_of, decode_command
from tests.fakes import InMemoryCaseStore, RecordingPublisher
from tests.unit.domain.factories import POLICIES, decode, payment_timeout, run, shipping_delay

SETTINGS = Settings()


def _relay(store: InMemoryCaseStore, publisher: RecordingPublisher, **kw: int) -> CommandRelay:
    retry = RetryPolicy(threading.Event(), initial_s=0.001, max_delay_s=0.01)
    return CommandRelay(SETTINGS, store, publisher, retry, **kw)


def _open(store: InMemoryCaseStore, doc: dict) -> Transition:
    step = Lifecycle(store, POLICIES).open(decode(doc), run(doc))
    assert isinstance(step, Transition)
    return step


def test_each_action_goes_out_once_keyed_by_order_with_its_key_in_a_header() -> None:
    store, publisher = InMemoryCaseStore(), RecordingPublisher()
    opened = [
        _open(store, shipping_delay()),
        _open(store, {**payment_timeout(), "order_id": "ord-2"}),
    ]
    relay = _relay(store, publisher)
    expected = [c for step in opened for c in commands_of(step)]
    assert relay.run() == len(expected) and relay.run() == 0
    sent = publisher.to(SETTINGS.command_topic)
    assert [decode_command(m.value or b"") for m in sent] == expected
    assert [m.key for m in sent] == [c.order_id.encode() for c in expected]
    assert [m.headers for m in sent] == [[(ACTION_KEY, c.action_key.encode())] for c in expected]
    assert SETTINGS.command_topic == "orders.action-commands"
    assert SETTINGS.command_topic in SETTINGS.all_topics


def test_a_broker_outage_delays_the_commands_and_sends_them_once() -> None:
    store, publisher = InMemoryCaseStore(), RecordingPublisher()
    opening = _open(store, shipping_delay())
    publisher.fail_next(2)
    assert _relay(store, publisher).run() == len(opening.actions)
    sent = publisher.to(SETTINGS.command_topic)
    assert [decode_command(m.value or b"") for m in sent] == commands_of(opening)
    assert store.command_backlog() == 0


def test_a_backlog_drains_in_passes_of_the_pass_size() -> None:
    store, publisher = InMemoryCaseStore(), RecordingPublisher()
    for n in range(3):
        _open(store, {**shipping_delay(), "order_id": f"ord-{n}"})
    backlog = store.command_backlog()
    assert backlog >= 3
    assert _relay(store, publisher, pass_size=1).run(passes=2) == 2
    assert _relay(store, publisher, pass_size=1).run(passes=backlog) == backlog - 2
    assert len(publisher.to(SETTINGS.command_topic)) == backlog

"""The reference platform's events are valid resolutions, the same on every run, and each case
step is answered once (its ids are the step's); the executor applies each action key once,
however often its command arrives."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from order_recovery.adapters.reference_platform import (
    Odds,
    ReferencePlatform,
    executor_reports,
    platform_answers,
)
from order_recovery.config import Settings
from order_recovery.core.commands import command_message
from order_recovery.domain.commands import ActionCommand
from order_recovery.domain.contract import decode_resolution
from order_recovery.domain.decision import ActionType
from order_recovery.domain.events import EventType
from order_recovery.domain.resolutions import ActionReport, ActionStatus

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
OPEN = [
    ("o1", "payment-timeout", "douyin", "awaiting_payment", 1, 19_900),
    ("o2", "payment-timeout", "douyin", "awaiting_channel_query", 1, 19_900),
    ("o3", "shipping-delay", "taobao", "awaiting_shipment", 1, 5_000),
    ("o4", "logistics-exception", "douyin", "awaiting_evidence", 1, 5_000),
    ("o5", "logistics-exception", "taobao", "awaiting_verdict", 2, 5_000),
]


def _command(order_id: str, exception_type: str, platform: str, action: str) -> ActionCommand:
    return ActionCommand(
        action_key=f"{order_id}/{exception_type}/1/{action}",
        order_id=order_id,
        exception_type=EventType(exception_type),
        platform=platform,
        step=1,
        action=ActionType(action),
        rule_id="case.open.review",
        amount_fen=5_000,
        issued_at=NOW,
    )


RELEASED = [
    _command("o3", "shipping-delay", "taobao", "issue_coupon"),
    _command("o6", "shipping-delay", "douyin", "auto_refund"),
    _command("o7", "payment-timeout", "douyin", "manual_review"),
]
EVERYTHING = Odds(1.0, 1.0, 1.0, 1.0, 1.0, 1.0)


def _decoded(events: list[dict]) -> list:
    return [
        decode_resolution(orjson.dumps({k: v for k, v in e.items() if v is not None}))
        for e in events
    ]


def test_every_open_state_gets_its_answer_as_a_valid_resolution():
    events = list(platform_answers(OPEN, 7, EVERYTHING, NOW))
    kinds = [e["event_type"] for e in events]
    assert kinds == [
        "payment-completed",
        "channel-query-result",
        "parcel-handed-over",
        "evidence-uploaded",
        "platform-verdict",
    ]
    _decoded(events)


def test_the_same_seed_gives_the_same_events_and_ids():
    odds = Odds()
    assert list(platform_answers(OPEN, 7, odds, NOW)) == list(platform_answers(OPEN, 7, odds, NOW))
    assert list(executor_reports(RELEASED, 7, odds, NOW)) == list(
        executor_reports(RELEASED, 7, odds, NOW)
    )


def test_the_executor_reports_each_action_under_its_key_and_fails_only_what_can_fail():
    reports = _decoded(list(executor_reports(RELEASED, 7, EVERYTHING, NOW)))
    assert all(isinstance(r, ActionReport) for r in reports)
    assert [r.action_key for r in reports] == [c.action_key for c in RELEASED]
    assert [r.status for r in reports] == [
        ActionStatus.FAILED,
        ActionStatus.FAILED,
        ActionStatus.COMPLETED,  # a review is not the platform's to refuse
    ]
    none_fail = _decoded(list(executor_reports(RELEASED, 7, Odds(action_fails=0.0), NOW)))
    assert {r.status for r in none_fail} == {ActionStatus.COMPLETED}


class _Message:
    """What the executor reads of a consumed record."""

    def __init__(self, value: bytes) -> None:
        self._value = value

    def error(self) -> None:
        return None

    def value(self) -> bytes:
        return self._value


def test_the_executor_applies_each_action_key_once_however_often_its_command_arrives():
    executor = ReferencePlatform(Settings())
    topic = Settings().command_topic
    messages = [_Message(command_message(topic, c).value or b"") for c in RELEASED]
    redelivered = [*messages, messages[0]]
    assert executor.to_apply(redelivered) == RELEASED  # type: ignore[arg-type]
    executor.applied.update(c.action_key for c in RELEASED[:2])
    assert executor.to_apply(redelivered) == RELEASED[2:]  # type: ignore[arg-type]


def test_the_executor_skips_a_command_that_is_not_one():
    executor = ReferencePlatform(Settings())
    assert executor.to_apply([_Message(b'{"command_type": "action-command"}')]) == []  # type: ignore[list-item]

"""The action-command message (domain.commands): every step's commands match the schema, read
back as they were built, and an executor reading a bad one gets the schema's error."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from msgspec import structs

from order_recovery.domain.case import (
    Review,
    ReviewVerdict,
    Transition,
    on_review,
    open_case,
)
from order_recovery.domain.commands import (
    ActionCommand,
    command_dict,
    command_json,
    commands_of,
    decode_command,
)
from order_recovery.domain.contract import default_contract, schemas_dir
from order_recovery.domain.errors import InvalidEvent, MalformedJson, SchemaViolation

from .factories import POLICIES, T0, M, decode, event_docs, payment_timeout, run, shipping_delay

EXAMPLES = schemas_dir() / "examples"
EXPECTED = json.loads((EXAMPLES / "expected-errors.json").read_text())
COMMAND_EXAMPLES = sorted(p.name for p in (EXAMPLES / "action-command").glob("*.json"))


def _opening(doc: dict) -> Transition:
    step = open_case(decode(doc), run(doc), POLICIES[doc["platform"]])
    assert isinstance(step, Transition)
    return step


def test_a_step_issues_one_command_per_action_under_its_key() -> None:
    step = _opening(shipping_delay())
    commands = commands_of(step)
    assert [c.action_key for c in commands] == list(step.action_keys)
    assert [c.action for c in commands] == list(step.actions)
    (coupon, *_) = commands
    assert coupon.order_id == step.case.order_id and coupon.step == 1
    assert coupon.rule_id == step.rule_id and coupon.issued_at == step.cause.at
    assert coupon.amount_fen == step.case.amount_fen
    assert coupon.action_key == f"{coupon.order_id}/shipping-delay/1/{coupon.action}"


def test_an_approval_issues_the_held_actions_under_new_keys() -> None:
    opened = _opening(payment_timeout(amount_fen=600_000))
    review = Review("r-1", "alice", ReviewVerdict.APPROVE, "known buyer", T0 + 10 * M)
    approved = on_review(opened.case, review, POLICIES["douyin"])
    commands = commands_of(approved)
    assert commands and {c.step for c in commands} == {2}
    assert {c.issued_at for c in commands} == {T0 + 10 * M}
    assert not {c.action_key for c in commands} & set(opened.action_keys)


def test_a_step_without_actions_issues_none() -> None:
    step = _opening(payment_timeout())
    assert commands_of(structs.replace(step, actions=(), action_keys=())) == []


@given(event_docs)
def test_every_command_matches_the_schema_and_reads_back_as_built(doc: dict) -> None:
    step = open_case(decode(doc), run(doc), POLICIES[doc["platform"]])
    if not isinstance(step, Transition):
        return
    for command in commands_of(step):
        default_contract().validate_command(command_dict(command))
        assert decode_command(command_json(command)) == command


@pytest.mark.parametrize("name", COMMAND_EXAMPLES)
def test_command_examples_validate_or_fail_exactly_as_named(name: str) -> None:
    raw = (EXAMPLES / "action-command" / name).read_bytes()
    if name.startswith("valid-"):
        command = decode_command(raw)
        assert isinstance(command, ActionCommand)
        assert command_dict(command) == {
            **orjson.loads(raw),
            "issued_at": command_dict(command)["issued_at"],  # the offset may be spelled Z
        }
        return
    with pytest.raises(SchemaViolation) as caught:
        decode_command(raw)
    assert caught.value.field == EXPECTED[f"action-command/{Path(name).name}"]["field"]


def test_a_command_that_is_not_json_or_not_an_object_is_refused() -> None:
    with pytest.raises(MalformedJson):
        decode_command(b"{not json")
    with pytest.raises(InvalidEvent):
        decode_command(b"[1, 2]")

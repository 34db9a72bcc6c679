"""The action-command.v1 message (schemas/action-command.v1.schema.json): one action a case step
released, for an executor to apply.

One module decides both directions: `commands_of` says which commands a step issues (the case
store's outbox rows; the hot path's SQL writes the same columns, which a contract test checks),
`command_json` is the message the relay sends, and `decode_command` is what an executor reads
back, checked against the schema. The command's id is its `action_key` (domain.case.action_key):
delivery is at least once, and an executor that applies each key at most once applies each action
at most once, then names the key in its action-report.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec
from msgspec import Struct

from order_recovery.domain.case import Transition
from order_recovery.domain.contract import default_contract
from order_recovery.domain.decision import ActionType
from order_recovery.domain.errors import MalformedJson
from order_recovery.domain.events import EventType

COMMAND_TYPE = "action-command"
COMMAND_SCHEMA = "action-command.v1.schema.json"


class ActionCommand(Struct, frozen=True, kw_only=True, gc=False):
    """One action to apply, under its idempotency key. Fields in message order."""

    command_type: Literal["action-command"] = COMMAND_TYPE
    schema_version: Literal[1] = 1
    action_key: str  # the command's id: apply at most once under it, report it back
    order_id: str  # the message key too: one order's commands stay in order on one partition
    exception_type: EventType  # the case's type: an action-report names it
    platform: str
    step: int  # the case step that released it
    action: ActionType
    rule_id: str  # that step's rule (domain.case.CASE_RULES)
    amount_fen: int  # the case's order amount, integer fen
    issued_at: datetime  # event time of the step's cause (for a review: the reviewer's time)


def commands_of(t: Transition) -> list[ActionCommand]:
    """The commands a step issues: one per action it releases, in the step's order."""
    case = t.case
    return [
        ActionCommand(
            action_key=key,
            order_id=case.order_id,
            exception_type=case.exception_type,
            platform=case.platform,
            step=case.seq,
            action=action,
            rule_id=t.rule_id,
            amount_fen=case.amount_fen,
            issued_at=t.cause.at,
        )
        for action, key in zip(t.actions, t.action_keys, strict=True)
    ]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ActionCommand)


def command_json(command: ActionCommand) -> bytes:
    """The message's value (JSON, the schema's field names)."""
    return _encoder.encode(command)


def command_dict(command: ActionCommand) -> dict[str, Any]:
    """The message as a JSON object (what the schema validates)."""
    return msgspec.json.decode(command_json(command))


def decode_command(raw: bytes | str) -> ActionCommand:
    """An executor's read of a command message: schema-checked (SchemaViolation naming the field,
    MalformedJson), then typed."""
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise MalformedJson("", f"not JSON: {exc}") from None
    default_contract().validate_command(obj)
    return _decoder.decode(raw if isinstance(raw, bytes) else raw.encode())

"""The recovery-outcome.v1 message for a decision (see schemas/recovery-outcome.v1.schema.json)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

import orjson

from order_recovery.domain.decision import Decision
from order_recovery.domain.events import Event

# Fixed namespace so the outcome id is a pure function of the source event id: a replayed event
# produces an outcome with the same id, and consumers can deduplicate on it.
_OUTCOME_NAMESPACE = uuid.UUID("6f0b9d0e-3c1a-5b7e-9a53-0d7c2f4e8b11")


_NAMESPACE_BYTES = _OUTCOME_NAMESPACE.bytes


def outcome_event_id(source_event_id: str) -> str:
    """`uuid5(namespace, source_event_id)` (RFC 9562 section 5.5), spelled out: it runs once per
    decision on the hot path, and `uuid.uuid5` costs three times as much for the same string."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + source_event_id.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"outcome-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _iso(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("outcome timestamps must be timezone-aware")
    return at.isoformat()


def outcome_event(event: Event, decision: Decision, *, decided_at: datetime) -> dict[str, Any]:
    """`decided_at` is supplied by the caller (the worker's clock) so this stays pure; the gap
    between the source's occurred_at and it is the time-to-decision the dashboard tracks."""
    env = event.envelope
    return {
        "event_id": outcome_event_id(env.event_id),
        "event_type": "recovery-outcome",
        "schema_version": 1,
        "occurred_at": _iso(decided_at),
        "platform": env.platform,
        "order_id": env.order_id,
        "source_event_id": env.event_id,
        "source_event_type": str(env.event_type),
        "source_occurred_at": _iso(env.occurred_at),
        "decision": decision.to_dict(),
    }


def outcome_json(event: Event, decision: Decision, *, decided_at: datetime) -> bytes:
    """The message bytes of `outcome_event` (the same JSON), built for the worker's hot path:
    orjson writes the datetimes, enums and tuples itself, which costs a third of building the
    JSON-ready dict first (aware datetimes come out exactly as `isoformat()` writes them).

    Copied out of orjson's result: orjson hands back its whole 4 KB write buffer as the bytes
    object, and a payload lives from its decision until its batch is published, two or three
    batches of up to 2,000 events at a time (up to 48 MB of a worker's peak; a copy is 600 bytes
    and about 0.1 us)."""
    if decided_at.tzinfo is None:  # the same refusal as outcome_event's
        raise ValueError("outcome timestamps must be timezone-aware")
    env = event.envelope
    comp = decision.compensation
    payload = orjson.dumps(
        {
            "event_id": outcome_event_id(env.event_id),
            "event_type": "recovery-outcome",
            "schema_version": 1,
            "occurred_at": decided_at,
            "platform": env.platform,
            "order_id": env.order_id,
            "source_event_id": env.event_id,
            "source_event_type": env.event_type,
            "source_occurred_at": env.occurred_at,
            "decision": {
                "outcome": decision.outcome,
                "actions": decision.actions,
                "held_actions": decision.held_actions,
                "compensation": None
                if comp is None
                else {"kind": comp.kind, "amount_fen": comp.amount_fen},
                "risk_flags": decision.risk_flags,
                "reason": decision.reason,
                "rule_ids": decision.rule_ids,
                "policy_version": decision.policy_version,
            },
        }
    )
    return memoryview(payload).tobytes()

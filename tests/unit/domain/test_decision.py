"""Decision serialisation and the outcome message; Python enums equal the schema's enums."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from order_recovery.domain import (
    ActionType,
    Compensation,
    CompensationKind,
    Decision,
    Outcome,
    RiskFlag,
    default_contract,
    event_from_dict,
    outcome_event,
    outcome_event_id,
    validate_outcome,
)
from order_recovery.domain.history import OrderHistory

from .factories import T0, H, run, shipping_delay

OUTCOME_DEFS = default_contract().schemas["recovery-outcome.v1.schema.json"]["$defs"]


def test_enums_match_the_outcome_schema():
    decision = OUTCOME_DEFS["decision"]["properties"]
    assert decision["outcome"]["enum"] == [o.value for o in Outcome]
    assert OUTCOME_DEFS["action"]["enum"] == [a.value for a in ActionType]
    assert decision["risk_flags"]["items"]["enum"] == [f.value for f in RiskFlag]
    kinds = OUTCOME_DEFS["compensation"]["properties"]["kind"]["enum"]
    assert kinds == [k.value for k in CompensationKind]


def test_to_dict_round_trips_and_is_json_ready():
    d = run(
        shipping_delay(paid_ago=3 * H, category="fresh"),
        OrderHistory(buyer_refunds_today=7),
    )
    assert Decision.from_dict(d.to_dict()) == d
    plain = d.to_dict()
    assert all(type(a) is str for a in plain["actions"] + plain["held_actions"])


def test_outcome_event_is_valid_and_deterministic():
    doc = shipping_delay()
    event = event_from_dict(doc)
    d = run(doc)
    message = outcome_event(event, d, decided_at=T0)
    validate_outcome(message)
    assert message["event_id"] == outcome_event_id(doc["event_id"])
    assert outcome_event(event, d, decided_at=T0) == message
    assert message["decision"]["policy_version"] == "douyin-2026.1"
    with pytest.raises(ValueError, match="timezone-aware"):
        outcome_event(event, d, decided_at=datetime(2025, 6, 2))


@pytest.mark.parametrize("amount", [0, -1, 1.5])
def test_compensation_is_a_positive_int_of_fen(amount):
    with pytest.raises(ValueError):
        Compensation(CompensationKind.COUPON, amount)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"payment_attempts": -1},
        {"buyer_refunds_today": -1},
        {"merchant_dsr": 5.1},
        {"payment_attempts": True},
    ],
)
def test_history_rejects_impossible_values(kwargs):
    with pytest.raises(ValueError):
        OrderHistory(**kwargs)


def test_empty_history_means_nothing_known():
    h = OrderHistory()
    assert (h.payment_attempts, h.buyer_refunds_today, h.compensation_granted) == (0, 0, False)
    assert h.merchant_dsr is None and not h.recovery_right_revoked


@given(st.uuids().map(str) | st.text(max_size=80))
def test_outcome_id_is_the_standard_uuid5_of_the_source_id(source_id):
    """The hand-written uuid5 must equal the standard library's, or ids would change between
    versions of the worker and consumers would stop deduplicating."""
    namespace = uuid.UUID("6f0b9d0e-3c1a-5b7e-9a53-0d7c2f4e8b11")
    assert outcome_event_id(source_id) == f"outcome-{uuid.uuid5(namespace, source_id)}"

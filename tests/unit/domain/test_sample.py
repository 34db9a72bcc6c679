"""sample_events: deterministic, schema-valid, and a realistic mix."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime

from order_recovery.domain import OrderHistory, decide, event_from_dict, sample_events
from order_recovery.domain.sample import moved_to

from .factories import POLICIES, run


def test_same_seed_same_events_other_seed_other_events():
    assert sample_events(300, seed=3) == sample_events(300, seed=3)
    assert sample_events(300, seed=3) != sample_events(300, seed=4)
    assert sample_events(0, seed=1) == []


def test_every_sample_event_is_valid_and_decidable():
    events = sample_events(1_500, seed=5)
    assert len(events) == 1_500
    outcomes: Counter[str] = Counter()
    for doc in events:
        event = event_from_dict(doc, platforms=POLICIES)
        outcomes[decide(event, OrderHistory(), POLICIES[event.envelope.platform]).outcome] += 1
    assert set(outcomes) == {
        "recovered",
        "pending",
        "escalated",
        "closed_no_recovery",
        "expired",
        "rejected",
    }


def test_the_mix_covers_platforms_types_categories_and_risks():
    events = sample_events(1_500, seed=5)
    assert {e["platform"] for e in events} == {"douyin", "taobao", "pinduoduo"}
    assert {e["event_type"] for e in events} == {
        "payment-timeout",
        "shipping-delay",
        "logistics-exception",
    }
    assert {e["category"] for e in events} == {"standard", "virtual", "fresh"}
    kinds = {e.get("exception_kind") for e in events} - {None}
    assert kinds == {"transit_timeout", "lost"}
    assert any(e["amount_fen"] >= 500_000 for e in events)
    assert any(e["amount_fen"] == 0 for e in events)
    assert any(e.get("tracking_forged") for e in events)
    assert any(e.get("parcel_weight_g") == 0 for e in events)


def test_the_new_contract_fields_are_realistic():
    events = sample_events(1_500, seed=5)
    assert all(e["currency"] == "CNY" for e in events)
    assert all(e["event_id"] == str(uuid.UUID(e["event_id"])) for e in events)
    assert all("payload" not in e for e in events)
    pickups = Counter(e["carrier_pickup_status"] for e in events if "carrier_pickup_status" in e)
    assert 0 < pickups["picked_up"] < pickups["not_picked_up"] / 5  # a few
    attempts = [e["payment_attempt_count"] for e in events if "payment_attempt_count" in e]
    assert 0 < sum(n > 3 for n in attempts) < len(attempts) / 10  # a few over the freeze limit
    never = [
        e for e in events if e["event_type"] == "payment-timeout" and not e["payment_failed_at"]
    ]
    assert never and all(e["payment_attempt_count"] == 0 for e in never)
    dsrs = [e["merchant_dsr"] for e in events if e.get("merchant_dsr") is not None]
    assert any(d < 4.6 for d in dsrs) and any(d == 4.6 for d in dsrs)
    assert sum(4.5 <= d <= 4.7 for d in dsrs) > len(dsrs) / 5  # clustered around the threshold
    assert any("merchant_dsr" not in e for e in events)
    assert any(e.get("merchant_dsr", 0) is None for e in events)
    by_merchant: dict[str, set[float]] = {}
    for e in events:
        if e.get("merchant_dsr") is not None:
            by_merchant.setdefault(e["merchant_id"], set()).add(e["merchant_dsr"])
    assert all(len(v) == 1 for v in by_merchant.values())  # one score per merchant


def test_every_sample_rule_fires_including_the_new_ones():
    fired: Counter[str] = Counter()
    for doc in sample_events(3_000, seed=5):
        event = event_from_dict(doc, platforms=POLICIES)
        fired.update(decide(event, OrderHistory(), POLICIES[event.envelope.platform]).rule_ids)
    assert fired["shipping.already_picked_up"] > 0
    assert fired["risk.payment_attempts_freeze"] > 0  # from the events' own counts
    assert fired["risk.low_dsr_review"] > 0  # from the events' own DSR readings


def test_a_few_exact_duplicates():
    events = sample_events(2_000, seed=9)
    by_id: dict[str, list[dict]] = {}
    for e in events:
        by_id.setdefault(e["event_id"], []).append(e)
    duplicates = [group for group in by_id.values() if len(group) > 1]
    assert 10 <= sum(len(g) - 1 for g in duplicates) <= 100  # about 2 %
    assert all(all(e == group[0] for e in group) for group in duplicates)


def test_an_event_moved_in_time_is_decided_the_same():
    """The live feed dates each event now; what the rules measure must not change with it."""
    now = datetime(2026, 12, 2, 9, 40, tzinfo=UTC)
    for doc in sample_events(300, seed=5):
        moved = moved_to(doc, now)
        assert datetime.fromisoformat(moved["occurred_at"]) == now
        before, after = run(doc), run(moved)
        assert (after.outcome, after.rule_ids, after.actions, after.compensation) == (
            before.outcome,
            before.rule_ids,
            before.actions,
            before.compensation,
        )

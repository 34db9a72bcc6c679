"""A feed whose recovery rates are known in advance, for proving the Prometheus rules end to end.

Prometheus's rate() never counts the value a counter series shows at its first scrape, and the
worker's label series appear only at their first increment. So the mix is fed twice: a first
copy creates every (event_type, platform, outcome) series the mix uses, Prometheus takes its first
scrapes, then a second copy (same content, new event and order ids, so the same decisions) is what
rate() sees. Every series then has the same first value as its increase and the same scrape times,
so each ratio of rates is exactly the mix's ratio. The expected decisions are computed here with
the pure rules, the way tests/e2e/test_worker_process.py does.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any

from order_recovery.domain.contract import event_from_dict
from order_recovery.domain.history import OrderHistory
from order_recovery.domain.policy import load_policies
from order_recovery.domain.rules import decide
from order_recovery.domain.sample import sample_events

Labels = tuple[str, str, str]  # (event_type, platform, outcome)


def known_mix(count: int, seed: int) -> list[dict[str, Any]]:
    """Sample events with one buyer per order: every order of the sample has one event (and some
    exact redeliveries), so each decision depends on its event alone."""
    events = sample_events(count, seed=seed)
    for event in events:
        event["buyer_id"] = f"buyer-of-{event['order_id']}"
    return events


def second_copy(events: Iterable[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    """The same events under new event, order and buyer ids (a redelivery stays a redelivery)."""
    out = []
    for event in events:
        order_id = f"{event['order_id']}-{tag}"
        out.append(
            {
                **event,
                "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tag}/{event['event_id']}")),
                "order_id": order_id,
                "buyer_id": f"buyer-of-{order_id}",
            }
        )
    return out


def decided_labels(events: Iterable[dict[str, Any]]) -> Counter[Labels]:
    """How many decisions of each (event_type, platform, outcome) the worker takes on `events`."""
    policies = load_policies()
    seen: set[str] = set()
    orders: set[str] = set()
    out: Counter[Labels] = Counter()
    for raw in events:
        if raw["event_id"] in seen:
            continue  # a redelivery: counted as a duplicate, not decided
        seen.add(raw["event_id"])
        assert raw["order_id"] not in orders, "the known mix needs one event per order"
        orders.add(raw["order_id"])
        event = event_from_dict(raw)
        env = event.envelope
        decision = decide(event, OrderHistory(), policies[env.platform])
        out[(str(env.event_type), env.platform, str(decision.outcome))] += 1
    return out


def recovery_rates(labels: Counter[Labels], by: str) -> dict[str, float]:
    """recovered / decided per event_type or per platform."""
    index = {"event_type": 0, "platform": 1}[by]
    decided: Counter[str] = Counter()
    recovered: Counter[str] = Counter()
    for key, n in labels.items():
        decided[key[index]] += n
        if key[2] == "recovered":
            recovered[key[index]] += n
    return {k: recovered[k] / n for k, n in decided.items()}


def overall_recovery_rate(labels: Counter[Labels]) -> float:
    total = sum(labels.values())
    return sum(n for k, n in labels.items() if k[2] == "recovered") / total

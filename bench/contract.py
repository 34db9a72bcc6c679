"""Throughput of the worker's hot path pieces: decode+validate, and decode+validate+decide.

    .venv/bin/python bench/contract.py [count]

Prints events/s for each. Also times the reference `jsonschema` validator on the same serialized
sample events for comparison; it parses numbers as Decimal, the only way it checks `multipleOf`
(merchant_dsr) correctly. Not a test: nothing here asserts a floor.
"""

from __future__ import annotations

import json
import sys
import time
from decimal import Decimal

import jsonschema
import orjson
import referencing

from order_recovery.domain import (
    OrderHistory,
    decide,
    default_contract,
    load_policies,
    sample_events,
)


def _rate(label: str, count: int, seconds: float) -> None:
    print(f"{label:<44} {count / seconds:>12,.0f} events/s  ({seconds * 1e6 / count:.1f} us/event)")


def main(count: int = 20_000) -> None:
    contract = default_contract()
    policies = load_policies()
    raws = [orjson.dumps(d) for d in sample_events(count, seed=1)]
    history = OrderHistory()
    print(f"{count} sample events, {sum(map(len, raws)) / count:.0f} bytes each on average")

    start = time.perf_counter()
    for raw in raws:
        contract.decode_event(raw, platforms=policies)
    _rate("decode_event (orjson + jsonschema-rs)", count, time.perf_counter() - start)

    start = time.perf_counter()
    for raw in raws:
        event = contract.decode_event(raw, platforms=policies)
        decide(event, history, policies[event.envelope.platform])
    _rate("decode_event + decide", count, time.perf_counter() - start)

    schemas = {
        name: json.loads(orjson.dumps(schema), parse_float=Decimal)
        for name, schema in contract.schemas.items()
    }
    registry = referencing.Registry().with_resources(
        (s["$id"], referencing.Resource.from_contents(s)) for s in schemas.values()
    )
    reference = {
        name.split(".v1")[0]: jsonschema.Draft202012Validator(schema, registry=registry)
        for name, schema in schemas.items()
        if ".v1." in name
    }
    sample = raws[: max(1, count // 10)]
    start = time.perf_counter()
    for raw in sample:
        doc = json.loads(raw, parse_float=Decimal)
        reference[doc["event_type"]].is_valid(doc)
    _rate("reference jsonschema (Decimal numbers)", len(sample), time.perf_counter() - start)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)

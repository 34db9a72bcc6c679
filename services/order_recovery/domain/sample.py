"""Deterministic, realistic sample events (flat JSON-ready dicts valid per the schemas).

Used by `recoveryctl produce-sample`, benchmarks and tests. The time offsets are chosen around the
shipped policies' boundaries (exactly at a limit and one second either side) so a sample exercises
every rule, not only the middle of each window. Pure: the same (count, seed) gives the same list.
"""

from __future__ import annotations

import copy
import random
import uuid
from datetime import datetime, timedelta
from typing import Any

from order_recovery.domain.history import SHANGHAI

PLATFORMS = ("douyin", "taobao", "pinduoduo")
SAMPLE_START = datetime(2025, 6, 2, 8, 0, tzinfo=SHANGHAI)
_S = timedelta(seconds=1)
_M = timedelta(minutes=1)
_H = timedelta(hours=1)
_D = timedelta(days=1)

# Around 15/30 min timeouts, the 30 min / 2 h / 24 h / 72 h windows.
_SINCE_FAILURE = (
    0 * _S, 30 * _S, 10 * _M, 30 * _M - _S, 30 * _M, 30 * _M + _S, _H, 2 * _H - _S, 2 * _H,
    2 * _H + _S, 5 * _H, _D - _S, _D, _D + _S, 2 * _D, 3 * _D - _S, 3 * _D, 3 * _D + _S, 4 * _D,
)  # fmt: skip
# Around the 2 h (fresh) and 48 h shipping limits.
_UNSHIPPED = (
    _H, 2 * _H - _S, 2 * _H, 2 * _H + _S, 6 * _H, 48 * _H - _S, 48 * _H, 48 * _H + _S, 60 * _H,
    4 * _D, 6 * _D,
)  # fmt: skip
# Around the 7-day shipping window.
_ORDER_AGE = (3 * _D, 7 * _D - _S, 7 * _D, 7 * _D + _S, 9 * _D, 12 * _D)
# Around the 15-day logistics window.
_SINCE_ANCHOR = (_H, 3 * _D, 15 * _D - _S, 15 * _D, 15 * _D + _S, 20 * _D)
_RETURN_CODES = (
    None, None, "ERR_TIMEOUT", "SYSTEMERROR", "NETWORK_ERROR", "NOTENOUGH", "CARD_BLOCKED",
    "UNLISTED_CODE",
)  # fmt: skip
_CARRIERS = ("SF", "ZTO", "YTO", "JD", "EMS")
# One DSR per merchant m-000..m-024, clustered around the 4.6 review threshold (three below it).
_MERCHANT_DSR = (
    4.92, 4.85, 4.78, 4.6, 4.71, 4.88, 4.59, 4.95, 4.66, 4.81, 4.62, 4.9, 4.74, 4.5, 4.83, 4.97,
    4.61, 4.69, 4.87, 4.76, 4.93, 4.64, 4.8, 4.55, 4.86,
)  # fmt: skip


def _iso(at: datetime) -> str:
    return at.isoformat()


def _amount(rng: random.Random) -> int:
    roll = rng.randrange(100)
    if roll < 4:
        return rng.choice((499_999, 500_000, 500_001, 880_000))  # around the 5,000 yuan gate
    if roll < 8:
        return rng.choice((1, 99, 300, 5_999, 6_000, 100_000, 100_001))  # coupon clamp edges
    if roll < 9:
        return 0  # fully discounted order: never compensated
    return rng.randrange(990, 60_000)


def _weight(rng: random.Random, amount_fen: int) -> int | None:
    roll = rng.randrange(100)
    if roll < 35:
        return None
    if roll < 42:
        return rng.randrange(0, 10)  # near-empty parcel: brushing when the amount is large
    return rng.randrange(150, 6_000)


def _attempts(rng: random.Random) -> int:
    """Payment attempts of an order whose payment failed: mostly one, a few over the freeze
    threshold of 3."""
    roll = rng.randrange(100)
    if roll < 80:
        return 1
    if roll < 92:
        return 2
    if roll < 96:
        return 3
    return rng.choice((4, 5, 7))


def _envelope(
    rng: random.Random,
    event_type: str,
    n: int,
    seed: int,
    at: datetime,
    *,
    category: str,
    amount_fen: int,
    created: datetime,
) -> dict[str, Any]:
    merchant = rng.randrange(len(_MERCHANT_DSR))
    doc: dict[str, Any] = {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": _iso(at),
        "order_id": f"ord-{seed}-{n:08d}",
        "platform": rng.choice(PLATFORMS),
        "merchant_id": f"m-{merchant:03d}",
        "buyer_id": f"buyer-{rng.randrange(40):03d}",  # small pool: refunds per buyer accumulate
        "category": category,
        "amount_fen": amount_fen,
        "currency": "CNY",
        "order_created_at": _iso(created),
    }
    roll = rng.randrange(100)
    if roll < 60:  # the producer read the merchant's DSR
        doc["merchant_dsr"] = _MERCHANT_DSR[merchant]
    elif roll < 70:
        doc["merchant_dsr"] = None
    return doc


def _payment_timeout(rng: random.Random, n: int, seed: int, at: datetime) -> dict[str, Any]:
    category = rng.choices(("standard", "virtual", "fresh"), (70, 15, 15))[0]
    timeout = 15 * _M if category == "virtual" else 30 * _M
    since_failure = rng.choice(_SINCE_FAILURE)
    fields: dict[str, Any] = {}
    if rng.randrange(100) < 30:  # never attempted: the window starts when the timeout ran out
        created = at - since_failure - timeout
        fields["payment_failed_at"] = None
        fields["payment_attempt_count"] = 0
    else:
        into_order = rng.randrange(60, int(timeout.total_seconds())) * _S
        created = at - since_failure - into_order
        fields["payment_failed_at"] = _iso(created + into_order)
        fields["payment_attempt_count"] = _attempts(rng)
    fields["stock_available"] = rng.randrange(100) < 85
    fields["payment_channel"] = rng.choice(("wechat_pay", "alipay", "douyin_pay"))
    fields["channel_return_code"] = rng.choice(_RETURN_CODES)
    if rng.randrange(100) < 30:
        fields["original_coupon_id"] = f"cpn-{rng.randrange(10**6):06d}"
    if rng.randrange(100) < 20:
        fields["window_extension_requested"] = True
    envelope = _envelope(
        rng,
        "payment-timeout",
        n,
        seed,
        at,
        category=category,
        amount_fen=_amount(rng),
        created=created,
    )
    return {**envelope, **fields}


def _shipping_delay(rng: random.Random, n: int, seed: int, at: datetime) -> dict[str, Any]:
    category = rng.choices(("standard", "fresh"), (80, 20))[0]
    # Mostly real delays (producers emit after the limit), some early ones at the edges.
    unshipped = rng.choices(_UNSHIPPED, (1, 1, 1, 2, 2, 1, 1, 4, 6, 6, 4))[0]
    if rng.randrange(100) < 30:
        age = max(rng.choice(_ORDER_AGE), unshipped)
    else:
        age = unshipped + rng.randrange(0, 3_600) * _S
    amount = _amount(rng)
    fields: dict[str, Any] = {
        "paid_at": _iso(at - unshipped),
        # A few producers race the carrier's scan: the parcel was picked up meanwhile.
        "carrier_pickup_status": "picked_up" if rng.randrange(100) < 5 else "not_picked_up",
    }
    weight = _weight(rng, amount)
    if weight is not None:
        fields["parcel_weight_g"] = weight
    envelope = _envelope(
        rng, "shipping-delay", n, seed, at, category=category, amount_fen=amount, created=at - age
    )
    return {**envelope, **fields}


def _logistics_exception(rng: random.Random, n: int, seed: int, at: datetime) -> dict[str, Any]:
    since_anchor = rng.choice(_SINCE_ANCHOR)
    signed = rng.randrange(100) < 40
    amount = _amount(rng)
    if signed:
        signed_at = at - since_anchor
        reported = signed_at - rng.randrange(3_600, 5 * 86_400) * _S
    else:
        reported = at - since_anchor
    created = reported - rng.randrange(86_400, 8 * 86_400) * _S  # ordered, paid, shipped, lost
    carrier = rng.choice(_CARRIERS)
    fields: dict[str, Any] = {
        "exception_kind": rng.choice(("transit_timeout", "lost")),
        "carrier": carrier,
        "tracking_no": f"{carrier}{rng.randrange(10**11):011d}",
        "exception_reported_at": _iso(reported),
        "signed_at": _iso(signed_at) if signed else None,
        "evidence": [
            {
                "kind": rng.choice(("photo", "tracking_screenshot", "carrier_statement")),
                "uri": f"oss://evidence/{seed}/{n}/{i}.jpg",
            }
            for i in range(rng.choice((0, 0, 1, 2, 3)))
        ],
    }
    weight = _weight(rng, amount)
    if weight is not None:
        fields["parcel_weight_g"] = weight
    if rng.randrange(100) < 3:
        fields["tracking_forged"] = True
    category = rng.choices(("standard", "fresh"), (85, 15))[0]
    envelope = _envelope(
        rng,
        "logistics-exception",
        n,
        seed,
        at,
        category=category,
        amount_fen=amount,
        created=created,
    )
    return {**envelope, **fields}


_MAKERS = (_payment_timeout, _shipping_delay, _logistics_exception)


def sample_events(
    count: int, seed: int, *, duplicate_pct: int = 2, start: datetime = SAMPLE_START
) -> list[dict[str, Any]]:
    """`count` events over all platforms, categories and exception kinds, with about
    `duplicate_pct` % exact redeliveries (same event_id, same content) of earlier events."""
    if count < 0:
        raise ValueError("count must be >= 0")
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for n in range(count):
        if events and rng.randrange(100) < duplicate_pct:
            events.append(copy.deepcopy(rng.choice(events)))
            continue
        at = start + n * 7 * _S + rng.randrange(7) * _S
        events.append(rng.choice(_MAKERS)(rng, n, seed, at))
    return events


#: Every timestamp field an event of the contract can carry (envelope and type-specific).
TIMESTAMP_FIELDS = (
    "occurred_at",
    "order_created_at",
    "payment_failed_at",
    "paid_at",
    "exception_reported_at",
    "signed_at",
)


def moved_to(event: dict[str, Any], occurred_at: datetime) -> dict[str, Any]:
    """The event as if it happened at `occurred_at`: every timestamp moved by the same amount,
    so what the rules measure (time since payment, since the failure...) stays the same. A live
    feed uses it: its cases then meet their deadlines and their resolutions in the present."""
    shift = occurred_at - datetime.fromisoformat(event["occurred_at"])
    moved = dict(event)
    for name in TIMESTAMP_FIELDS:
        if moved.get(name):
            moved[name] = _iso(datetime.fromisoformat(moved[name]) + shift)
    return moved

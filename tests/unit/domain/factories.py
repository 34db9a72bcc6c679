"""Builders for events (as flat JSON dicts, decoded through the real contract) and hypothesis
strategies shared by the domain tests. Times are offsets from T0 so tests read as
"paid 48 h ago"."""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from order_recovery.domain import (
    ActionType,
    Decision,
    Event,
    OrderHistory,
    decide,
    event_from_dict,
    load_policies,
)
from order_recovery.domain.history import SHANGHAI

POLICIES = load_policies()
PLATFORMS = ("douyin", "taobao", "pinduoduo")
T0 = datetime(2025, 6, 2, 12, 0, tzinfo=SHANGHAI)  # every event "occurs" at T0
S = timedelta(seconds=1)
M = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)


def iso(at: datetime) -> str:
    return at.isoformat()


def event_id(event_type: str) -> str:
    """A fixed, canonical UUID per event type: tests that need another id pass their own."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"order-recovery-test:{event_type}"))


_ABSENT: Any = object()


def envelope(
    event_type: str,
    platform: str,
    *,
    category: str,
    amount_fen: int,
    created_at: datetime,
    dsr: float | None = _ABSENT,
    **over: Any,
) -> dict[str, Any]:
    """The shared envelope fields; `dsr` absent by default (no reading on the event)."""
    doc = {
        "event_id": over.pop("event_id", event_id(event_type)),
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": iso(over.pop("occurred_at", T0)),
        "order_id": "ord-1",
        "platform": platform,
        "merchant_id": "m-1",
        "buyer_id": "buyer-1",
        "category": category,
        "amount_fen": amount_fen,
        "currency": "CNY",
        "order_created_at": iso(created_at),
    }
    if dsr is not _ABSENT:
        doc["merchant_dsr"] = dsr
    assert not over, over
    return doc


def payment_timeout(
    platform: str = "douyin",
    *,
    created_ago: timedelta | None = None,
    failed_ago: timedelta | None = 10 * M,
    amount_fen: int = 19_900,
    category: str = "standard",
    code: str | None = None,
    stock: bool = True,
    coupon: str | None = None,
    extend: bool = False,
    attempts: int | None = None,
    dsr: float | None = _ABSENT,
) -> dict[str, Any]:
    """Failed `failed_ago` before T0 (None: never attempted, the window then starts when the
    30 min timeout ran out). By default the order was created 35 min before the failure (so it is
    past its timeout), or 31 min before T0 when never attempted; one attempt when it failed,
    none otherwise."""
    if created_ago is None:
        created_ago = 31 * M if failed_ago is None else failed_ago + 35 * M
    if attempts is None:
        attempts = 0 if failed_ago is None else 1
    return {
        **envelope(
            "payment-timeout",
            platform,
            category=category,
            amount_fen=amount_fen,
            created_at=T0 - created_ago,
            dsr=dsr,
        ),
        "payment_failed_at": None if failed_ago is None else iso(T0 - failed_ago),
        "channel_return_code": code,
        "payment_attempt_count": attempts,
        "stock_available": stock,
        "original_coupon_id": coupon,
        "window_extension_requested": extend,
    }


def shipping_delay(
    platform: str = "douyin",
    *,
    paid_ago: timedelta = 50 * H,
    created_ago: timedelta | None = None,
    amount_fen: int = 19_900,
    category: str = "standard",
    weight_g: int | None = None,
    pickup: str = "not_picked_up",
    dsr: float | None = _ABSENT,
) -> dict[str, Any]:
    return {
        **envelope(
            "shipping-delay",
            platform,
            category=category,
            amount_fen=amount_fen,
            created_at=T0 - (created_ago if created_ago is not None else paid_ago + M),
            dsr=dsr,
        ),
        "paid_at": iso(T0 - paid_ago),
        "carrier_pickup_status": pickup,
        "parcel_weight_g": weight_g,
    }


EVIDENCE = [{"kind": "tracking_screenshot", "uri": "oss://e/1.png"}]


def logistics_exception(
    platform: str = "douyin",
    *,
    reported_ago: timedelta = 2 * D,
    signed_ago: timedelta | None = None,
    created_ago: timedelta | None = None,
    evidence: list[dict[str, str]] | None = None,
    forged: bool = False,
    amount_fen: int = 19_900,
    kind: str = "lost",
    weight_g: int | None = None,
    dsr: float | None = _ABSENT,
) -> dict[str, Any]:
    """By default the order was created 3 days before the report (or the sign-off, if earlier)."""
    if created_ago is None:
        created_ago = max(reported_ago, signed_ago or reported_ago) + 3 * D
    return {
        **envelope(
            "logistics-exception",
            platform,
            category="standard",
            amount_fen=amount_fen,
            created_at=T0 - created_ago,
            dsr=dsr,
        ),
        "exception_kind": kind,
        "carrier": "SF",
        "tracking_no": "SF100",
        "exception_reported_at": iso(T0 - reported_ago),
        "signed_at": None if signed_ago is None else iso(T0 - signed_ago),
        "parcel_weight_g": weight_g,
        "evidence": copy.deepcopy(EVIDENCE if evidence is None else evidence),
        "tracking_forged": forged,
    }


def resolution(
    event_type: str, platform: str = "douyin", *, occurred_at: datetime = T0, **fields: Any
) -> dict[str, Any]:
    """A resolution event as flat JSON: its envelope and `fields`; a field given as _ABSENT is
    left out (an optional field the producer did not write)."""
    doc = {
        "event_id": fields.pop("event_id", event_id(event_type)),
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": iso(occurred_at),
        "order_id": fields.pop("order_id", "ord-1"),
        "platform": platform,
    }
    doc.update((k, v) for k, v in fields.items() if v is not _ABSENT)
    return doc


def run(doc: dict[str, Any], history: OrderHistory | None = None) -> Decision:
    """Decode through the contract (so every test event is schema-valid) and decide."""
    event = event_from_dict(doc)
    return decide(event, history or OrderHistory(), POLICIES[event.envelope.platform])


def decode(doc: dict[str, Any]) -> Event:
    return event_from_dict(doc)


# ---------------------------------------------------------------- hypothesis strategies
# Offsets cluster around the policy boundaries: that is where bugs live.
_EDGES = [
    0,
    1,
    899,
    900,
    901,
    1_799,
    1_800,
    1_801,
    7_199,
    7_200,
    7_201,
    86_399,
    86_400,
    86_401,
    172_799,
    172_800,
    172_801,
    259_199,
    259_200,
    259_201,
    604_799,
    604_800,
    604_801,
    1_295_999,
    1_296_000,
    1_296_001,
]
offsets = st.one_of(st.sampled_from(_EDGES), st.integers(0, 30 * 86_400)).map(
    lambda s: timedelta(seconds=s)
)
amounts = st.one_of(
    st.sampled_from([0, 1, 99, 100, 299, 300, 5_999, 6_000, 6_001, 99_999, 100_000, 100_001]),
    st.sampled_from([499_999, 500_000, 500_001]),
    st.integers(0, 10_000_000_000),
)
weights = st.one_of(st.none(), st.integers(0, 20), st.integers(0, 100_000))
codes = st.sampled_from([None, "ERR_TIMEOUT", "SYSTEMERROR", "NOTENOUGH", "CARD_BLOCKED", "X_1"])
platforms = st.sampled_from(PLATFORMS)
# DSR readings are multiples of 0.01 (n / 100 is the float JSON parses "4.57" to); _ABSENT: none.
event_dsrs = st.one_of(
    st.just(_ABSENT),
    st.none(),
    st.sampled_from([4.5, 4.59, 4.6, 4.61, 5.0, 0]),
    st.integers(0, 500).map(lambda n: n / 100),
)
attempt_counts = st.one_of(st.integers(0, 5), st.integers(0, 1_000))


@st.composite
def payment_timeout_docs(draw: st.DrawFn) -> dict[str, Any]:
    failed_ago = draw(st.one_of(st.none(), offsets))
    before_failure = draw(offsets)
    created_ago = (failed_ago if failed_ago is not None else timedelta()) + before_failure
    return payment_timeout(
        draw(platforms),
        created_ago=created_ago,
        failed_ago=failed_ago,
        amount_fen=draw(amounts),
        category=draw(st.sampled_from(["standard", "virtual", "fresh"])),
        code=draw(codes),
        stock=draw(st.booleans()),
        coupon=draw(st.sampled_from([None, "cpn-1"])),
        extend=draw(st.booleans()),
        attempts=draw(attempt_counts),
        dsr=draw(event_dsrs),
    )


@st.composite
def shipping_delay_docs(draw: st.DrawFn) -> dict[str, Any]:
    paid_ago = draw(offsets)
    return shipping_delay(
        draw(platforms),
        paid_ago=paid_ago,
        created_ago=paid_ago + draw(offsets),
        amount_fen=draw(amounts),
        category=draw(st.sampled_from(["standard", "fresh"])),
        weight_g=draw(weights),
        pickup=draw(st.sampled_from(["not_picked_up"] * 4 + ["picked_up"])),
        dsr=draw(event_dsrs),
    )


@st.composite
def logistics_exception_docs(draw: st.DrawFn) -> dict[str, Any]:
    signed_ago = draw(st.one_of(st.none(), offsets))
    reported_ago = (signed_ago or timedelta()) + draw(offsets)
    return logistics_exception(
        draw(platforms),
        reported_ago=reported_ago,
        signed_ago=signed_ago,
        created_ago=reported_ago + draw(offsets),
        evidence=draw(st.sampled_from([[], EVIDENCE])),
        forged=draw(st.integers(0, 9)) == 0,
        amount_fen=draw(amounts),
        kind=draw(st.sampled_from(["transit_timeout", "lost"])),
        weight_g=draw(weights),
        dsr=draw(event_dsrs),
    )


event_docs = st.one_of(payment_timeout_docs(), shipping_delay_docs(), logistics_exception_docs())


def _maybe(*values: Any) -> st.SearchStrategy[Any]:
    """An optional field: absent, null, or one of `values`."""
    return st.sampled_from([_ABSENT, None, *values])


def _resolutions(event_type: str, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.builds(
        lambda platform, after, kw: resolution(event_type, platform, occurred_at=T0 + after, **kw),
        platforms,
        offsets,
        st.fixed_dictionaries(fields),
    )


evidence_items = st.lists(
    st.builds(
        lambda kind, n: {"kind": kind, "uri": f"oss://e/{n}.png"},
        st.sampled_from(["photo", "tracking_screenshot", "carrier_statement", "invoice", "other"]),
        st.integers(0, 99),
    ),
    min_size=1,
    max_size=20,
)
action_types = st.sampled_from([a.value for a in ActionType])
resolution_docs = st.one_of(
    _resolutions(
        "payment-completed",
        amount_fen=amounts,
        new_order_id=_maybe("ord-1-r1"),
        payment_channel=_maybe("alipay", "wechat_pay"),
    ),
    _resolutions(
        "channel-query-result",
        answer=st.sampled_from(["paid", "failed"]),
        channel_return_code=_maybe("SUCCESS", "ERR_TIMEOUT"),
    ),
    _resolutions(
        "parcel-handed-over", carrier=st.sampled_from(["SF", "ZTO"]), tracking_no=st.just("SF1")
    ),
    _resolutions("evidence-uploaded", evidence=evidence_items),
    _resolutions(
        "platform-verdict",
        proceeding=st.sampled_from(["appeal", "arbitration"]),
        result=st.just("lost"),
        amount_fen=st.sampled_from([_ABSENT, 0]),
    ),
    _resolutions(
        "platform-verdict",
        proceeding=st.sampled_from(["appeal", "arbitration"]),
        result=st.just("won"),
        amount_fen=st.one_of(st.just(_ABSENT), amounts),
    ),
    _resolutions(
        "action-report",
        exception_type=st.sampled_from(
            ["payment-timeout", "shipping-delay", "logistics-exception"]
        ),
        action=action_types,
        action_key=st.text("abcdef0123456789-:", min_size=1, max_size=256),
        status=st.just("failed"),
        final=st.sampled_from([_ABSENT, True, False]),
        detail=_maybe("platform API 503", "x" * 1024),
    ),
    _resolutions(
        "action-report",
        exception_type=st.sampled_from(
            ["payment-timeout", "shipping-delay", "logistics-exception"]
        ),
        action=action_types,
        action_key=st.uuids().map(str),
        status=st.just("completed"),
        final=st.sampled_from([_ABSENT, True]),
        detail=_maybe("ok"),
    ),
)

histories = st.builds(
    OrderHistory,
    payment_attempts=st.integers(0, 8),
    buyer_refunds_today=st.integers(0, 9),
    compensation_granted=st.booleans(),
    merchant_dsr=st.one_of(st.none(), st.sampled_from([4.5, 4.59, 4.6, 4.9]), st.floats(0, 5)),
    recovery_right_revoked=st.integers(0, 19).map(lambda n: n == 0),
)

"""The decoded, typed form of the three order-exception events.

Built only by `contract` after schema validation, so these classes trust their inputs: money is
int fen, every datetime is timezone-aware, optional values are None rather than absent, and
`event_id` is a canonical lower-case UUID string.

The JSON events are flat (no payload object). The shared envelope fields, order facts included
(category, amount, currency, creation time, merchant DSR), live in `Envelope`; each event class
holds only its type-specific fields.

The data classes of the hot path (these, OrderHistory, Verdict, Decision, the pipeline's records
and rows) are frozen msgspec Structs rather than frozen dataclasses: several are built for every
consumed event, and a frozen dataclass's `__init__` (one `object.__setattr__` per field) cost six
times as much as a Struct's.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from msgspec import Struct


class EventType(StrEnum):
    PAYMENT_TIMEOUT = "payment-timeout"
    SHIPPING_DELAY = "shipping-delay"
    LOGISTICS_EXCEPTION = "logistics-exception"


class GoodsCategory(StrEnum):
    STANDARD = "standard"
    VIRTUAL = "virtual"  # 15 min payment timeout; never shipped
    FRESH = "fresh"  # fresh produce: 2 h shipping limit, then full refund


class CarrierPickupStatus(StrEnum):
    NOT_PICKED_UP = "not_picked_up"
    PICKED_UP = "picked_up"  # handed to the carrier: not a shipping delay


class LogisticsExceptionKind(StrEnum):
    TRANSIT_TIMEOUT = "transit_timeout"
    LOST = "lost"


#: The only currency of the contract (the schema pins it); amounts are fen of it.
CURRENCY = "CNY"


class Envelope(Struct, frozen=True, gc=False):
    event_id: str  # canonical lower-case UUID (str(uuid.UUID(...))): stored in a uuid column
    event_type: EventType
    schema_version: int
    occurred_at: datetime  # event time: the instant every rule measures to
    platform: str
    order_id: str
    buyer_id: str
    merchant_id: str
    category: GoodsCategory
    amount_fen: int  # >= 0; a 0-fen order is never compensated
    currency: str  # always CURRENCY
    order_created_at: datetime
    # The producer's DSR reading, None when the event carries none; wins over OrderHistory's.
    merchant_dsr: float | None = None


class PaymentTimeout(Struct, frozen=True, gc=False):
    envelope: Envelope
    stock_available: bool
    payment_attempt_count: int  # attempts the producer counted, failed ones included
    payment_failed_at: datetime | None = None  # None: no failed attempt; window starts at timeout
    payment_channel: str | None = None
    channel_return_code: str | None = None
    original_coupon_id: str | None = None
    window_extension_requested: bool = False


class ShippingDelay(Struct, frozen=True, gc=False):
    envelope: Envelope
    paid_at: datetime
    carrier_pickup_status: CarrierPickupStatus
    parcel_weight_g: int | None = None


class Evidence(Struct, frozen=True, gc=False):
    kind: str
    uri: str


class LogisticsException(Struct, frozen=True, gc=False):
    envelope: Envelope
    exception_kind: LogisticsExceptionKind
    carrier: str
    tracking_no: str
    exception_reported_at: datetime
    signed_at: datetime | None = None  # None: never signed; window starts at the report
    parcel_weight_g: int | None = None
    evidence: tuple[Evidence, ...] = ()
    tracking_forged: bool = False


Event = PaymentTimeout | ShippingDelay | LogisticsException

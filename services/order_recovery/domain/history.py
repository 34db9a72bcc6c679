"""What the rules need to know about the past, passed in explicitly so `decide` stays pure.

The worker builds it from its own store (previous decisions, payment ledger, buyer refunds) before
calling the rules. `OrderHistory()` means "nothing known", which never triggers a risk control.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from functools import lru_cache

from msgspec import Struct

# China has had no daylight saving since 1991, so a fixed offset is exact and needs no tz database.
SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")


@lru_cache(maxsize=8192)
def business_day(at: datetime) -> date:
    """The calendar day that "refunds in one day" counts over: the Asia/Shanghai day of the
    event time (platform days roll over at Beijing midnight, whatever the producer's offset).
    Memoised: the worker asks for the same event's day four times (history keys, history,
    advance, the row), and the conversion costs more than the lookup."""
    if at.tzinfo is None:
        raise ValueError("business_day needs a timezone-aware datetime")
    return at.astimezone(SHANGHAI).date()


class OrderHistory(Struct, frozen=True, gc=False):
    """
    payment_attempts: payment attempts the worker's store knows on this order, failed ones
        included. A payment-timeout event also carries its producer's count
        (`payment_attempt_count`); the freeze control uses the larger of the two.
    buyer_refunds_today: refunds already granted to this buyer on `business_day(event time)`,
        not counting the one this decision may grant.
    compensation_granted: a coupon or refund was already granted for this order and this
        exception type (from earlier decisions): no second compensation.
    merchant_dsr: the merchant's DSR score (0-5) as stored, None when unknown. An event that
        carries `merchant_dsr` wins over it (the event's is the newer reading).
    recovery_right_revoked: an earlier decision revoked this order's right to recovery
        (forged logistics): every later event closes without recovery.
    """

    payment_attempts: int = 0
    buyer_refunds_today: int = 0
    compensation_granted: bool = False
    merchant_dsr: float | None = None
    recovery_right_revoked: bool = False

    def __post_init__(self) -> None:
        # Built once per decided event: the common case is checked without a loop or getattr.
        attempts, refunds = self.payment_attempts, self.buyer_refunds_today
        if not (type(attempts) is int and type(refunds) is int and attempts >= 0 <= refunds):
            for name, value in (("payment_attempts", attempts), ("buyer_refunds_today", refunds)):
                if type(value) is not int or value < 0:
                    raise ValueError(
                        f"OrderHistory.{name} must be a non-negative int, got {value!r}"
                    )
        dsr = self.merchant_dsr
        if dsr is not None and not (isinstance(dsr, int | float) and 0 <= dsr <= 5):
            raise ValueError(f"OrderHistory.merchant_dsr must be within 0..5, got {dsr!r}")

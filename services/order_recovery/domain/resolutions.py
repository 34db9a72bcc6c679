"""The decoded, typed form of the resolution events: what happens to an order after its exception.

A decision is not a recovery. These events are the facts that move a case on (see `domain.case`):
a payment completed, the channel's answer to a re-query, the parcel handed to the carrier, the
merchant's evidence, the platform's verdict, and an executor's report on an action it was told to
run. Like the exception events they are flat JSON, keyed by order id, each on a topic of its own,
and built only by `contract` after schema validation, so these classes trust their inputs.

Each resolution names the exception type of the case it belongs to through `CASE_TYPE` (fixed by
the kind of resolution) or, for an executor's report that can close any case, its own field.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from msgspec import Struct

from order_recovery.domain.decision import ActionType
from order_recovery.domain.events import EventType, Evidence


class ResolutionType(StrEnum):
    PAYMENT_COMPLETED = "payment-completed"
    CHANNEL_QUERY_RESULT = "channel-query-result"
    PARCEL_HANDED_OVER = "parcel-handed-over"
    EVIDENCE_UPLOADED = "evidence-uploaded"
    PLATFORM_VERDICT = "platform-verdict"
    ACTION_REPORT = "action-report"


class ChannelQueryAnswer(StrEnum):
    PAID = "paid"  # the channel found the payment: the order is paid after all
    FAILED = "failed"  # the payment did fail: the rule's next step (recall or new order) runs


class Proceeding(StrEnum):
    APPEAL = "appeal"  # douyin: the merchant's appeal, reviewed by the platform's system
    ARBITRATION = "arbitration"  # taobao: the platform arbitrates


class VerdictResult(StrEnum):
    WON = "won"
    LOST = "lost"


class ActionStatus(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"


class ResolutionEnvelope(Struct, frozen=True, gc=False):
    event_id: str  # canonical lower-case UUID, like the exception events'
    event_type: ResolutionType
    schema_version: int
    occurred_at: datetime  # event time: when it happened, what time to recovery measures to
    platform: str
    order_id: str  # the case's order (for a reissued order: the original number)


class PaymentCompleted(Struct, frozen=True, gc=False):
    envelope: ResolutionEnvelope
    amount_fen: int
    new_order_id: str | None = None  # the reissued order's number; None: the recalled order paid
    payment_channel: str | None = None


class ChannelQueryResult(Struct, frozen=True, gc=False):
    envelope: ResolutionEnvelope
    answer: ChannelQueryAnswer
    channel_return_code: str | None = None


class ParcelHandedOver(Struct, frozen=True, gc=False):
    envelope: ResolutionEnvelope
    carrier: str
    tracking_no: str


class EvidenceUploaded(Struct, frozen=True, gc=False):
    envelope: ResolutionEnvelope
    evidence: tuple[Evidence, ...]  # at least one item (the schema's minItems)


class PlatformVerdict(Struct, frozen=True, gc=False):
    envelope: ResolutionEnvelope
    proceeding: Proceeding
    result: VerdictResult
    amount_fen: int = 0  # what the platform awarded the merchant; 0 when lost


class ActionReport(Struct, frozen=True, gc=False):
    """An executor's report on one action of a decision or a review, named by the idempotency
    key the command carried (`domain.case.action_key`)."""

    envelope: ResolutionEnvelope
    exception_type: EventType
    action: ActionType
    action_key: str
    status: ActionStatus
    final: bool = True  # a failure the executor will not retry; a completion is always final
    detail: str | None = None


Resolution = (
    PaymentCompleted
    | ChannelQueryResult
    | ParcelHandedOver
    | EvidenceUploaded
    | PlatformVerdict
    | ActionReport
)

#: The exception type of the case each resolution belongs to (an action report names its own).
CASE_TYPE: dict[type, EventType] = {
    PaymentCompleted: EventType.PAYMENT_TIMEOUT,
    ChannelQueryResult: EventType.PAYMENT_TIMEOUT,
    ParcelHandedOver: EventType.SHIPPING_DELAY,
    EvidenceUploaded: EventType.LOGISTICS_EXCEPTION,
    PlatformVerdict: EventType.LOGISTICS_EXCEPTION,
}


def case_type_of(resolution: Resolution) -> EventType:
    if isinstance(resolution, ActionReport):
        return resolution.exception_type
    return CASE_TYPE[type(resolution)]


#: The class of each resolution type (the store reads recorded resolutions back with it).
CLASSES: dict[ResolutionType, type[Resolution]] = {
    ResolutionType.PAYMENT_COMPLETED: PaymentCompleted,
    ResolutionType.CHANNEL_QUERY_RESULT: ChannelQueryResult,
    ResolutionType.PARCEL_HANDED_OVER: ParcelHandedOver,
    ResolutionType.EVIDENCE_UPLOADED: EvidenceUploaded,
    ResolutionType.PLATFORM_VERDICT: PlatformVerdict,
    ResolutionType.ACTION_REPORT: ActionReport,
}

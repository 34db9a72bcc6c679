"""The pure core: event contract, policies and the recovery rules.

Nothing here talks to Kafka, Postgres or the clock (a unit test enforces the imports), so every
decision can be replayed from an event, a history and a policy version.
"""

from order_recovery.domain.contract import (
    Contract,
    ContractError,
    decode_event,
    decode_resolution,
    default_contract,
    event_from_dict,
    resolution_from_dict,
    validate_outcome,
)
from order_recovery.domain.decision import (
    ActionType,
    Compensation,
    CompensationKind,
    Decision,
    Outcome,
    RiskFlag,
)
from order_recovery.domain.errors import (
    InvalidEvent,
    MalformedJson,
    PolicyError,
    SchemaViolation,
    UnknownEventType,
    UnknownPlatform,
)
from order_recovery.domain.events import (
    CURRENCY,
    CarrierPickupStatus,
    Envelope,
    Event,
    EventType,
    Evidence,
    GoodsCategory,
    LogisticsException,
    LogisticsExceptionKind,
    PaymentTimeout,
    ShippingDelay,
)
from order_recovery.domain.history import OrderHistory, business_day
from order_recovery.domain.outcome import outcome_event, outcome_event_id
from order_recovery.domain.policy import Policy, load_policies, policy_for
from order_recovery.domain.rules import RULES, decide
from order_recovery.domain.sample import sample_events

__all__ = [
    "CURRENCY",
    "RULES",
    "ActionType",
    "CarrierPickupStatus",
    "Compensation",
    "CompensationKind",
    "Contract",
    "ContractError",
    "Decision",
    "Envelope",
    "Event",
    "EventType",
    "Evidence",
    "GoodsCategory",
    "InvalidEvent",
    "LogisticsException",
    "LogisticsExceptionKind",
    "MalformedJson",
    "OrderHistory",
    "Outcome",
    "PaymentTimeout",
    "Policy",
    "PolicyError",
    "RiskFlag",
    "SchemaViolation",
    "ShippingDelay",
    "UnknownEventType",
    "UnknownPlatform",
    "business_day",
    "decide",
    "decode_event",
    "decode_resolution",
    "default_contract",
    "event_from_dict",
    "load_policies",
    "outcome_event",
    "outcome_event_id",
    "policy_for",
    "resolution_from_dict",
    "sample_events",
    "validate_outcome",
]

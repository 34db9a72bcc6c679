"""The event contract: JSON bytes in, typed events out, or a typed InvalidEvent.

The JSON Schema files in the repo's `schemas/` directory are the single source of truth. They are
compiled once with jsonschema-rs (a Rust implementation of draft 2020-12) because validation runs on
the worker's hot path; a unit test checks it agrees with the reference `jsonschema` validator on
every example and on generated events. Error details are computed only on the (rare) failure path.

Two families of messages are decoded the same way: the order-exception events (`decode_event`)
and the resolution events that move a case afterwards (`decode_resolution`). They travel on
topics of their own and their type names are disjoint; each decoder refuses the other family's
types (UnknownEventType), so a resolution on an exception topic, or the reverse, is dead-lettered
rather than taken for something it is not.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Generic, TypeVar

import jsonschema_rs
import orjson

from order_recovery.domain.decision import ActionType
from order_recovery.domain.errors import (
    MalformedJson,
    SchemaViolation,
    UnknownEventType,
    UnknownPlatform,
)
from order_recovery.domain.events import (
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
from order_recovery.domain.history import SHANGHAI
from order_recovery.domain.resolutions import (
    ActionReport,
    ActionStatus,
    ChannelQueryAnswer,
    ChannelQueryResult,
    EvidenceUploaded,
    ParcelHandedOver,
    PaymentCompleted,
    PlatformVerdict,
    Proceeding,
    Resolution,
    ResolutionEnvelope,
    ResolutionType,
    VerdictResult,
)

SCHEMAS_DIR_ENV = "ORDER_RECOVERY_SCHEMAS_DIR"
OUTCOME_SCHEMA = "recovery-outcome.v1.schema.json"
#: The action commands the lifecycle sends to executors (domain.commands).
COMMAND_SCHEMA = "action-command.v1.schema.json"
ENVELOPE_SCHEMA = "envelope.schema.json"
RESOLUTION_ENVELOPE_SCHEMA = "resolution-envelope.schema.json"


def schemas_dir() -> Path:
    """`$ORDER_RECOVERY_SCHEMAS_DIR`, else the `schemas/` directory at the repository root."""
    configured = os.environ.get(SCHEMAS_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3] / "schemas"


def schema_file(event_type: str, version: int) -> str:
    return f"{event_type}.v{version}.schema.json"


class ContractError(RuntimeError):
    """The schema directory is missing or incomplete: a deployment problem, not a bad event."""


def _ts(value: str, field: str) -> datetime:
    # The schema's pattern guarantees shape and offset; this catches impossible dates (month 13),
    # and instants at the edge of datetime's range (years 1 and 9999) that have no UTC or
    # Asia/Shanghai form: the pipeline takes every event's day there, outside the guarded rules.
    try:
        at = datetime.fromisoformat(value)
        if at.year in (1, 9999):
            at.astimezone(UTC), at.astimezone(SHANGHAI)
        return at
    except (ValueError, OverflowError) as exc:
        raise SchemaViolation(field, f"not a valid date-time: {value!r} ({exc})") from None


def _opt_ts(value: str | None, field: str) -> datetime | None:
    return None if value is None else _ts(value, field)


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _uuid(value: str, field: str) -> str:
    """The canonical lower-case form: the worker stores event ids in a Postgres uuid column and
    compares them with what it reads back as text, so "ABC..." and "abc..." must be one id. The
    schema's pattern admits only the 8-4-4-4-12 form, so lower-casing is the whole job there;
    `uuid.UUID` (five times slower) is left for what a looser schema directory lets through."""
    if type(value) is str:
        lowered = value.lower()
        if _CANONICAL_UUID.fullmatch(lowered):
            return lowered
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError) as exc:  # only with a looser schema dir
        raise SchemaViolation(field, f"not a UUID: {value!r} ({exc})") from None


def _members(enum: Any) -> Mapping[str, Any]:
    """value -> member, for the enums decoded per event: a dict lookup instead of the Enum
    call (a tenth of the envelope's decoding). The schema has already checked the value."""
    return {member.value: member for member in enum}


_EVENT_TYPES = _members(EventType)
_CATEGORIES = _members(GoodsCategory)
_PICKUP_STATUSES = _members(CarrierPickupStatus)
_LOGISTICS_KINDS = _members(LogisticsExceptionKind)


def _opt_int(value: Any) -> int | None:
    # JSON Schema counts 100.0 as an integer; the typed events keep Python ints.
    return None if value is None else int(value)


def _envelope(obj: Mapping[str, Any]) -> Envelope:
    dsr = obj.get("merchant_dsr")
    return Envelope(
        event_id=_uuid(obj["event_id"], "event_id"),
        event_type=_EVENT_TYPES[obj["event_type"]],
        schema_version=int(obj["schema_version"]),
        occurred_at=_ts(obj["occurred_at"], "occurred_at"),
        platform=obj["platform"],
        order_id=obj["order_id"],
        buyer_id=obj["buyer_id"],
        merchant_id=obj["merchant_id"],
        category=_CATEGORIES[obj["category"]],
        amount_fen=int(obj["amount_fen"]),
        currency=obj["currency"],
        order_created_at=_ts(obj["order_created_at"], "order_created_at"),
        merchant_dsr=None if dsr is None else float(dsr),
    )


def _payment_timeout(obj: Mapping[str, Any]) -> PaymentTimeout:
    return PaymentTimeout(
        envelope=_envelope(obj),
        stock_available=obj["stock_available"],
        payment_attempt_count=int(obj["payment_attempt_count"]),
        payment_failed_at=_opt_ts(obj.get("payment_failed_at"), "payment_failed_at"),
        payment_channel=obj.get("payment_channel"),
        channel_return_code=obj.get("channel_return_code"),
        original_coupon_id=obj.get("original_coupon_id"),
        window_extension_requested=obj.get("window_extension_requested", False),
    )


def _shipping_delay(obj: Mapping[str, Any]) -> ShippingDelay:
    return ShippingDelay(
        envelope=_envelope(obj),
        paid_at=_ts(obj["paid_at"], "paid_at"),
        carrier_pickup_status=_PICKUP_STATUSES[obj["carrier_pickup_status"]],
        parcel_weight_g=_opt_int(obj.get("parcel_weight_g")),
    )


def _logistics_exception(obj: Mapping[str, Any]) -> LogisticsException:
    return LogisticsException(
        envelope=_envelope(obj),
        exception_kind=_LOGISTICS_KINDS[obj["exception_kind"]],
        carrier=obj["carrier"],
        tracking_no=obj["tracking_no"],
        exception_reported_at=_ts(obj["exception_reported_at"], "exception_reported_at"),
        signed_at=_opt_ts(obj.get("signed_at"), "signed_at"),
        parcel_weight_g=_opt_int(obj.get("parcel_weight_g")),
        evidence=tuple(Evidence(e["kind"], e["uri"]) for e in obj.get("evidence", ())),
        tracking_forged=obj.get("tracking_forged", False),
    )


#: (event_type, schema_version) -> builder. A schema file without a builder is not decodable.
BUILDERS: dict[tuple[str, int], Callable[[Mapping[str, Any]], Event]] = {
    (EventType.PAYMENT_TIMEOUT.value, 1): _payment_timeout,
    (EventType.SHIPPING_DELAY.value, 1): _shipping_delay,
    (EventType.LOGISTICS_EXCEPTION.value, 1): _logistics_exception,
}

# ------------------------------------------------------------------------- resolution events
_RESOLUTION_TYPES = _members(ResolutionType)
_ANSWERS = _members(ChannelQueryAnswer)
_PROCEEDINGS = _members(Proceeding)
_VERDICTS = _members(VerdictResult)
_ACTIONS = _members(ActionType)
_ACTION_STATUSES = _members(ActionStatus)


def _resolution_envelope(obj: Mapping[str, Any]) -> ResolutionEnvelope:
    return ResolutionEnvelope(
        event_id=_uuid(obj["event_id"], "event_id"),
        event_type=_RESOLUTION_TYPES[obj["event_type"]],
        schema_version=int(obj["schema_version"]),
        occurred_at=_ts(obj["occurred_at"], "occurred_at"),
        platform=obj["platform"],
        order_id=obj["order_id"],
    )


def _payment_completed(obj: Mapping[str, Any]) -> PaymentCompleted:
    return PaymentCompleted(
        envelope=_resolution_envelope(obj),
        amount_fen=int(obj["amount_fen"]),
        new_order_id=obj.get("new_order_id"),
        payment_channel=obj.get("payment_channel"),
    )


def _channel_query_result(obj: Mapping[str, Any]) -> ChannelQueryResult:
    return ChannelQueryResult(
        envelope=_resolution_envelope(obj),
        answer=_ANSWERS[obj["answer"]],
        channel_return_code=obj.get("channel_return_code"),
    )


def _parcel_handed_over(obj: Mapping[str, Any]) -> ParcelHandedOver:
    return ParcelHandedOver(
        envelope=_resolution_envelope(obj), carrier=obj["carrier"], tracking_no=obj["tracking_no"]
    )


def _evidence_uploaded(obj: Mapping[str, Any]) -> EvidenceUploaded:
    return EvidenceUploaded(
        envelope=_resolution_envelope(obj),
        evidence=tuple(Evidence(e["kind"], e["uri"]) for e in obj["evidence"]),
    )


def _platform_verdict(obj: Mapping[str, Any]) -> PlatformVerdict:
    return PlatformVerdict(
        envelope=_resolution_envelope(obj),
        proceeding=_PROCEEDINGS[obj["proceeding"]],
        result=_VERDICTS[obj["result"]],
        amount_fen=int(obj.get("amount_fen", 0)),
    )


def _action_report(obj: Mapping[str, Any]) -> ActionReport:
    return ActionReport(
        envelope=_resolution_envelope(obj),
        exception_type=_EVENT_TYPES[obj["exception_type"]],
        action=_ACTIONS[obj["action"]],
        action_key=obj["action_key"],
        status=_ACTION_STATUSES[obj["status"]],
        final=obj.get("final", True),
        detail=obj.get("detail"),
    )


#: The resolution events' (event_type, schema_version) -> builder, as BUILDERS for the exceptions.
RESOLUTION_BUILDERS: dict[tuple[str, int], Callable[[Mapping[str, Any]], Resolution]] = {
    (ResolutionType.PAYMENT_COMPLETED.value, 1): _payment_completed,
    (ResolutionType.CHANNEL_QUERY_RESULT.value, 1): _channel_query_result,
    (ResolutionType.PARCEL_HANDED_OVER.value, 1): _parcel_handed_over,
    (ResolutionType.EVIDENCE_UPLOADED.value, 1): _evidence_uploaded,
    (ResolutionType.PLATFORM_VERDICT.value, 1): _platform_verdict,
    (ResolutionType.ACTION_REPORT.value, 1): _action_report,
}


def _path(parts: Collection[str | int], leaf: str | None = None) -> str:
    names = [str(p) for p in parts]
    if leaf is not None:
        names.append(leaf)
    return ".".join(names)


def _first_unexpected(kind: Any) -> str | None:
    unexpected = getattr(kind, "unexpected", None)
    return str(unexpected[0]) if unexpected else None


def _violation(validator: Any, obj: Any) -> SchemaViolation:
    """The most specific error: a failing subschema also leaves its properties "unevaluated", so
    the unevaluatedProperties errors are only reported when nothing else is wrong."""
    try:
        errors = list(validator.iter_errors(obj))
    except ValueError as exc:  # jsonschema-rs reports 256 levels of nesting this way
        return SchemaViolation("", f"invalid, and nested too deeply to say where: {exc}")
    if not errors:  # pragma: no cover - only called after is_valid() said False
        return SchemaViolation("", "invalid")
    real = [
        e
        for e in errors
        if not isinstance(e.kind, jsonschema_rs.ValidationErrorKind.UnevaluatedProperties)
    ]
    best = max(real or errors, key=lambda e: len(e.instance_path))
    kind = best.kind
    leaf: str | None = None
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
        leaf = str(kind.property)
    elif isinstance(
        kind,
        jsonschema_rs.ValidationErrorKind.AdditionalProperties
        | jsonschema_rs.ValidationErrorKind.UnevaluatedProperties,
    ):
        leaf = _first_unexpected(kind)
    return SchemaViolation(_path(best.instance_path, leaf), best.message)


#: A member's key ends in a quote, then the colon; JSON allows whitespace between the two.
_QUOTE_THEN_SPACE = re.compile(rb'"[ \t\n\r]')


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise MalformedJson(
                key,
                "the key appears twice in one object; refused because parsers disagree on which "
                "value counts (orjson takes the last, others the first)",
            )
        seen.add(key)
    return dict(pairs)


def _refuse_duplicate_keys(raw: bytes, obj: Mapping[str, Any]) -> None:
    """orjson, like most parsers, keeps the last of a key written twice; a producer's own tools
    may read the first, so the same bytes would mean two amounts. Called on a valid event, whose
    shape is known: every object member puts a quote right before its colon, so when the count of
    `":` in the bytes equals the keys parsed and no quote is followed by whitespace, no member
    was lost to a duplicate. Anything else (rare: whitespace before a colon, `":` inside a
    string) is checked exactly by the standard library's parser, which sees every pair."""
    evidence = obj.get("evidence")
    keys = len(obj) + (sum(map(len, evidence)) if evidence else 0)
    if raw.count(b'":') == keys and _QUOTE_THEN_SPACE.search(raw) is None:
        return  # about 1.7 us per event; the whole decode is about 10
    try:
        json.loads(raw, object_pairs_hook=_unique_keys)
    except MalformedJson:
        raise
    except ValueError as exc:  # orjson read it; the standard parser should too
        raise MalformedJson("", f"not JSON: {exc}") from None


_NESTED_PAYLOAD = (
    "events are flat: the fields of the former `payload` object (amount_fen, category, ...) "
    "belong at the top level beside event_id"
)


D = TypeVar("D")  # what a family decodes to: Event or Resolution


@dataclass(frozen=True, slots=True)
class _Family(Generic[D]):
    """Messages decoded alike and only by their own decoder: the order-exception events, or the
    resolution events. Each (event_type, schema_version) maps to its compiled validator and its
    builder, looked up once per message."""

    noun: str  # "an order-exception event": what the other family's decoder says it was sent
    decoders: Mapping[tuple[str, int], tuple[Any, Callable[[Mapping[str, Any]], D]]]

    @property
    def types(self) -> frozenset[str]:
        return frozenset(t for t, _ in self.decoders)


@dataclass(frozen=True, slots=True)
class Contract:
    """Compiled validators for one schema directory."""

    directory: Path
    schemas: Mapping[str, Mapping[str, Any]]  # file name -> parsed schema
    _events: _Family[Event]
    _resolutions: _Family[Resolution]
    _outcome_validator: Any
    _command_validator: Any

    @classmethod
    def load(cls, directory: Path | None = None) -> Contract:
        root = Path(directory) if directory is not None else schemas_dir()
        if not root.is_dir():
            raise ContractError(f"schema directory {root} does not exist (set {SCHEMAS_DIR_ENV})")
        schemas = {p.name: orjson.loads(p.read_bytes()) for p in sorted(root.glob("*.schema.json"))}
        decodable = [*BUILDERS, *RESOLUTION_BUILDERS]
        wanted = [
            ENVELOPE_SCHEMA,
            RESOLUTION_ENVELOPE_SCHEMA,
            OUTCOME_SCHEMA,
            COMMAND_SCHEMA,
            *(schema_file(t, v) for t, v in decodable),
        ]
        missing = [name for name in wanted if name not in schemas]
        if missing:
            raise ContractError(f"schema directory {root} lacks {missing}")
        registry = jsonschema_rs.Registry([(s["$id"], s) for s in schemas.values()])

        def compile_(name: str) -> Any:
            return jsonschema_rs.Draft202012Validator(schemas[name], registry=registry)

        def family(noun: str, builders: Mapping[tuple[str, int], Callable[..., D]]) -> _Family[D]:
            return _Family(noun, {k: (compile_(schema_file(*k)), b) for k, b in builders.items()})

        return cls(
            directory=root,
            schemas=schemas,
            _events=family("an order-exception event", BUILDERS),
            _resolutions=family("a resolution event", RESOLUTION_BUILDERS),
            _outcome_validator=compile_(OUTCOME_SCHEMA),
            _command_validator=compile_(COMMAND_SCHEMA),
        )

    def validator(self, schema_name: str) -> Any:
        """The compiled validator of one schema file (e.g. "shipping-delay.v1.schema.json")."""
        if schema_name == OUTCOME_SCHEMA:
            return self._outcome_validator
        if schema_name == COMMAND_SCHEMA:
            return self._command_validator
        event_type, _, rest = schema_name.partition(".v")
        key = (event_type, int(rest.split(".")[0]))
        decoder = self._events.decoders.get(key) or self._resolutions.decoders[key]
        return decoder[0]

    @property
    def event_types(self) -> frozenset[str]:
        return self._events.types

    @property
    def resolution_types(self) -> frozenset[str]:
        return self._resolutions.types

    def decode_event(
        self, raw: bytes | bytearray | memoryview | str, *, platforms: Collection[str] | None = None
    ) -> Event:
        """Parse and validate one message value. `platforms`, when given, is the set of platforms
        with a loaded policy; others raise UnknownPlatform (the rules need a policy anyway)."""
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise MalformedJson("", f"not UTF-8 JSON: {exc}") from None
        data = raw.encode() if isinstance(raw, str) else bytes(raw)
        return self._from_dict(obj, self._events, platforms, data)

    def decode_resolution(
        self, raw: bytes | bytearray | memoryview | str, *, platforms: Collection[str] | None = None
    ) -> Resolution:
        """decode_event for the resolution topics: the same checks and typed errors, and an
        order-exception event here is an UnknownEventType, as a resolution is there."""
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise MalformedJson("", f"not UTF-8 JSON: {exc}") from None
        data = raw.encode() if isinstance(raw, str) else bytes(raw)
        return self._from_dict(obj, self._resolutions, platforms, data)

    def event_from_dict(
        self, obj: Any, *, platforms: Collection[str] | None = None, raw: bytes | None = None
    ) -> Event:
        """`raw`: the bytes `obj` was parsed from, checked for keys written twice."""
        return self._from_dict(obj, self._events, platforms, raw)

    def resolution_from_dict(
        self, obj: Any, *, platforms: Collection[str] | None = None, raw: bytes | None = None
    ) -> Resolution:
        """`raw`: the bytes `obj` was parsed from, checked for keys written twice."""
        return self._from_dict(obj, self._resolutions, platforms, raw)

    def _from_dict(
        self,
        obj: Any,
        family: _Family[D],
        platforms: Collection[str] | None,
        raw: bytes | None,
    ) -> D:
        if not isinstance(obj, dict):
            raise MalformedJson("", f"top-level JSON value is {type(obj).__name__}, not an object")
        event_type = obj.get("event_type")
        if type(event_type) is not str:
            raise SchemaViolation("event_type", "missing or not a string")
        version = obj.get("schema_version")
        if type(version) is float and version.is_integer():
            version = int(version)
        if type(version) is not int:
            raise SchemaViolation("schema_version", "missing or not an integer")
        decoder = family.decoders.get((event_type, version))
        if decoder is None:
            raise self._unknown_type(family, event_type, version)
        validator, build = decoder
        if not validator.is_valid(obj):
            if isinstance(obj.get("payload"), dict):  # the pre-flattening shape: say so plainly
                raise SchemaViolation("payload", _NESTED_PAYLOAD)
            raise _violation(validator, obj)
        if raw is not None:
            _refuse_duplicate_keys(raw, obj)
        if platforms is not None and obj["platform"] not in platforms:
            raise UnknownPlatform("platform", f"no policy for platform {obj['platform']!r}")
        return build(obj)

    def _unknown_type(
        self, family: _Family[Any], event_type: str, version: int
    ) -> UnknownEventType:
        """Why no decoder: a version this build lacks, the other family's type (a message on the
        wrong topic), or a type nobody knows."""
        if event_type in family.types:
            return UnknownEventType("schema_version", f"no schema for {event_type} v{version}")
        for other in (self._events, self._resolutions):
            if other is not family and event_type in other.types:
                return UnknownEventType(
                    "event_type",
                    f"{event_type!r} is {other.noun}, not {family.noun} (on the wrong topic?)",
                )
        return UnknownEventType("event_type", f"unknown event type {event_type!r}")

    def validate_event_dict(self, obj: Any) -> None:
        """Schema check only (no typed event built), for producers and tests."""
        self.event_from_dict(obj)

    def validate_outcome(self, obj: Any) -> None:
        """Raise SchemaViolation unless `obj` is a valid recovery-outcome.v1 message."""
        if not isinstance(obj, dict):
            raise MalformedJson("", f"outcome is {type(obj).__name__}, not an object")
        if not self._outcome_validator.is_valid(obj):
            raise _violation(self._outcome_validator, obj)

    def validate_command(self, obj: Any) -> None:
        """Raise SchemaViolation unless `obj` is a valid action-command.v1 message."""
        if not isinstance(obj, dict):
            raise MalformedJson("", f"command is {type(obj).__name__}, not an object")
        if not self._command_validator.is_valid(obj):
            raise _violation(self._command_validator, obj)


@cache
def default_contract() -> Contract:
    """Loaded on first use and kept: schemas do not change under a running worker."""
    return Contract.load()


def decode_event(
    raw: bytes | bytearray | memoryview | str, *, platforms: Collection[str] | None = None
) -> Event:
    return default_contract().decode_event(raw, platforms=platforms)


def decode_resolution(
    raw: bytes | bytearray | memoryview | str, *, platforms: Collection[str] | None = None
) -> Resolution:
    return default_contract().decode_resolution(raw, platforms=platforms)


def event_from_dict(obj: Any, *, platforms: Collection[str] | None = None) -> Event:
    return default_contract().event_from_dict(obj, platforms=platforms)


def resolution_from_dict(obj: Any, *, platforms: Collection[str] | None = None) -> Resolution:
    return default_contract().resolution_from_dict(obj, platforms=platforms)


def validate_outcome(obj: Any) -> None:
    default_contract().validate_outcome(obj)

"""decode_resolution: every example to its exact Struct, the Python enums equal the schemas',
typed errors with the field's path, keys twice refused, and no confusion with the exception
events in either direction. (The example files' errors and the agreement with the reference
validator are checked for every family in test_contract.)"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given, settings

from order_recovery.domain import (
    ActionType,
    EventType,
    Evidence,
    InvalidEvent,
    MalformedJson,
    SchemaViolation,
    UnknownEventType,
    UnknownPlatform,
    decode_event,
    decode_resolution,
    default_contract,
    event_from_dict,
    resolution_from_dict,
)
from order_recovery.domain.case import action_key
from order_recovery.domain.contract import schemas_dir
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
    ResolutionEnvelope,
    ResolutionType,
    VerdictResult,
    case_type_of,
)

from .factories import (
    POLICIES,
    logistics_exception,
    payment_timeout,
    resolution,
    resolution_docs,
    shipping_delay,
)

EXAMPLES = schemas_dir() / "examples"
SCHEMAS = default_contract().schemas
CST = timezone(timedelta(hours=8))
RT = ResolutionType


def _env(
    event_type: ResolutionType, event_id: str, order_id: str, at: str, platform: str = "douyin"
) -> ResolutionEnvelope:
    return ResolutionEnvelope(
        event_id=event_id,
        event_type=event_type,
        schema_version=1,
        occurred_at=datetime.fromisoformat(at).replace(tzinfo=CST),
        platform=platform,
        order_id=order_id,
    )


#: Each valid example and the Struct it must decode to, written out field by field.
EXPECTED_STRUCTS: dict[str, Any] = {
    "payment-completed/valid-recalled-order-paid.json": PaymentCompleted(
        _env(
            RT.PAYMENT_COMPLETED,
            "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f",
            "ord-example-pt1",
            "2025-06-02T10:52:00",
        ),
        amount_fen=19_900,
        payment_channel="wechat_pay",
    ),
    "payment-completed/valid-reissued-order-paid.json": PaymentCompleted(
        _env(
            RT.PAYMENT_COMPLETED,
            "d2e3f4a5-b6c7-4d8e-9f0a-1b2c3d4e5f60",
            "ord-example-pt2",
            "2025-06-02T13:05:00",
            "taobao",
        ),
        amount_fen=8_800,
        new_order_id="ord-example-pt2-r1",
    ),
    "payment-completed/valid-required-fields-only.json": PaymentCompleted(
        _env(
            RT.PAYMENT_COMPLETED,
            "e3f4a5b6-c7d8-4e9f-8a1b-2c3d4e5f6071",  # upper case in the file
            "ord-example-pt1",
            "2025-06-02T10:52:00",
        ),
        amount_fen=19_900,
    ),
    "channel-query-result/valid-paid.json": ChannelQueryResult(
        _env(
            RT.CHANNEL_QUERY_RESULT,
            "0a9b8c7d-6e5f-4a3b-9c2d-1e0f9a8b7c6d",
            "ord-example-pt1",
            "2025-06-02T10:35:00",
        ),
        answer=ChannelQueryAnswer.PAID,
        channel_return_code="SUCCESS",
    ),
    "channel-query-result/valid-failed-required-fields-only.json": ChannelQueryResult(
        _env(
            RT.CHANNEL_QUERY_RESULT,
            "1b0c9d8e-7f6a-4b5c-8d3e-2f1a0b9c8d7e",
            "ord-example-pt3",
            "2025-06-02T10:36:00",
            "pinduoduo",
        ),
        answer=ChannelQueryAnswer.FAILED,
    ),
    "parcel-handed-over/valid-handed-over.json": ParcelHandedOver(
        _env(
            RT.PARCEL_HANDED_OVER,
            "2c1d0e9f-8a7b-4c6d-9e4f-3a2b1c0d9e8f",
            "ord-example-sd1",
            "2025-06-04T09:10:00",
        ),
        carrier="ZTO",
        tracking_no="ZTO75310000001",
    ),
    "evidence-uploaded/valid-two-items.json": EvidenceUploaded(
        _env(
            RT.EVIDENCE_UPLOADED,
            "3d2e1f0a-9b8c-4d7e-8f5a-4b3c2d1e0f9a",
            "ord-example-le1",
            "2025-05-29T16:20:00",
            "taobao",
        ),
        evidence=(
            Evidence("tracking_screenshot", "oss://evidence/le1/3.png"),
            Evidence("invoice", "oss://evidence/le1/4.pdf"),
        ),
    ),
    "platform-verdict/valid-arbitration-won.json": PlatformVerdict(
        _env(
            RT.PLATFORM_VERDICT,
            "4e3f2a1b-0c9d-4e8f-9a6b-5c4d3e2f1a0b",
            "ord-example-le1",
            "2025-06-03T11:00:00",
            "taobao",
        ),
        proceeding=Proceeding.ARBITRATION,
        result=VerdictResult.WON,
        amount_fen=129_900,
    ),
    "platform-verdict/valid-appeal-lost.json": PlatformVerdict(
        _env(
            RT.PLATFORM_VERDICT,
            "5f4a3b2c-1d0e-4f9a-8b7c-6d5e4f3a2b1c",
            "ord-example-le2",
            "2025-06-03T12:00:00",
        ),
        proceeding=Proceeding.APPEAL,
        result=VerdictResult.LOST,
    ),
    "platform-verdict/valid-appeal-lost-zero-amount.json": PlatformVerdict(
        _env(
            RT.PLATFORM_VERDICT,
            "6a5b4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d",
            "ord-example-le2",
            "2025-06-03T12:00:00",
        ),
        proceeding=Proceeding.APPEAL,
        result=VerdictResult.LOST,
        amount_fen=0,
    ),
    "action-report/valid-coupon-completed.json": ActionReport(
        _env(
            RT.ACTION_REPORT,
            "7b6c5d4e-3f2a-4b1c-8d9e-8f7a6b5c4d3e",
            "ord-example-sd1",
            "2025-06-02T12:00:05",
        ),
        exception_type=EventType.SHIPPING_DELAY,
        action=ActionType.ISSUE_COUPON,
        action_key="ord-example-sd1/shipping-delay/0/issue_coupon",
        status=ActionStatus.COMPLETED,
    ),
    "action-report/valid-recall-failed-will-retry.json": ActionReport(
        _env(
            RT.ACTION_REPORT,
            "8c7d6e5f-4a3b-4c2d-9e0f-9a8b7c6d5e4f",
            "ord-example-pt2",
            "2025-06-02T13:01:00",
            "taobao",
        ),
        exception_type=EventType.PAYMENT_TIMEOUT,
        action=ActionType.RECALL_ORDER,
        action_key="ord-example-pt2/payment-timeout/0/recall_order",
        status=ActionStatus.FAILED,
        final=False,
        detail="platform API 503: order service unavailable, retrying",
    ),
    "action-report/valid-refund-failed-final.json": ActionReport(
        _env(
            RT.ACTION_REPORT,
            "9d8e7f6a-5b4c-4d3e-8f1a-0b9c8d7e6f5a",
            "ord-example-le1",
            "2025-06-03T11:05:00",
            "pinduoduo",
        ),
        exception_type=EventType.LOGISTICS_EXCEPTION,
        action=ActionType.AUTO_REFUND,
        action_key="ord-example-le1/logistics-exception/1/auto_refund",
        status=ActionStatus.FAILED,
        final=True,
    ),
}
VALID = sorted(
    p.relative_to(EXAMPLES).as_posix()
    for t in ResolutionType
    for p in (EXAMPLES / t.value).glob("valid-*.json")
)


def _raw(name: str) -> bytes:
    return (EXAMPLES / name).read_bytes()


def _error(decode: Any, raw: bytes, **kw: Any) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        decode(raw, **kw)
    return caught.value


# --------------------------------------------------------------- the examples, exactly
def test_every_valid_resolution_example_has_its_expected_struct():
    assert set(VALID) == set(EXPECTED_STRUCTS)


@pytest.mark.parametrize("name", VALID)
def test_each_valid_example_decodes_to_exactly_its_struct(name):
    decoded = decode_resolution(_raw(name), platforms=POLICIES)
    assert decoded == EXPECTED_STRUCTS[name]
    assert decoded.envelope.occurred_at.utcoffset() == timedelta(hours=8)
    case_type_of(decoded)  # every kind names the type of its case


@pytest.mark.parametrize("name", VALID)
def test_a_valid_example_decodes_the_same_from_a_dict(name):
    assert resolution_from_dict(json.loads(_raw(name))) == EXPECTED_STRUCTS[name]


# --------------------------------------------------------------- code and schemas agree
def _enum(schema: str, field: str) -> list[str]:
    return SCHEMAS[f"{schema}.v1.schema.json"]["properties"][field]["enum"]


@pytest.mark.parametrize(
    ("schema", "field", "enum"),
    [
        ("channel-query-result", "answer", ChannelQueryAnswer),
        ("platform-verdict", "proceeding", Proceeding),
        ("platform-verdict", "result", VerdictResult),
        ("action-report", "status", ActionStatus),
    ],
)
def test_python_enums_equal_the_schema_enums(schema, field, enum):
    assert _enum(schema, field) == [m.value for m in enum]


def test_action_report_names_the_outcome_actions_and_the_exception_types():
    """Both are references to the one definition the outcome schema and envelope hold, which
    test_decision and this test keep equal to ActionType and EventType."""
    props = SCHEMAS["action-report.v1.schema.json"]["properties"]
    assert props["action"]["$ref"] == "recovery-outcome.v1.schema.json#/$defs/action"
    assert props["exception_type"]["$ref"] == "envelope.schema.json#/$defs/exception_type"
    exception_types = SCHEMAS["envelope.schema.json"]["$defs"]["exception_type"]["enum"]
    assert exception_types == [t.value for t in EventType]
    outcome = SCHEMAS["recovery-outcome.v1.schema.json"]["properties"]["source_event_type"]
    assert outcome == {"$ref": "envelope.schema.json#/$defs/exception_type"}


def test_resolution_types_are_the_schema_files_and_disjoint_from_the_exception_types():
    contract = default_contract()
    assert contract.resolution_types == {t.value for t in ResolutionType}
    assert contract.event_types == {t.value for t in EventType}
    assert not contract.resolution_types & contract.event_types


@settings(max_examples=150, deadline=None)
@given(resolution_docs)
def test_generated_valid_resolutions_decode(doc):
    decoded = decode_resolution(orjson.dumps(doc), platforms=POLICIES)
    assert decoded.envelope.event_type == doc["event_type"]
    assert decoded.envelope.order_id == doc["order_id"]


# --------------------------------------------------------------- typed errors, with the path
def test_optional_fields_absent_or_null_are_none_and_defaults_apply():
    paid = decode_resolution(
        orjson.dumps(resolution("payment-completed", amount_fen=1, new_order_id=None))
    )
    assert isinstance(paid, PaymentCompleted)
    assert paid.new_order_id is None and paid.payment_channel is None
    report = resolution_from_dict(
        resolution(
            "action-report",
            exception_type="payment-timeout",
            action="recall_order",
            action_key="k",
            status="failed",
            detail=None,
        )
    )
    assert isinstance(report, ActionReport) and report.final is True and report.detail is None
    verdict = resolution_from_dict(
        resolution("platform-verdict", proceeding="appeal", result="won")
    )
    assert isinstance(verdict, PlatformVerdict) and verdict.amount_fen == 0


def test_integral_float_amounts_become_int_fen():
    doc = resolution("payment-completed", amount_fen=19900.0)
    paid = decode_resolution(orjson.dumps(doc))
    assert isinstance(paid, PaymentCompleted)
    assert type(paid.amount_fen) is int and paid.amount_fen == 19_900


@pytest.mark.parametrize(
    ("value", "valid"), [(0, True), (10_000_000_000, True), (-1, False), (10_000_000_001, False)]
)
@pytest.mark.parametrize("event_type", ["payment-completed", "platform-verdict"])
def test_money_is_int_fen_from_zero_to_the_envelope_cap(event_type, value, valid):
    extra = {"proceeding": "appeal", "result": "won"} if event_type == "platform-verdict" else {}
    raw = orjson.dumps(resolution(event_type, amount_fen=value, **extra))
    if valid:
        assert decode_resolution(raw).amount_fen == value
    else:
        error = _error(decode_resolution, raw)
        assert (error.error_class, error.field) == ("schema_violation", "amount_fen")


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"evidence": [{"kind": "photo", "uri": ""}]}, "evidence.0.uri"),
        ({"evidence": [{"kind": "photo", "uri": "u", "size": 1}]}, "evidence.0.size"),
        ({"evidence": {"kind": "photo", "uri": "u"}}, "evidence"),
    ],
)
def test_evidence_errors_name_the_item_and_field(fields, path):
    error = _error(decode_resolution, orjson.dumps(resolution("evidence-uploaded", **fields)))
    assert (error.error_class, error.field) == ("schema_violation", path)


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"status": "completed", "final": False}, "final"),
        ({"detail": "x" * 1025}, "detail"),
        ({"detail": 7}, "detail"),
        ({"action_key": "k" * 257}, "action_key"),
        ({"action": "manual_reviews"}, "action"),
        ({"exception_type": "action-report"}, "exception_type"),
        ({"priority": 1}, "priority"),
        ({"event_id": "not-a-uuid"}, "event_id"),
        ({"occurred_at": "2025-13-01T00:00:00Z"}, "occurred_at"),
        ({"order_id": None}, "order_id"),
    ],
)
def test_action_report_errors_name_the_field(fields, path):
    base = {
        "exception_type": "shipping-delay",
        "action": "issue_coupon",
        "action_key": "k-1",
        "status": "failed",
    }
    doc = resolution("action-report", **base) | fields
    error = _error(decode_resolution, orjson.dumps(doc))
    assert (error.error_class, error.field) == ("schema_violation", path)


def test_the_longest_allowed_strings_are_accepted():
    report = decode_resolution(
        orjson.dumps(
            resolution(
                "action-report",
                exception_type="shipping-delay",
                action="issue_coupon",
                action_key="k" * 256,
                status="failed",
                detail="x" * 1024,
            )
        )
    )
    assert isinstance(report, ActionReport) and len(report.action_key) == 256


def test_the_longest_key_the_worker_writes_is_a_valid_action_key():
    """domain.case.action_key from the longest order id, exception type and action, at a step
    no case reaches: the executor must be able to echo it back."""
    case = SimpleNamespace(order_id="o" * 128, exception_type=EventType.LOGISTICS_EXCEPTION)
    longest = max(ActionType, key=lambda a: len(a.value))
    key = action_key(case, 10**6, longest)  # type: ignore[arg-type]
    doc = resolution(
        "action-report",
        exception_type="logistics-exception",
        action=longest.value,
        action_key=key,
        status="completed",
    )
    assert decode_resolution(orjson.dumps(doc)).action_key == key


def test_unknown_platform_needs_a_policy_like_an_exception_event():
    raw = orjson.dumps(resolution("parcel-handed-over", "jingdong", carrier="SF", tracking_no="1"))
    assert decode_resolution(raw).envelope.platform == "jingdong"  # schema-valid
    error = _error(decode_resolution, raw, platforms=POLICIES)
    assert isinstance(error, UnknownPlatform) and error.field == "platform"


@pytest.mark.parametrize("raw", [b"", b"null", b"[1]", b"{", b'"x"', b"\xff"])
def test_non_objects_and_garbage_are_malformed_json(raw):
    assert isinstance(_error(decode_resolution, raw), MalformedJson)


def test_a_newer_schema_version_is_an_unknown_event_type_on_schema_version():
    doc = resolution("channel-query-result", answer="paid")
    doc["schema_version"] = 2
    error = _error(decode_resolution, orjson.dumps(doc))
    assert isinstance(error, UnknownEventType) and error.field == "schema_version"


# --------------------------------------------------------------- keys written twice
PAID = orjson.dumps(resolution("payment-completed", amount_fen=100))


@pytest.mark.parametrize("member", [b'"amount_fen":1', b'"amount_fen" :1', b'"\\u0061mount_fen":1'])
def test_a_key_twice_is_malformed(member):
    raw = PAID[:-1] + b"," + member + b"}"
    with pytest.raises(MalformedJson, match="amount_fen: the key appears twice"):
        decode_resolution(raw)


def test_a_key_twice_inside_an_evidence_item_is_malformed():
    doc = resolution("evidence-uploaded", evidence=[{"kind": "photo", "uri": "s3://a"}])
    raw = orjson.dumps(doc).replace(b'"uri":"s3://a"', b'"uri":"s3://a","uri":"s3://b"')
    with pytest.raises(MalformedJson, match="uri: the key appears twice"):
        decode_resolution(raw)


def test_another_layout_of_a_valid_resolution_is_accepted():
    doc = resolution("evidence-uploaded", evidence=[{"kind": "photo", "uri": 'https://x/"a":b'}])
    assert decode_resolution(json.dumps(doc, indent=2)) == decode_resolution(orjson.dumps(doc))


# --------------------------------------------------------------- the two families apart
EXCEPTION_DOCS = [payment_timeout(), shipping_delay(), logistics_exception()]
RESOLUTION_DOCS = [json.loads(_raw(name)) for name in VALID]


@pytest.mark.parametrize("doc", EXCEPTION_DOCS, ids=lambda d: d["event_type"])
def test_an_exception_event_is_refused_by_decode_resolution(doc):
    for error in (
        _error(decode_resolution, orjson.dumps(doc), platforms=POLICIES),
        _error(resolution_from_dict, doc),
    ):
        assert isinstance(error, UnknownEventType) and error.field == "event_type"
        assert "an order-exception event, not a resolution event" in error.reason


@pytest.mark.parametrize("doc", RESOLUTION_DOCS, ids=lambda d: d["event_id"][:8])
def test_a_resolution_is_refused_by_decode_event(doc):
    for error in (
        _error(decode_event, orjson.dumps(doc), platforms=POLICIES),
        _error(event_from_dict, doc),
    ):
        assert isinstance(error, UnknownEventType) and error.field == "event_type"
        assert "a resolution event, not an order-exception event" in error.reason


def test_the_other_familys_type_is_refused_whatever_its_version():
    doc = resolution("payment-completed", amount_fen=1)
    doc["schema_version"] = 9
    assert "a resolution event" in _error(event_from_dict, doc).reason
    doc = payment_timeout()
    doc["schema_version"] = 9
    assert "an order-exception event" in _error(resolution_from_dict, doc).reason


def test_a_type_of_neither_family_is_unknown_to_both():
    doc = resolution("payment-completed", amount_fen=1)
    doc["event_type"] = "payment-refunded"
    for decode in (event_from_dict, resolution_from_dict):
        error = _error(decode, doc)
        assert isinstance(error, UnknownEventType) and "unknown event type" in error.reason


def test_resolution_errors_are_schema_violations_not_bare_exceptions():
    """Anything the schema lets through builds; an impossible date is a typed error."""
    doc = resolution("parcel-handed-over", carrier="SF", tracking_no="1")
    doc["occurred_at"] = "0001-01-01T00:00:00+14:00"
    with pytest.raises(SchemaViolation, match="occurred_at: not a valid date-time"):
        decode_resolution(orjson.dumps(doc))

"""decode_event and decode_resolution: typed errors, the examples, and agreement with the
reference validator (the resolution events' own cases are in test_contract_resolutions)."""

from __future__ import annotations

import copy
import json
import uuid
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import referencing
import referencing.jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import fields

from order_recovery.domain import (
    CURRENCY,
    CarrierPickupStatus,
    Contract,
    ContractError,
    Envelope,
    GoodsCategory,
    InvalidEvent,
    LogisticsException,
    MalformedJson,
    OrderHistory,
    PaymentTimeout,
    SchemaViolation,
    ShippingDelay,
    UnknownEventType,
    UnknownPlatform,
    decide,
    decode_event,
    decode_resolution,
    default_contract,
    load_policies,
)
from order_recovery.domain.contract import SCHEMAS_DIR_ENV, schemas_dir
from order_recovery.domain.events import EventType
from order_recovery.domain.policy import DEFAULT_POLICY_DIR
from order_recovery.domain.resolutions import (
    ActionReport,
    ChannelQueryResult,
    EvidenceUploaded,
    ParcelHandedOver,
    PaymentCompleted,
    PlatformVerdict,
    ResolutionEnvelope,
    ResolutionType,
)

from .factories import (
    POLICIES,
    event_docs,
    logistics_exception,
    payment_timeout,
    resolution_docs,
    shipping_delay,
)

EXAMPLES = schemas_dir() / "examples"
EXPECTED = json.loads((EXAMPLES / "expected-errors.json").read_text())
ALL_EXAMPLES = sorted(p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.glob("*/*.json"))
EXCEPTION_TYPES = {t.value for t in EventType}
RESOLUTION_TYPES = {t.value for t in ResolutionType}
EVENT_EXAMPLES = [p for p in ALL_EXAMPLES if p.split("/")[0] in EXCEPTION_TYPES]
RESOLUTION_EXAMPLES = [p for p in ALL_EXAMPLES if p.split("/")[0] in RESOLUTION_TYPES]
OUTCOME_EXAMPLES = [p for p in ALL_EXAMPLES if p.startswith("recovery-outcome/")]
COMMAND_EXAMPLES = [p for p in ALL_EXAMPLES if p.startswith("action-command/")]
RESOLUTION_STRUCTS = {
    "payment-completed": PaymentCompleted,
    "channel-query-result": ChannelQueryResult,
    "parcel-handed-over": ParcelHandedOver,
    "evidence-uploaded": EvidenceUploaded,
    "platform-verdict": PlatformVerdict,
    "action-report": ActionReport,
}


def _raw(name: str) -> bytes:
    return (EXAMPLES / name).read_bytes()


def _decoder(name: str) -> Any:
    """The decoder of the family an example's directory names."""
    return decode_resolution if name.split("/")[0] in RESOLUTION_TYPES else decode_event


@pytest.mark.parametrize("name", EVENT_EXAMPLES + RESOLUTION_EXAMPLES)
def test_event_examples_validate_or_fail_exactly_as_named(name):
    if Path(name).name.startswith("valid-"):
        decoded = _decoder(name)(_raw(name), platforms=POLICIES)
        assert decoded.envelope.event_type == name.split("/")[0]
        if name in EVENT_EXAMPLES:
            assert type(decoded) in (PaymentTimeout, ShippingDelay, LogisticsException)
            decide(decoded, OrderHistory(), POLICIES[decoded.envelope.platform])  # decidable too
        else:  # the exact Struct of each: test_contract_resolutions
            assert type(decoded) is RESOLUTION_STRUCTS[name.split("/")[0]]
        return
    expected = EXPECTED[name]
    with pytest.raises(InvalidEvent) as caught:
        _decoder(name)(_raw(name), platforms=POLICIES)
    assert caught.value.error_class == expected["error_class"]
    assert caught.value.field == expected["field"]
    assert caught.value.reason


@pytest.mark.parametrize("name", OUTCOME_EXAMPLES)
def test_outcome_examples_validate_or_fail_exactly_as_named(name):
    doc = json.loads(_raw(name))
    if Path(name).name.startswith("valid-"):
        default_contract().validate_outcome(doc)
        return
    with pytest.raises(SchemaViolation) as caught:
        default_contract().validate_outcome(doc)
    assert caught.value.field == EXPECTED[name]["field"]


def test_every_invalid_example_has_an_expectation_and_vice_versa():
    invalid = {p for p in ALL_EXAMPLES if Path(p).name.startswith("invalid-")}
    assert invalid == set(EXPECTED)
    assert (
        sorted(EVENT_EXAMPLES + RESOLUTION_EXAMPLES + OUTCOME_EXAMPLES + COMMAND_EXAMPLES)
        == ALL_EXAMPLES
    )
    for name in ALL_EXAMPLES:
        assert Path(name).name.startswith(("valid-", "invalid-")), name


def test_unknown_platform_is_schema_valid_so_a_replay_succeeds_once_a_policy_exists(tmp_path):
    raw = _raw("payment-timeout/invalid-unknown-platform.json")
    decode_event(raw)  # the schema accepts any well-formed platform name
    with pytest.raises(UnknownPlatform) as caught:
        decode_event(raw, platforms=load_policies())
    assert caught.value.field == "platform"
    # An operator adds a policy for the platform; the dead-lettered event now replays.
    text = (DEFAULT_POLICY_DIR / "douyin.toml").read_text(encoding="utf-8")
    text = text.replace('platform = "douyin"', 'platform = "jingdong"')
    (tmp_path / "jingdong.toml").write_text(text.replace("douyin-2026.1", "jingdong-1"))
    event = decode_event(raw, platforms=load_policies(tmp_path))
    assert event.envelope.platform == "jingdong"


def test_invalid_utf8_is_malformed_json():
    with pytest.raises(MalformedJson) as caught:
        decode_event(b'{"event_id": "\xff\xfe"}')
    assert caught.value.field == "" and caught.value.error_class == "malformed_json"


@pytest.mark.parametrize("raw", [b"", b"null", b"42", b'"text"', b"[1]", b"{"])
def test_non_objects_and_garbage_are_malformed_json(raw):
    with pytest.raises(MalformedJson):
        decode_event(raw)


def test_decoding_accepts_str_bytearray_and_memoryview():
    raw = orjson.dumps(payment_timeout())
    for value in (raw.decode(), bytearray(raw), memoryview(raw)):
        assert isinstance(decode_event(value), PaymentTimeout)


def test_integral_floats_are_integers_in_json_schema_and_become_int_fen():
    doc = payment_timeout(amount_fen=19_900, attempts=2)
    doc["amount_fen"] = 19900.0
    doc["payment_attempt_count"] = 2.0
    event = decode_event(orjson.dumps(doc))
    assert isinstance(event, PaymentTimeout)
    assert type(event.envelope.amount_fen) is int and event.envelope.amount_fen == 19_900
    assert type(event.payment_attempt_count) is int and event.payment_attempt_count == 2


def test_decoded_datetimes_are_timezone_aware():
    event = decode_event(_raw("payment-timeout/valid-virtual-never-attempted-nulls.json"))
    assert isinstance(event, PaymentTimeout)
    assert event.envelope.occurred_at.tzinfo is not None
    assert event.envelope.order_created_at.tzinfo is not None
    assert event.payment_failed_at is None


def test_errors_are_picklable_and_carry_their_class():
    import pickle

    err = pickle.loads(pickle.dumps(SchemaViolation("amount_fen", "bad")))
    assert (err.field, err.reason, err.error_class) == (
        "amount_fen",
        "bad",
        "schema_violation",
    )
    assert issubclass(UnknownEventType, InvalidEvent) and issubclass(UnknownPlatform, InvalidEvent)


def test_schema_directory_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(SCHEMAS_DIR_ENV, str(tmp_path))
    assert schemas_dir() == tmp_path
    with pytest.raises(ContractError, match="lacks"):
        Contract.load()
    monkeypatch.setenv(SCHEMAS_DIR_ENV, str(tmp_path / "nope"))
    with pytest.raises(ContractError, match="does not exist"):
        Contract.load()


def test_default_schema_directory_is_the_repo_schemas_dir(monkeypatch):
    monkeypatch.delenv(SCHEMAS_DIR_ENV, raising=False)
    assert schemas_dir() == Path(__file__).resolve().parents[3] / "schemas"


# --------------------------------------------------------------- the envelope and the flat shape
ENVELOPE_FIELDS = [
    "event_id",
    "event_type",
    "schema_version",
    "occurred_at",
    "order_id",
    "platform",
    "merchant_id",
    "buyer_id",
    "category",
    "amount_fen",
    "currency",
    "order_created_at",
]
TYPE_FIELDS = {
    "payment-timeout": {
        "payment_failed_at",
        "payment_channel",
        "channel_return_code",
        "payment_attempt_count",
        "stock_available",
        "original_coupon_id",
        "window_extension_requested",
    },
    "shipping-delay": {"paid_at", "carrier_pickup_status", "parcel_weight_g"},
    "logistics-exception": {
        "exception_kind",
        "carrier",
        "tracking_no",
        "exception_reported_at",
        "signed_at",
        "parcel_weight_g",
        "evidence",
        "tracking_forged",
    },
}
SCHEMAS = default_contract().schemas


def test_the_envelope_holds_exactly_the_shared_fields_plus_optional_merchant_dsr():
    envelope = SCHEMAS["envelope.schema.json"]
    assert envelope["required"] == ENVELOPE_FIELDS
    assert list(envelope["properties"]) == [*ENVELOPE_FIELDS, "merchant_dsr"]
    assert [f.name for f in fields(Envelope)] == [
        "event_id",
        "event_type",
        "schema_version",
        "occurred_at",
        "platform",
        "order_id",
        "buyer_id",
        "merchant_id",
        "category",
        "amount_fen",
        "currency",
        "order_created_at",
        "merchant_dsr",
    ]


@pytest.mark.parametrize("event_type", sorted(TYPE_FIELDS))
def test_event_schemas_are_flat_and_add_only_their_own_fields(event_type):
    schema = SCHEMAS[f"{event_type}.v1.schema.json"]
    assert schema["allOf"] == [{"$ref": "envelope.schema.json"}]
    assert schema["unevaluatedProperties"] is False
    pinned = {"event_type", "schema_version", "category"}  # narrowed, not added
    assert set(schema["properties"]) - pinned == TYPE_FIELDS[event_type]
    assert "payload" not in schema["properties"]


def test_the_resolution_envelope_holds_exactly_the_resolution_envelope_struct_fields():
    envelope = SCHEMAS["resolution-envelope.schema.json"]
    struct_fields = [f.name for f in fields(ResolutionEnvelope)]
    assert set(envelope["required"]) == set(envelope["properties"]) == set(struct_fields)
    assert "unevaluatedProperties" not in envelope  # each resolution schema closes itself


@pytest.mark.parametrize("event_type", sorted(RESOLUTION_TYPES))
def test_resolution_schemas_are_flat_and_name_exactly_their_struct_fields(event_type):
    """Schema and Struct agree: the same fields, required exactly where the Struct has no
    default, so a valid resolution always builds and a Struct field is never left unfilled."""
    schema = SCHEMAS[f"{event_type}.v1.schema.json"]
    assert schema["allOf"] == [{"$ref": "resolution-envelope.schema.json"}]
    assert schema["unevaluatedProperties"] is False
    pinned = {"event_type", "schema_version"}
    own = [f for f in fields(RESOLUTION_STRUCTS[event_type]) if f.name != "envelope"]
    assert set(schema["properties"]) - pinned == {f.name for f in own}
    assert set(schema["required"]) == {f.name for f in own if f.required}


@pytest.mark.parametrize("cls", [PaymentTimeout, ShippingDelay, LogisticsException])
def test_order_facts_live_in_the_envelope_only(cls):
    names = {f.name for f in fields(cls)}
    moved = {"amount_fen", "currency", "category", "goods_category", "order_created_at"}
    assert not names & (moved | {"merchant_dsr"})


@pytest.mark.parametrize(
    "doc",
    [payment_timeout(dsr=4.82), shipping_delay(dsr=4.6), logistics_exception(dsr=5)],
    ids=["payment", "shipping", "logistics"],
)
def test_every_event_type_decodes_the_whole_envelope(doc):
    env = decode_event(orjson.dumps(doc)).envelope
    assert env.event_id == doc["event_id"]
    assert env.category is GoodsCategory(doc["category"])
    assert env.amount_fen == doc["amount_fen"] and env.currency == CURRENCY == "CNY"
    assert env.order_created_at.isoformat() == doc["order_created_at"]
    assert env.merchant_dsr == doc["merchant_dsr"] and type(env.merchant_dsr) is float


def test_a_nested_payload_is_rejected_with_a_pointer_to_the_flat_shape():
    with pytest.raises(SchemaViolation) as caught:
        decode_event(_raw("payment-timeout/invalid-legacy-nested-payload.json"))
    assert caught.value.field == "payload" and "top level" in caught.value.reason


@pytest.mark.parametrize(
    "raw_id",
    [
        "3F9C2A7E-5B14-4D8A-9E61-0C2B7D4F8A13",
        "3f9c2a7e-5B14-4d8A-9e61-0C2B7d4f8a13",
        "3f9c2a7e-5b14-4d8a-9e61-0c2b7d4f8a13",
        "00000000-0000-0000-0000-000000000000",
    ],
)
def test_event_id_is_decoded_to_the_canonical_lower_case_uuid(raw_id):
    doc = payment_timeout()
    doc["event_id"] = raw_id
    event = decode_event(orjson.dumps(doc))
    assert event.envelope.event_id == str(uuid.UUID(raw_id)) == raw_id.lower()


def test_the_upper_case_example_decodes_to_lower_case():
    event = decode_event(_raw("payment-timeout/valid-upper-case-event-id.json"))
    assert event.envelope.event_id == "5e2b9c47-a1d3-4f86-b07e-3c9a12d8e6f1"


@pytest.mark.parametrize(
    "raw_id",
    [
        "evt-1",
        "3f9c2a7e5b144d8a9e610c2b7d4f8a13",  # accepted by uuid.UUID, not canonical
        "{3f9c2a7e-5b14-4d8a-9e61-0c2b7d4f8a13}",
        "urn:uuid:3f9c2a7e-5b14-4d8a-9e61-0c2b7d4f8a13",
        "3f9c2a7e-5b14-4d8a-9e61-0c2b7d4f8a1",
        "3f9c2a7e-5b14-4d8a-9e61-0c2b7d4f8a13a",
        "3f9c2a7g-5b14-4d8a-9e61-0c2b7d4f8a13",
        " 3f9c2a7e-5b14-4d8a-9e61-0c2b7d4f8a13",
        12345,
    ],
)
def test_event_id_must_be_a_hyphenated_hex_uuid(raw_id):
    doc = payment_timeout()
    doc["event_id"] = raw_id
    with pytest.raises(SchemaViolation) as caught:
        decode_event(orjson.dumps(doc))
    assert caught.value.field == "event_id"


@pytest.mark.parametrize(
    ("value", "valid"), [(0, True), (1, True), (-1, False), (10_000_000_001, False)]
)
def test_amount_fen_is_an_integer_of_at_least_zero(value, valid):
    doc = shipping_delay()
    doc["amount_fen"] = value
    if valid:
        assert decode_event(orjson.dumps(doc)).envelope.amount_fen == value
    else:
        with pytest.raises(SchemaViolation, match="amount_fen"):
            decode_event(orjson.dumps(doc))


@pytest.mark.parametrize("currency", ["USD", "cny", "RMB", "", None, 156])
def test_currency_is_cny_only(currency):
    doc = logistics_exception()
    doc["currency"] = currency
    with pytest.raises(SchemaViolation) as caught:
        decode_event(orjson.dumps(doc))
    assert caught.value.field == "currency"


def test_category_is_standard_virtual_or_fresh_and_ordinary_is_gone():
    assert [c.value for c in GoodsCategory] == ["standard", "virtual", "fresh"]
    for category in ("standard", "virtual", "fresh"):
        event = decode_event(orjson.dumps(payment_timeout(category=category)))
        assert event.envelope.category is GoodsCategory(category)
    with pytest.raises(SchemaViolation) as caught:
        decode_event(orjson.dumps(payment_timeout(category="ordinary")))
    assert caught.value.field == "category"


def test_every_two_decimal_dsr_reading_from_0_to_5_is_accepted():
    doc = payment_timeout()
    for hundredths in range(501):
        text = f"{hundredths // 100}.{hundredths % 100:02d}"
        raw = orjson.dumps(doc)[:-1] + b',"merchant_dsr":' + text.encode() + b"}"
        assert decode_event(raw).envelope.merchant_dsr == float(text), text


@pytest.mark.parametrize("dsr", [4.555, 5.01, -0.01, 0.1 + 0.2, "4.8", True, [4.8]])
def test_dsr_outside_0_to_5_or_finer_than_hundredths_is_rejected(dsr):
    doc = shipping_delay()
    doc["merchant_dsr"] = dsr
    with pytest.raises(SchemaViolation) as caught:
        decode_event(orjson.dumps(doc))
    assert caught.value.field == "merchant_dsr"


def test_dsr_absent_or_null_means_no_reading():
    assert decode_event(orjson.dumps(shipping_delay())).envelope.merchant_dsr is None
    assert decode_event(orjson.dumps(shipping_delay(dsr=None))).envelope.merchant_dsr is None


@pytest.mark.parametrize(("count", "valid"), [(0, True), (4, True), (-1, False), ("3", False)])
def test_payment_attempt_count_is_a_non_negative_integer(count, valid):
    doc = payment_timeout()
    doc["payment_attempt_count"] = count
    if valid:
        event = decode_event(orjson.dumps(doc))
        assert isinstance(event, PaymentTimeout) and event.payment_attempt_count == count
    else:
        with pytest.raises(SchemaViolation, match="payment_attempt_count"):
            decode_event(orjson.dumps(doc))


@pytest.mark.parametrize("status", ["not_picked_up", "picked_up"])
def test_carrier_pickup_status_is_decoded(status):
    event = decode_event(orjson.dumps(shipping_delay(pickup=status)))
    assert isinstance(event, ShippingDelay)
    assert event.carrier_pickup_status is CarrierPickupStatus(status)


@pytest.mark.parametrize(
    ("kind", "valid"),
    [("transit_timeout", True), ("lost", True), ("lost_parcel", False), ("damaged", False)],
)
def test_exception_kind_is_transit_timeout_or_lost(kind, valid):
    doc = logistics_exception(kind=kind)
    if valid:
        event = decode_event(orjson.dumps(doc))
        assert isinstance(event, LogisticsException) and event.exception_kind == kind
    else:
        with pytest.raises(SchemaViolation) as caught:
            decode_event(orjson.dumps(doc))
        assert caught.value.field == "exception_kind"


def test_platform_is_a_pattern_so_new_policies_need_no_schema_release():
    platform = SCHEMAS["envelope.schema.json"]["$defs"]["platform"]
    assert "enum" not in platform and platform["pattern"]
    assert set(POLICIES) == {"douyin", "taobao", "pinduoduo"}


# --------------------------------------------------------------- agreement with `jsonschema`
# Python's `jsonschema` checks multipleOf by float division (4.6 / 0.01 != 460) and rejects valid
# DSR readings; its maintainers' answer is to parse JSON numbers as Decimal, schema and instance
# alike (python-jsonschema/jsonschema#810, #1234). The reference side here does exactly that.
def _decimal_json(value: Any) -> Any:
    return json.loads(json.dumps(value), parse_float=Decimal)


def _integer(checker: Any, instance: Any) -> bool:
    """2020-12's integer, for numbers parsed as Decimal: `jsonschema` takes the float 0.0 as an
    integer but not Decimal("0.0"), so an integral float (amount_fen 0.0) looked invalid here."""
    base = jsonschema.Draft202012Validator.TYPE_CHECKER
    if isinstance(instance, Decimal):
        return instance.is_finite() and instance == instance.to_integral_value()
    return bool(base.is_type(instance, "integer"))


_ReferenceValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _integer),
)


def _reference_validators() -> dict[str, Any]:
    """Without `$schema`: a schema that names its draft is validated by that draft's stock class
    when reached through a $ref, which would drop the integer check above."""
    contract = default_contract()
    schemas = {
        name: {k: v for k, v in _decimal_json(s).items() if k != "$schema"}
        for name, s in contract.schemas.items()
    }
    draft = referencing.jsonschema.DRAFT202012
    resources = [
        (s["$id"], referencing.Resource.from_contents(s, default_specification=draft))
        for s in schemas.values()
    ]
    registry = referencing.Registry().with_resources(resources)
    return {
        name: _ReferenceValidator(schema, registry=registry) for name, schema in schemas.items()
    }


REFERENCE = _reference_validators()


def _agree(doc: Any, schema_name: str) -> None:
    fast = default_contract().validator(schema_name)
    with localcontext(prec=1_000):  # Decimal % 0.01 on values up to 1e308 needs the digits
        reference = REFERENCE[schema_name].is_valid(_decimal_json(doc))
    assert fast.is_valid(doc) == reference, doc


def test_schemas_are_valid_draft_2020_12():
    for schema in default_contract().schemas.values():
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_fast_validator_agrees_with_reference_on_every_example(name):
    try:
        doc = json.loads(_raw(name))
    except ValueError:
        return  # not JSON: never reaches a validator
    event_type = name.split("/")[0]
    _agree(doc, f"{event_type}.v1.schema.json")


JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["2025-06-02T10:00:00Z", "2025-06-02T10:00:00", "virtual", "douyin", ""]),
    st.sampled_from(["standard", "ordinary", "lost", "lost_parcel", "picked_up", "CNY", "USD"]),
    st.sampled_from([4.6, 4.57, 4.555, 5.01, -0.01, 0.3 + 0.6]),
    st.sampled_from(
        ["paid", "won", "completed", "failed", "appeal", "issue_coupon", "payment-timeout"]
    ),
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def mutated_docs(draw: st.DrawFn, docs: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    doc = copy.deepcopy(draw(docs))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["drop", "set", "add"]))
        if op == "drop" and doc:
            doc.pop(draw(st.sampled_from(sorted(doc))))
        elif op == "set" and doc:
            doc[draw(st.sampled_from(sorted(doc)))] = draw(JSON_VALUES)
        else:
            doc[draw(st.text(min_size=1, max_size=6))] = draw(JSON_VALUES)
    return doc


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_docs(event_docs))
def test_fast_validator_agrees_with_reference_on_generated_events(doc):
    for event_type in default_contract().event_types:
        _agree(doc, f"{event_type}.v1.schema.json")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_docs(resolution_docs))
def test_fast_validator_agrees_with_reference_on_generated_resolutions(doc):
    for event_type in default_contract().resolution_types:
        _agree(doc, f"{event_type}.v1.schema.json")


@settings(max_examples=100)
@given(event_docs)
def test_generated_valid_events_decode(doc):
    decode_event(orjson.dumps(doc), platforms=POLICIES)

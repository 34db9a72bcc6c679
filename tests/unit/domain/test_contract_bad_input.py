"""Bad input the decoder once let through as something other than a typed InvalidEvent (found by
the fuzz tests), and keys written twice, which it refuses."""

from __future__ import annotations

import json

import orjson
import pytest

from order_recovery.domain import MalformedJson, SchemaViolation, decode_event
from order_recovery.domain.sample import sample_events

from .factories import POLICIES, logistics_exception

EVENT = sample_events(1, seed=1)[0]
RAW = orjson.dumps(EVENT)


def _with(member: bytes) -> bytes:
    """The valid event with one more member written at its end."""
    return RAW[:-1] + b"," + member + b"}"


@pytest.mark.parametrize("depth", [300, 1000])
@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_deep_nesting_is_a_schema_violation(depth: int, opener: bytes) -> None:
    """jsonschema-rs raises a plain ValueError ("Recursion limit reached") when asked where a
    value nested 256 levels deep is wrong: the pipeline, which dead-letters InvalidEvent only,
    exited on it (EXIT_BUG) and, restarted, read the same record again."""
    closer = b"]" if opener == b"[" else b"}"
    nested = opener * depth + (b"" if opener == b"[" else b"1") + closer * depth
    with pytest.raises(SchemaViolation, match="nested too deeply"):
        decode_event(_with(b'"extra":' + nested))


@pytest.mark.parametrize(
    "at", ["0001-01-01T00:00:00+14:00", "0001-01-01T07:59:59+08:00", "9999-12-31T23:59:59-14:00"]
)
def test_an_instant_without_a_utc_or_shanghai_form_is_a_schema_violation(at: str) -> None:
    """The schema's pattern admits these; the pipeline's `business_day` (Asia/Shanghai) raised
    OverflowError on them outside the guarded rules, and the worker exited."""
    doc = dict(EVENT, occurred_at=at)
    with pytest.raises(SchemaViolation, match="occurred_at: not a valid date-time"):
        decode_event(orjson.dumps(doc))


def test_the_edges_of_the_range_that_do_convert_are_accepted() -> None:
    assert decode_event(orjson.dumps(dict(EVENT, order_created_at="0001-01-01T08:00:00+08:00")))


@pytest.mark.parametrize(
    "member",
    [
        b'"amount_fen":1',  # a second amount: orjson keeps the last
        b'"amount_fen": 1',
        b'"amount_fen"\n:1',
        b'"\\u0061mount_fen":1',  # the same key, escaped
    ],
)
def test_a_key_twice_is_malformed(member: bytes) -> None:
    with pytest.raises(MalformedJson, match="amount_fen: the key appears twice"):
        decode_event(_with(member))


def test_a_key_twice_inside_evidence_is_malformed() -> None:
    doc = logistics_exception(evidence=[{"kind": "photo", "uri": "s3://a"}])
    raw = orjson.dumps(doc).replace(b'"uri":"s3://a"', b'"uri":"s3://a","uri":"s3://b"')
    with pytest.raises(MalformedJson, match="uri: the key appears twice"):
        decode_event(raw)


@pytest.mark.parametrize(
    "dumps",
    [
        lambda d: json.dumps(d).encode(),
        lambda d: json.dumps(d, indent=2, ensure_ascii=False).encode(),
        lambda d: json.dumps(d, separators=(" , ", " : ")).encode(),
        lambda d: json.dumps(d, indent="\t").replace(": ", "\r\n:").encode(),
    ],
)
def test_any_layout_of_a_valid_event_is_accepted(dumps: object) -> None:
    """The fast duplicate check counts `":`; other layouts take the exact path, and pass."""
    doc = {
        **logistics_exception(evidence=[{"kind": "photo", "uri": 'https://x/"a":b'}]),
        "carrier": 'ZTO ":',
    }
    expected = decode_event(orjson.dumps(doc), platforms=POLICIES)
    assert decode_event(dumps(doc), platforms=POLICIES) == expected  # type: ignore[operator]

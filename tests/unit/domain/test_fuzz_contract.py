"""The decoder against bad input (hypothesis; `make fuzz` runs these with many more examples):
nothing but a typed InvalidEvent ever escapes, whatever the bytes, and what it accepts is an
event every later stage can handle."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC

import pytest
from hypothesis import event, given

from order_recovery.core.dead_letters import DEAD_LETTER_REASONS
from order_recovery.domain import (
    InvalidEvent,
    LogisticsException,
    PaymentTimeout,
    decode_event,
    decode_resolution,
)
from order_recovery.domain.history import business_day
from order_recovery.domain.resolutions import EvidenceUploaded, case_type_of
from tests.support.fuzz import (
    RESOLUTION_DOCS,
    RESOLUTION_KEYS,
    Doc,
    fuzz_settings,
    near_valid_docs,
    raw_bytes,
)

from .factories import POLICIES

pytestmark = pytest.mark.fuzz


def _decode(raw: bytes, decode: Callable[..., object] = decode_event) -> object:
    """The event, or the typed error: anything else raised fails the test."""
    try:
        decoded = decode(raw, platforms=POLICIES)
    except InvalidEvent as exc:
        assert exc.error_class in DEAD_LETTER_REASONS
        assert str(exc).startswith(f"{exc.error_class}: ")
        event(exc.error_class)  # the spread, in --hypothesis-show-statistics
        return exc
    event("accepted")
    return decoded


def _usable(event: object) -> None:
    """What the pipeline does with an accepted event outside the rules (which are guarded): its
    day, its instants in UTC, money within the schema's bounds."""
    env = event.envelope  # type: ignore[attr-defined]
    business_day(env.occurred_at)
    for at in (env.occurred_at, env.order_created_at):
        assert at.tzinfo is not None
        at.astimezone(UTC)
    assert type(env.amount_fen) is int and 0 <= env.amount_fen <= 10_000_000_000
    if isinstance(event, PaymentTimeout):
        assert type(event.payment_attempt_count) is int
    if isinstance(event, LogisticsException):
        assert len(event.evidence) <= 20


@fuzz_settings(300)
@given(raw=raw_bytes)
def test_any_bytes_give_an_event_or_a_typed_error(raw: bytes) -> None:
    result = _decode(raw)
    if not isinstance(result, InvalidEvent):
        _usable(result)


@fuzz_settings(400)
@given(doc=near_valid_docs())
def test_near_valid_documents_give_an_event_or_a_typed_error(doc: Doc) -> None:
    result = _decode(doc.raw)
    if doc.duplicate_key:
        assert isinstance(result, InvalidEvent), "a document with a key twice was accepted"
    if not isinstance(result, InvalidEvent):
        _usable(result)


def _usable_resolution(resolution: object) -> None:
    """What a case will read of an accepted resolution outside its rules: its instant in UTC and
    on its business day, its case type, money within the schema's bounds."""
    env = resolution.envelope  # type: ignore[attr-defined]
    business_day(env.occurred_at)
    env.occurred_at.astimezone(UTC)
    case_type_of(resolution)  # type: ignore[arg-type]
    amount = getattr(resolution, "amount_fen", 0)
    assert type(amount) is int and 0 <= amount <= 10_000_000_000
    if isinstance(resolution, EvidenceUploaded):
        assert 1 <= len(resolution.evidence) <= 20


@fuzz_settings(200)
@given(raw=raw_bytes)
def test_any_bytes_give_a_resolution_or_a_typed_error(raw: bytes) -> None:
    result = _decode(raw, decode_resolution)
    if not isinstance(result, InvalidEvent):
        _usable_resolution(result)


@fuzz_settings(300)
@given(doc=near_valid_docs(RESOLUTION_DOCS, RESOLUTION_KEYS))
def test_near_valid_resolutions_give_a_resolution_or_a_typed_error(doc: Doc) -> None:
    result = _decode(doc.raw, decode_resolution)
    if doc.duplicate_key:
        assert isinstance(result, InvalidEvent), "a resolution with a key twice was accepted"
    if not isinstance(result, InvalidEvent):
        _usable_resolution(result)

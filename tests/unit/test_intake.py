"""The record checks around decoding: size before, event time against the broker's timestamp
after. No services."""

from __future__ import annotations

from datetime import datetime, timedelta

import orjson
import pytest

from order_recovery.config import DEFAULT_MAX_EVENT_SKEW_S, DEFAULT_MAX_RECORD_BYTES, Settings
from order_recovery.core.intake import check_event_time, check_size
from order_recovery.core.records import SourceRecord
from order_recovery.domain import decode_event
from order_recovery.domain.errors import EventFromFuture, OversizedRecord
from order_recovery.domain.sample import sample_events

EVENT = decode_event(orjson.dumps(sample_events(1, seed=2)[0]))
OCCURRED_MS = int(EVENT.envelope.occurred_at.timestamp() * 1000)


def record(
    value: bytes = b"v" * 10,
    key: bytes | None = b"k",
    headers: tuple[tuple[str, bytes], ...] = (),
    timestamp_ms: int | None = None,
) -> SourceRecord:
    return SourceRecord("t", 0, 0, key, value, timestamp_ms, headers)


def test_size_counts_key_value_and_headers() -> None:
    r = record(b"v" * 10, b"kk", (("h1", b"abc"), ("\u00e9", b"")))
    assert r.size == 10 + 2 + (2 + 3) + 2
    assert record(None, None).size == 0  # type: ignore[arg-type]
    check_size(r, r.size)
    with pytest.raises(OversizedRecord, match=f"record is {r.size} bytes") as caught:
        check_size(r, r.size - 1)
    assert caught.value.error_class == "oversized_record"


def test_a_large_header_makes_a_record_oversized_however_small_its_value() -> None:
    with pytest.raises(OversizedRecord):
        check_size(record(b"{}", headers=(("trace", b"x" * 2000),)), 1024)


@pytest.mark.parametrize(
    ("ahead_ms", "refused"),
    [
        (-86_400_000, False),  # a day old: fine
        (0, False),
        (60_000, False),  # exactly the skew allowed
        (60_001, True),
        (3_600_000, True),
    ],
)
def test_event_time_may_run_ahead_of_the_record_by_the_skew_only(
    ahead_ms: int, refused: bool
) -> None:
    r = record(timestamp_ms=OCCURRED_MS - ahead_ms)
    if not refused:
        check_event_time(EVENT, r, 60.0)
        return
    with pytest.raises(EventFromFuture, match="ahead of the record's timestamp") as caught:
        check_event_time(EVENT, r, 60.0)
    assert (caught.value.error_class, caught.value.field) == ("event_from_future", "occurred_at")


def test_a_record_without_a_timestamp_is_not_judged_on_event_time() -> None:
    far = datetime(2999, 1, 1, tzinfo=EVENT.envelope.occurred_at.tzinfo)
    future = decode_event(
        orjson.dumps(dict(sample_events(1, seed=2)[0], occurred_at=far.isoformat()))
    )
    check_event_time(future, record(timestamp_ms=None), 60.0)
    with pytest.raises(EventFromFuture):
        check_event_time(future, record(timestamp_ms=OCCURRED_MS), 60.0)


def test_the_limits_are_configured_with_safe_defaults() -> None:
    defaults = Settings.from_env({})
    assert defaults.max_record_bytes == DEFAULT_MAX_RECORD_BYTES == 512 * 1024
    assert defaults.max_event_skew_s == DEFAULT_MAX_EVENT_SKEW_S == timedelta(minutes=1).seconds
    custom = Settings.from_env(
        {"ORDER_RECOVERY_MAX_RECORD_BYTES": "2048", "ORDER_RECOVERY_MAX_EVENT_SKEW_S": "2.5"}
    )
    assert (custom.max_record_bytes, custom.max_event_skew_s) == (2048, 2.5)

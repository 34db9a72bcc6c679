"""The pure pieces of recoveryctl: formatting, time arguments, dead-letter selection, replay
headers, the ledger and the reconciliation, the what-if re-decision."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, date, datetime
from pathlib import Path

import orjson
import pytest

from order_recovery.domain.history import SHANGHAI
from order_recovery.domain.policy import load_policies
from order_recovery.domain.sample import sample_events
from order_recovery.ops.dlq import Letter, LetterFilter, summarise
from order_recovery.ops.output import UsageError, escape_bytes, fen
from order_recovery.ops.reconcile import Line, read_ledger, reconcile
from order_recovery.ops.replay import check_replay_id, replay_headers
from order_recovery.ops.simulate import StoredDecision, Verdict, simulate
from order_recovery.ops.when import parse_when, shanghai_day


def letter(offset: int = 0, **headers: str) -> Letter:
    return Letter(
        "p.payment-timeout.dlq",
        0,
        offset,
        1_700_000_000_000,
        b"ord-1",
        b'{"order_id": "ord-9"}',
        tuple((k.replace("_", "."), v.encode()) for k, v in headers.items()),
    )


def test_money_prints_exact_yuan() -> None:
    assert [fen(0), fen(5), fen(123_456), fen(-250)] == ["¥0.00", "¥0.05", "¥1,234.56", "-¥2.50"]


def test_escape_bytes_is_unambiguous() -> None:
    assert escape_bytes(b'{"a":\xff}\n\\') == '{"a":\\xff}\\n\\\\'


def test_time_arguments_default_to_shanghai() -> None:
    assert parse_when("2025-06-02") == datetime(2025, 6, 2, tzinfo=SHANGHAI)
    assert parse_when("2025-06-02T10:00") == datetime(2025, 6, 2, 10, tzinfo=SHANGHAI)
    assert parse_when("2025-06-02T10:00Z") == datetime(2025, 6, 2, 10, tzinfo=UTC)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_when("yesterday")
    start, end = shanghai_day(date(2025, 6, 3))
    assert start == datetime(2025, 6, 2, 16, tzinfo=UTC)
    assert (end - start).total_seconds() == 86_400


def test_letter_fields_fall_back_sensibly() -> None:
    x = letter(dlq_error_class="unknown_platform", dlq_failed_at="2025-06-02T01:00:00+00:00")
    assert (x.error_class, x.order_id, x.original_topic) == (
        "unknown_platform",
        "ord-9",  # the event's order id wins over the key
        "p.payment-timeout",  # no dlq.original.topic header: the DLQ name without .dlq
    )
    assert x.failed_at == datetime(2025, 6, 2, 1, tzinfo=UTC)
    bare = letter()
    assert bare.error_class == "unknown"
    assert bare.failed_at == datetime.fromtimestamp(1_700_000_000, UTC)


def test_filter_window_is_half_open() -> None:
    at = "2025-06-02T01:00:00+00:00"
    x = letter(dlq_failed_at=at)
    when = datetime.fromisoformat(at)
    assert LetterFilter(since=when).matches(x)
    assert not LetterFilter(until=when).matches(x)
    assert LetterFilter(order_id="ord-9", error_class="unknown").matches(x)
    assert not LetterFilter(order_id="ord-1").matches(x)


def test_summary_counts_per_topic() -> None:
    letters = [
        letter(0, dlq_error_class="a", dlq_failed_at="2025-06-02T01:00:00+00:00"),
        letter(1, dlq_error_class="b", dlq_failed_at="2025-06-01T01:00:00+00:00"),
        letter(2, dlq_error_class="a", dlq_failed_at="2025-06-03T01:00:00+00:00"),
    ]
    [s, empty] = summarise(["p.payment-timeout.dlq", "other.dlq"], letters)
    assert (s.count, s.by_error_class) == (3, {"a": 2, "b": 1})
    assert (s.oldest_failure.day, s.newest_failure.day) == (1, 3)  # type: ignore[union-attr]
    assert (empty.count, empty.oldest_failure) == (0, None)


def test_replay_headers_keep_the_attempt_and_replace_an_older_replay() -> None:
    x = letter(
        trace="t-1",
        dlq_error_class="rule_error",
        dlq_attempt="2",
        replay_id="old",
    )
    at = datetime(2025, 6, 2, tzinfo=UTC)
    headers = replay_headers(x, "new", at)
    assert headers == [
        ("trace", b"t-1"),
        ("dlq.attempt", b"2"),
        ("replay.id", b"new"),
        ("replay.at", b"2025-06-02T00:00:00+00:00"),
        ("replay.source.topic", b"p.payment-timeout.dlq"),
        ("replay.source.partition", b"0"),
        ("replay.source.offset", b"0"),
    ]


def test_replay_id_is_checked() -> None:
    assert check_replay_id("fix-2025.06_a") == "fix-2025.06_a"
    with pytest.raises(UsageError):
        check_replay_id("has space")


def test_ledger_and_reconciliation(tmp_path: Path) -> None:
    ledger = tmp_path / "l.csv"
    ledger.write_text(
        "\ufeffamount_fen,kind,order_id,exception_type,note\n"
        "100,coupon,o1,shipping-delay,x\n"
        "50,refund,o2,logistics-exception,\n"
        "50,refund,o2,logistics-exception,again\n"
        "7,coupon,o9,shipping-delay,\n"
    )
    lines = read_ledger(ledger)
    assert [(x.order_id, x.amount_fen, x.where) for x in lines] == [
        ("o1", 100, "line 2"),
        ("o2", 100, "line 3,4"),
        ("o9", 7, "line 5"),
    ]
    decided = [
        Line("o1", "shipping-delay", "coupon", 100, "e1"),
        Line("o2", "logistics-exception", "refund", 50, "e2"),
        Line("o3", "shipping-delay", "refund", 80, "e3"),
    ]
    r = reconcile(decided, date(2025, 6, 2), lines)
    assert [x.order_id for x in r.missing] == ["o3"]
    assert [x.order_id for x in r.extra] == ["o9"]
    assert [(d.amount_fen, g.amount_fen) for d, g in r.mismatched] == [(50, 100)]
    assert not r.clean
    assert r.status == "mismatched"
    assert reconcile(decided, date(2025, 6, 2), None).clean
    assert reconcile(decided, date(2025, 6, 2), None).status == "ledger_missing"


def test_what_the_executor_reported_decides_what_the_ledger_owes(tmp_path: Path) -> None:
    """A coupon or refund reported failed is owed nothing: absent is right, booked is a problem;
    completed or not reported yet, it is owed; a payment that recovered a case is owed too."""
    ledger = tmp_path / "l.csv"
    ledger.write_text(
        "order_id,exception_type,kind,amount_fen\n"
        "o1,shipping-delay,coupon,100\n"
        "o4,logistics-exception,refund,60\n"
        "p1,payment-timeout,payment,23950\n"
    )
    decided = [
        Line("o1", "shipping-delay", "coupon", 100, "e1", "completed"),
        Line("o2", "shipping-delay", "coupon", 200, "e2", "failed"),  # absent: right
        Line("o3", "shipping-delay", "coupon", 300, "e3"),  # unreported, absent: missing
        Line("o4", "logistics-exception", "refund", 60, "e4", "failed"),  # booked anyway
        Line("p1", "payment-timeout", "payment", 23950, "r1", "completed"),
        Line("p2", "payment-timeout", "payment", 9900, "r2", "completed"),  # not booked
    ]
    r = reconcile(decided, date(2025, 6, 2), read_ledger(ledger))
    assert [x.order_id for x in r.missing] == ["o3", "p2"]
    assert [(d.order_id, g.where) for d, g in r.booked_though_failed] == [("o4", "line 3")]
    assert (r.extra, r.mismatched, r.status) == ([], [], "mismatched")
    assert r.reported() == {"completed": 3, "failed": 2, "unreported": 1}
    assert r.to_json()["decided"]["payment"] == {"count": 2, "amount_fen": 33850}
    owed = [x for x in decided if x.order_id not in ("o3", "p2", "o4")]
    fine = reconcile(owed, date(2025, 6, 2), [x for x in read_ledger(ledger) if x.order_id != "o4"])
    assert (fine.clean, fine.status) == (True, "matched")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("order_id,kind,amount_fen\n", "lacks column(s) exception_type"),
        ("order_id,exception_type,kind,amount_fen\no,t,gift,1\n", "line 2: kind 'gift'"),
        ("order_id,exception_type,kind,amount_fen\no,t,coupon,-1\n", "amount_fen '-1'"),
    ],
)
def test_bad_ledger_is_a_usage_error(tmp_path: Path, text: str, message: str) -> None:
    ledger = tmp_path / "l.csv"
    ledger.write_text(text)
    with pytest.raises(UsageError, match=re.escape(message)):
        read_ledger(ledger)


def test_simulate_with_the_same_policies_changes_nothing() -> None:
    """Re-deciding the worker's own decisions with the policies they were taken under must agree;
    here the "worker" is the pipeline's history functions in event-time order."""
    policies = load_policies()
    events = sorted(sample_events(300, seed=4), key=lambda e: (e["occurred_at"], e["event_id"]))
    events = list({e["event_id"]: e for e in events}.values())
    empty = Verdict("none", (), None, 0, "")
    rows = [
        StoredDecision(e["event_id"], e["order_id"], e["platform"], e["event_type"], e, empty, True)
        for e in events
    ]
    first = simulate(rows, policies)
    assert first.events == len(events) and len(first.changes) == len(events)
    # Store the simulated verdicts as "decided" and simulate again: no change at all.
    decided = {s.event_id: v for s, v in first.changes}
    again = [
        StoredDecision(
            r.event_id, r.order_id, r.platform, r.exception_type, r.event, decided[r.event_id], True
        )
        for r in rows
    ]
    second = simulate(again, policies)
    assert second.changes == []
    assert second.decided.to_json() == second.simulated.to_json()
    assert orjson.dumps(second.to_json())  # serialisable as it is


def test_durations_show_in_minutes_and_in_seconds_under_one() -> None:
    from order_recovery.ops.output import minutes

    assert [minutes(s) for s in (None, 0.7, 42.0, 60.0, 1320.0)] == [
        "-",
        "0.7 s",
        "42.0 s",
        "1.0 min",
        "22.0 min",
    ]

"""`dlq list`, `dlq show` and the selection of `dlq replay --dry-run` against records the test
puts in the dead-letter topics itself: every filter selects exactly the right records."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from order_recovery.config import Settings
from tests.integration.recoveryctl.conftest import Run
from tests.integration.recoveryctl.feed import H, dead_letter, payment_timeout, shipping_delay

Ctl = Callable[..., Run]


@pytest.fixture
def letters(settings: Settings) -> dict[str, Any]:
    """Five dead letters over two DLQs, named by their key."""
    pt, sd = payment_timeout("ord-1", H), shipping_delay("ord-2")
    pt["platform"] = sd["platform"] = "jingdong"
    dead_letter(
        settings,
        "payment-timeout",
        b"ord-1",
        orjson.dumps(pt),
        "unknown_platform",
        "2025-06-01T10:00:00+00:00",
    )
    dead_letter(
        settings,
        "payment-timeout",
        b"k-schema",
        b'{"event_type": "payment-timeout"}',
        "schema_violation",
        "2025-06-02T10:00:00+00:00",
    )
    dead_letter(
        settings,
        "shipping-delay",
        b"ord-2",
        orjson.dumps(sd),
        "unknown_platform",
        "2025-06-03T10:00:00+00:00",
    )
    dead_letter(
        settings,
        "shipping-delay",
        b"k-bad",
        b"{not json\xff\n",
        "malformed_json",
        "2025-06-02T12:00:00+00:00",
    )
    dead_letter(
        settings,
        "shipping-delay",
        b"ord-1",
        b"[1, 2]",
        "malformed_json",
        "2025-06-04T00:00:00+00:00",
    )
    return {"pt": pt, "sd": sd}


def keys(run: Run) -> list[str]:
    return sorted(r["key"] for r in run.json["records"])


def test_list_counts_each_dlq(ctl: Ctl, settings: Settings, letters: dict[str, Any]) -> None:
    run = ctl("dlq", "list", "--json")
    assert run.code == 0, run.err
    by_topic = {row["topic"]: row for row in run.json}
    pt = by_topic[settings.dlq_topic(settings.source_topic("payment-timeout"))]
    sd = by_topic[settings.dlq_topic(settings.source_topic("shipping-delay"))]
    le = by_topic[settings.dlq_topic(settings.source_topic("logistics-exception"))]
    assert (pt["count"], pt["by_error_class"]) == (
        2,
        {"schema_violation": 1, "unknown_platform": 1},
    )
    assert (pt["oldest_failure"], pt["newest_failure"]) == (
        "2025-06-01T10:00:00+00:00",
        "2025-06-02T10:00:00+00:00",
    )
    assert (sd["count"], sd["by_error_class"]) == (
        3,
        {"malformed_json": 2, "unknown_platform": 1},
    )
    assert sd["oldest_failure"] == "2025-06-02T12:00:00+00:00"
    assert sd["newest_failure"] == "2025-06-04T00:00:00+00:00"
    assert (le["count"], le["by_error_class"], le["oldest_failure"]) == (0, {}, None)

    table = ctl("dlq", "list")
    assert table.code == 0
    assert "malformed_json=2, unknown_platform=1" in table.out
    assert "\x1b[" not in table.out, "no colour codes when stdout is not a terminal"


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ((), ["k-bad", "k-schema", "ord-1", "ord-1", "ord-2"]),
        (("--topic", "shipping-delay"), ["k-bad", "ord-1", "ord-2"]),
        (("--topic", "{prefix}payment-timeout.dlq"), ["k-schema", "ord-1"]),
        (("--error-class", "unknown_platform"), ["ord-1", "ord-2"]),
        (("--error-class", "malformed_json", "--topic", "payment-timeout"), []),
        (("--order-id", "ord-1"), ["ord-1", "ord-1"]),
        (("--order-id", "ord-2", "--error-class", "unknown_platform"), ["ord-2"]),
        (("--since", "2025-06-02T10:00:00+00:00"), ["k-bad", "k-schema", "ord-1", "ord-2"]),
        (
            ("--since", "2025-06-02T10:00:00+00:00", "--until", "2025-06-03T10:00:00Z"),
            ["k-bad", "k-schema"],
        ),
        (("--until", "2025-06-02"), ["ord-1"]),  # a bare date is Asia/Shanghai midnight
    ],
)
def test_show_and_dry_run_select_the_same_records(
    ctl: Ctl,
    settings: Settings,
    letters: dict[str, Any],
    filters: tuple[str, ...],
    expected: list[str],
) -> None:
    filters = tuple(f.format(prefix=settings.topic_prefix) for f in filters)
    shown = ctl("dlq", "show", "--json", "--limit", "100", *filters)
    assert shown.code == 0, shown.err
    assert keys(shown) == expected
    replay = ctl("dlq", "replay", "--dry-run", "--json", "--replay-id", "dry", *filters)
    assert replay.code == 0, replay.err
    assert replay.json["sent"] == 0
    picked = {(r["dlq_topic"], r["partition"], r["offset"]) for r in replay.json["records"]}
    assert picked == {(r["topic"], r["partition"], r["offset"]) for r in shown.json["records"]}


def test_order_id_filter_counts_every_match(ctl: Ctl, letters: dict[str, Any]) -> None:
    # ord-1: the decoded event's order id in one DLQ, only the record key in the other.
    run = ctl("dlq", "show", "--json", "--order-id", "ord-1")
    assert run.json["matched"] == 2
    assert sorted(r["error_class"] for r in run.json["records"]) == [
        "malformed_json",
        "unknown_platform",
    ]


def test_show_decodes_json_and_escapes_the_rest(ctl: Ctl, letters: dict[str, Any]) -> None:
    run = ctl("dlq", "show", "--json", "--topic", "shipping-delay", "--limit", "100")
    by_key = {r["key"]: r for r in run.json["records"]}
    assert by_key["ord-2"]["value"] == letters["sd"]
    assert by_key["ord-2"]["value_raw"] is None
    assert by_key["k-bad"]["value"] is None
    assert by_key["k-bad"]["value_raw"] == "{not json\\xff\\n"
    assert ["dlq.error.class", "malformed_json"] in by_key["k-bad"]["headers"]
    assert by_key["ord-1"]["value"] == [1, 2]

    text = ctl("dlq", "show", "--topic", "shipping-delay", "--error-class", "malformed_json")
    assert text.code == 0
    assert "value (raw, does not decode as JSON): {not json\\xff\\n" in text.out
    assert "dlq.error.message: test: malformed_json" in text.out
    assert "2 shown of 2 matching" in text.out


def test_show_limit(ctl: Ctl, letters: dict[str, Any]) -> None:
    run = ctl("dlq", "show", "--json", "--limit", "2")
    assert (len(run.json["records"]), run.json["matched"]) == (2, 5)


def test_unknown_topic_is_a_usage_error(ctl: Ctl, letters: dict[str, Any]) -> None:
    run = ctl("dlq", "show", "--topic", "nope")
    assert run.code == 2
    assert run.err.startswith("recoveryctl: unknown topic 'nope'")
    assert len(run.err.strip().splitlines()) == 1

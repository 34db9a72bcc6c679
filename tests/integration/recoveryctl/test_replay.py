"""`dlq replay` against the real worker: a cause fixed, then replayed, is decided exactly once; a
replay id never sends a record twice, across runs and across an interruption."""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg

from order_recovery.config import Settings
from order_recovery.domain.sample import sample_events
from tests.integration.recoveryctl.conftest import Run
from tests.integration.recoveryctl.feed import (
    dead_letter,
    decision_count,
    policy_dir,
    read_all,
    start_worker,
)
from tests.support.kafka_io import produce_events, produce_raw, wait_until

Ctl = Callable[..., Run]


def dlq_records(settings: Settings) -> list[Any]:
    return [
        m
        for t in settings.source_topics
        for m in read_all(settings.kafka_bootstrap_servers, settings.dlq_topic(t))
    ]


def replayed(settings: Settings, replay_id: str) -> list[Any]:
    """Records on the source topics carrying this replay id."""
    return [
        m
        for t in settings.source_topics
        for m in read_all(settings.kafka_bootstrap_servers, t)
        if dict(m.headers() or []).get("replay.id") == replay_id.encode()
    ]


def replay(ctl: Ctl, *args: str) -> dict[str, Any]:
    run = ctl("dlq", "replay", "--json", *args)
    assert run.code == 0, run.err
    return dict(run.json)


def addresses(result: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [(r["dlq_topic"], r["partition"], r["offset"]) for r in result["records"]]


def test_fixed_cause_replayed_is_decided_exactly_once(
    ctl: Ctl, settings: Settings, tmp_path: Path
) -> None:
    events = sample_events(30, seed=7)
    for e in events:  # one buyer per order: no decision depends on partition interleaving
        e["buyer_id"] = f"buyer-of-{e['order_id']}"
    valid = list({e["event_id"]: e for e in events}.values())
    jingdong = [
        dict(e, platform="jingdong", event_id=str(uuid.uuid4()), order_id=f"jd-{i}")
        for i, e in enumerate(valid[:4])
    ]
    worker = start_worker(settings, tmp_path, "before-fix").wait_ready()
    produce_events(settings, [*valid, *jingdong])
    topic = settings.source_topic("shipping-delay")
    produce_raw(settings, topic, b"bad-1", b"{not json")
    produce_raw(settings, topic, b"bad-2", b"[]")
    wait_until(lambda: decision_count(settings) == len(valid), 90, "valid events decided")
    wait_until(lambda: len(dlq_records(settings)) == 6, 60, "dead letters")
    worker.stop()
    # A dead letter of an event the worker has decided (as an older worker might have left).
    decided = valid[0]
    dead_letter(
        settings,
        decided["event_type"],
        decided["order_id"].encode(),
        orjson.dumps(decided),
        "rule_error",
        "2025-06-02T00:00:00Z",
    )
    with psycopg.connect(settings.database_reader_url) as conn:
        money_before = conn.execute(
            "SELECT count(*), sum(amount_fen) FROM compensations"
        ).fetchone()

    # The fix: a policy for jingdong. Then a dry run, and the real replay.
    fixed = start_worker(settings, tmp_path, "after-fix", policy_dir(tmp_path, jingdong=True))
    fixed.wait_ready()
    args = ("--replay-id", "fix-1", "--error-class", "unknown_platform")
    dry = replay(ctl, *args, "--dry-run")
    assert (dry["sent"], len(dry["records"])) == (0, 4)
    time.sleep(1)
    assert replayed(settings, "fix-1") == [], "a dry run sends nothing"
    real = replay(ctl, *args)
    assert real["sent"] == 4 and real["done"] and not real["resumed"]
    assert sorted(addresses(real)) == sorted(addresses(dry)), "the dry run listed what was sent"

    wait_until(lambda: decision_count(settings) == len(valid) + 4, 60, "replayed decided")
    with psycopg.connect(settings.database_reader_url) as conn:
        rows = conn.execute(
            "SELECT event_id::text, policy_version FROM decisions WHERE platform = 'jingdong'"
        ).fetchall()
    assert sorted(rows) == sorted((e["event_id"], "jingdong-test.1") for e in jingdong)

    sent = replayed(settings, "fix-1")
    assert sorted(m.value() for m in sent) == sorted(orjson.dumps(e) for e in jingdong)
    assert sorted(m.key() for m in sent) == sorted(e["order_id"].encode() for e in jingdong)
    headers = [dict(m.headers()) for m in sent]
    assert sorted(int(h["replay.source.offset"]) for h in headers) == sorted(
        r["offset"] for r in real["records"]
    )
    assert all(h["dlq.attempt"] == b"1" and "dlq.error.class" not in h for h in headers)
    assert all(h["replay.at"] for h in headers)

    # The same replay id again: nothing left to send.
    again = replay(ctl, *args)
    assert (again["sent"], again["resumed"], again["done"]) == (0, True, True)
    assert len(replayed(settings, "fix-1")) == 4

    # An event already decided, replayed: the worker sees a duplicate and changes nothing.
    dup = replay(ctl, "--replay-id", "fix-2", "--error-class", "rule_error")
    assert dup["sent"] == 1
    wait_until(
        lambda: fixed.metric("order_recovery_duplicate_events_total") == 1, 60, "duplicate seen"
    )
    assert decision_count(settings) == len(valid) + 4
    with psycopg.connect(settings.database_reader_url) as conn:
        money_after = conn.execute("SELECT count(*), sum(amount_fen) FROM compensations").fetchone()
    assert money_after == money_before

    # A cause not fixed: they fail again (attempt 2) and the same replay id does not resend them.
    bad = replay(ctl, "--replay-id", "fix-3", "--error-class", "malformed_json")
    assert bad["sent"] == 2
    wait_until(lambda: len(dlq_records(settings)) == 9, 60, "re-failed dead letters")
    refailed = [dict(m.headers()) for m in dlq_records(settings)]
    refailed = [h for h in refailed if h.get("replay.id") == b"fix-3"]
    assert sorted(h["dlq.attempt"] for h in refailed) == [b"2", b"2"]
    assert replay(ctl, "--replay-id", "fix-3", "--error-class", "malformed_json")["sent"] == 0
    fixed.stop()


def test_interrupted_replay_resumes_and_sends_each_record_once(
    ctl: Ctl,
    settings: Settings,
    ctl_process: Callable[..., Any],
) -> None:
    for i in range(60):
        dead_letter(
            settings,
            "payment-timeout",
            f"ord-{i}".encode(),
            f'{{"n": {i}}}'.encode(),
            "unknown_platform",
            "2025-06-02T00:00:00Z",
        )
    dlq = settings.dlq_topic(settings.source_topic("payment-timeout"))
    proc = ctl_process("dlq", "replay", "--json", "--replay-id", "int-1", "--rate", "10")
    time.sleep(4)  # ~2 s to start, then 10 records a second: well before the 6 s it needs
    for i in range(5):  # failures arriving during the replay are not part of it
        dead_letter(
            settings,
            "payment-timeout",
            f"late-{i}".encode(),
            b"{}",
            "unknown_platform",
            "2025-06-03T00:00:00Z",
        )
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--replay-id int-1" in err and "Traceback" not in err
    first = orjson.loads(out)
    assert first["interrupted"] and not first["done"]
    assert 0 < first["sent"] < 60, first["sent"]
    assert len(replayed(settings, "int-1")) == first["sent"]

    rest = replay(ctl, "--replay-id", "int-1")
    assert rest["resumed"] and rest["done"]
    assert first["sent"] + rest["sent"] == 60
    sent = replayed(settings, "int-1")
    sources = Counter(
        (h["replay.source.partition"], h["replay.source.offset"])
        for h in (dict(m.headers()) for m in sent)
    )
    assert len(sent) == 60 and max(sources.values()) == 1, "every record sent exactly once"
    assert sorted(m.key() for m in sent) == sorted(f"ord-{i}".encode() for i in range(60))
    assert {dict(m.headers())["replay.source.topic"] for m in sent} == {dlq.encode()}
    assert replay(ctl, "--replay-id", "int-1")["sent"] == 0
    # A different replay id is a different replay: it takes the late failures too.
    assert len(replay(ctl, "--replay-id", "int-2", "--dry-run")["records"]) == 65


def test_replay_limit_and_rate(ctl: Ctl, settings: Settings) -> None:
    for i in range(12):
        dead_letter(
            settings,
            "logistics-exception",
            f"o-{i}".encode(),
            b"{}",
            "schema_violation",
            "2025-06-02T00:00:00Z",
        )
    started = time.monotonic()
    first = replay(ctl, "--replay-id", "lim", "--limit", "5", "--rate", "5")
    assert time.monotonic() - started >= 0.8  # 5 records at 5 a second
    assert (first["sent"], first["limit_reached"], first["done"]) == (5, True, False)
    second = replay(ctl, "--replay-id", "lim", "--limit", "5")
    third = replay(ctl, "--replay-id", "lim", "--limit", "5")
    assert (second["sent"], third["sent"], third["done"]) == (5, 2, True)
    keys = sorted(m.key() for m in replayed(settings, "lim"))
    assert keys == sorted(f"o-{i}".encode() for i in range(12))
    # Other filters under the same replay id would skip records silently: refused.
    run = ctl("dlq", "replay", "--replay-id", "lim", "--error-class", "rule_error")
    assert run.code == 2 and "same filters" in run.err

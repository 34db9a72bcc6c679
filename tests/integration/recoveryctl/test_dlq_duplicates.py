"""A dead letter written twice: a worker that produced its dead letters and died (or was paused
past its session) before its offset commit landed leaves the records to the next owner, which
dead-letters them again. `dlq list` and `dlq show` count each once, `dlq replay` sends each once,
also across a replay that stops and resumes. Dead letters the broker refused even truncated are
counted by `dlq list` and shown by `dlq unsendable`."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from order_recovery.config import Settings
from order_recovery.core.records import SourceRecord
from order_recovery.domain.sample import sample_events
from order_recovery.ops import replay as replay_module
from tests.integration.recoveryctl.conftest import Run
from tests.integration.recoveryctl.feed import read_all
from tests.support.kafka_io import set_topic_config
from tests.support.pipeline_run import PRODUCED_MS
from tests.support.pipeline_run import Run as PipelineRun

Ctl = Callable[..., Run]


def _bad_records(settings: Settings) -> list[SourceRecord]:
    topic = settings.source_topic("payment-timeout")
    payment = next(e for e in sample_events(20, seed=41) if e["event_type"] == "payment-timeout")
    jingdong = dict(payment, platform="jingdong")
    values: list[tuple[bytes | None, bytes]] = [
        (b"k-json", b"{not json"),
        (b"k-schema", b'{"event_type": "payment-timeout"}'),
        (None, b"[1, 2]"),  # no key: each copy may land on another DLQ partition
        (b"k-jd", orjson.dumps(jingdong)),
    ]
    return [
        SourceRecord(topic, 0, 100 + i, key, value, PRODUCED_MS)
        for i, (key, value) in enumerate(values)
    ]


@pytest.fixture(params=["kept", "read twice"])
def backlog_memory(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The replay keeps what its first pass read, unless the backlog is larger than it may hold
    (`ops.replay.KEEP_BYTES`): then it reads the letters again. Both ways choose the same copies."""
    if request.param == "read twice":
        monkeypatch.setattr(replay_module, "KEEP_BYTES", 0)
    return str(request.param)


@pytest.fixture
def twice(settings: Settings) -> Iterator[list[SourceRecord]]:
    """The bad records dead-lettered by a first owner and again by the next one."""
    batch = _bad_records(settings)
    for _owner in range(2):
        owner = PipelineRun(settings)
        try:
            assert len(owner.process(batch).dead_letters) == len(batch)
        finally:
            owner.close()
    yield batch


def _replayed(settings: Settings, replay_id: str) -> list[Any]:
    topic = settings.source_topic("payment-timeout")
    return [
        m
        for m in read_all(settings.kafka_bootstrap_servers, topic)
        if dict(m.headers() or []).get("replay.id") == replay_id.encode()
    ]


def test_list_and_show_count_a_dead_letter_written_twice_once(
    ctl: Ctl, settings: Settings, twice: list[SourceRecord]
) -> None:
    dlq = settings.dlq_topic(settings.source_topic("payment-timeout"))
    assert len(read_all(settings.kafka_bootstrap_servers, dlq)) == 2 * len(twice)
    listed = ctl("dlq", "list", "--json")
    assert listed.code == 0, listed.err
    (row,) = [r for r in listed.json if r["topic"] == dlq]
    assert (row["count"], row["unsendable"]) == (len(twice), 0)
    assert row["by_error_class"] == {
        "malformed_json": 2,
        "schema_violation": 1,
        "unknown_platform": 1,
    }
    shown = ctl("dlq", "show", "--json", "--limit", "100")
    assert shown.json["matched"] == len(twice)
    ids = [dict(r["headers"])["dlq.id"] for r in shown.json["records"]]
    assert sorted(ids) == sorted(f"{r.topic}/0/{r.offset}" for r in twice)


def test_replay_sends_a_dead_letter_written_twice_once(
    ctl: Ctl, settings: Settings, twice: list[SourceRecord], backlog_memory: str
) -> None:
    run = ctl("dlq", "replay", "--json", "--replay-id", "once")
    assert run.code == 0, run.err
    assert (run.json["sent"], run.json["skipped_duplicates"]) == (len(twice), len(twice))
    sent = _replayed(settings, "once")
    assert sorted(m.value() for m in sent) == sorted(r.value for r in twice)
    # Sent with the failed record's own timestamp: its event time is judged as the first time.
    assert {m.timestamp()[1] for m in sent} == {PRODUCED_MS}


def test_a_replay_stopped_and_resumed_still_sends_each_once(
    ctl: Ctl, settings: Settings, twice: list[SourceRecord], backlog_memory: str
) -> None:
    runs = []
    while not runs or not runs[-1]["done"]:
        run = ctl("dlq", "replay", "--json", "--replay-id", "bit-by-bit", "--limit", "2")
        assert run.code == 0, run.err
        runs.append(run.json)
        assert len(runs) <= len(twice), "the replay does not finish"
    assert [r["sent"] for r in runs] == [2, 2]
    assert sorted(m.value() for m in _replayed(settings, "bit-by-bit")) == sorted(
        r.value for r in twice
    )


def test_unsendable_dead_letters_are_listed_and_shown(ctl: Ctl, settings: Settings) -> None:
    topic = settings.source_topic("shipping-delay")
    set_topic_config(
        settings.kafka_bootstrap_servers, settings.dlq_topic(topic), "max.message.bytes", "4096"
    )
    wide = random.Random(5).randbytes(30_000)
    owner = PipelineRun(settings)
    try:
        owner.process([SourceRecord(topic, 2, 9, b"k-wide", wide, PRODUCED_MS)])
    finally:
        owner.close()
    listed = ctl("dlq", "list", "--json")
    (row,) = [r for r in listed.json if r["topic"] == settings.dlq_topic(topic)]
    assert (row["count"], row["unsendable"]) == (0, 1)
    assert "refused by the broker are kept in Postgres" in ctl("dlq", "list").out
    shown = ctl("dlq", "unsendable", "--json", "--topic", "shipping-delay")
    assert shown.code == 0, shown.err
    (x,) = shown.json["records"]
    assert (x["source_topic"], x["source_partition"], x["source_offset"]) == (topic, 2, 9)
    assert (x["error_class"], x["value_bytes"], x["key"]) == ("malformed_json", 30_000, "k-wide")
    assert ["dlq.value.truncated", "true"] in x["headers"]
    text = ctl("dlq", "unsendable")
    assert f"{topic}[2]@9" in text.out and "1 shown of 1 kept in Postgres" in text.out

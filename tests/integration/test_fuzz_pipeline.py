"""Bad input through the whole pipeline with the real store and broker (hypothesis; `make fuzz`
runs many more examples): batches mixing valid events, near-valid documents, raw bytes, records
over the size limit, odd keys, headers and timestamps. Every batch finishes (nothing but a typed
error per record, the pipeline never raises), every record is decided, a duplicate, or dead-
lettered with a reason, and every dead letter is on its dead-letter topic or, refused there, in
Postgres."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Iterator
from dataclasses import replace

import orjson
import psycopg
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from order_recovery.config import EXCEPTION_TYPES, Settings
from order_recovery.core.dead_letters import DEAD_LETTER_REASONS, RULE_ERROR
from order_recovery.core.records import SourceRecord
from tests.support.fuzz import BASE_DOCS, fuzz_settings, near_valid_docs, raw_bytes
from tests.support.kafka_io import read_topic, set_topic_config
from tests.support.pipeline_run import PRODUCED_MS, Run

pytestmark = pytest.mark.fuzz

MAX_RECORD_BYTES = 64 * 1024  # the limit under test, small so that going over it is cheap
DLQ_LIMIT = 12 * 1024  # the logistics DLQ's max.message.bytes: below a truncated dead letter

#: A valid event: `feed` gives it a fresh event id, or ("again") the last one it gave.
valid_docs = st.tuples(st.sampled_from(BASE_DOCS), st.sampled_from(["fresh"] * 4 + ["again"]))
bad_values = st.one_of(
    st.builds(lambda d: d.raw, near_valid_docs()),
    raw_bytes,
    st.none(),
    st.integers(MAX_RECORD_BYTES, 2 * MAX_RECORD_BYTES).map(lambda n: b"{" * n),  # oversized
    st.integers(DLQ_LIMIT, 40_000).map(lambda n: random.Random(n).randbytes(n)),  # refused
)
#: Mostly valid (one_of alone gave a fifth: hypothesis leans to the simpler branches).
values = st.integers(0, 9).flatmap(lambda i: valid_docs if i < 6 else bad_values)
records = st.tuples(
    st.sampled_from(EXCEPTION_TYPES),
    st.integers(0, 2),  # partition
    st.none() | st.binary(max_size=40),  # key
    values,
    st.sampled_from([PRODUCED_MS, PRODUCED_MS, None, 0, 1, 2**41]),  # broker timestamp
    st.lists(
        st.tuples(
            st.sampled_from(["trace", "dlq.attempt", "dlq.id", "replay.id", "\u00e9", ""]),
            st.binary(max_size=60),
        ),
        max_size=3,
    ),
)


@pytest.fixture
def run(settings: Settings) -> Iterator[Run]:
    set_topic_config(
        settings.kafka_bootstrap_servers,
        settings.dlq_topic(settings.source_topic("logistics-exception")),
        "max.message.bytes",
        str(DLQ_LIMIT),
    )
    r = Run(replace(settings, max_record_bytes=MAX_RECORD_BYTES))
    yield r
    r.close()


def test_bad_input_never_stops_the_pipeline(settings: Settings, run: Run) -> None:
    offsets = itertools.count()
    expected: dict[str, str] = {}  # dlq.id -> error class of every dead letter
    reasons = {*DEAD_LETTER_REASONS, RULE_ERROR}

    event_ids = [str(uuid.uuid4())]

    def value_of(drawn: bytes | tuple | None) -> bytes | None:
        if not isinstance(drawn, tuple):
            return drawn
        doc, which = drawn
        if which == "fresh":
            event_ids.append(str(uuid.uuid4()))
        return orjson.dumps({**doc, "event_id": event_ids[-1]})

    @fuzz_settings(25)
    @given(batch=st.lists(records, min_size=1, max_size=6))
    def feed(batch: list[tuple]) -> None:
        fed = [
            SourceRecord(
                settings.source_topic(kind), p, next(offsets), key, value_of(v), ts, tuple(headers)
            )
            for kind, p, key, v, ts, headers in batch
        ]
        result = run.process(fed)
        assert result.decided + result.duplicates + len(result.dead_letters) == len(fed)
        event(f"decided {min(result.decided, 3)}+")  # the spread: --hypothesis-show-statistics
        for letter in result.dead_letters:
            assert letter.error_class in reasons, letter
            event(letter.error_class)
            r = letter.record
            expected[f"{r.topic}/{r.partition}/{r.offset}"] = letter.error_class
        for r in fed:
            assert result.commit_offsets[(r.topic, r.partition)] > r.offset

    feed()
    found: dict[str, str] = {}
    for topic in settings.source_topics:
        for m in read_topic(settings.kafka_bootstrap_servers, settings.dlq_topic(topic)):
            headers = dict(m.headers())
            found[headers["dlq.id"].decode()] = headers["dlq.error.class"].decode()
    with psycopg.connect(settings.database_reader_url) as conn:
        kept = conn.execute(
            """SELECT source_topic || '/' || source_partition || '/' || source_offset,
                      error_class FROM unsendable_dead_letters"""
        ).fetchall()
    assert not set(dict(kept)) & set(found), "a dead letter both sent and kept"
    found.update(dict(kept))
    assert found == expected

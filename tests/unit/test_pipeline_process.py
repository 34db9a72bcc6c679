"""The wire protocol between the faust runtime and its pipeline process: what goes over the pipe
comes back exactly (a record's bytes, absent keys and headers included)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from order_recovery.core.batch import BatchResult
from order_recovery.core.records import SourceRecord
from order_recovery.runtimes.pipeline_process import (
    Batch,
    Drained,
    Finished,
    Lag,
    _decode_in,
    _decode_out,
    _encode,
    _finished,
)

records = st.builds(
    SourceRecord,
    topic=st.text(min_size=1, max_size=40),
    partition=st.integers(0, 1000),
    offset=st.integers(0, 2**62),
    key=st.none() | st.binary(max_size=40),
    value=st.none() | st.binary(max_size=600),
    timestamp_ms=st.none() | st.integers(0, 2**45),
    headers=st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=20)), max_size=3).map(
        tuple
    ),
)


@given(st.lists(records, max_size=20))
def test_a_batch_crosses_the_pipe_unchanged(batch):
    assert _decode_in(_encode(Batch(batch))) == Batch(batch)


def test_control_messages_and_answers_cross_the_pipe():
    lag = Lag([("orders.payment-timeout", 3, 17)])
    assert _decode_in(_encode(lag)) == lag
    result = BatchResult(3, 2, 1, (), {("orders.shipping-delay", 0): 41, ("orders.x", 5): 7})
    finished = _finished(result)
    assert _decode_out(_encode(finished)) == finished
    assert {(t, p): o for t, p, o in finished.offsets} == result.commit_offsets
    assert isinstance(_decode_out(_encode(Drained())), Drained)
    assert not isinstance(_decode_out(_encode(finished)), Drained | Batch)
    assert isinstance(_decode_out(_encode(finished)), Finished)

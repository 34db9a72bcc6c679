"""A dead letter written twice (same dlq.id) is one dead letter to `dlq list/show/replay`; the copy
they keep does not depend on the order partitions were read in. No services."""

from __future__ import annotations

from order_recovery.ops.dlq import Letter, distinct, summarise

TOPIC = "p.payment-timeout.dlq"


def letter(partition: int, offset: int, dlq_id: str | None, *more: tuple[str, bytes]) -> Letter:
    headers = [] if dlq_id is None else [("dlq.id", dlq_id.encode())]
    return Letter(TOPIC, partition, offset, None, None, b"{}", (*headers, *more))


def test_copies_of_one_dead_letter_count_once() -> None:
    a0 = letter(1, 5, "p.payment-timeout/0/7")
    a1 = letter(0, 9, "p.payment-timeout/0/7")  # the same dead letter again, in partition 0
    b = letter(1, 6, "p.payment-timeout/0/8")
    # Of the copies, the first by (partition, offset), whatever order they were read in.
    assert distinct([a0, b, a1]) == [b, a1]
    assert distinct([a1, a0, b]) == [a1, b]
    [s] = summarise([TOPIC], [a0, b, a1])
    assert s.count == 2


def test_dead_letters_without_an_id_are_each_their_own() -> None:
    old = [letter(0, 1, None), letter(0, 2, None), letter(1, 1, None)]
    assert distinct(old) == old
    assert old[0].identity != letter(0, 1, "p.payment-timeout.dlq/0/1").identity


def test_a_truncated_dead_letter_says_so() -> None:
    assert letter(0, 1, "x", ("dlq.value.truncated", b"true")).truncated
    assert not letter(0, 1, "x").truncated


def test_the_original_timestamp_is_read_when_there_is_one() -> None:
    assert (
        letter(0, 1, "x", ("dlq.original.timestamp", b"1700000000000")).original_timestamp_ms
        == 1_700_000_000_000
    )
    assert letter(0, 1, "x", ("dlq.original.timestamp", b"")).original_timestamp_ms is None

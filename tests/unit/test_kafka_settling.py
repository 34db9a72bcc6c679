"""Operator tools ask the broker again while it settles (CI once failed `dlq show` on a "not
leader" answered right after the tests' topic churn) and let every other error through."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from order_recovery.adapters.kafka_settling import is_settling, when_settled


def refusing(codes: list[int], answer: tuple[int, int] = (0, 7)):
    """A call answering each code in turn as a KafkaException, then `answer`."""
    calls = []

    def call() -> tuple[int, int]:
        calls.append(time.monotonic())
        if len(calls) <= len(codes):
            raise KafkaException(KafkaError(codes[len(calls) - 1]))
        return answer

    return call, calls


def test_a_settling_broker_is_asked_again_until_it_answers() -> None:
    call, calls = refusing(
        [KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.NOT_COORDINATOR, KafkaError._TIMED_OUT]
    )
    assert when_settled(call, "offsets", timeout_s=10) == (0, 7)
    assert len(calls) == 4


def test_any_other_error_is_raised_at_once() -> None:
    call, calls = refusing([KafkaError.TOPIC_AUTHORIZATION_FAILED])
    with pytest.raises(KafkaException) as raised:
        when_settled(call, "offsets", timeout_s=10)
    assert raised.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert len(calls) == 1


def test_a_broker_that_never_settles_fails_with_its_last_answer_after_the_timeout() -> None:
    call, calls = refusing([KafkaError.LEADER_NOT_AVAILABLE] * 1000)
    started = time.monotonic()
    with pytest.raises(KafkaException) as raised:
        when_settled(call, "offsets", timeout_s=0.5)
    assert raised.value.args[0].code() == KafkaError.LEADER_NOT_AVAILABLE
    assert 0.5 <= time.monotonic() - started < 3.0
    assert len(calls) > 1


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)), True),
        (KafkaException(KafkaError(KafkaError.INVALID_CONFIG)), False),
        (KafkaException("not a KafkaError"), False),
        (RuntimeError("elsewhere"), False),
    ],
)
def test_what_counts_as_settling(exc: BaseException, expected: bool) -> None:
    assert is_settling(exc) is expected

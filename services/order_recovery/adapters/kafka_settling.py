"""Asking the broker again while its metadata settles. Right after a topic is created or deleted,
a leader moves or a group coordinator loads, a KRaft broker answers reads of metadata, watermarks
and committed offsets with "not leader", "leader not available", "unknown partition" or "not
coordinator" for a moment. An operator's `recoveryctl dlq show` must not fail on that (CI saw it
fail so under the tests' topic churn); it asks again with backoff, for a bounded time, and lets
any other error through at once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The answers of a broker whose leadership or coordinator is still being settled.
SETTLING = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
    }
)


def is_settling(exc: BaseException) -> bool:
    if not isinstance(exc, KafkaException) or not exc.args:
        return False
    error = exc.args[0]
    return isinstance(error, KafkaError) and error.code() in SETTLING


def when_settled(fn: Callable[[], T], what: str, timeout_s: float = 30.0) -> T:
    """fn(), asked again while the broker answers that it is settling, for up to timeout_s; the
    last answer is raised after that, and any other error at once."""

    def note(state: RetryCallState) -> None:
        fault = state.outcome.exception() if state.outcome else None
        log.info("%s: broker settling (%s); asking again", what, fault)

    retrying = Retrying(
        retry=retry_if_exception(is_settling),
        stop=stop_after_delay(timeout_s),
        wait=wait_random_exponential(multiplier=0.1, max=2.0),
        before_sleep=note,
        reraise=True,
    )
    return retrying(fn)

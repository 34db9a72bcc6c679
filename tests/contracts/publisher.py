"""The Publisher contract (see tests/contracts/__init__.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from order_recovery.core.faults import PublishFailed, Refused, transient_cause
from order_recovery.core.ports import Publisher
from order_recovery.core.records import OutgoingMessage

#: Over librdkafka's message.max.bytes (1,000,000): refused by the producer itself.
TOO_LARGE = b"x" * 2_000_000


class PublisherHarness:
    """What a subclass provides: the publisher, the topics it may write, what a topic holds
    (as (key, value, headers)), and a publisher whose broker does not answer."""

    publisher: Publisher
    topics: tuple[str, str]

    def delivered(self, topic: str) -> list[tuple[bytes | None, bytes | None, list]]:
        raise NotImplementedError

    def unavailable(self) -> Publisher:
        raise NotImplementedError


class PublisherContract:
    @pytest.fixture
    def harness(self) -> Iterator[PublisherHarness]:
        raise NotImplementedError

    def test_every_message_is_delivered_in_order_with_its_headers(
        self, harness: PublisherHarness
    ) -> None:
        outcomes, letters = harness.topics
        messages = [OutgoingMessage(outcomes, b"ord-1", f"v{i}".encode()) for i in range(5)]
        letter = OutgoingMessage(letters, None, b"{bad", [("dlq.id", b"x"), ("trace", b"")])
        harness.publisher.publish([*messages, letter])
        assert harness.delivered(outcomes) == [(m.key, m.value, []) for m in messages]
        assert harness.delivered(letters) == [(None, b"{bad", [("dlq.id", b"x"), ("trace", b"")])]

    def test_nothing_to_send_is_no_call_to_the_broker(self, harness: PublisherHarness) -> None:
        harness.unavailable().publish([])
        harness.publisher.publish([])

    def test_a_message_too_large_is_refused_once_the_rest_is_delivered(
        self, harness: PublisherHarness
    ) -> None:
        topic = harness.topics[0]
        small = [OutgoingMessage(topic, b"k", b"before"), OutgoingMessage(topic, b"k", b"after")]
        huge = OutgoingMessage(topic, b"k", TOO_LARGE)
        with pytest.raises(Refused) as refused:
            harness.publisher.publish([small[0], huge, small[1]])
        assert [m for m, _ in refused.value.refused] == [huge]
        assert transient_cause(refused.value) is None
        assert [v for _, v, _ in harness.delivered(topic)] == [b"before", b"after"]

    def test_a_broker_that_does_not_answer_is_a_transient_failure(
        self, harness: PublisherHarness
    ) -> None:
        message = OutgoingMessage(harness.topics[0], b"k", b"v")
        with pytest.raises(PublishFailed) as failed:
            harness.unavailable().publish([message])
        assert transient_cause(failed.value) == "kafka_publish"

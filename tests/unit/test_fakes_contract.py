"""The in-memory fakes (tests/fakes.py) against the ports' contract suites (tests/contracts/):
the same tests the real adapters pass in tests/integration/test_adapters_contract.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from order_recovery.core.ports import CaseStore, UnsendableLetters
from tests.contracts.cases import CaseStoreContract
from tests.contracts.publisher import PublisherContract, PublisherHarness
from tests.contracts.store import DecisionStoreContract, StoreHarness, UnsendableLettersContract
from tests.fakes import InMemoryCaseStore, InMemoryStore, KeptLetters, RecordingPublisher


class FakeStoreHarness(StoreHarness):
    def __init__(self) -> None:
        self.store = self.other = self._fake = InMemoryStore()
        self.cases = self._fake.lifecycle

    def age_outbox(self, seconds: float) -> None:
        self._fake.age_outbox(seconds)


class TestInMemoryStore(DecisionStoreContract):
    @pytest.fixture
    def harness(self) -> Iterator[StoreHarness]:
        yield FakeStoreHarness()


class TestKeptLetters(UnsendableLettersContract):
    @pytest.fixture
    def letters(self) -> Iterator[UnsendableLetters]:
        yield KeptLetters()


class FakePublisherHarness(PublisherHarness):
    topics = ("orders.recovery-outcome", "orders.shipping-delay.dlq")

    def __init__(self) -> None:
        self.publisher = self._fake = RecordingPublisher()

    def delivered(self, topic: str) -> list[tuple[bytes | None, bytes | None, list]]:
        return [(m.key, m.value, list(m.headers)) for m in self._fake.to(topic)]

    def unavailable(self) -> RecordingPublisher:
        down = RecordingPublisher()
        down.fail_next(1_000)
        return down


class TestRecordingPublisher(PublisherContract):
    @pytest.fixture
    def harness(self) -> Iterator[PublisherHarness]:
        yield FakePublisherHarness()


class TestInMemoryCaseStore(CaseStoreContract):
    @pytest.fixture
    def store(self) -> Iterator[CaseStore]:
        yield InMemoryCaseStore()

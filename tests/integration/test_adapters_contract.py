"""The real adapters against the ports' contract suites (tests/contracts/): the Postgres store and
its unsendable letters on the test's own database (as the worker role), the Kafka publisher on the
test's own topics. The in-memory fakes pass the same tests in tests/unit/test_fakes_contract.py."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from order_recovery.adapters.kafka_producer import KafkaPublisher
from order_recovery.adapters.postgres.cases import PostgresCaseStore
from order_recovery.adapters.postgres.store import PostgresStore
from order_recovery.adapters.postgres.unsendable import UnsendableStore
from order_recovery.config import Settings
from order_recovery.core.ports import CaseStore, UnsendableLetters
from tests.contracts.cases import CaseStoreContract
from tests.contracts.publisher import PublisherContract, PublisherHarness
from tests.contracts.store import DecisionStoreContract, StoreHarness, UnsendableLettersContract
from tests.support.kafka_io import read_topic


class PostgresHarness(StoreHarness):
    def __init__(self, database: Settings) -> None:
        self.store = PostgresStore(database.database_url)
        self.other = PostgresStore(database.database_url)
        self.cases = PostgresCaseStore(database.database_url)
        self._owner_url = database.database_owner_url

    def age_outbox(self, seconds: float) -> None:
        with psycopg.connect(self._owner_url) as conn:  # the worker may not rewrite history
            conn.execute(
                "UPDATE outbox_batches SET created_at = created_at - make_interval(secs => %s)",
                (seconds,),
            )

    def close(self) -> None:
        self.store.close()
        self.other.close()
        self.cases.close()


class TestPostgresStore(DecisionStoreContract):
    @pytest.fixture
    def harness(self, test_database: Settings) -> Iterator[StoreHarness]:
        harness = PostgresHarness(test_database)
        yield harness
        harness.close()


class TestUnsendableStore(UnsendableLettersContract):
    @pytest.fixture
    def letters(self, database_url: str) -> Iterator[UnsendableLetters]:
        store = UnsendableStore(database_url)
        yield store
        store.close()


class KafkaHarness(PublisherHarness):
    def __init__(self, settings: Settings) -> None:
        self.bootstrap = settings.kafka_bootstrap_servers
        self.publisher = KafkaPublisher(self.bootstrap, "contract")
        source = settings.source_topic("shipping-delay")
        self.topics = (settings.outcome_topic, settings.dlq_topic(source))

    def delivered(self, topic: str) -> list[tuple[bytes | None, bytes | None, list]]:
        return [
            (m.key(), m.value(), [(k, v or b"") for k, v in m.headers() or []])
            for m in read_topic(self.bootstrap, topic)
        ]

    def unavailable(self) -> KafkaPublisher:
        return KafkaPublisher("127.0.0.1:1", "contract-down", flush_timeout_s=1.0)


class TestKafkaPublisher(PublisherContract):
    @pytest.fixture
    def harness(self, settings: Settings) -> Iterator[PublisherHarness]:
        harness = KafkaHarness(settings)
        yield harness
        harness.publisher.close()


class TestPostgresCaseStore(CaseStoreContract):
    @pytest.fixture
    def store(self, database_url: str) -> Iterator[CaseStore]:
        store = PostgresCaseStore(database_url)
        self._dsn, self._others = database_url, []
        yield store
        store.close()
        for other in self._others:
            other.close()

    def second_handle(self, store: CaseStore) -> CaseStore:
        other = PostgresCaseStore(self._dsn)
        self._others.append(other)
        return other

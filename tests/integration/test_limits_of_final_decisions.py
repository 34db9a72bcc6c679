"""A decision that is final before the risk controls (a rejection, an order whose right to recovery
was revoked) does not depend on the payment-attempt count, so it must not claim a bound on it.
Found by tests/integration/test_fuzz_pipeline.py: the fifth "not yet expired" payment timeout of
one order claimed "at most 4 attempts after me" on a counter already at 4, its write was refused
as a conflict, decided again the same way, refused again: retried for ever, the partition
stopped."""

from __future__ import annotations

import uuid
from datetime import timedelta

import orjson
import pytest

from order_recovery.config import Settings
from order_recovery.core.records import SourceRecord
from tests.support.pipeline_run import PRODUCED_MS, Run
from tests.unit.domain.factories import payment_timeout


@pytest.fixture
def run(settings: Settings) -> Run:
    r = Run(settings, stuck_s=10)
    yield r  # type: ignore[misc]
    r.close()


def test_rejections_of_one_order_past_the_attempt_maximum_are_all_decided(
    settings: Settings, run: Run
) -> None:
    # Created 10 minutes ago, a 30-minute timeout: not yet expired, rejected whatever the history.
    doc = payment_timeout(
        "douyin", created_ago=timedelta(minutes=10), failed_ago=timedelta(minutes=5)
    )
    topic = settings.source_topic("payment-timeout")
    for offset in range(6):  # the maximum is 3 attempts: the counter passes 4 on the fifth
        event = dict(doc, event_id=str(uuid.uuid4()))
        record = SourceRecord(topic, 0, offset, b"k", orjson.dumps(event), PRODUCED_MS)
        assert run.process([record]).decided == 1

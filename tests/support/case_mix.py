"""Cases closed in a known mix, for the recovery-rate rules against a real Prometheus
(tests/integration/observability): opened and moved by the lifecycle service on the test's
database, so the case figures (adapters.postgres.case_figures) count exactly these.

    douyin     4 recalls paid 10 min after the exception           rate 1.0, mean TTR 600 s
    taobao     1 recall paid after 20 min, 3 outside the window     rate 0.25, mean TTR 1200 s
    pinduoduo  2 timeouts, no recovery window on pinduoduo: expired   rate 0.0, no recovery
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import orjson

from order_recovery.adapters.postgres.cases import PostgresCaseStore
from order_recovery.config import Settings
from order_recovery.core.lifecycle import Lifecycle
from order_recovery.domain.case import Transition
from order_recovery.domain.contract import decode_resolution
from tests.unit.domain.factories import POLICIES, T0, decode, payment_timeout, resolution, run

M = timedelta(minutes=1)
RATES_BY_PLATFORM = {"douyin": 1.0, "taobao": 0.25, "pinduoduo": 0.0}
RATES_BY_TYPE = {"payment-timeout": 0.5}  # 5 recovered of 10 closed; no other type closes
MEAN_TTR_BY_PLATFORM = {"douyin": 600.0, "taobao": 1200.0}
CLOSED = 10


def _opened(lifecycle: Lifecycle, order_id: str, doc: dict[str, Any]) -> None:
    doc = {**doc, "order_id": order_id}
    assert isinstance(lifecycle.open(decode(doc), run(doc)), Transition), order_id


def _paid(lifecycle: Lifecycle, order_id: str, platform: str, after: timedelta) -> None:
    doc = {
        **resolution("payment-completed", platform, amount_fen=19_900),
        "event_id": str(uuid.uuid4()),
        "order_id": order_id,
        "occurred_at": (T0 + after).isoformat(),
    }
    (step,) = lifecycle.resolve([decode_resolution(orjson.dumps(doc), platforms=POLICIES)])
    assert isinstance(step, Transition), (order_id, step)


def close_known_cases(settings: Settings, tag: str) -> None:
    """The mix above, under order ids starting with `tag`."""
    store = PostgresCaseStore(settings.database_url)
    try:
        lifecycle = Lifecycle(store, POLICIES)
        for i in range(4):
            _opened(lifecycle, f"{tag}-dy-{i}", payment_timeout("douyin", failed_ago=10 * M))
            _paid(lifecycle, f"{tag}-dy-{i}", "douyin", 10 * M)
        _opened(lifecycle, f"{tag}-tb-paid", payment_timeout("taobao", failed_ago=5 * M))
        _paid(lifecycle, f"{tag}-tb-paid", "taobao", 20 * M)  # its window: 30 min
        for i in range(3):
            _opened(lifecycle, f"{tag}-tb-late-{i}", payment_timeout("taobao", failed_ago=40 * M))
        for i in range(2):  # pinduoduo has no recovery window: closed as expired at once
            _opened(lifecycle, f"{tag}-pdd-{i}", payment_timeout("pinduoduo"))
    finally:
        store.close()

"""`recoveryctl stats` on cases moved through their life by the lifecycle service on the test's own
database: the recovery rate counts cases closed, time to recovery runs from the exception's event
time to the recovering resolution's, and the open cases show by state and age."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from order_recovery.adapters.postgres.case_figures import CaseFigures
from order_recovery.adapters.postgres.cases import PostgresCaseStore
from order_recovery.adapters.postgres.reconciliation import reconcile_and_record
from order_recovery.adapters.postgres.snapshots import take_snapshot
from order_recovery.config import EXCEPTION_TYPES, Settings
from order_recovery.core.lifecycle import Lifecycle
from order_recovery.domain.case import Transition
from order_recovery.domain.contract import decode_resolution
from order_recovery.domain.operations import age_bucket, age_bucket_sql
from tests.integration.recoveryctl.conftest import Run
from tests.unit.domain.factories import (
    POLICIES,
    T0,
    decode,
    logistics_exception,
    payment_timeout,
    resolution,
    run,
    shipping_delay,
)

pytestmark = pytest.mark.integration
Ctl = Callable[..., Run]
M = timedelta(minutes=1)

#: order -> the exception that opens its case (every one occurs at T0).
OPENING: dict[str, dict[str, Any]] = {
    "ord-paid": payment_timeout(failed_ago=10 * M),  # recall: waits for the payment
    "ord-ship": shipping_delay(),  # coupon: waits for the parcel
    "ord-fresh": shipping_delay(category="fresh", paid_ago=timedelta(hours=3)),  # refund
    "ord-late": payment_timeout("taobao", failed_ago=40 * M),  # outside the window: expired
    "ord-lost": logistics_exception("douyin"),  # appeal filed: waits for the verdict
    "ord-big": payment_timeout(amount_fen=600_000),  # high value: waits for a reviewer
    "ord-wait": shipping_delay(),  # nobody answers
}
#: What happens next, each at T0 + its delay.
RESOLUTIONS = [
    ("ord-paid", 10 * M, resolution("payment-completed", amount_fen=20_000)),
    ("ord-ship", 30 * M, resolution("parcel-handed-over", carrier="ZTO", tracking_no="ZTO1")),
    (
        "ord-fresh",
        20 * M,
        resolution(
            "action-report",
            exception_type="shipping-delay",
            action="auto_refund",
            action_key="ord-fresh/shipping-delay/1/auto_refund",
            status="completed",
        ),
    ),
    (
        "ord-lost",
        120 * M,
        resolution("platform-verdict", proceeding="appeal", result="lost", amount_fen=0),
    ),
]


@pytest.fixture
def lived(settings: Settings) -> Settings:
    store = PostgresCaseStore(settings.database_url)  # as the worker and lifecycle write them
    try:
        lifecycle = Lifecycle(store, POLICIES)
        for order_id, doc in OPENING.items():
            doc = {**doc, "order_id": order_id}
            assert isinstance(lifecycle.open(decode(doc), run(doc)), Transition), order_id
        for order_id, after, doc in RESOLUTIONS:
            doc = {**doc, "order_id": order_id, "occurred_at": (T0 + after).isoformat()}
            (step,) = lifecycle.resolve([decode_resolution(orjson.dumps(doc), platforms=POLICIES)])
            assert isinstance(step, Transition), (order_id, step)
    finally:
        store.close()
    return settings


def test_stats_counts_cases_closed_and_the_time_to_their_recovery(
    ctl: Ctl, lived: Settings
) -> None:
    result = ctl("stats", "--json")
    assert result.code == 1, "60 % recovered and a 20 min mean miss both targets"
    total = result.json["total"]
    # Closed: paid and shipped (recovered), fresh (refunded), late (expired), lost (failed).
    assert (total["cases_closed"], total["recovered"], total["recovery_rate"]) == (5, 3, 0.6)
    assert total["closed_states"] == {"recovered": 2, "refunded": 1, "expired": 1, "failed": 1}
    assert total["cases_opened"] == 7
    # Recovered after 10, 30 and 20 minutes of event time.
    assert total["mean_time_to_recovery_s"] == pytest.approx(20 * 60)
    assert total["p90_time_to_recovery_s"] == 30 * 60
    # Open: the big order waits for a reviewer with its 6,000 yuan, the parcel still waits; both
    # exceptions are dated 2025, so older than 3 days.
    assert total["open_cases"] == {
        "count": 2,
        "states": {"awaiting_review": 1, "awaiting_shipment": 1},
        "ages": {"ge_3d": 2},
        "awaiting_review": {"count": 1, "amount_fen": 600_000, "overdue": 0},
    }

    by = {g["group"]: g for g in ctl("stats", "--json", "--by", "platform").json["groups"]}
    assert {p: (g["cases_closed"], g["recovered"]) for p, g in by.items()} == {
        "douyin": (4, 3),
        "taobao": (1, 0),
    }
    types = {g["group"]: g for g in ctl("stats", "--json", "--by", "type").json["groups"]}
    assert types["shipping-delay"]["recovery_rate"] == 1.0
    assert types["payment-timeout"]["closed_states"] == {"recovered": 1, "expired": 1}
    assert types["logistics-exception"]["recovery_rate"] == 0.0

    # Closed from T0 + 15 min: the parcel (30), the refund (20) and the verdict (120).
    late = ctl("stats", "--json", "--since", (T0 + 15 * M).isoformat()).json["total"]
    assert (late["cases_closed"], late["recovered"]) == (3, 2)
    assert late["mean_time_to_recovery_s"] == pytest.approx(25 * 60)

    text = ctl("stats")
    assert "recovery rate 60.0% (target 92%): missed" in text.out
    assert "mean time to recovery 20.0 min (target 15 min): missed" in text.out


def _samples(collector: CaseFigures) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }


def test_prometheus_reads_the_same_figures_from_the_case_table(lived: Settings) -> None:
    """The lifecycle processes' collector counts what `stats` counts (the e2e test compares them
    through a real Prometheus)."""
    collector = CaseFigures(lived.database_url, EXCEPTION_TYPES, POLICIES, refresh_s=0)
    try:
        samples = _samples(collector)
    finally:
        collector.close()

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    closed = {
        (dict(labels)["event_type"], dict(labels)["state"]): v
        for (name, labels), v in samples.items()
        if name == "order_recovery_cases_closed_total" and v
    }
    assert closed == {
        ("payment-timeout", "recovered"): 1,
        ("shipping-delay", "recovered"): 1,
        ("shipping-delay", "refunded"): 1,
        ("payment-timeout", "expired"): 1,
        ("logistics-exception", "failed"): 1,
    }
    ttr = "order_recovery_time_to_recovery_seconds"
    ship = {"event_type": "shipping-delay", "platform": "douyin"}
    assert value(f"{ttr}_count", **ship) == 2
    assert value(f"{ttr}_sum", **ship) == (30 + 20) * 60
    assert value(f"{ttr}_bucket", **ship, le="900.0") == 0
    assert value(f"{ttr}_bucket", **ship, le="1800.0") == 2
    assert value(f"{ttr}_bucket", **ship, le="+Inf") == 2
    # Every (type, platform, state) is there from the start, at 0.
    assert (
        value(
            "order_recovery_cases_closed_total",
            event_type="payment-timeout",
            platform="pinduoduo",
            state="recovered",
        )
        == 0
    )
    opened = "order_recovery_cases_open"
    assert value(opened, platform="douyin", state="awaiting_review", age="ge_3d") == 1
    assert value(opened, platform="douyin", state="awaiting_shipment", age="ge_3d") == 1
    assert value(opened, platform="douyin", state="awaiting_shipment", age="lt_15m") == 0
    assert value("order_recovery_cases_awaiting_review_fen", platform="douyin") == 600_000
    assert value("order_recovery_reviews_overdue", platform="douyin") == 0
    with psycopg.connect(lived.database_url) as conn:
        released = conn.execute("SELECT count(*) FROM case_commands").fetchone()
    assert released is not None and released[0] > 0  # nothing relays them in this test
    assert value("order_recovery_action_commands_unsent") == released[0]
    assert collector.healthy is True


def test_an_unreachable_database_yields_no_series_rather_than_zeros() -> None:
    collector = CaseFigures("postgresql://nobody@127.0.0.1:1/none", EXCEPTION_TYPES, POLICIES)
    assert list(collector.collect()) == []
    assert collector.healthy is False


def test_postgres_buckets_ages_as_python_does(settings: Settings) -> None:
    ages = [timedelta(seconds=s) for s in (-5, 0, 899, 900, 3599, 3600, 86399, 86400, 10**7)]
    with psycopg.connect(settings.database_url) as conn:
        got = [
            conn.execute(
                f"SELECT {age_bucket_sql('a')} FROM (SELECT %s::interval AS a) t", (age,)
            ).fetchone()[0]
            for age in ages
        ]
    assert got == [age_bucket(age) for age in ages]
    assert got[2:4] == ["lt_15m", "lt_1h"]


def test_the_schedules_gauges_follow_the_latest_runs(lived: Settings, tmp_path: Path) -> None:
    """No series before a first run (a timestamp of 0 would read as 1970); then when the latest
    snapshot and reconciliation ran and what the reconciliation found."""
    collector = CaseFigures(lived.database_url, EXCEPTION_TYPES, POLICIES, refresh_s=0)
    try:
        before = {name for name, _ in _samples(collector)}
        assert "order_recovery_snapshot_last_taken_timestamp_seconds" not in before
        assert "order_recovery_reconciliation_problems" not in before
        ledger = tmp_path / "ledger.csv"
        ledger.write_text(
            "order_id,exception_type,kind,amount_fen\nord-x,shipping-delay,coupon,1\n"
        )
        at = datetime(2026, 12, 2, 20, 0, tzinfo=UTC)
        with psycopg.connect(lived.database_url) as conn:  # as the lifecycle process runs them
            take_snapshot(conn, at, at, "scheduled")
            reconcile_and_record(conn, date(2026, 12, 1), ledger, "scheduled", at)
        samples = _samples(collector)
    finally:
        collector.close()
    assert samples[("order_recovery_snapshot_last_taken_timestamp_seconds", ())] == at.timestamp()
    ran = samples[("order_recovery_reconciliation_last_run_timestamp_seconds", ())]
    assert ran == at.timestamp()
    assert samples[("order_recovery_reconciliation_problems", ())] == 1  # ord-x: not decided
    status = "order_recovery_reconciliation_status"
    assert samples[(status, (("status", "mismatched"),))] == 1
    assert samples[(status, (("status", "matched"),))] == 0

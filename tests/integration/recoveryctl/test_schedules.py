"""The seed's schedules on the test's own database: the snapshot of open cases and the daily
reconciliation, run once per slot however many runners tick, again after a runner died mid-run,
recorded when they fail; and `recoveryctl snapshot | schedules | reconcile --record` by hand."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from order_recovery.adapters.postgres.cases import PostgresCaseStore
from order_recovery.adapters.postgres.reconciliation import latest_reconciliation
from order_recovery.adapters.postgres.schedules import (
    BUSY,
    DONE,
    FAILED,
    LOCK_CLASS,
    RAN,
    ScheduleRunner,
    last_runs,
)
from order_recovery.adapters.postgres.snapshots import latest_snapshot, take_snapshot
from order_recovery.config import Settings
from order_recovery.core.lifecycle import Lifecycle
from order_recovery.domain.case import Case, Transition
from order_recovery.domain.decision import ActionType
from order_recovery.domain.history import SHANGHAI
from order_recovery.domain.resolutions import (
    ActionReport,
    ActionStatus,
    PaymentCompleted,
    ResolutionEnvelope,
    ResolutionType,
)
from order_recovery.domain.schedules import Job
from tests.integration.recoveryctl.conftest import Run
from tests.unit.domain.factories import (
    POLICIES,
    T0,
    decode,
    payment_timeout,
    run,
    shipping_delay,
)

pytestmark = pytest.mark.integration
Ctl = Callable[..., Run]
M = timedelta(minutes=1)
DAY = "2025-06-02"  # T0's Shanghai day
#: The 20:00 slot of the day after DAY, which reconciles DAY.
RECONCILE_NOW = datetime(2025, 6, 3, 20, 30, tzinfo=SHANGHAI)


def _envelope(kind: ResolutionType, order_id: str, at: datetime) -> ResolutionEnvelope:
    return ResolutionEnvelope(str(uuid.uuid4()), kind, 1, at, "douyin", order_id)


def _open(lifecycle: Lifecycle, order_id: str, doc: dict[str, Any]) -> Case:
    doc = {**doc, "order_id": order_id, "event_id": str(uuid.uuid4())}
    step = lifecycle.open(decode(doc), run(doc))
    assert isinstance(step, Transition), step
    return step.case


def _compensation(settings: Settings, case: Case, kind: str, amount_fen: int) -> None:
    """The compensation row the decision pipeline writes with the decision (as the owner here:
    the decision's own columns do not matter to the reconciliation)."""
    with psycopg.connect(settings.database_owner_url) as conn:
        conn.execute(
            """INSERT INTO decisions (event_id, order_id, exception_type, platform, merchant_id,
                   buyer_id, category, amount_fen, occurred_at, outcome, rule_ids, risk_flags,
                   reason, policy_version, source_topic, source_partition, source_offset, event)
               VALUES (%s, %s, %s, 'douyin', 'm1', %s, 'standard', %s, %s, 'recovered', '{r}',
                   '{}', 'why', 'douyin-test', 't', 0, 0, '{}')""",
            (case.opened_by, case.order_id, case.exception_type, case.buyer_id, case.amount_fen,
             case.opened_at),
        )  # fmt: skip
        conn.execute(
            """INSERT INTO compensations (order_id, exception_type, kind, amount_fen, buyer_id,
                   event_day, event_id, decided_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
            (case.order_id, case.exception_type, kind, amount_fen, case.buyer_id,
             T0.date(), case.opened_by, T0 + M),
        )  # fmt: skip


@pytest.fixture
def day(settings: Settings) -> Settings:
    """DAY's life: a payment that recovered a case (19 900 fen), a coupon the executor completed
    (1 000), one it reported failed (2 000), and two cases still open (one for review)."""
    store = PostgresCaseStore(settings.database_url)  # as the worker moves them
    try:
        lifecycle = Lifecycle(store, POLICIES)
        recalled = _open(lifecycle, "ord-paid", payment_timeout())
        ok = _open(lifecycle, "ord-coupon-ok", shipping_delay())
        failed = _open(lifecycle, "ord-coupon-failed", shipping_delay())
        _open(lifecycle, "ord-big", payment_timeout(amount_fen=600_000))
        _compensation(settings, ok, "coupon", 1_000)
        _compensation(settings, failed, "coupon", 2_000)
        key = {c.order_id: next(k for k in c.released if k.endswith("/issue_coupon"))
               for c in (ok, failed)}  # fmt: skip
        report = ResolutionType.ACTION_REPORT
        steps = lifecycle.resolve(
            [
                PaymentCompleted(
                    _envelope(ResolutionType.PAYMENT_COMPLETED, "ord-paid", T0 + M), 19_900
                ),
                ActionReport(
                    _envelope(report, "ord-coupon-ok", T0 + 2 * M), ok.exception_type,
                    ActionType.ISSUE_COUPON, key["ord-coupon-ok"], ActionStatus.COMPLETED,
                ),
                ActionReport(
                    _envelope(report, "ord-coupon-failed", T0 + 2 * M), failed.exception_type,
                    ActionType.ISSUE_COUPON, key["ord-coupon-failed"], ActionStatus.FAILED,
                ),
            ]
        )  # fmt: skip
        recovered = [s.case.order_id for s in steps
                     if isinstance(s, Transition) and s.case.state == "recovered"]  # fmt: skip
        assert recovered == [recalled.order_id]
    finally:
        store.close()
    return settings


def _count(settings: Settings, table: str) -> int:
    with psycopg.connect(settings.database_owner_url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def _open_cases(settings: Settings) -> int:
    with psycopg.connect(settings.database_owner_url) as conn:
        row = conn.execute("SELECT count(*) FROM cases WHERE closed_at IS NULL").fetchone()
    assert row is not None
    return int(row[0])


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --------------------------------------------------------------------------- the snapshot
def test_a_snapshot_counts_open_cases_by_state_and_age(day: Settings) -> None:
    with psycopg.connect(day.database_url) as conn:  # as the runner takes it: the worker
        snap = take_snapshot(conn, T0 + 30 * M, None, "manual")
    open_cases = _open_cases(day)
    assert snap.open_cases == open_cases >= 2  # ord-paid closed; the big one waits for review
    assert {r.age_bucket for r in snap.rows} == {"lt_1h"}  # opened at T0, 30 min before
    assert snap.by_state()["awaiting_review"] == 1
    with psycopg.connect(day.database_reader_url) as conn:
        stored = latest_snapshot(conn)
    assert stored == snap


def test_snapshot_by_hand(ctl: Ctl, day: Settings) -> None:
    assert ctl("snapshot", "latest").code == 1  # none yet
    taken = ctl("snapshot", "take", "--json")
    assert taken.code == 0, taken.err
    doc = taken.json
    assert (doc["source"], doc["slot"], doc["open_cases"]) == ("manual", None, _open_cases(day))
    assert {r["age_bucket"] for r in doc["rows"]} == {"ge_3d"}  # opened in 2025
    latest = ctl("snapshot", "latest", "--json").json
    assert _instant(latest.pop("taken_at")) == _instant(doc.pop("taken_at"))
    assert latest == doc  # the same snapshot, read back
    listed = ctl("snapshot", "list", "--json").json["snapshots"]
    assert [(s["source"], s["open_cases"]) for s in listed] == [("manual", doc["open_cases"])]
    text = ctl("snapshot", "take")
    assert "awaiting_review" in text.out and f"{doc['open_cases']} open case(s)" in text.out
    assert len(ctl("snapshot", "list", "--json").json["snapshots"]) == 2


# --------------------------------------------------------------------------- the runner
def test_each_slot_runs_once_across_runners_and_only_the_latest_after_downtime(
    day: Settings,
) -> None:
    a = ScheduleRunner(replace(day, worker_id="runner-a"))
    b = ScheduleRunner(replace(day, worker_id="runner-b"))
    try:
        assert a.run_due(RECONCILE_NOW) == {Job.SNAPSHOT: RAN, Job.RECONCILIATION: RAN}
        assert b.run_due(RECONCILE_NOW) == {Job.SNAPSHOT: DONE, Job.RECONCILIATION: DONE}
        assert a.run_due(RECONCILE_NOW + M) == {}  # known done: no query at all
        assert (_count(day, "schedule_runs"), _count(day, "case_snapshots")) == (2, 1)
        # Down for five hours: one snapshot (the latest slot), not twenty.
        later = RECONCILE_NOW + timedelta(hours=5)
        assert b.run_due(later) == {Job.SNAPSHOT: RAN}
        assert a.run_due(later) == {Job.SNAPSHOT: DONE}
        assert (_count(day, "schedule_runs"), _count(day, "case_snapshots")) == (3, 2)
        with psycopg.connect(day.database_reader_url) as conn:
            runs = last_runs(conn, 5)
        assert [(r.job, r.slot, r.runner) for r in runs] == [
            ("reconciliation", datetime(2025, 6, 3, 20, 0, tzinfo=SHANGHAI), "runner-a"),
            ("snapshot", datetime(2025, 6, 4, 1, 30, tzinfo=SHANGHAI), "runner-b"),
            ("snapshot", datetime(2025, 6, 3, 20, 30, tzinfo=SHANGHAI), "runner-a"),
        ]
        assert runs[0].outcome["status"] == "ledger_missing"  # no ledger directory set
        assert runs[0].outcome["day"] == DAY
    finally:
        a.close()
        b.close()


def test_a_slot_being_run_elsewhere_is_skipped_not_waited_for(day: Settings) -> None:
    runner = ScheduleRunner(day)
    slot = datetime(2025, 6, 3, 20, 30, tzinfo=SHANGHAI).isoformat()
    try:
        with psycopg.connect(day.database_owner_url) as other:  # another runner, mid-run
            other.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, f"snapshot/{slot}")
            )
            assert runner.run_due(RECONCILE_NOW)[Job.SNAPSHOT] == BUSY
        assert runner.run_due(RECONCILE_NOW) == {Job.SNAPSHOT: RAN}  # lock gone: its turn
    finally:
        runner.close()


class _DiesMidRun(ScheduleRunner):
    """A runner whose process dies while its job runs: the connection goes away."""

    def _job(self, conn: psycopg.Connection[Any], job: Job, slot: datetime, now: datetime) -> Any:
        result = super()._job(conn, job, slot, now)  # the work is done, not committed
        with psycopg.connect(self.settings.database_url, autocommit=True) as killer:
            killer.execute("SELECT pg_terminate_backend(%s, 5000)", (conn.info.backend_pid,))
        conn.execute("SELECT 1")  # what the dead process would have done next
        return result


def test_a_run_that_died_leaves_nothing_and_runs_again(day: Settings) -> None:
    dying, survivor = _DiesMidRun(day), ScheduleRunner(day)
    try:
        assert dying.tick(RECONCILE_NOW) == {}  # never raises, even so
        assert (_count(day, "schedule_runs"), _count(day, "case_snapshots")) == (0, 0)
        assert _count(day, "reconciliations") == 0
        assert survivor.run_due(RECONCILE_NOW) == {Job.SNAPSHOT: RAN, Job.RECONCILIATION: RAN}
        assert (_count(day, "schedule_runs"), _count(day, "case_snapshots")) == (2, 1)
    finally:
        dying.close()
        survivor.close()


def test_a_failing_job_is_recorded_and_shown(ctl: Ctl, day: Settings, tmp_path: Path) -> None:
    (tmp_path / f"{DAY}.csv").write_text("order_id,kind\nord-1,coupon\n")  # malformed
    runner = ScheduleRunner(replace(day, ledger_dir=tmp_path))
    try:
        assert runner.run_due(RECONCILE_NOW) == {Job.SNAPSHOT: RAN, Job.RECONCILIATION: FAILED}
        assert runner.run_due(RECONCILE_NOW) == {}  # not retried before its next slot
    finally:
        runner.close()
    assert _count(day, "reconciliations") == 0  # the failed run's work was rolled back
    shown = ctl("schedules", "--json")
    assert shown.code == 1
    (rec,) = [r for r in shown.json["runs"] if r["job"] == "reconciliation"]
    assert "lacks column(s) exception_type" in rec["outcome"]["error"]
    assert shown.json["latest_reconciliation"] is None
    text = ctl("schedules")
    assert "LedgerError" in text.out and "snapshot" in text.out


# --------------------------------------------------------------------------- reconciliation
def _ledger(path: Path, *lines: str) -> Path:
    path.write_text("order_id,exception_type,kind,amount_fen\n" + "".join(f"{x}\n" for x in lines))
    return path


def test_the_scheduled_reconciliation_reads_the_days_ledger(day: Settings, tmp_path: Path) -> None:
    """Payments recovered and coupons completed are owed; the failed coupon is owed nothing."""
    _ledger(
        tmp_path / f"{DAY}.csv",
        "ord-paid,payment-timeout,payment,19900",
        "ord-coupon-ok,shipping-delay,coupon,1000",
    )
    runner = ScheduleRunner(replace(day, ledger_dir=tmp_path))
    try:
        assert runner.run_due(RECONCILE_NOW)[Job.RECONCILIATION] == RAN
    finally:
        runner.close()
    with psycopg.connect(day.database_reader_url) as conn:
        latest = latest_reconciliation(conn)
        (summary,) = conn.execute("SELECT summary FROM reconciliations").fetchone() or (None,)
    assert latest is not None
    assert (latest.day.isoformat(), latest.source, latest.status) == (DAY, "scheduled", "matched")
    assert latest.ledger == str(tmp_path / f"{DAY}.csv")
    assert summary["decided"]["payment"] == {"count": 1, "amount_fen": 19_900}
    assert summary["reported"] == {"completed": 2, "failed": 1, "unreported": 0}


def test_reconcile_by_hand_records_like_the_schedule(
    ctl: Ctl, day: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDER_RECOVERY_LEDGER_DIR", str(tmp_path))
    missing = ctl("reconcile", "--date", DAY, "--record", "--json")
    assert missing.code == 1 and missing.json["status"] == "ledger_missing"
    assert "recorded ledger_missing" in missing.err
    _ledger(
        tmp_path / f"{DAY}.csv",
        "ord-paid,payment-timeout,payment,19900",
        "ord-coupon-failed,shipping-delay,coupon,2000",  # paid though it failed
    )
    wrong = ctl("reconcile", "--date", DAY, "--record", "--json")
    assert wrong.code == 1 and wrong.json["status"] == "mismatched"
    assert [x["order_id"] for x in wrong.json["missing"]] == ["ord-coupon-ok"]
    assert [x["order_id"] for x in wrong.json["booked_though_failed"]] == ["ord-coupon-failed"]
    text = ctl("reconcile", "--date", DAY, "--record")
    assert "1 missing, 0 extra, 0 mismatched, 1 booked though failed" in text.out
    good = _ledger(
        tmp_path / "by-hand.csv",
        "ord-paid,payment-timeout,payment,19900",
        "ord-coupon-ok,shipping-delay,coupon,1000",
    )
    ok = ctl("reconcile", "--date", DAY, "--ledger", str(good), "--record")
    assert ok.code == 0, ok.out + ok.err
    shown = ctl("schedules", "--json")
    assert shown.code == 0 and shown.json["runs"] == []  # by hand: no schedule slot taken
    latest = shown.json["latest_reconciliation"]
    assert (latest["status"], latest["source"]) == ("matched", "manual")
    assert latest["ledger"] == str(good)
    assert _count(day, "reconciliations") == 4
    # Without --record nothing is written (as the reports role), as before.
    assert ctl("reconcile", "--date", DAY, "--ledger", str(good)).code == 0
    assert _count(day, "reconciliations") == 4


def test_the_lifecycle_process_runs_the_schedules_on_its_tick(day: Settings) -> None:
    """The one call in `LifecycleRuntime._tick`: the process's first tick takes the due
    snapshot and reconciliation (now, by the wall clock), as the worker role."""
    from order_recovery.runtimes.lifecycle import LifecycleRuntime

    runtime = LifecycleRuntime(day)
    try:
        runtime._tick()
    finally:
        runtime.consumer.close()
        runtime.publisher.close()
        runtime.store.close()
        runtime.unsendable.close()
        runtime.schedules.close()
    with psycopg.connect(day.database_reader_url) as conn:
        runs = last_runs(conn)
        snap = latest_snapshot(conn)
    assert sorted(r.job for r in runs) == ["reconciliation", "snapshot"]
    assert not any(r.failed for r in runs)
    assert snap is not None and snap.source == "scheduled"
    assert snap.open_cases == _open_cases(day)

"""Exception 3 (logistics exception): 15-day window, per-platform handling, evidence, forgery."""

from __future__ import annotations

import pytest

from order_recovery.domain import ActionType, CompensationKind, OrderHistory, Outcome, RiskFlag

from .factories import PLATFORMS, D, S, logistics_exception, run

A = ActionType

HANDLING = {
    "douyin": ((A.UPLOAD_EVIDENCE, A.FILE_APPEAL), "logistics.appeal_system_review"),
    "taobao": (
        (A.UPLOAD_EVIDENCE, A.REQUEST_PLATFORM_ARBITRATION),
        "logistics.platform_arbitration",
    ),
    "pinduoduo": ((A.AUTO_REFUND, A.UPLOAD_EVIDENCE, A.FILE_APPEAL), "logistics.refund_first"),
}


@pytest.mark.parametrize("kind", ["transit_timeout", "lost"])
@pytest.mark.parametrize("platform", PLATFORMS)
def test_evidence_and_appeal_by_platform(platform, kind):
    d = run(logistics_exception(platform, kind=kind, amount_fen=7_700))
    actions, rule = HANDLING[platform]
    assert d.outcome is Outcome.PENDING
    assert d.actions == actions
    assert d.rule_ids == (rule,)
    if platform == "pinduoduo":  # automatic refund first
        assert d.compensation is not None
        assert (d.compensation.kind, d.compensation.amount_fen) == (CompensationKind.REFUND, 7_700)
    else:
        assert d.compensation is None


@pytest.mark.parametrize("platform", ["douyin", "taobao"])
def test_no_evidence_asks_the_merchant_and_stays_open(platform):
    d = run(logistics_exception(platform, evidence=[]))
    assert d.outcome is Outcome.PENDING
    assert d.actions == (A.REQUEST_EVIDENCE,)
    assert d.rule_ids == ("logistics.request_evidence",)


def test_pinduoduo_refunds_first_even_without_evidence():
    d = run(logistics_exception("pinduoduo", evidence=[]))
    assert d.outcome is Outcome.PENDING
    assert d.actions == (A.AUTO_REFUND, A.REQUEST_EVIDENCE)
    assert d.rule_ids == ("logistics.refund_first", "logistics.request_evidence")


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize(
    ("signed_ago", "outcome"),
    [(15 * D - S, Outcome.PENDING), (15 * D, Outcome.PENDING), (15 * D + S, Outcome.EXPIRED)],
)
def test_window_15_days_after_sign_off(platform, signed_ago, outcome):
    d = run(logistics_exception(platform, signed_ago=signed_ago, reported_ago=signed_ago + 2 * D))
    assert d.outcome is outcome
    if outcome is Outcome.EXPIRED:
        assert d.rule_ids == ("logistics.outside_window",)
        assert d.actions == () and d.compensation is None


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize(
    ("reported_ago", "outcome"),
    [(15 * D - S, Outcome.PENDING), (15 * D, Outcome.PENDING), (15 * D + S, Outcome.EXPIRED)],
)
def test_window_15_days_after_the_exception_when_never_signed(platform, reported_ago, outcome):
    assert run(logistics_exception(platform, reported_ago=reported_ago)).outcome is outcome


def test_sign_off_not_the_report_starts_the_window_when_signed():
    d = run(logistics_exception(signed_ago=D, reported_ago=20 * D))
    assert d.outcome is Outcome.PENDING


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("reported_ago", [D, 30 * D])
def test_forged_logistics_loses_the_right_to_recovery(platform, reported_ago):
    risky = OrderHistory(payment_attempts=9, buyer_refunds_today=9, merchant_dsr=1.0)
    d = run(logistics_exception(platform, forged=True, reported_ago=reported_ago), risky)
    assert d.outcome is Outcome.CLOSED_NO_RECOVERY
    assert d.actions == (A.REVOKE_RECOVERY_RIGHT,)
    assert d.risk_flags == (RiskFlag.FORGED_LOGISTICS,)
    assert d.rule_ids == ("logistics.forged_revokes_recovery",)
    assert d.compensation is None


@pytest.mark.parametrize(
    "overrides",
    [
        {"reported_ago": -S},  # reported after the event
        {"reported_ago": D, "signed_ago": -S},  # signed after the event
        {"reported_ago": 2 * D, "created_ago": D},  # reported before the order existed
        {"reported_ago": D, "signed_ago": 3 * D, "created_ago": 2 * D},  # signed before it
    ],
)
def test_event_before_the_reported_exception_is_rejected(overrides):
    d = run(logistics_exception(**overrides))
    assert d.outcome is Outcome.REJECTED
    assert d.rule_ids == ("event.inconsistent_timestamps",)


@pytest.mark.parametrize(
    ("evidence", "actions"),
    [([], (A.REQUEST_EVIDENCE,)), (None, (A.UPLOAD_EVIDENCE, A.FILE_APPEAL))],
    ids=["no-evidence", "evidence"],
)
def test_pinduoduo_refund_first_of_a_zero_amount_order_pays_nothing(evidence, actions):
    d = run(logistics_exception("pinduoduo", amount_fen=0, evidence=evidence))
    assert d.outcome is Outcome.PENDING
    assert d.actions == actions
    assert d.compensation is None and not d.moves_money
    assert d.rule_ids[0] == "logistics.refund_first"
    assert "nothing to refund" in d.reason

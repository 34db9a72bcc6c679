"""Operations figures of the business reference, quoted from one place."""

from __future__ import annotations

from datetime import timedelta

import pytest

from order_recovery.domain import operations as ops

from .factories import T0, M


def test_figures_match_the_reference():
    assert ops.RECOVERY_SUCCESS_TARGET_BP == 9_200
    assert timedelta(minutes=47) == ops.MTTR_BASELINE
    assert timedelta(minutes=15) == ops.MTTR_TARGET
    assert (ops.RECONCILIATION_AT.hour, ops.RECONCILIATION_AT.minute) == (20, 0)
    assert ops.RECONCILIATION_AT.utcoffset() == timedelta(hours=8)
    assert ops.RECONCILIATION_ENDPOINT == "/order/reconciliation"
    assert timedelta(minutes=15) == ops.SNAPSHOT_INTERVAL
    assert timedelta(days=180) <= ops.AUDIT_RETENTION
    assert ops.TRANSIENT_RETRY_RECOVERY_BP == 8_300


def test_mttr_is_measured_from_event_time_to_decision():
    assert ops.time_to_recovery(T0, T0 + 14 * M) == 14 * M
    assert ops.meets_mttr_target(T0, T0 + 15 * M - timedelta(seconds=1))
    assert not ops.meets_mttr_target(T0, T0 + 15 * M)


def test_success_rate_in_basis_points():
    assert ops.success_rate_bp(92, 100) == ops.RECOVERY_SUCCESS_TARGET_BP
    assert ops.success_rate_bp(0, 0) == 0
    with pytest.raises(ValueError):
        ops.success_rate_bp(3, 2)

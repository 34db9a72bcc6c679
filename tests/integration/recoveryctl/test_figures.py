"""`case show`, `stats`, `reconcile` and `simulate` on decisions the real worker took for a feed
whose every decision is known, with decision times the test sets: exact expected figures."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from order_recovery.config import Settings
from tests.integration.recoveryctl.conftest import Run
from tests.integration.recoveryctl.feed import (
    T0,
    H,
    decide,
    payment_timeout,
    policy_dir,
    shipping_delay,
)

Ctl = Callable[..., Run]
M = timedelta(minutes=1)

# order -> (event, decided_at - T0). Expected (shipped douyin policy unless noted):
#   a recall within 2 h: recovered          b, c failed 30 h ago, 24 h window: expired
#   d reissue after 2 h: recovered          e 5 % coupon of 200 yuan = 1000 fen: recovered
#   e2 (e again, 1 h later): no second coupon, recovered
#   f fresh produce: refund 20000: closed   h taobao, 30 min window: expired
#   i fresh produce: refund 15000: closed   j 5 % coupon of 400 yuan = 2000 fen: recovered
FEED: dict[str, tuple[dict[str, Any], timedelta]] = {
    "a": (payment_timeout("ord-a", H), 5 * M),
    "b": (payment_timeout("ord-b", 30 * H), M),
    "c": (payment_timeout("ord-c", 30 * H), M),
    "d": (payment_timeout("ord-d", 5 * H), 10 * M),
    "e": (shipping_delay("ord-e"), 20 * M),
    "e2": (shipping_delay("ord-e", at=T0 + H), H + 45 * M),
    "f": (shipping_delay("ord-f", fresh=True), M),
    "h": (payment_timeout("ord-h", 30 * H, platform="taobao"), M),
    "i": (shipping_delay("ord-i", fresh=True, amount_fen=15_000), M),
    "j": (shipping_delay("ord-j", amount_fen=40_000), 30 * M),
}


@pytest.fixture
def decided(settings: Settings, tmp_path: Path) -> dict[str, str]:
    """The feed decided by the worker, decided_at set to T0 + the feed's offset; event ids."""
    decide(settings, tmp_path, [event for event, _ in FEED.values()])
    with psycopg.connect(settings.database_owner_url) as conn:
        for event, after in FEED.values():
            for table in ("decisions", "compensations"):  # one transaction wrote both
                conn.execute(
                    f"UPDATE {table} SET decided_at = %s WHERE event_id = %s",
                    (T0 + after, event["event_id"]),
                )
    return {name: event["event_id"] for name, (event, _) in FEED.items()}


def set_compensation_time(settings: Settings, at: dict[str, str]) -> None:
    with psycopg.connect(settings.database_owner_url) as conn:
        for order, when in at.items():
            conn.execute(
                "UPDATE compensations SET decided_at = %s WHERE order_id = %s", (when, order)
            )


def test_case_show_is_the_orders_timeline(ctl: Ctl, decided: dict[str, str]) -> None:
    run = ctl("case", "show", "ord-e", "--json")
    assert run.code == 0, run.err
    timeline = run.json["timeline"]
    got = [(x["kind"], x["event_id"], x["summary"]) for x in timeline]
    e, e2 = decided["e"], decided["e2"]
    # The case the first event opened (the worker's hot path): waiting for the parcel, its
    # shipping window pending, the second event changing nothing.
    (case,) = run.json["cases"]
    assert (case["state"], case["steps"], case["opened_by"]) == ("awaiting_shipment", 1, e)
    assert case["deadline"]["kind"] == "shipping_window" and case["deadline"]["set_by_step"] == 1
    assert [a["status"] for a in case["actions"]] == ["pending", "pending"]
    due = datetime.fromisoformat(case["deadline"]["due_at"]).isoformat(timespec="seconds")
    assert got == [
        ("event", e, "shipping-delay on douyin"),
        ("decision", e, "recovered: shipping.coupon_within_7d"),
        ("action", e, "update_shipping_status"),
        ("action", e, "issue_coupon"),
        ("compensation", e, "coupon 1000 fen"),
        ("event", e2, "shipping-delay on douyin"),
        ("decision", e2, "recovered: shipping.coupon_within_7d, compensation.already_granted"),
        ("action", e2, "update_shipping_status"),
        ("audit", e, "(new) -> recovered"),
        ("step", e, "(new) -> awaiting_shipment: case.open.shipment"),
        ("deadline_set", e, f"shipping_window due {due} (pending)"),
        ("audit", e2, "recovered -> recovered"),
    ]
    assert timeline[10]["detail"] == {
        "kind": "shipping_window",
        "due_at": case["deadline"]["due_at"],
        "step": 1,
        "fate": "pending",
    }
    assert [datetime.fromisoformat(x["at"]) for x in timeline[:2]] == [T0, T0 + 20 * M]
    assert timeline[1]["detail"]["policy_version"] == "douyin-2026.1"
    assert "coupon" in timeline[1]["detail"]["reason"]
    assert timeline[8]["detail"]["rule_ids"] == ["shipping.coupon_within_7d"]

    text = ctl("case", "show", "ord-e")
    assert text.code == 0 and "order ord-e" in text.out and "douyin-2026.1" in text.out
    missing = ctl("case", "show", "ord-nope")
    assert (missing.code, missing.err) == (
        1,
        "recoveryctl: no decisions or cases for order ord-nope\n",
    )


def test_stats_figures_of_decisions_and_the_cases_they_opened(
    ctl: Ctl, decided: dict[str, str]
) -> None:
    """The decisions' outcomes and compensation by decision time; the cases they opened: b, c
    and h closed at once as expired, the others wait (nothing answered them here; the lifecycle
    figures: test_case_figures.py)."""
    run = ctl("stats", "--json")
    assert run.code == 1, "no case recovered: the rate target is missed"
    total = run.json["total"]
    assert total["decided"] == 10
    assert total["outcomes"] == {"recovered": 5, "expired": 3, "closed_no_recovery": 2}
    assert total["compensation"] == {
        "coupon": {"count": 2, "amount_fen": 3000},
        "refund": {"count": 2, "amount_fen": 35000},
    }
    assert (total["cases_opened"], total["cases_closed"], total["recovered"]) == (9, 3, 0)
    assert total["closed_states"] == {"expired": 3}
    assert total["mean_time_to_recovery_s"] is None
    assert total["open_cases"]["states"] == {
        "awaiting_payment": 2,
        "awaiting_shipment": 2,
        "awaiting_refund": 2,
    }
    assert (total["recovery_rate_target_met"], total["time_to_recovery_target_met"]) == (
        False,
        None,
    )

    by = ctl("stats", "--json", "--by", "platform").json["groups"]
    assert {g["group"]: (g["decided"], g["cases_closed"]) for g in by} == {
        "douyin": (9, 2),
        "taobao": (1, 1),
    }
    rules = {g["group"]: g for g in ctl("stats", "--json", "--by", "rule").json["groups"]}
    assert (
        rules["payment.outside_window"]["decided"],
        rules["payment.outside_window"]["cases_closed"],
    ) == (3, 3)
    assert rules["shipping.fresh_refund_2h"]["compensation"]["refund"] == {
        "count": 2,
        "amount_fen": 35000,
    }
    assert rules["shipping.coupon_within_7d"]["decided"] == 3
    assert rules["shipping.coupon_within_7d"]["cases_opened"] == 2  # e2 opened none
    types = {
        g["group"]: g["decided"] for g in ctl("stats", "--json", "--by", "type").json["groups"]
    }
    assert types == {"payment-timeout": 5, "shipping-delay": 5}

    late = ctl("stats", "--json", "--since", (T0 + 15 * M).isoformat())
    assert late.json["total"]["decided"] == 3

    text = ctl("stats")
    assert "recovery rate 0.0% (target 92%): missed" in text.out
    assert "decisions" in text.out and "open cases (now)" in text.out


def test_reconcile_finds_missing_extra_and_mismatch(
    ctl: Ctl, settings: Settings, decided: dict[str, str], tmp_path: Path
) -> None:
    # Asia/Shanghai days: 2025-06-03 00:00+08 is still 2025-06-02 in UTC.
    set_compensation_time(
        settings,
        {
            "ord-e": "2025-06-02T10:20:00+08:00",
            "ord-j": "2025-06-02T23:59:59+08:00",
            "ord-f": "2025-06-02T00:00:00+08:00",
            "ord-i": "2025-06-03T00:00:00+08:00",
        },
    )
    ledger = tmp_path / "ledger.csv"
    ledger.write_text(
        "ledger_ref,order_id,exception_type,kind,amount_fen,booked_at\n"
        "L1,ord-e,shipping-delay,coupon,1000,2025-06-02T10:21:00+08:00\n"
        "L2,ord-j,shipping-delay,coupon,2500,2025-06-02T23:59:59+08:00\n"
        "L3,ord-i,shipping-delay,refund,15000,2025-06-02T23:00:00+08:00\n"
    )
    run = ctl("reconcile", "--date", "2025-06-02", "--ledger", str(ledger), "--json")
    assert run.code == 1
    r = run.json
    assert r["decided"] == {
        "coupon": {"count": 2, "amount_fen": 3000},
        "refund": {"count": 1, "amount_fen": 20000},
        "payment": {"count": 0, "amount_fen": 0},  # no case recovered by a payment here
    }
    assert r["reported"] == {"completed": 0, "failed": 0, "unreported": 3}  # no executor ran
    assert [(x["order_id"], x["kind"], x["amount_fen"]) for x in r["missing"]] == [
        ("ord-f", "refund", 20000)
    ]
    assert [(x["order_id"], x["amount_fen"], x["ledger_amount_fen"]) for x in r["mismatched"]] == [
        ("ord-j", 2000, 2500)
    ]
    assert [(x["order_id"], x["kind"], x["where"]) for x in r["extra"]] == [
        ("ord-i", "refund", "line 4")
    ]
    text = ctl("reconcile", "--date", "2025-06-02", "--ledger", str(ledger))
    assert text.code == 1 and "1 missing, 1 extra, 1 mismatched" in text.out

    clean = tmp_path / "clean.csv"
    clean.write_text(
        "order_id,exception_type,kind,amount_fen\n"
        "ord-f,shipping-delay,refund,20000\n"
        "ord-j,shipping-delay,coupon,2000\n"
        "ord-e,shipping-delay,coupon,1000\n"
    )
    ok = ctl("reconcile", "--date", "2025-06-02", "--ledger", str(clean), "--json")
    assert (ok.code, ok.json["clean"]) == (0, True)
    next_day = ctl("reconcile", "--date", "2025-06-03", "--json")
    assert next_day.code == 0 and next_day.json["decided"]["refund"] == {
        "count": 1,
        "amount_fen": 15000,
    }
    # A paid-twice line is a mismatch, not silently one match.
    twice = tmp_path / "twice.csv"
    twice.write_text(clean.read_text() + "ord-e,shipping-delay,coupon,1000\n")
    dup = ctl("reconcile", "--date", "2025-06-02", "--ledger", str(twice), "--json")
    assert dup.code == 1 and dup.json["mismatched"][0]["ledger_amount_fen"] == 2000
    bad = tmp_path / "bad.csv"
    bad.write_text("order_id,exception_type,kind,amount_fen\nord-e,shipping-delay,coupon,10.5\n")
    usage = ctl("reconcile", "--date", "2025-06-02", "--ledger", str(bad))
    assert usage.code == 2 and "line 2: amount_fen '10.5' is not whole fen" in usage.err


def test_simulate_a_72h_window_and_a_bigger_coupon(
    ctl: Ctl, decided: dict[str, str], tmp_path: Path
) -> None:
    what_if = policy_dir(
        tmp_path,
        douyin='version = "douyin-72h"\nrecovery_window_s = 259_200\ncoupon_rate_bp = 1000',
    )
    run = ctl("simulate", "--policy", str(what_if), "--json")
    assert run.code == 0, run.err
    s = run.json
    assert (s["events"], s["compared"], s["changed"]) == (10, 10, 4)
    assert s["decided"]["outcomes"] == {"closed_no_recovery": 2, "expired": 3, "recovered": 5}
    assert s["simulated"]["outcomes"] == {"closed_no_recovery": 2, "expired": 1, "recovered": 7}
    assert (s["decided"]["recovery_rate"], s["simulated"]["recovery_rate"]) == (0.5, 0.7)
    # Coupons double (e 1000 -> 2000, j 2000 -> 4000); e2 still gets none; refunds unchanged.
    assert s["decided"]["coupon"] == {"count": 2, "amount_fen": 3000}
    assert s["simulated"]["coupon"] == {"count": 2, "amount_fen": 6000}
    assert s["simulated"]["refund"] == s["decided"]["refund"] == {"count": 2, "amount_fen": 35000}
    changed = {c["event_id"]: c for c in s["changes"]}
    assert set(changed) == {decided["b"], decided["c"], decided["e"], decided["j"]}
    assert changed[decided["b"]]["simulated"]["rule_ids"] == ["payment.reissue_after_2h"]
    assert changed[decided["b"]]["simulated"]["policy_version"] == "douyin-72h"
    assert {"from": "expired", "to": "recovered", "count": 2} in s["transitions"]

    # Only e2's window: e is re-decided as history (compensation granted), so e2 is unchanged.
    late = ctl("simulate", "--policy", str(what_if), "--since", (T0 + 30 * M).isoformat(), "--json")
    assert (late.json["events"], late.json["changed"]) == (1, 0)

    text = ctl("simulate", "--policy", str(what_if))
    assert "10 event(s), 4 decision(s) would change" in text.out
    assert "+20.0 pt" in text.out

    bad = tmp_path / "empty"
    bad.mkdir()
    usage = ctl("simulate", "--policy", str(bad))
    assert usage.code == 2 and "no policy files" in usage.err

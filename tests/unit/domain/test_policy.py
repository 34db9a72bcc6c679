"""Policy files: the shipped figures match the business reference; loading is strict."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from order_recovery.domain import PolicyError, UnknownPlatform, load_policies, policy_for
from order_recovery.domain.policy import (
    DEFAULT_POLICY_DIR,
    LogisticsHandling,
    RecoveryService,
    load_policy_file,
)

MIN, HOUR, DAY = 60, 3_600, 86_400


def test_three_platforms_ship_each_with_a_version():
    policies = load_policies()
    assert set(policies) == {"douyin", "taobao", "pinduoduo"}
    assert {p.version for p in policies.values()} == {
        "douyin-2026.1",
        "taobao-2026.1",
        "pinduoduo-2026.1",
    }


@pytest.mark.parametrize("platform", ["douyin", "taobao", "pinduoduo"])
def test_figures_common_to_every_platform(platform):
    p = load_policies()[platform]
    assert (p.payment.timeout_s, p.payment.virtual_timeout_s) == (30 * MIN, 15 * MIN)
    assert p.payment.recall_limit_s == 2 * HOUR
    assert (p.shipping.ship_limit_s, p.shipping.fresh_ship_limit_s) == (48 * HOUR, 2 * HOUR)
    assert p.shipping.recovery_window_s == 7 * DAY
    assert p.logistics.recovery_window_s == 15 * DAY
    assert p.risk.high_value_fen == 500_000
    assert p.risk.max_payment_attempts == 3
    assert p.risk.max_buyer_refunds_per_day == 5
    assert p.risk.dsr_review_below == 4.6


def test_platform_table_of_the_reference():
    policies = load_policies()
    douyin, taobao, pdd = policies["douyin"], policies["taobao"], policies["pinduoduo"]
    assert douyin.payment.recovery_window_s == 24 * HOUR
    assert douyin.payment.window_extendable
    assert douyin.payment.extended_recovery_window_s == 72 * HOUR
    assert taobao.payment.recovery_window_s == 30 * MIN and not taobao.payment.window_extendable
    assert pdd.payment.recovery_window_s == 0 and not pdd.payment.window_extendable
    assert douyin.logistics.handling is LogisticsHandling.APPEAL_SYSTEM_REVIEW
    assert taobao.logistics.handling is LogisticsHandling.PLATFORM_ARBITRATION
    assert pdd.logistics.handling is LogisticsHandling.REFUND_FIRST
    assert douyin.services.recovery_service is RecoveryService.BASIC_FREE_ADVANCED_PAID
    assert taobao.services.recovery_service is RecoveryService.PER_RECOVERY_FEE
    assert pdd.services.recovery_service is RecoveryService.SELF_SERVICE_ONLY


def test_policy_for_unknown_platform_raises_unknown_platform():
    with pytest.raises(UnknownPlatform) as caught:
        policy_for(load_policies(), "jingdong")
    assert caught.value.field == "platform" and caught.value.error_class == "unknown_platform"
    assert policy_for(load_policies(), "taobao").platform == "taobao"


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    for name in ("douyin", "taobao", "pinduoduo"):
        shutil.copy(DEFAULT_POLICY_DIR / f"{name}.toml", tmp_path / f"{name}.toml")
    return tmp_path


def _edit(directory: Path, old: str, new: str, name: str = "douyin") -> None:
    path = directory / f"{name}.toml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_operators_can_point_at_their_own_directory(policy_dir):
    _edit(policy_dir, 'version = "douyin-2026.1"', 'version = "douyin-ops-7"')
    _edit(policy_dir, "coupon_max_fen = 5_000", "coupon_max_fen = 8_000")
    policy = load_policies(policy_dir)["douyin"]
    assert policy.version == "douyin-ops-7" and policy.shipping.coupon_max_fen == 8_000


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "coupon_min_fen = 300",
            "coupon_min_fen = 300\ncoupon_bonus = 1",
            "unknown key 'shipping.coupon_bonus'",
        ),
        (
            'version = "douyin-2026.1"',
            'version = "douyin-2026.1"\nowner = "x"',
            "unknown key 'owner'",
        ),
        ("recall_limit_s = 7_200", "", "missing key 'payment.recall_limit_s'"),
        ('version = "douyin-2026.1"', "", "missing key 'version'"),
        (
            "recovery_window_s = 86_400",
            "recovery_window_s = -1",
            "'payment.recovery_window_s' must not be negative",
        ),
        (
            "recovery_window_s = 1_296_000",
            "recovery_window_s = -86_400",
            "'logistics.recovery_window_s' must not be negative",
        ),
        (
            "recovery_window_s = 604_800",
            'recovery_window_s = "7d"',
            "'shipping.recovery_window_s' must be an integer",
        ),
        (
            "high_value_fen = 500_000",
            "high_value_fen = 5000.0",
            "'risk.high_value_fen' must be an integer",
        ),
        (
            "window_extendable = true",
            "window_extendable = 1",
            "'payment.window_extendable' must be true or false",
        ),
        (
            'handling = "appeal_system_review"',
            'handling = "whatever"',
            "'logistics.handling' must be one of",
        ),
        ("timeout_s = 1_800", "timeout_s = 0", "'payment.timeout_s' must be greater than 0"),
        (
            "coupon_min_fen = 300",
            "coupon_min_fen = 9_000",
            "'shipping.coupon_min_fen' (9000) exceeds",
        ),
        (
            "coupon_rate_bp = 500",
            "coupon_rate_bp = 20_000",
            "'shipping.coupon_rate_bp' must be at most",
        ),
        ("extended_recovery_window_s = 259_200", "extended_recovery_window_s = 60", "shorter than"),
        ('    "NOTENOUGH",', '    "ERR_TIMEOUT",', "repeats transient code(s) ['ERR_TIMEOUT']"),
        (
            "dsr_review_below = 4.6",
            "dsr_review_below = 46",
            "'risk.dsr_review_below' must be within",
        ),
        ('platform = "douyin"', 'platform = "taobao"', "but the file is named douyin.toml"),
        (
            "transient_return_codes = [",
            "transient_return_codes = [1,",
            "must be a list of non-empty strings",
        ),
        ("[risk]", "risk = 1\n[riskier]", "unknown key 'riskier'"),
        ("version = ", "version == ", "not valid TOML"),
    ],
)
def test_strict_loading_names_the_file_and_the_key(policy_dir, old, new, message):
    _edit(policy_dir, old, new)
    with pytest.raises(PolicyError) as caught:
        load_policies(policy_dir)
    assert message in str(caught.value)
    assert "douyin.toml" in str(caught.value)


def test_a_section_that_is_not_a_table(policy_dir):
    path = policy_dir / "douyin.toml"
    text = path.read_text(encoding="utf-8")
    head, _, _ = text.partition("[services]")
    head = head.replace('platform = "douyin"', 'platform = "douyin"\nservices = "none"')
    path.write_text(head, encoding="utf-8")
    with pytest.raises(PolicyError, match="'services' must be a table"):
        load_policy_file(path)


def test_empty_or_missing_directory(tmp_path):
    with pytest.raises(PolicyError, match="no policy files"):
        load_policies(tmp_path)
    with pytest.raises(PolicyError, match="does not exist"):
        load_policies(tmp_path / "absent")

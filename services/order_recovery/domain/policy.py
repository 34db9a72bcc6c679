"""Per-platform policy: every number the rules use, loaded from one TOML file per platform.

The rules hold no figures of their own, so an operator changes a window or a threshold by editing
(or pointing the worker at) a policy directory, and every decision records the policy `version` it
was taken under. Loading is strict on purpose: a typo'd key silently falling back to a default
would change money decisions without anyone noticing.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, get_type_hints

from order_recovery.domain.errors import PolicyError, UnknownPlatform

DEFAULT_POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"
_PLATFORM = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class LogisticsHandling(StrEnum):
    APPEAL_SYSTEM_REVIEW = "appeal_system_review"  # douyin: merchant declares, system reviews
    PLATFORM_ARBITRATION = "platform_arbitration"  # taobao: the platform arbitrates
    REFUND_FIRST = "refund_first"  # pinduoduo: automatic refund first


class RecoveryService(StrEnum):
    """What the platform charges for recovery tooling; informational, not a decision input."""

    BASIC_FREE_ADVANCED_PAID = "basic_free_advanced_paid"
    PER_RECOVERY_FEE = "per_recovery_fee"
    SELF_SERVICE_ONLY = "self_service_only"


@dataclass(frozen=True, slots=True)
class PaymentPolicy:
    timeout_s: int
    virtual_timeout_s: int
    recovery_window_s: int  # 0 = none: the order is void once the payment timeout passes
    window_extendable: bool
    extended_recovery_window_s: int
    recall_limit_s: int
    transient_return_codes: tuple[str, ...]
    non_transient_return_codes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ShippingPolicy:
    ship_limit_s: int
    fresh_ship_limit_s: int
    recovery_window_s: int
    coupon_rate_bp: int  # basis points of the order amount: 500 = 5 %
    coupon_min_fen: int
    coupon_max_fen: int


@dataclass(frozen=True, slots=True)
class LogisticsPolicy:
    recovery_window_s: int
    handling: LogisticsHandling


@dataclass(frozen=True, slots=True)
class RiskPolicy:
    high_value_fen: int
    max_payment_attempts: int
    max_buyer_refunds_per_day: int
    dsr_review_below: float
    brushing_min_amount_fen: int
    brushing_max_fen_per_gram: int


@dataclass(frozen=True, slots=True)
class LifecyclePolicy:
    """How long a case waits for what should happen next (see domain.case); event time."""

    channel_query_timeout_s: int  # a re-query without answer: the rule's next step runs
    evidence_timeout_s: int  # no evidence uploaded: closed without recovery
    verdict_timeout_s: int  # no platform verdict: a person takes over
    review_timeout_s: int  # a review not taken: reported as overdue


@dataclass(frozen=True, slots=True)
class ServicesPolicy:
    recovery_service: RecoveryService


@dataclass(frozen=True, slots=True)
class Policy:
    version: str
    platform: str
    payment: PaymentPolicy
    shipping: ShippingPolicy
    logistics: LogisticsPolicy
    risk: RiskPolicy
    lifecycle: LifecyclePolicy
    services: ServicesPolicy


_SECTIONS: dict[str, type] = {
    "payment": PaymentPolicy,
    "shipping": ShippingPolicy,
    "logistics": LogisticsPolicy,
    "risk": RiskPolicy,
    "lifecycle": LifecyclePolicy,
    "services": ServicesPolicy,
}
_TOP_SCALARS = ("version", "platform")
_MUST_BE_POSITIVE = {
    "payment.timeout_s",
    "payment.virtual_timeout_s",
    "shipping.ship_limit_s",
    "shipping.fresh_ship_limit_s",
    "lifecycle.channel_query_timeout_s",
    "lifecycle.evidence_timeout_s",
    "lifecycle.verdict_timeout_s",
    "lifecycle.review_timeout_s",
}


def _convert(source: str, key: str, hint: Any, value: Any) -> Any:
    def wrong(expected: str) -> PolicyError:
        return PolicyError(f"{source}: key '{key}' must be {expected}, got {value!r}")

    if hint is bool:
        if type(value) is not bool:
            raise wrong("true or false")
        return value
    if hint is int:
        if type(value) is not int:
            raise wrong("an integer")
        if value < 0:
            raise PolicyError(f"{source}: key '{key}' must not be negative, got {value}")
        return value
    if hint is float:
        if type(value) not in (int, float):
            raise wrong("a number")
        return float(value)
    if hint is str:
        if type(value) is not str or not value:
            raise wrong("a non-empty string")
        return value
    if hint == tuple[str, ...]:
        if type(value) is not list or not all(type(v) is str and v for v in value):
            raise wrong("a list of non-empty strings")
        return tuple(value)
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        allowed = [m.value for m in hint]
        if value not in allowed:
            raise wrong(f"one of {allowed}")
        return hint(value)
    raise TypeError(f"unsupported policy field type {hint!r}")  # programming error


def _section(source: str, name: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise PolicyError(f"{source}: '{name}' must be a table [{name}]")
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise PolicyError(f"{source}: unknown key '{name}.{unknown[0]}' (allowed: {names})")
    missing = [n for n in names if n not in raw]
    if missing:
        raise PolicyError(f"{source}: missing key '{name}.{missing[0]}'")
    values = {n: _convert(source, f"{name}.{n}", hints[n], raw[n]) for n in names}
    for key in _MUST_BE_POSITIVE:
        section, _, field_name = key.partition(".")
        if section == name and values[field_name] == 0:
            raise PolicyError(f"{source}: key '{key}' must be greater than 0")
    return cls(**values)


def _check_consistency(source: str, policy: Policy) -> None:
    p, s, r = policy.payment, policy.shipping, policy.risk
    if p.extended_recovery_window_s < p.recovery_window_s:
        raise PolicyError(
            f"{source}: key 'payment.extended_recovery_window_s' ({p.extended_recovery_window_s}) "
            f"is shorter than 'payment.recovery_window_s' ({p.recovery_window_s})"
        )
    overlap = sorted(set(p.transient_return_codes) & set(p.non_transient_return_codes))
    if overlap:
        raise PolicyError(
            f"{source}: key 'payment.non_transient_return_codes' repeats transient code(s) "
            f"{overlap}"
        )
    if s.coupon_rate_bp > 10_000:
        raise PolicyError(f"{source}: key 'shipping.coupon_rate_bp' must be at most 10000 (100 %)")
    if s.coupon_min_fen > s.coupon_max_fen:
        raise PolicyError(
            f"{source}: key 'shipping.coupon_min_fen' ({s.coupon_min_fen}) exceeds "
            f"'shipping.coupon_max_fen' ({s.coupon_max_fen})"
        )
    if not 0.0 <= r.dsr_review_below <= 5.0:
        raise PolicyError(f"{source}: key 'risk.dsr_review_below' must be within 0..5")
    if not _PLATFORM.match(policy.platform):
        raise PolicyError(f"{source}: key 'platform' must match {_PLATFORM.pattern}")


def policy_from_mapping(data: Mapping[str, Any], source: str = "<policy>") -> Policy:
    """Build and validate one policy from parsed TOML; `source` names it in error messages."""
    allowed = [*_TOP_SCALARS, *_SECTIONS]
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise PolicyError(f"{source}: unknown key '{unknown[0]}' (allowed: {allowed})")
    missing = [k for k in allowed if k not in data]
    if missing:
        raise PolicyError(f"{source}: missing key '{missing[0]}'")
    scalars = {k: _convert(source, k, str, data[k]) for k in _TOP_SCALARS}
    sections = {name: _section(source, name, cls, data[name]) for name, cls in _SECTIONS.items()}
    policy = Policy(**scalars, **sections)
    _check_consistency(source, policy)
    return policy


def load_policy_file(path: Path) -> Policy:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not valid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read: {exc}") from exc
    policy = policy_from_mapping(data, source=str(path))
    if policy.platform != path.stem:
        raise PolicyError(
            f"{path}: key 'platform' is {policy.platform!r} but the file is named "
            f"{path.name}; name it {policy.platform}.toml"
        )
    return policy


def load_policies(directory: Path | None = None) -> dict[str, Policy]:
    """Every `<platform>.toml` in `directory` (default: the policies shipped in the package),
    keyed by platform. Any bad file fails the whole load: a worker must not start
    half-configured."""
    root = Path(directory) if directory is not None else DEFAULT_POLICY_DIR
    if not root.is_dir():
        raise PolicyError(f"{root}: policy directory does not exist")
    files = sorted(root.glob("*.toml"))
    if not files:
        raise PolicyError(f"{root}: no policy files (*.toml)")
    return {policy.platform: policy for policy in map(load_policy_file, files)}


def policy_for(policies: Mapping[str, Policy], platform: str) -> Policy:
    """The policy for an event's platform, or UnknownPlatform (the worker dead-letters it)."""
    try:
        return policies[platform]
    except KeyError:
        raise UnknownPlatform(
            "platform", f"no policy for platform {platform!r} (loaded: {sorted(policies)})"
        ) from None

"""The recording rules, alert rules and Grafana dashboard against a real Prometheus scraping a real
worker (confluent runtime) fed a mix whose decisions are known in advance, and the case figures
of a case mix whose recovery rates and times are known in advance.

One worker and one Prometheus (scrape and evaluation every second) serve the whole module: the
scenario takes about a minute on a small machine. Prometheus missing is a failure, not a skip:
`make test` installs it through `deploy/local/stack.sh up`.
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from order_recovery.config import Settings
from tests.support import case_mix
from tests.support.databases import scratch_database
from tests.support.kafka_io import own_topics
from tests.support.observed_mix import ObservedMix, observed_known_mix
from tests.support.prometheus import (
    PROMETHEUS_SERIES,
    dashboard_expressions,
    exposition_names,
    metric_names,
    recording_rule_names,
    rule_expressions,
    substitute_grafana_variables,
)

pytestmark = pytest.mark.integration

TOLERANCE = 1e-9  # the ratios are exact up to floating point (see tests/support/known_mix.py)


@pytest.fixture(scope="module")
def module_settings(
    kafka_bootstrap: str, postgres_admin_url: str, server_settings: Settings, migrated_template: str
) -> Iterator[Settings]:
    """Like the `settings` fixture, for the module: its own topics and migrated database."""
    with (
        scratch_database(
            postgres_admin_url, server_settings, "ortest", template=migrated_template
        ) as database,
        own_topics(kafka_bootstrap, database) as settings,
    ):
        yield settings


@pytest.fixture(scope="module")
def observed(
    module_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ObservedMix]:
    workdir: Path = tmp_path_factory.mktemp("observed")
    with observed_known_mix(module_settings, workdir, count=300, seed=7) as mix:
        yield mix


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return str(r.read().decode())


def _assert_close(got: dict[str, float], want: dict[str, float], what: str) -> None:
    assert set(got) == set(want), f"{what}: label values {sorted(got)} != {sorted(want)}"
    for key, value in want.items():
        assert math.isclose(got[key], value, abs_tol=TOLERANCE), (
            f"{what}[{key}] = {got[key]}, the mix gives {value}"
        )


def test_the_worker_decided_the_mix_as_the_rules_say(observed: ObservedMix) -> None:
    for (event_type, platform, outcome), n in observed.labels.items():
        got = observed.worker.metric(
            "order_recovery_events_decided_total",
            event_type=event_type,
            platform=platform,
            outcome=outcome,
        )
        assert got == 2 * n, (event_type, platform, outcome)


@pytest.mark.parametrize("window", ["5m", "1h"])
def test_recovery_rate_rules_return_the_rates_of_the_case_mix(
    observed: ObservedMix, window: str
) -> None:
    prom = observed.prometheus
    # pinduoduo closed cases and recovered none: its rate must be 0, not missing.
    assert 0.0 in case_mix.RATES_BY_PLATFORM.values()
    _assert_close(
        prom.values_by(f"platform:order_recovery_recovered:ratio_rate{window}", "platform"),
        case_mix.RATES_BY_PLATFORM,
        f"platform:order_recovery_recovered:ratio_rate{window}",
    )
    _assert_close(
        prom.values_by(f"event_type:order_recovery_recovered:ratio_rate{window}", "event_type"),
        case_mix.RATES_BY_TYPE,
        f"event_type:order_recovery_recovered:ratio_rate{window}",
    )
    overall = prom.scalar(f"order_recovery:recovered:ratio_rate{window}")
    assert overall is not None and math.isclose(overall, 0.5, abs_tol=TOLERANCE)


def test_time_to_recovery_rules_return_the_means_of_the_case_mix(observed: ObservedMix) -> None:
    prom = observed.prometheus
    _assert_close(
        prom.values_by("platform:order_recovery_time_to_recovery_seconds:mean5m", "platform"),
        case_mix.MEAN_TTR_BY_PLATFORM,
        "platform:order_recovery_time_to_recovery_seconds:mean5m",
    )
    # douyin's four recoveries are all 600 s (the 600 s bucket), taobao's one 1200 s.
    p50 = prom.values_by("platform:order_recovery_time_to_recovery_seconds:p50_5m", "platform")
    assert set(p50) == {"douyin", "taobao"}
    assert 300 < p50["douyin"] <= 600 and 900 < p50["taobao"] <= 1800


def test_every_rule_evaluates_healthy(observed: ObservedMix) -> None:
    groups = observed.prometheus.rule_groups()
    seen = {r["name"] for g in groups for r in g["rules"]}
    assert seen == {name for name, _ in rule_expressions()}
    for group in groups:
        for rule in group["rules"]:
            assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
            assert rule["lastEvaluation"] > "2000", f"{rule['name']} was never evaluated"


def test_the_other_recording_rules_have_data(observed: ObservedMix) -> None:
    prom = observed.prometheus
    consumed = prom.values_by("event_type:order_recovery_events_consumed:rate5m", "event_type")
    assert set(consumed) == {"payment-timeout", "shipping-delay", "logistics-exception"}
    assert all(v > 0 for v in consumed.values())
    outcomes = prom.values_by("outcome:order_recovery_events_decided:rate5m", "outcome")
    assert {o for o, rate in outcomes.items() if rate > 0} == {k[2] for k in observed.labels}
    assert prom.scalar("order_recovery:dead_lettered:rate5m") == 0.0  # no dead letter yet: 0
    for name in (
        "order_recovery:time_to_recovery_seconds:p50_5m",
        "order_recovery:time_to_recovery_seconds:p95_5m",
    ):
        value = prom.scalar(name)
        assert value is not None and 0 < value <= 1800, name
    states = prom.values_by("state:order_recovery_cases_open:sum", "state")
    assert states and all(v >= 0 for v in states.values())
    assert sum(states.values()) > 0, "the mix leaves cases open (nobody answers them here)"
    batch_p95 = prom.scalar("order_recovery:batch_duration_seconds:p95_5m")
    assert batch_p95 is not None and 0 < batch_p95 <= 30


def test_alerts_go_pending_where_the_mix_breaks_a_threshold(observed: ObservedMix) -> None:
    """Against the live series: the rate and time-to-recovery alerts are pending (their `for` is
    15 minutes) exactly for the platforms that break them; the worker alerts stay quiet."""
    prom = observed.prometheus
    below = {p for p, rate in case_mix.RATES_BY_PLATFORM.items() if rate < 0.92}
    slow = {p for p, mean in case_mix.MEAN_TTR_BY_PLATFORM.items() if mean > 900}
    assert below == {"taobao", "pinduoduo"} and slow == {"taobao"}

    def pending() -> tuple[dict[str, set[str]], list[dict[str, Any]]]:
        alerts = prom.api("alerts")["alerts"]
        by_name: dict[str, set[str]] = {}
        for alert in alerts:
            by_name.setdefault(alert["labels"]["alertname"], set()).add(
                alert["labels"].get("platform", alert["labels"].get("instance", ""))
            )
        return by_name, alerts

    # An alert goes pending at the first evaluation of its group that sees the recorded series
    # (groups are evaluated apart, each at its own offset): wait a few evaluations for both.
    deadline = time.monotonic() + 20
    by_name, alerts = pending()
    while time.monotonic() < deadline and (
        by_name.get("OrderRecoveryRateBelowTarget") != below
        or by_name.get("OrderRecoveryTimeToRecoveryAboveGoal") != slow
    ):
        time.sleep(1)
        by_name, alerts = pending()
    means = prom.values_by("platform:order_recovery_time_to_recovery_seconds:mean5m", "platform")
    assert by_name.get("OrderRecoveryRateBelowTarget") == below, alerts
    assert by_name.get("OrderRecoveryTimeToRecoveryAboveGoal") == slow, (means, alerts)
    for quiet in (
        "OrderRecoveryWorkerDown",
        "OrderRecoveryWorkerNotReady",
        "OrderRecoveryDeadLettersGrowing",
        "OrderRecoveryPostgresRetriesSustained",
        "OrderRecoveryReviewsOverdue",
    ):
        assert quiet not in by_name, alerts


def test_every_expression_evaluates_and_names_only_worker_metrics(
    observed: ObservedMix,
) -> None:
    exported = exposition_names(observed.worker.metrics()) | exposition_names(
        _get(f"http://{observed.figures}/metrics")
    )
    assert "order_recovery_events_decided_total" in exported
    recorded = recording_rule_names()
    allowed_in_rules = exported | PROMETHEUS_SERIES
    allowed_in_dashboard = exported | recorded | PROMETHEUS_SERIES
    failures = []
    checked = 0
    for source, exprs, allowed in (
        ("rule", rule_expressions(), allowed_in_rules | recorded),
        ("dashboard", dashboard_expressions(), allowed_in_dashboard),
    ):
        for where, expr in exprs:
            promql = substitute_grafana_variables(expr)
            unknown = metric_names(promql) - allowed
            if unknown:
                failures.append(f"{source} {where}: names {sorted(unknown)}, not exported")
            if not metric_names(promql):
                failures.append(f"{source} {where}: names no metric at all: {promql}")
            try:
                observed.prometheus.query(promql)
            except AssertionError as exc:
                failures.append(f"{source} {where}: {exc}")
            checked += 1
    assert not failures, "\n".join(failures)
    assert checked >= 40

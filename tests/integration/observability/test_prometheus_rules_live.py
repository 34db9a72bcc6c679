"""The recording rules, alert rules and Grafana dashboard against a real Prometheus scraping a real
worker (confluent runtime) fed a mix whose recovery rates are known in advance.

One worker and one Prometheus (scrape and evaluation every second) serve the whole module: the
scenario takes about a minute on a small machine. Prometheus missing is a failure, not a skip:
`make test` installs it through `deploy/local/stack.sh up`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from order_recovery.config import Settings
from tests.support.databases import scratch_database
from tests.support.kafka_io import own_topics
from tests.support.known_mix import overall_recovery_rate, recovery_rates
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
def test_recovery_rate_rules_return_the_rates_of_the_mix(
    observed: ObservedMix, window: str
) -> None:
    prom, labels = observed.prometheus, observed.labels
    by_type = recovery_rates(labels, "event_type")
    by_platform = recovery_rates(labels, "platform")
    # The mix has a type that never recovers: its rate must be 0, not missing.
    assert 0.0 in by_type.values()
    _assert_close(
        prom.values_by(f"event_type:order_recovery_recovered:ratio_rate{window}", "event_type"),
        by_type,
        f"event_type:order_recovery_recovered:ratio_rate{window}",
    )
    _assert_close(
        prom.values_by(f"platform:order_recovery_recovered:ratio_rate{window}", "platform"),
        by_platform,
        f"platform:order_recovery_recovered:ratio_rate{window}",
    )
    overall = prom.scalar(f"order_recovery:recovered:ratio_rate{window}")
    assert overall is not None
    assert math.isclose(overall, overall_recovery_rate(labels), abs_tol=TOLERANCE)


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
    # The sample's event times are in 2025: every recovery took longer than the last finite
    # bucket (1 day), which histogram_quantile reports as that bucket's bound.
    for name in (
        "order_recovery:time_to_recovery_seconds:p50_5m",
        "order_recovery:time_to_recovery_seconds:p95_5m",
    ):
        assert prom.scalar(name) == 86400.0, name
    recovering = {k[1] for k in observed.labels if k[2] == "recovered"}
    assert (
        set(prom.values_by("platform:order_recovery_time_to_recovery_seconds:p50_5m", "platform"))
        == recovering
    )
    batch_p95 = prom.scalar("order_recovery:batch_duration_seconds:p95_5m")
    assert batch_p95 is not None and 0 < batch_p95 <= 30


def test_alerts_go_pending_where_the_mix_breaks_a_threshold(observed: ObservedMix) -> None:
    """Against the live series: the rate and time-to-recovery alerts are pending (their `for` is
    15 minutes) exactly for the platforms that break them; the worker alerts stay quiet."""
    prom, labels = observed.prometheus, observed.labels
    alerts = prom.api("alerts")["alerts"]
    by_name: dict[str, set[str]] = {}
    for alert in alerts:
        by_name.setdefault(alert["labels"]["alertname"], set()).add(
            alert["labels"].get("platform", alert["labels"].get("instance", ""))
        )
    below = {p for p, rate in recovery_rates(labels, "platform").items() if rate < 0.92}
    assert by_name.get("OrderRecoveryRateBelowTarget") == below
    recovering = {k[1] for k in labels if k[2] == "recovered"}
    assert by_name.get("OrderRecoveryTimeToRecoveryAboveGoal") == recovering
    for quiet in (
        "OrderRecoveryWorkerDown",
        "OrderRecoveryWorkerNotReady",
        "OrderRecoveryDeadLettersGrowing",
        "OrderRecoveryPostgresRetriesSustained",
    ):
        assert quiet not in by_name, alerts


def test_every_expression_evaluates_and_names_only_worker_metrics(
    observed: ObservedMix,
) -> None:
    exported = exposition_names(observed.worker.metrics())
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

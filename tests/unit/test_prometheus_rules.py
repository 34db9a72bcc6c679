"""The Prometheus config, rules and Grafana dashboard of deploy/, checked without services:
promtool's config and rule checks, promtool's unit tests of every alert, and the structure the
runbooks and the dashboard promise. (Against a live Prometheus and worker:
tests/integration/observability.)

promtool comes with Debian's `prometheus` package, which `make test` installs through
`deploy/local/stack.sh up`; without it these tests fail with that hint, they never skip."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from order_recovery.adapters.metrics import LifecycleMetrics, WorkerMetrics
from order_recovery.adapters.postgres.case_figures import CaseFigures
from order_recovery.ops.stats import TARGET_MEAN_TTR_S, TARGET_RECOVERY_RATE
from tests.support.prometheus import (
    DASHBOARD,
    PROMETHEUS_DIR,
    PROMETHEUS_SERIES,
    ROOT,
    RULE_FILES,
    binary,
    dashboard,
    dashboard_expressions,
    dashboard_panels,
    metric_names,
    recording_rule_names,
    rule_expressions,
    rules,
    sample_names,
    substitute_grafana_variables,
)

RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
CONFIGS = (PROMETHEUS_DIR / "prometheus.yml", PROMETHEUS_DIR / "prometheus-compose.yml")
# recoveryctl commands that exist or are being built (issue 8); every runbook names one.
RECOVERYCTL = re.compile(
    r"`recoveryctl (dlq (list|show|replay)|stats|case show ORDER_ID|reconcile --date D|"
    r"simulate --policy DIR|review list|schedules)`"
)
ALERTS = {
    "OrderRecoveryRateBelowTarget",
    "OrderRecoveryTimeToRecoveryAboveGoal",
    "OrderRecoveryDeadLettersGrowing",
    "OrderRecoveryConsumerLagGrowing",
    "OrderRecoveryWorkerNotReady",
    "OrderRecoveryWorkerDown",
    "OrderRecoveryOutboxBacklogGrowing",
    "OrderRecoveryPostgresRetriesSustained",
    "OrderRecoveryReviewsOverdue",
    "OrderRecoveryActionCommandsStuck",
    "OrderRecoveryReconciliationMismatch",
    "OrderRecoverySnapshotsStalled",
}
RECORDED = {
    f"{level}:order_recovery_recovered:ratio_rate{w}"
    for level in ("event_type", "platform")
    for w in ("5m", "1h")
} | {
    "order_recovery:events_consumed:rate5m",
    "order_recovery:dead_lettered:rate5m",
    "order_recovery:dead_lettered:ratio_rate5m",
    "order_recovery:time_to_recovery_seconds:p50_5m",
    "order_recovery:time_to_recovery_seconds:p95_5m",
    "order_recovery:time_to_recovery_seconds:mean5m",
    "platform:order_recovery_time_to_recovery_seconds:mean5m",
    "order_recovery:batch_duration_seconds:p95_5m",
    "state_age:order_recovery_cases_open:sum",
    "platform:order_recovery_cases_awaiting_review_fen:max",
    "platform:order_recovery_reviews_overdue:max",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def worker_metric_names() -> set[str]:
    """What the workers and the lifecycle processes export (the case figures by name only:
    describing them queries nothing)."""
    figures = CaseFigures("", ["payment-timeout"], ["douyin"])
    families = [
        *WorkerMetrics().registry.collect(),
        *LifecycleMetrics(_Described(figures)).registry.collect(),
    ]
    names: set[str] = set()
    for family in families:
        names |= sample_names(family.name, family.type)
    return names


class _Described(Collector):
    """A collector as its description: the families without a reading."""

    def __init__(self, collector: CaseFigures) -> None:
        self._collector = collector

    def collect(self) -> Iterator[Metric]:
        return self._collector.describe()


def alert_rules() -> dict[str, dict]:
    return {r["alert"]: r for r in rules() if "alert" in r}


# ---------------------------------------------------------------------- promtool
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_promtool_check_config(config: Path) -> None:
    result = promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    assert RULE_TESTS
    result = promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    assert fires == ALERTS, f"alerts without a firing test: {ALERTS - fires}"
    assert silent == ALERTS, f"alerts without a silent test: {ALERTS - silent}"


def test_a_promtool_unit_test_catches_a_broken_threshold(tmp_path: Path) -> None:
    """The unit tests do bite: with the recovery target moved to 50%, they fail."""
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    for path in RULE_FILES:
        text = path.read_text()
        if path.name == "alerts.yml":
            text = text.replace("ratio_rate5m < 0.92", "ratio_rate5m < 0.50")
        (rules_dir / path.name).write_text(text)
    tests_dir = tmp_path / "tests"
    tests_dir.mkdir()
    (tests_dir / "alerts_test.yml").write_text(
        (PROMETHEUS_DIR / "tests/alerts_test.yml").read_text()
    )
    result = promtool("test", "rules", str(tests_dir / "alerts_test.yml"))
    assert result.returncode != 0
    assert "OrderRecoveryRateBelowTarget" in result.stdout + result.stderr


# ---------------------------------------------------------------------- rules
def test_the_alerts_and_recording_rules_exist() -> None:
    assert set(alert_rules()) == ALERTS
    assert recording_rule_names() >= RECORDED


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_every_alert_has_a_summary_and_a_runbook_naming_recoveryctl(name: str) -> None:
    rule = alert_rules()[name]
    annotations = rule["annotations"]
    assert annotations.get("summary") and annotations.get("description")
    assert RECOVERYCTL.search(annotations.get("runbook", "")), annotations.get("runbook")
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert rule.get("for"), "every alert waits before firing"


def test_the_alert_and_dashboard_targets_are_the_ones_the_code_defines() -> None:
    """The YAML and JSON cannot import a constant: they must say what domain.operations says
    (through ops.stats, which `recoveryctl stats` judges against)."""
    alerts = alert_rules()
    assert f"< {TARGET_RECOVERY_RATE}" in alerts["OrderRecoveryRateBelowTarget"]["expr"]
    assert f"> {TARGET_MEAN_TTR_S}" in alerts["OrderRecoveryTimeToRecoveryAboveGoal"]["expr"]
    thresholds = {
        s["value"]
        for p in dashboard_panels()
        for s in p.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
    }
    assert {TARGET_RECOVERY_RATE, TARGET_MEAN_TTR_S} <= thresholds


def test_thresholds_match_the_business_figures() -> None:
    alerts = alert_rules()
    assert "< 0.92" in alerts["OrderRecoveryRateBelowTarget"]["expr"]
    assert alerts["OrderRecoveryRateBelowTarget"]["for"] == "15m"
    assert "> 900" in alerts["OrderRecoveryTimeToRecoveryAboveGoal"]["expr"]  # 15 min
    assert alerts["OrderRecoveryConsumerLagGrowing"]["for"] == "10m"
    assert alerts["OrderRecoveryWorkerNotReady"]["for"] == "2m"
    assert alerts["OrderRecoveryWorkerDown"]["for"] == "2m"
    assert "mean5m" in alerts["OrderRecoveryTimeToRecoveryAboveGoal"]["expr"]  # the goal's a mean


def test_rules_name_only_metrics_the_worker_exports() -> None:
    allowed = worker_metric_names() | recording_rule_names() | PROMETHEUS_SERIES
    for name, expr in rule_expressions():
        assert metric_names(expr) <= allowed, (name, metric_names(expr) - allowed)


def test_metric_names_reads_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, platform) (rate(a_bucket{le!="", x=~"$p"}[5m])))'
        " and on (platform) sum without (instance) (b_total offset 5m) > 0"
        ' or topk(10, c:rule:rate5m * 3600 / 100) unless vector(0) or up{job="x"} - 1e3'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c:rule:rate5m", "up"}


# ---------------------------------------------------------------------- Grafana dashboard
def test_dashboard_is_provisioned_by_compose() -> None:
    compose = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())["services"]
    assert {"prometheus", "grafana"} <= set(compose)
    assert any("grafana/dashboards" in v for v in compose["grafana"]["volumes"])
    assert any("grafana/provisioning" in v for v in compose["grafana"]["volumes"])
    assert any("prometheus/rules" in v for v in compose["prometheus"]["volumes"])
    for service in ("prometheus", "grafana"):
        assert all(p.startswith("127.0.0.1:") for p in compose[service]["ports"])
    datasources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    uids = {d["uid"] for d in datasources}
    for panel in dashboard_panels():
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in uids, panel["title"]


def test_dashboard_shows_what_operators_need() -> None:
    dash = dashboard()
    titles = {p["title"] for p in dashboard_panels()}
    for wanted in (
        "Recovery rate by exception type",
        "Recovery rate by platform",
        "Time to recovery p50 / p95 by platform",
        "Events per second",
        "Outcome mix",
        "Action mix",
        "Compensation spend (yuan per hour)",
        "Dead letters by reason",
        "Retries by cause",
        "Consumer lag per partition",
        "Batch latency heatmap",
        "Open cases by state",
        "Open cases by age",
        "Money held for review (yuan)",
        "Reviews overdue",
    ):
        assert wanted in titles
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["platform"]["includeAll"] and variables["platform"]["multi"]
    panels = {p["title"]: p for p in dashboard_panels()}

    def threshold_values(title: str) -> list[float | None]:
        steps = panels[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        return [s["value"] for s in steps]

    for title in ("Recovery rate by exception type", "Recovery rate by platform"):
        assert 0.92 in threshold_values(title)
        custom = panels[title]["fieldConfig"]["defaults"]["custom"]
        assert custom["thresholdsStyle"]["mode"] != "off"
        assert all("$platform" in t["expr"] for t in panels[title]["targets"])
    assert 900 in threshold_values("Time to recovery p50 / p95 by platform")
    assert panels["Batch latency heatmap"]["targets"][0]["format"] == "heatmap"


def test_dashboard_names_only_worker_metrics_and_recorded_series() -> None:
    allowed = worker_metric_names() | recording_rule_names() | PROMETHEUS_SERIES
    exprs = dashboard_expressions()
    assert len(exprs) >= 20
    for where, expr in exprs:
        names = metric_names(substitute_grafana_variables(expr))
        assert names, where
        assert names <= allowed, (where, names - allowed)


def test_dashboard_json_is_canonical() -> None:
    """Two-space JSON with a final newline, so diffs of the dashboard stay readable."""
    text = DASHBOARD.read_text()
    assert text == json.dumps(json.loads(text), indent=2) + "\n"

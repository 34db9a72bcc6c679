"""The Grafana dashboard of order recovery, as code: `make dashboard` writes
deploy/grafana/dashboards/order-recovery.json from this module, which Grafana's compose
provisioning loads. Never edit that JSON by hand: a unit test regenerates it and fails when the
file differs (tests/unit/test_dashboard_generated.py).

Built with Grafana's own SDK (grafana-foundation-sdk, the build for Grafana 11.6, the Grafana of
deploy/docker-compose.yml), so the JSON is the schema Grafana 11 loads. The queries are in
deploy/grafana/queries.py, each written once; the target and goal lines are the code's own
targets (order_recovery.ops.stats, which `recoveryctl stats` judges against).

    python -m deploy.grafana.dashboard           # write the JSON
    python -m deploy.grafana.dashboard --check   # exit 1 if the JSON is not this module's output
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import heatmap, prometheus, timeseries
from grafana_foundation_sdk.cog import builder as cog_builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dash_m
from grafana_foundation_sdk.models import heatmap as heatmap_m
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from deploy.grafana import queries as q
from order_recovery.ops.stats import TARGET_MEAN_TTR_S, TARGET_RECOVERY_RATE

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "order-recovery.json"
# The data source provisioned by deploy/grafana/provisioning/datasources/prometheus.yml.
DATASOURCE = dash_m.DataSourceRef(type_val="prometheus", uid="order-recovery-prometheus")

TARGET_PERCENT = f"{TARGET_RECOVERY_RATE:.0%}"
GOAL_MINUTES = TARGET_MEAN_TTR_S // 60

Target = tuple[str, str]  # (PromQL, legend)


# ---------------------------------------------------------------------- building blocks
def _query(expr: str, legend: str, ref_id: str) -> prometheus.Dataquery:
    return (
        prometheus.Dataquery()
        .expr(expr)
        .legend_format(legend)
        .range()
        .ref_id(ref_id)
        .datasource(DATASOURCE)
    )


def _ref_id(index: int) -> str:
    return chr(ord("A") + index)


def _thresholds(*steps: tuple[float | None, str]) -> dash_b.ThresholdsConfig:
    return (
        dash_b.ThresholdsConfig()
        .mode(dash_m.ThresholdsMode.ABSOLUTE)
        .steps([dash_m.Threshold(value=value, color=color) for value, color in steps])
    )


# Dashed lines where a figure meets its target (the rate, at least) or its goal (the time, at most).
RATE_TARGET = _thresholds((None, "red"), (TARGET_RECOVERY_RATE, "green"))
TIME_GOAL = _thresholds((None, "green"), (TARGET_MEAN_TTR_S, "red"))
_DASHED = {"fill": "dash", "dash": [10, 10]}  # Grafana's custom.lineStyle of a dashed series


def graph(
    title: str,
    description: str,
    unit: str,
    targets: Sequence[Target],
    *,
    span: int = 8,
    stacked: bool = False,
    bars: bool = False,
    line: dash_b.ThresholdsConfig | None = None,
    max_value: float | None = None,
) -> timeseries.Panel:
    """A time series panel as every graph of this dashboard looks: lines (or stacked areas, or
    bars) from 0, the legend as a table on the right with the last and mean values, a shared
    tooltip; `line` draws a target or goal as a dashed threshold line."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .height(8)
        .span(span)
        .unit(unit)
        .min(0)
        .draw_style(common.GraphDrawStyle.BARS if bars else common.GraphDrawStyle.LINE)
        .line_width(2)
        .fill_opacity(60 if stacked else 10)
        .show_points(common.VisibilityMode.NEVER)
        .span_nulls(False)
        .stacking(
            common_b.StackingConfig()
            .mode(common.StackingMode.NORMAL if stacked else common.StackingMode.NONE)
            .group("A")
        )
        .color_scheme(dash_b.FieldColor().mode(dash_m.FieldColorModeId.PALETTE_CLASSIC))
        .legend(
            common_b.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.RIGHT)
            .show_legend(True)
            .calcs(["lastNotNull", "mean"])
        )
        .tooltip(
            common_b.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )
    if max_value is not None:
        panel = panel.max(max_value)
    if line is not None:
        panel = panel.thresholds(line).thresholds_style(
            common_b.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
        )
    for index, (expr, legend) in enumerate(targets):
        panel = panel.with_target(_query(expr, legend, _ref_id(index)))
    return panel


def batch_heatmap() -> heatmap.Panel:
    """Batches per latency bucket, from the histogram's own buckets (Grafana computes nothing)."""
    return (
        heatmap.Panel()
        .title("Batch latency heatmap")
        .description("Batches per latency bucket (order_recovery_batch_duration_seconds).")
        .datasource(DATASOURCE)
        .height(8)
        .span(24)
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit("s"))
        .cell_gap(1)
        .color(
            heatmap.HeatmapColorOptions()
            .mode(heatmap_m.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .steps(64)
            # Grafana's own defaults (the SDK's are empty), unused by a scheme but not absurd.
            .exponent(0.5)
            .fill("dark-orange")
        )
        .mode(common.TooltipDisplayMode.SINGLE)
        .show_y_histogram()
        .with_target(_query(q.BATCH_BUCKETS, "{{le}}", "A").format(PromQueryFormat.HEATMAP))
    )


class PrometheusAnnotation(dash_m.AnnotationQuery):
    """An annotation from a Prometheus query. Grafana's Prometheus data source reads
    `titleFormat`, `textFormat` and `step` beside `expr`; the SDK's generic model has `expr`
    only, so this adds the three."""

    def __init__(self, *, title_format: str, text_format: str, step: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.title_format = title_format
        self.text_format = text_format
        self.step = step

    def to_json(self) -> dict[str, object]:
        payload = super().to_json()
        payload.update(titleFormat=self.title_format, textFormat=self.text_format, step=self.step)
        return payload


class _Built(cog_builder.Builder[dash_m.AnnotationQuery]):
    """A ready model where the SDK wants a builder."""

    def __init__(self, model: dash_m.AnnotationQuery) -> None:
        self._model = model

    def build(self) -> dash_m.AnnotationQuery:
        return self._model


FIRING_ALERTS = PrometheusAnnotation(
    name="Alerts",
    datasource=DATASOURCE,
    enable=True,
    icon_color="red",
    expr=q.FIRING_ALERTS,
    title_format="{{alertname}}",
    text_format="{{platform}}{{reason}}{{topic}}{{instance}}",
    step="60s",
)

PLATFORM_VARIABLE = (
    dash_b.QueryVariable("platform")
    .label("platform")
    .datasource(DATASOURCE)
    .query({"query": q.PLATFORMS, "refId": "platform"})
    .multi(True)
    .include_all(True)
    .all_value(".*")
    .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
    .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
    .current(dash_m.VariableOption(selected=True, text=["All"], value=["$__all"]))
)


# ---------------------------------------------------------------------- the rows
def recovery_rate_row() -> list[cog_builder.Builder[Any]]:
    return [
        dash_b.Row(f"Recovery rate (target {TARGET_PERCENT})"),
        graph(
            "Recovery rate by exception type",
            "Cases closed as recovered or refunded over cases closed (5 min), counted in Postgres "
            "by the lifecycle processes. Rejected non-exceptions open no case and do not count.",
            "percentunit",
            [(q.recovery_rate(q.BY_TYPE), "{{event_type}}")],
            span=12,
            line=RATE_TARGET,
            max_value=1,
        ),
        graph(
            "Recovery rate by platform",
            "Cases closed as recovered or refunded over cases closed, 5 min and 1 h windows.",
            "percentunit",
            [
                (q.recovery_rate(q.BY_PLATFORM, "5m"), "{{platform}} 5m"),
                (q.recovery_rate(q.BY_PLATFORM, "1h"), "{{platform}} 1h"),
            ],
            span=12,
            line=RATE_TARGET,
            max_value=1,
        ).override_by_regexp(
            ".* 1h",
            [dash_m.DynamicConfigValue(id_val="custom.lineStyle", value=_DASHED)],
        ),
    ]


def time_to_recovery_row() -> list[cog_builder.Builder[Any]]:
    return [
        dash_b.Row(f"Time to recovery (goal: under {GOAL_MINUTES} min)"),
        graph(
            "Time to recovery p50 / p95 by platform",
            "Exception event time to the event time of the resolution that recovered the case. "
            f"The goal ({GOAL_MINUTES} min) is on the mean.",
            "s",
            [
                (q.time_to_recovery(q.BY_PLATFORM, stat), f"{{{{platform}}}} {stat}")
                for stat in ("p50", "p95", "mean")
            ],
            span=12,
            line=TIME_GOAL,
        ),
        graph(
            "Time to recovery p50 by exception type",
            f"For the platforms selected. Dashed line: the {GOAL_MINUTES}-minute goal.",
            "s",
            [(q.time_to_recovery(q.BY_TYPE, "p50"), "{{event_type}} p50")],
            span=12,
            line=TIME_GOAL,
        ),
    ]


def cases_row() -> list[cog_builder.Builder[Any]]:
    return [
        dash_b.Row("Cases (open, closed, held for review)"),
        graph(
            "Open cases by state",
            "Cases not closed yet, by the state they wait in (the live view of the 15-minute "
            "snapshot).",
            "short",
            [(q.open_cases("state"), "{{state}}")],
            stacked=True,
        ),
        graph(
            "Open cases by age",
            "Open cases by time since the exception's event time.",
            "short",
            [(q.open_cases("age"), "{{age}}")],
            stacked=True,
        ),
        graph(
            "Cases closed by state (per hour)",
            "How cases ended over the last hour: recovered and refunded count as recovered.",
            "short",
            [(q.closed_by_state("1h"), "{{state}}")],
            stacked=True,
        ),
        graph(
            "Money held for review (yuan)",
            "Order amounts of the cases waiting for a reviewer.",
            "currencyCNY",
            [(q.MONEY_HELD_YUAN, "{{platform}}")],
            stacked=True,
        ),
        graph(
            "Reviews overdue",
            "Cases waiting for a review past the policy's review deadline "
            "(alert OrderRecoveryReviewsOverdue).",
            "short",
            [(q.REVIEWS_OVERDUE, "{{platform}}")],
            stacked=True,
        ),
        graph(
            "Case steps by rule (top 10)",
            "Transitions and ignored causes applied per second, by case rule id (docs/rules.md).",
            "short",
            [(q.CASE_STEPS_TOP10, "{{rule_id}}")],
            stacked=True,
        ),
    ]


def throughput_row() -> list[cog_builder.Builder[Any]]:
    return [
        dash_b.Row("Throughput and mix"),
        graph(
            "Events per second",
            "Records read from the source topics (all platforms) and decisions committed "
            "(platforms selected).",
            "reqps",
            [
                (q.CONSUMED_BY_TYPE, "consumed {{event_type}}"),
                (q.decided(), "decided"),
                (q.DUPLICATES, "duplicates skipped"),
            ],
        ),
        graph(
            "Outcome mix",
            "Decisions per second by outcome, for the platforms selected.",
            "reqps",
            [(q.decided(by="outcome"), "{{outcome}}")],
            stacked=True,
        ),
        graph(
            "Action mix",
            "Recovery actions decided per second (all platforms: actions carry no platform label).",
            "reqps",
            [(q.ACTIONS, "{{action}}")],
            stacked=True,
        ),
        graph(
            "Compensation spend (yuan per hour)",
            "Coupons and refunds granted, at the current rate, in yuan per hour (the counter is "
            "in fen).",
            "currencyCNY",
            [(q.COMPENSATION_YUAN_PER_HOUR, "{{platform}} {{kind}}")],
            span=12,
            stacked=True,
        ),
        graph(
            "Rules fired (top 10)",
            "Which rules decide: docs/rules.md maps each rule id to its condition.",
            "reqps",
            [(q.RULES_FIRED_TOP10, "{{rule_id}}")],
            span=12,
        ),
    ]


def failures_row() -> list[cog_builder.Builder[Any]]:
    return [
        dash_b.Row("Failures and backlog"),
        graph(
            "Dead letters by reason",
            "Records sent to <topic>.dlq per interval. `recoveryctl dlq list|show|replay`. "
            "Alert: OrderRecoveryDeadLettersGrowing.",
            "short",
            [(q.DEAD_LETTERS, "{{reason}}")],
            stacked=True,
            bars=True,
        ),
        graph(
            "Retries by cause",
            "Retries of transient faults (pg_unavailable, pg_serialization, pg_deadlock, "
            "kafka_publish). Alert: OrderRecoveryPostgresRetriesSustained.",
            "reqps",
            [(q.RETRIES, "{{cause}}")],
        ),
        graph(
            "Consumer lag per partition",
            "Records behind the high watermark at the last commit. "
            "Alert: OrderRecoveryConsumerLagGrowing.",
            "short",
            [(q.CONSUMER_LAG, "{{topic}}/{{partition}}")],
        ),
        graph(
            "Workers: ready and scraped",
            "order_recovery_ready (1: consuming, dependencies answer) and Prometheus's up for "
            "each worker. Alerts: OrderRecoveryWorkerNotReady, OrderRecoveryWorkerDown.",
            "short",
            [
                (q.READY, "ready {{instance}}"),
                (q.scraped(q.WORKER_JOB), "up {{instance}}"),
                (q.scraped(q.LIFECYCLE_JOB), "lifecycle scraped {{instance}}"),
            ],
            max_value=1.2,
        ),
        graph(
            "Outbox backlog (outcomes, action commands)",
            "Outcome events committed but not yet published, and action commands not yet sent. "
            "Alerts: OrderRecoveryOutboxBacklogGrowing, OrderRecoveryActionCommandsStuck.",
            "short",
            [
                (q.OUTBOX_BACKLOG, "{{instance}}"),
                (q.ACTION_COMMANDS_UNSENT, "action commands unsent"),
            ],
        ),
        graph(
            "Batch and Postgres latency p95",
            "Time to decide, persist and publish one batch, and its Postgres transaction.",
            "s",
            [
                (q.BATCH_P95, "batch p95"),
                (q.PG_TRANSACTION_P95, "postgres transaction p95"),
            ],
        ),
        batch_heatmap(),
    ]


def schedules_row() -> list[cog_builder.Builder[Any]]:
    return [
        dash_b.Row("Schedules"),
        graph(
            "Schedules: snapshot age, reconciliation problems",
            "Seconds since the latest 15-minute snapshot of the open cases (alert "
            "OrderRecoverySnapshotsStalled after 30 min), and the lines the latest daily "
            "reconciliation found missing, extra or different (alert "
            "OrderRecoveryReconciliationMismatch).",
            "short",
            [
                (q.SNAPSHOT_AGE_S, "seconds since the last snapshot"),
                (q.RECONCILIATION_PROBLEMS, "reconciliation problems"),
            ],
            span=24,
        ).override_by_query("A", [dash_m.DynamicConfigValue(id_val="unit", value="s")]),
    ]


ROWS = (
    recovery_rate_row,
    time_to_recovery_row,
    cases_row,
    throughput_row,
    failures_row,
    schedules_row,
)


# ---------------------------------------------------------------------- the dashboard
def build() -> dash_m.Dashboard:
    """The dashboard model: rows in order, each followed by its panels (the SDK lays them out
    left to right, a new line when 24 columns are full); panel ids number them top to bottom."""
    board = (
        dash_b.Dashboard("Order recovery")
        .uid("order-recovery")
        .description(
            f"Recovery rate against the {TARGET_PERCENT} target, time to recovery against the "
            f"{GOAL_MINUTES}-minute goal, cases, throughput, mix, failures and lag of the "
            "order-recovery workers and lifecycle processes."
        )
        .tags(["order-recovery"])
        .timezone("browser")
        .editable()
        .tooltip(dash_m.DashboardCursorSync.CROSSHAIR)
        .refresh("10s")
        .time("now-1h", "now")
        .version(1)
        .with_variable(PLATFORM_VARIABLE)
        .annotation(_Built(FIRING_ALERTS))
    )
    for row in ROWS:
        first, *panels = row()
        board = board.with_row(first)
        for panel in panels:
            board = board.with_panel(panel)
    model = board.build()
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number
    return model


def to_dict() -> dict[str, Any]:
    """The dashboard as the JSON object Grafana loads."""
    return dict(json.loads(json.dumps(build(), cls=JSONEncoder)))


def render() -> str:
    """The file's text: two-space JSON with a final newline, so its diffs stay readable."""
    return json.dumps(to_dict(), indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is not the generator's output: run `make dashboard`")
            return 1
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The PromQL of the Grafana dashboard, each query written once (deploy/grafana/dashboard.py lays
the panels out). Plain strings, no Grafana SDK: what a panel shows is read here.

The dashboard reads the recording rules of deploy/prometheus/rules/recording.yml where a recorded
series keeps the labels a panel needs, and filters by the `$platform` variable. A recorded series
that summed the platform away cannot be filtered: those panels sum the closed-case series (which
keep every label) themselves, with the same expression as the rule. The tests hold every query to
metrics the processes export or the rules record (tests/unit/test_prometheus_rules.py) and
evaluate each on a live Prometheus (tests/integration/observability)."""

from __future__ import annotations

from order_recovery.domain.case import RECOVERED_STATES

# The Prometheus scrape jobs of deploy/prometheus/prometheus.yml.
WORKER_JOB = "order-recovery"
LIFECYCLE_JOB = "order-recovery-lifecycle"

# The dashboard's platform variable, as a label matcher (All is `.*`: the variable's allValue).
PLATFORM = 'platform=~"$platform"'
# The states that count as recovered (a refund the rules chose counts: domain.case).
RECOVERED = f'state=~"{"|".join(sorted(RECOVERED_STATES))}"'
RATE_INTERVAL = "$__rate_interval"

# Levels a figure is shown by: the label kept, as in the recording rules' `level:` prefix.
BY_TYPE = "event_type"
BY_PLATFORM = "platform"


def selector(metric: str, *matchers: str) -> str:
    """`metric{a, b}`, or the bare name without matchers."""
    return f"{metric}{{{','.join(matchers)}}}" if matchers else metric


def rate(metric: str, *matchers: str, by: str | None = None, fn: str = "rate") -> str:
    """Per-second rate (or `fn="increase"`: per interval) of a counter over Grafana's rate
    interval, summed over everything but `by`."""
    inner = f"{fn}({selector(metric, *matchers)}[{RATE_INTERVAL}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


# ---------------------------------------------------------------------- recovery rate
def closed_cases(window: str, *matchers: str) -> str:
    """Cases closed in the window, by type, platform and state (recorded: every label kept)."""
    return selector(
        f"event_type_platform_state:order_recovery_cases_closed:increase{window}", *matchers
    )


def recovery_rate(level: str, window: str = "5m") -> str:
    """Cases closed as recovered or refunded over cases closed, by `level`, for the platforms
    selected. By platform the recorded ratio keeps the label to filter on; by any other level
    the ratio is summed here from the filtered closed cases, exactly as its rule does."""
    if level == BY_PLATFORM:
        return selector(f"platform:order_recovery_recovered:ratio_rate{window}", PLATFORM)
    return (
        f"sum by ({level}) ({closed_cases(window, RECOVERED, PLATFORM)})"
        f" / (sum by ({level}) ({closed_cases(window, PLATFORM)}) > 0)"
    )


def closed_by_state(window: str = "1h") -> str:
    return f"sum by (state) ({closed_cases(window, PLATFORM)})"


# ---------------------------------------------------------------------- time to recovery
def time_to_recovery(level: str, stat: str) -> str:
    """Time to recovery (`p50`, `p95` or `mean`, over 5 min) by `level`, for the platforms
    selected: the recorded series by platform, the quantile of the filtered buckets otherwise."""
    if level == BY_PLATFORM:
        suffix = "mean5m" if stat == "mean" else f"{stat}_5m"
        return selector(f"platform:order_recovery_time_to_recovery_seconds:{suffix}", PLATFORM)
    quantile = {"p50": "0.5", "p95": "0.95"}[stat]
    buckets = selector(
        "event_type_platform_le:order_recovery_time_to_recovery_seconds_bucket:increase5m",
        PLATFORM,
    )
    return f"histogram_quantile({quantile}, sum by ({level}, le) ({buckets}))"


# ---------------------------------------------------------------------- cases
def open_cases(by: str) -> str:
    """Open cases summed by `by` (state or age). Every lifecycle process exports the same
    figures: `max` across instances first, as the recording rules do."""
    figures = selector("order_recovery_cases_open", PLATFORM)
    return f"sum by ({by}) (max by (platform, state, age) ({figures}))"


MONEY_HELD_YUAN = (
    selector("platform:order_recovery_cases_awaiting_review_fen:max", PLATFORM) + " / 100"
)
REVIEWS_OVERDUE = selector("platform:order_recovery_reviews_overdue:max", PLATFORM)
CASE_STEPS_TOP10 = "topk(10, rule_id:order_recovery_case_steps:rate5m)"

# ---------------------------------------------------------------------- throughput and mix
CONSUMED_BY_TYPE = "event_type:order_recovery_events_consumed:rate5m"


def decided(by: str | None = None) -> str:
    """Decisions per second, for the platforms selected."""
    return rate("order_recovery_events_decided_total", PLATFORM, by=by)


DUPLICATES = rate("order_recovery_duplicate_events_total")
ACTIONS = rate("order_recovery_actions_total", by="action")  # actions carry no platform label
COMPENSATION_YUAN_PER_HOUR = (
    rate("order_recovery_compensation_fen_total", PLATFORM, by="kind, platform") + " * 3600 / 100"
)
RULES_FIRED_TOP10 = f"topk(10, {rate('order_recovery_rules_fired_total', by='rule_id')})"

# ---------------------------------------------------------------------- failures and backlog
DEAD_LETTERS = rate("order_recovery_dead_lettered_total", by="reason", fn="increase")
RETRIES = rate("order_recovery_retries_total", by="cause")
CONSUMER_LAG = "sum by (topic, partition) (order_recovery_consumer_lag)"
READY = "order_recovery_ready"


def scraped(job: str) -> str:
    """Prometheus's own `up` for a scrape job: 1 while its targets answer."""
    return selector("up", f'job="{job}"')


OUTBOX_BACKLOG = "max by (instance) (order_recovery_outbox_backlog)"
ACTION_COMMANDS_UNSENT = "max(order_recovery_action_commands_unsent)"
BATCH_P95 = "order_recovery:batch_duration_seconds:p95_5m"
PG_TRANSACTION_P95 = "order_recovery:pg_transaction_duration_seconds:p95_5m"
BATCH_BUCKETS = rate("order_recovery_batch_duration_seconds_bucket", by="le", fn="increase")
SNAPSHOT_AGE_S = "time() - max(order_recovery_snapshot_last_taken_timestamp_seconds)"
RECONCILIATION_PROBLEMS = "max(order_recovery_reconciliation_problems)"

# ---------------------------------------------------------------------- variables, annotations
PLATFORMS = "label_values(order_recovery_events_decided_total, platform)"
FIRING_ALERTS = 'ALERTS{alertname=~"OrderRecovery.*", alertstate="firing"}'

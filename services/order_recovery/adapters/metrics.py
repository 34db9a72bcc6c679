"""Prometheus metrics of the worker. One registry per worker (not the global default) so tests can
run several pipelines in one process; updates are aggregated per batch by the pipeline, not per
event, to keep them off the hot path. No per-order labels: cardinality stays bounded by platforms,
event types, outcomes, actions and rule ids."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

# `_created` series double the exposition and no dashboard of ours reads them.
disable_created_metrics()

PREFIX = "order_recovery"

_BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Time to recovery, event time to decision: 15 min (the goal) and 47 min (today) are bucket edges.
_TTR_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 2820, 3600, 7200, 21600, 86400)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.consumed = Counter(
            f"{PREFIX}_events_consumed",
            "Records read from the source topics.",
            ["event_type"],
            registry=r,
        )
        self.decided = Counter(
            f"{PREFIX}_events_decided",
            "Events decided and committed, by outcome.",
            ["event_type", "platform", "outcome"],
            registry=r,
        )
        self.duplicates = Counter(
            f"{PREFIX}_duplicate_events",
            "Events skipped because they were already decided.",
            ["event_type"],
            registry=r,
        )
        self.actions = Counter(
            f"{PREFIX}_actions", "Recovery actions decided.", ["action"], registry=r
        )
        self.compensation_fen = Counter(
            f"{PREFIX}_compensation_fen",
            "Compensation granted, in fen.",
            ["kind", "platform"],
            registry=r,
        )
        self.rules_fired = Counter(
            f"{PREFIX}_rules_fired", "Rules that fired in a decision.", ["rule_id"], registry=r
        )
        self.dead_lettered = Counter(
            f"{PREFIX}_dead_lettered",
            "Records sent to a dead-letter topic.",
            ["reason"],
            registry=r,
        )
        self.dead_letters_unsendable = Counter(
            f"{PREFIX}_dead_letters_unsendable",
            "Dead letters the broker refused even truncated, kept in Postgres instead "
            "(unsendable_dead_letters).",
            registry=r,
        )
        self.retries = Counter(
            f"{PREFIX}_retries",
            "Retries of transient infrastructure faults.",
            ["cause"],
            registry=r,
        )
        self.outcomes_published = Counter(
            f"{PREFIX}_outcomes_published", "Outcome events published from the outbox.", registry=r
        )
        self.batch_seconds = Histogram(
            f"{PREFIX}_batch_duration_seconds",
            "Time to decide, persist and publish one batch.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size_events",
            "Records per batch.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=r,
        )
        self.pg_transaction_seconds = Histogram(
            f"{PREFIX}_pg_transaction_duration_seconds",
            "Postgres transaction time per batch.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.time_to_recovery = Histogram(
            f"{PREFIX}_time_to_recovery_seconds",
            "Event time of the exception to the decision that recovered it.",
            ["event_type", "platform"],
            buckets=_TTR_BUCKETS,
            registry=r,
        )
        self.outbox_backlog = Gauge(
            f"{PREFIX}_outbox_backlog",
            "Outcome events committed but not yet published.",
            registry=r,
        )
        self.consumer_lag = Gauge(
            f"{PREFIX}_consumer_lag",
            "Records behind the partition's high watermark.",
            ["topic", "partition"],
            registry=r,
        )
        self.ready = Gauge(
            f"{PREFIX}_ready",
            "1 when the worker is consuming and its dependencies answer.",
            registry=r,
        )
        self.info = Gauge(
            f"{PREFIX}_worker_info",
            "Constant 1, labelled with the worker's runtime and policies.",
            ["runtime", "policy_versions"],
            registry=r,
        )

    def initialise(
        self,
        event_types: Iterable[str],
        platforms: Iterable[str],
        outcomes: Iterable[str],
        dead_letter_reasons: Iterable[str],
        retry_causes: Iterable[str],
    ) -> None:
        """Create the label series at 0 before the first event: `rate()` ignores a counter's
        first sample, so a series born at its first increment would hide that increment (the
        first dead letter of a reason after a restart, say) from every rule and alert."""
        event_types, platforms = list(event_types), list(platforms)
        for event_type in event_types:
            self.consumed.labels(event_type)
            self.duplicates.labels(event_type)
            for platform in platforms:
                self.time_to_recovery.labels(event_type, platform)
                for outcome in outcomes:
                    self.decided.labels(event_type, platform, outcome)
        for reason in dead_letter_reasons:
            self.dead_lettered.labels(reason)
        for cause in retry_causes:
            self.retries.labels(cause)

"""Prometheus metrics of the worker, and the core's BatchObserver on them. One registry per worker
(not the global default) so tests can run several pipelines in one process; a batch's updates are
aggregated here once per batch (`batch_finished`), not per event, to keep them off the hot path.
No per-order labels: cardinality stays bounded by platforms, event types, outcomes, actions and
rule ids."""

from __future__ import annotations

import collections
from collections.abc import Iterable
from datetime import UTC, datetime
from itertools import chain

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.registry import Collector

from order_recovery.core.ports import BatchReport
from order_recovery.core.records import DeadLetter
from order_recovery.domain.operations import MTTR_BASELINE, MTTR_TARGET

# `_created` series double the exposition and no dashboard of ours reads them.
disable_created_metrics()

PREFIX = "order_recovery"

_BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Event time to decision: the time-to-recovery goal (15 min) and today's mean (47 min) are bucket
# edges, so a dashboard can show how much of the goal the decision alone takes.
_DELAY_BUCKETS = tuple(
    sorted(
        {1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400}
        | {int(MTTR_TARGET.total_seconds()), int(MTTR_BASELINE.total_seconds())}
    )
)


class ProcessMetrics:
    """What every process of the service exports alike (the worker's and the lifecycle's)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
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
        self.ready = Gauge(
            f"{PREFIX}_ready",
            "1 when the process is consuming and its dependencies answer.",
            registry=r,
        )

    def dead_letter_kept(self) -> None:
        self.dead_letters_unsendable.inc()


class WorkerMetrics(ProcessMetrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
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
        # Time to recovery is a case's figure (adapters.postgres.case_figures); this is how long
        # after its event time an exception was decided: the lag the cases start with.
        self.decision_delay = Histogram(
            f"{PREFIX}_decision_delay_seconds",
            "Event time of the exception to its decision (every decision).",
            ["event_type", "platform"],
            buckets=_DELAY_BUCKETS,
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
                self.decision_delay.labels(event_type, platform)
                for outcome in outcomes:
                    self.decided.labels(event_type, platform, outcome)
        for reason in dead_letter_reasons:
            self.dead_lettered.labels(reason)
        for cause in retry_causes:
            self.retries.labels(cause)

    # ------------------------------------------------------------------ the core's BatchObserver
    def batch_finished(self, report: BatchReport) -> None:
        """One batch's metrics, counted in as few passes as possible (C-level Counter updates),
        then one labelled update per series: the metrics cost a batch, not an event."""
        decided = report.decided
        for event_type, n in report.consumed.items():
            self.consumed.labels(event_type).inc(n)
        for event_type, n in report.duplicates.items():
            self.duplicates.labels(event_type).inc(n)
        outcomes = collections.Counter(
            (d.event.envelope.event_type, d.event.envelope.platform, d.decision.outcome)
            for d in decided
        )
        actions = collections.Counter(chain.from_iterable(d.decision.actions for d in decided))
        rules = collections.Counter(chain.from_iterable(d.decision.rule_ids for d in decided))
        money: collections.Counter[tuple[str, str]] = collections.Counter()
        delays: dict[tuple[str, str], list[float]] = {}
        now = datetime.now(UTC)
        for d in decided:
            env, decision = d.event.envelope, d.decision
            comp = decision.compensation
            if comp is not None:
                money[(comp.kind, env.platform)] += comp.amount_fen
            delays.setdefault((env.event_type, env.platform), []).append(
                max(0.0, (now - env.occurred_at).total_seconds())
            )
        for (event_type, platform), waits in delays.items():
            histogram = self.decision_delay.labels(event_type, platform)
            for wait in waits:
                histogram.observe(wait)
        for labels, n in outcomes.items():
            self.decided.labels(*labels).inc(n)
        for action, n in actions.items():
            self.actions.labels(action).inc(n)
        for rule_id, n in rules.items():
            self.rules_fired.labels(rule_id).inc(n)
        for (kind, platform), fen in money.items():
            self.compensation_fen.labels(kind, platform).inc(fen)
        dead = collections.Counter(letter.error_class for letter in report.dead)
        for reason, n in dead.items():
            self.dead_lettered.labels(reason).inc(n)
        self.batch_size.observe(report.records)
        self.batch_seconds.observe(report.elapsed_s)

    def outcomes_sent(self, count: int) -> None:
        self.outcomes_published.inc(count)


class LifecycleMetrics(ProcessMetrics):
    """The lifecycle process's metrics: what it applied, and the case figures counted in Postgres
    (adapters.postgres.case_figures), which every lifecycle process exports alike."""

    def __init__(self, figures: Collector, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        r.register(figures)
        self.resolutions = Counter(
            f"{PREFIX}_resolutions_consumed",
            "Resolution records read from the resolution topics.",
            ["event_type"],
            registry=r,
        )
        self.steps = Counter(
            f"{PREFIX}_case_steps",
            "Case steps this process applied (transitions and ignored causes), by rule id.",
            ["rule_id"],
            registry=r,
        )

    def stepped(self, rule_ids: Iterable[str]) -> None:
        for rule_id, n in collections.Counter(rule_ids).items():
            self.steps.labels(rule_id).inc(n)

    # ------------------------------------------------------------------ the core's BatchObserver
    def dead_letters(self, letters: Iterable[DeadLetter]) -> None:
        for reason, n in collections.Counter(d.error_class for d in letters).items():
            self.dead_lettered.labels(reason).inc(n)

    def batch_finished(self, report: BatchReport) -> None:
        self.dead_letters(report.dead)

    def outcomes_sent(self, count: int) -> None:
        """The lifecycle publishes no outcomes."""

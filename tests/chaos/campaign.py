"""One campaign run: its own database and topics, two workers, the feed produced while the faults
are injected, the drain, the checks, the report."""

from __future__ import annotations

import json
import logging
import statistics
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from order_recovery.adapters.kafka_admin import delete_topics, ensure_topics
from order_recovery.adapters.postgres.migrations import migrate
from order_recovery.config import Settings
from order_recovery.runtimes.confluent import consumer_config
from tests.chaos.checker import CHECKS, Findings, check
from tests.chaos.faults import (
    KINDS,
    MEMBERS,
    WORKER_JOIN,
    WORKER_LEAVE,
    Counts,
    Injected,
    Injector,
    LocalStack,
    expected_duration_s,
    plan,
)
from tests.chaos.feed import POISON_KINDS, Feed, FeedProducer, build_feed
from tests.chaos.monitor import GroupMonitor
from tests.chaos.workers import Ports, WorkerPool
from tests.support.databases import admin_url, create_database, drop_database

log = logging.getLogger("chaos")

ROOT = Path(__file__).resolve().parents[2]
WARM_UP_S = 5.0
SIGNAL_NAMES = {-9: "SIGKILL", 0: "clean stop", 70: "bug: EXIT_BUG", 75: "fenced: EXIT_FENCED"}


@dataclass(frozen=True)
class Config:
    seed: int = 1
    runtime: str = "confluent"
    events: int = 20_000
    counts: Counts = field(default_factory=Counts)
    rate: float | None = None  # records/s; None: spread the feed over the fault schedule
    poison_pct: float = 0.5
    oversized: int = 2
    static: bool = True
    settle_s: float | None = None  # wait for catch-up after each fault, up to this long
    gap_s: tuple[float, float] = (2.0, 6.0)
    metrics_port_base: int | None = None
    drain_timeout_s: float = 300.0
    keep: bool = False  # keep the database and topics of a clean run too
    out_dir: Path | None = None
    base: Settings | None = None  # Kafka and the roles' DSNs (default: from the environment)
    admin_url: str | None = None  # the superuser that makes databases (default: as the tests)


@dataclass
class Result:
    config: Config
    findings: Findings
    feed: Feed
    injected: list[Injected]
    exits: Counter[tuple[int, bool]]
    started: float
    feed_seconds: float
    rate: float
    drained: bool
    run_dir: Path
    database: str
    topic_prefix: str


# ---------------------------------------------------------------------------- set-up
def _scratch(config: Config) -> tuple[Settings, str]:
    """Settings for a run of its own: a fresh database (made by the cluster's superuser, owned and
    migrated by recovery_owner, used through every role's DSN) and fresh topics."""
    base = config.base or Settings.from_env()
    tag = uuid.uuid4().hex[:6]
    database = f"chaos_{config.runtime}_s{config.seed}_{tag}"
    create_database(config.admin_url or admin_url(), database)
    scratch = base.with_database(database)
    migrate(scratch.database_owner_url)
    settings = replace(
        scratch,
        topic_prefix=f"chaos-{tag}.",
        consumer_group=f"chaos-{tag}",
    )
    ensure_topics(
        settings.kafka_bootstrap_servers,
        settings.all_topics,
        settings.topic_partitions,
        settings.topic_replication_factor,
    )
    return settings, database


def _drop(settings: Settings, database: str, config: Config) -> None:
    delete_topics(settings.kafka_bootstrap_servers, settings.all_topics)
    drop_database(config.admin_url or admin_url(), database)


def session_timeout_s(settings: Settings) -> float:
    return float(consumer_config(settings)["session.timeout.ms"]) / 1000  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- the run
def run(config: Config) -> Result:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = (
        config.out_dir or ROOT / ".local" / "chaos" / f"{stamp}-{config.runtime}-seed{config.seed}"
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    settings, database = _scratch(config)
    log.info("run %s: database %s, topics %s*", run_dir, database, settings.topic_prefix)
    feed = build_feed(
        config.seed, config.events, poison_pct=config.poison_pct, oversized=config.oversized
    )
    faults = plan(config.seed, config.counts, session_timeout_s(settings), config.gap_s)
    rate = config.rate or len(feed.records) / (
        expected_duration_s(faults, config.runtime) + WARM_UP_S
    )

    pool = WorkerPool(
        settings,
        run_dir,
        config.runtime,
        static=config.static,
        ports=Ports(config.metrics_port_base),
    )
    monitor = GroupMonitor(
        settings.kafka_bootstrap_servers, settings.consumer_group, settings.source_topics
    )
    injector = Injector(pool, LocalStack(run_dir / "stack.log"), monitor, config.settle_s)
    drained = False
    try:
        for name in MEMBERS:
            pool.start(name)
        for name in MEMBERS:
            pool.worker(name).wait_ready(120)
        monitor.start()
        producer = FeedProducer(settings, feed, rate).start()
        started = producer.started_at
        log.info("feed: %d records at %.1f/s; %d faults", len(feed.records), rate, len(faults))
        time.sleep(WARM_UP_S)
        injector.run(faults, on_each=lambda i: log.info("  t=%.1f s %s", i.at - started, i.kind))
        producer.join()
        feed_seconds = (producer.finished_at or time.monotonic()) - started
        if producer.failures:
            raise RuntimeError(f"the feed failed: {producer.failures[:3]}")
        drained = _drain(settings, monitor, config.drain_timeout_s)
    finally:
        pool.close()
        monitor.stop()
    for injected in injector.injected:
        injected.caught_up = monitor.caught_up_at(injected.ended, injected.ends)
    findings = check(settings, feed, monitor.regressions())
    result = Result(
        config,
        findings,
        feed,
        injector.injected,
        pool.exit_codes(),
        started,
        feed_seconds,
        rate,
        drained,
        run_dir,
        database,
        settings.topic_prefix,
    )
    if findings.clean and not config.keep:
        _drop(settings, database, config)
    return result


def _drain(settings: Settings, monitor: GroupMonitor, timeout_s: float) -> bool:
    """Wait until every record is committed and every outbox batch published (the relay resends
    what a killed worker left unpublished once it is 30 s old)."""
    deadline = time.monotonic() + timeout_s
    ends = monitor.end_offsets(timeout_s=30)
    if not monitor.wait_caught_up(ends, time.monotonic(), timeout_s):
        log.warning("the group did not commit everything within %.0f s", timeout_s)
        return False
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(settings.database_reader_url) as conn:
                (left,) = conn.execute(
                    "SELECT count(*) FROM outbox_batches WHERE published_at IS NULL"
                ).fetchone() or (0,)
        except psycopg.Error:
            left = -1
        if left == 0:
            return True
        time.sleep(1)
    log.warning("outbox batches still unpublished after %.0f s", timeout_s)
    return False


# ---------------------------------------------------------------------------- the report
def report(result: Result) -> str:
    c, f = result.config, result.findings
    feed = result.feed.summary()
    poison = sum(feed[f"poison: {k}"] for k in POISON_KINDS)
    kinds = Counter(i.kind for i in result.injected)
    lines = [
        f"fault campaign: seed {c.seed}, runtime {c.runtime}, static membership "
        f"{'on' if c.static else 'off'}",
        f"feed: {feed['valid events']:,} valid events + {feed['exact duplicates']:,} exact "
        f"duplicates + {poison} poison ("
        + ", ".join(f"{k} {feed[f'poison: {k}']}" for k in POISON_KINDS)
        + f"), {feed['records']:,} records at {result.rate:.1f}/s over {result.feed_seconds:.0f} s",
        "faults: "
        + ", ".join(f"{k} x{kinds[k]}" for k in KINDS if kinds[k])
        + f" ({kinds[WORKER_JOIN] + kinds[WORKER_LEAVE]} forced rebalances)",
        "",
        f"{'check':<70} {'count':>6}",
    ]
    lines += [f"{label:<70} {f.counts[key]:>6}" for key, label in CHECKS]
    broken = sum(1 for v in f.counts.values() if v)
    lines.append(f"{'verdict':<70} {'CLEAN' if f.clean else f'{broken} BROKEN':>6}")
    if not result.drained:
        lines.append("(the feed did not drain within the timeout)")
    lines += ["", "also counted"]
    lines += [f"  {k:<68} {v:>6}" for k, v in f.info.items()]
    lines += ["", "faults (t from the feed's start; catch-up: see docs/reliability.md)"]
    lines.append(f"  {'t (s)':>7}  {'fault':<17} {'catch-up (s)':>12}  detail")
    for i in result.injected:
        up = "never" if i.catch_up_s is None else f"{i.catch_up_s:.1f}"
        lines.append(f"  {i.at - result.started:>7.1f}  {i.kind:<17} {up:>12}  {i.detail}")
    lines.append("catch-up by fault kind, median / max (s):")
    for kind in KINDS:
        times = [
            i.catch_up_s for i in result.injected if i.kind == kind and i.catch_up_s is not None
        ]
        if times:
            median, worst = statistics.median(times), max(times)
            lines.append(f"  {kind:<17} {median:6.1f} / {worst:6.1f}  ({len(times)} faults)")
    lines.append(
        "worker exits by code: "
        + ", ".join(
            f"{code} ({SIGNAL_NAMES.get(code, 'other')}{'' if caused else ', on its own'}) x{n}"
            for (code, caused), n in sorted(result.exits.items())
        )
    )
    for key, examples in f.examples.items():
        lines.append(f"examples, {key}:")
        lines += [f"  {e}" for e in examples]
    if not f.clean:
        lines.append(
            f"kept for inspection: database {result.database}, topics {result.topic_prefix}*"
        )
    lines.append(f"logs: {result.run_dir}")
    return "\n".join(lines)


def save(result: Result, text: str) -> None:
    (result.run_dir / "table.txt").write_text(text + "\n")
    data: dict[str, Any] = {
        "config": {**asdict(result.config), "out_dir": None, "base": None, "admin_url": None},
        "counts": result.findings.counts,
        "info": result.findings.info,
        "examples": result.findings.examples,
        "feed": result.feed.summary(),
        "rate": result.rate,
        "drained": result.drained,
        "faults": [
            {
                "t": round(i.at - result.started, 2),
                "kind": i.kind,
                "detail": i.detail,
                "catch_up_s": None if i.catch_up_s is None else round(i.catch_up_s, 2),
            }
            for i in result.injected
        ],
        "exits": [[code, caused, n] for (code, caused), n in result.exits.items()],
    }
    (result.run_dir / "report.json").write_text(json.dumps(data, indent=1, default=str))

"""`recoveryctl`: the operator's tool. Exit codes: 0 ok, 1 problem found (a reconciliation
mismatch, a missed target, an unknown order, an invalid policy), 2 usage or connection error (one
line on stderr, no traceback), 130 interrupted (Ctrl-C). Parsing and dispatch only: the work is in
`order_recovery.ops`."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from confluent_kafka import KafkaException

from order_recovery.adapters.kafka_admin import KafkaUnavailable, ensure_project_topics
from order_recovery.adapters.postgres.migrations import MigrationError, migrate
from order_recovery.adapters.postgres.schedules import last_runs
from order_recovery.adapters.postgres.snapshots import (
    Snapshot,
    latest_snapshot,
    recent_snapshots,
    take_snapshot,
)
from order_recovery.config import ConfigError, Settings
from order_recovery.domain.case import ReviewRefused, ReviewVerdict
from order_recovery.domain.errors import PolicyError
from order_recovery.domain.policy import load_policies
from order_recovery.ops import schedule_views, views
from order_recovery.ops.cases import show as show_case
from order_recovery.ops.db import connect
from order_recovery.ops.dlq import (
    LetterFilter,
    distinct,
    dlq_topics,
    read_letters,
    resolve_topic,
    summarise,
)
from order_recovery.ops.output import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_USAGE,
    Advance,
    UsageError,
    console,
    print_json,
    progress,
)
from order_recovery.ops.reconcile import (
    decided_on,
    latest_reconciliation,
    ledger_file,
    read_ledger,
    reconcile,
    reconcile_and_record,
)
from order_recovery.ops.replay import check_replay_id, new_replay_id, replay
from order_recovery.ops.reviews import decide_review, queue
from order_recovery.ops.simulate import load, simulate
from order_recovery.ops.stats import GROUPINGS, TARGET_MEAN_TTR_S, TARGET_RECOVERY_RATE, figures
from order_recovery.ops.unsendable import counts as unsendable_counts
from order_recovery.ops.unsendable import read as read_unsendable
from order_recovery.ops.when import parse_day, parse_when


def _topics_create(args: argparse.Namespace, settings: Settings) -> int:
    created = ensure_project_topics(settings)
    for name in settings.all_topics:
        print(f"{name:50} {'created' if name in created else 'exists'}")
    return EXIT_OK


def _db_migrate(args: argparse.Namespace, settings: Settings) -> int:
    applied = migrate(settings.database_owner_url)
    print(f"applied: {', '.join(applied)}" if applied else "database schema up to date")
    return EXIT_OK


def _produce_sample(args: argparse.Namespace, settings: Settings) -> int:
    from order_recovery.adapters.sample_feed import produce_sample

    def progress(sent: int) -> None:
        if sys.stderr.isatty():
            print(f"\rsent {sent}", end="", file=sys.stderr, flush=True)

    sent = produce_sample(settings, args.count, args.rate, args.seed, progress, args.live)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"sent {sent} sample events to {settings.topic_prefix}*")
    return EXIT_OK


def _simulate_platform(args: argparse.Namespace, settings: Settings) -> int:
    from order_recovery.adapters.reference_platform import Odds, ReferencePlatform

    platform = ReferencePlatform(
        settings, seed=args.seed, odds=Odds(action_fails=args.fail_share), interval_s=args.interval
    )
    signal.signal(signal.SIGTERM, lambda *_: platform.stop.set())
    print(f"simulating the platform and the executor for {settings.topic_prefix}* (Ctrl-C stops)")
    try:
        return platform.run()
    except KeyboardInterrupt:
        platform.stop.set()
        return EXIT_OK


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share between 0 and 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _policy_check(args: argparse.Namespace, settings: Settings) -> int:
    try:
        policies = load_policies(args.dir)
    except PolicyError as exc:
        print(f"recoveryctl: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    if args.json:
        print_json({p: {"version": pol.version} for p, pol in sorted(policies.items())})
    else:
        for platform, policy in sorted(policies.items()):
            print(f"{platform:12} {policy.version}")
        print(f"{len(policies)} policy file(s) in {args.dir} are valid")
    return EXIT_OK


def _filter(args: argparse.Namespace, settings: Settings) -> LetterFilter:
    return LetterFilter(
        topic=resolve_topic(settings, args.topic),
        error_class=args.error_class,
        order_id=args.order_id,
        since=args.since,
        until=args.until,
    )


def _reading(n: int) -> AbstractContextManager[Advance]:
    return progress("reading dead letters", n)


def _dlq_list(args: argparse.Namespace, settings: Settings) -> int:
    topics = dlq_topics(settings)
    letters = read_letters(settings, topics, _reading)
    try:
        with connect(settings.database_reader_url) as conn:
            unsendable: dict[str, int] | None = unsendable_counts(conn, topics)
    except psycopg.Error as exc:  # the dead-letter topics are worth listing without it
        print(f"recoveryctl: unsendable dead letters unknown: {_first_line(exc)}", file=sys.stderr)
        unsendable = None
    summaries = summarise(topics, letters, unsendable)
    if args.json:
        print_json([asdict(s) for s in summaries])
    else:
        views.dlq_list(console(), summaries)
    return EXIT_OK


def _dlq_show(args: argparse.Namespace, settings: Settings) -> int:
    filt = _filter(args, settings)
    topics = [filt.topic] if filt.topic else dlq_topics(settings)
    matching = distinct(x for x in read_letters(settings, topics, _reading) if filt.matches(x))
    shown = matching[: args.limit]
    if args.json:
        print_json({"matched": len(matching), "records": [x.to_json() for x in shown]})
    else:
        views.dlq_show(console(), shown, len(matching))
    return EXIT_OK


def _dlq_unsendable(args: argparse.Namespace, settings: Settings) -> int:
    topic = resolve_topic(settings, args.topic)
    with connect(settings.database_reader_url) as conn:
        matched, rows = read_unsendable(
            conn, [topic] if topic else dlq_topics(settings), args.limit
        )
    if args.json:
        print_json({"matched": matched, "records": [r.to_json() for r in rows]})
    else:
        views.unsendable(console(), rows, matched)
    return EXIT_OK


def _dlq_replay(args: argparse.Namespace, settings: Settings) -> int:
    filt = _filter(args, settings)
    replay_id = check_replay_id(args.replay_id or new_replay_id())
    if not args.dry_run and args.replay_id is None:
        print(f"replay id {replay_id} (resume with --replay-id {replay_id})", file=sys.stderr)
    interrupted = False

    def on_sigint(signum: int, frame: object) -> None:
        nonlocal interrupted
        if interrupted:  # a second Ctrl-C: stop now, the open transaction is aborted
            raise KeyboardInterrupt
        interrupted = True

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = replay(
            settings,
            replay_id,
            filt,
            dry_run=args.dry_run,
            rate=args.rate,
            limit=args.limit,
            stop=lambda: interrupted,
            progress=lambda n: progress("replaying" if not args.dry_run else "scanning", n),
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    if args.json:
        print_json(result.to_json())
    else:
        views.replay(console(), result)
    if result.interrupted:
        print(
            f"recoveryctl: interrupted after sending {result.sent}; run again with "
            f"--replay-id {replay_id} and the same filters to continue",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return EXIT_OK


def _case_show(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings.database_reader_url) as conn:
        found = show_case(conn, args.order_id)
    if found.empty:
        print(f"recoveryctl: no decisions or cases for order {args.order_id}", file=sys.stderr)
        return EXIT_PROBLEM
    if args.json:
        print_json(found.to_json())
    else:
        views.case(console(), found)
    return EXIT_OK


def _stats(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings.database_reader_url) as conn:
        total, groups = figures(conn, args.since, args.until, args.by)
    if args.json:
        print_json(
            {
                "since": args.since,
                "until": args.until,
                "targets": {
                    "recovery_rate": TARGET_RECOVERY_RATE,
                    "mean_time_to_recovery_s": TARGET_MEAN_TTR_S,
                },
                "total": total.to_json(),
                "groups": [g.to_json() for g in groups],
            }
        )
    else:
        views.stats(console(), total, groups, args.by)
    return EXIT_PROBLEM if False in (total.rate_ok, total.ttr_ok) else EXIT_OK


def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    if args.record:
        return _reconcile_and_record(args, settings)
    ledger = read_ledger(args.ledger) if args.ledger else None
    with connect(settings.database_reader_url) as conn:
        result = reconcile(decided_on(conn, args.date), args.date, ledger)
    if args.json:
        print_json(result.to_json())
    else:
        views.reconciliation(console(), result)
    return EXIT_OK if result.clean else EXIT_PROBLEM


def _reconcile_and_record(args: argparse.Namespace, settings: Settings) -> int:
    """The scheduled run's code path, by hand: the ledger given, else the day's file in
    ORDER_RECOVERY_LEDGER_DIR; the result recorded in `reconciliations` as the operator."""
    if args.ledger is not None and not args.ledger.is_file():
        raise UsageError(f"cannot read ledger {args.ledger}: no such file")
    path = args.ledger or ledger_file(settings.ledger_dir, args.date)
    with psycopg.connect(settings.database_operator_url, connect_timeout=5) as conn:
        result = reconcile_and_record(conn, args.date, path, "manual", datetime.now(UTC))
    if args.json:
        print_json(result.to_json())
    else:
        views.reconciliation(console(), result)
    if result.ledger is None:
        where = path or "nowhere (ORDER_RECOVERY_LEDGER_DIR is not set)"
        print(f"recoveryctl: no ledger at {where}: recorded ledger_missing", file=sys.stderr)
    return EXIT_OK if result.status == "matched" else EXIT_PROBLEM


def _snapshot_take(args: argparse.Namespace, settings: Settings) -> int:
    with psycopg.connect(settings.database_operator_url, connect_timeout=5) as conn:
        snap = take_snapshot(conn, datetime.now(UTC), None, "manual")
    return _print_snapshot(args, snap)


def _snapshot_latest(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings.database_reader_url) as conn:
        snap = latest_snapshot(conn)
    if snap is None:
        print("recoveryctl: no snapshot yet", file=sys.stderr)
        return EXIT_PROBLEM
    return _print_snapshot(args, snap)


def _print_snapshot(args: argparse.Namespace, snap: Snapshot) -> int:
    if args.json:
        print_json(snap.to_json())
    else:
        schedule_views.snapshot(console(), snap)
    return EXIT_OK


def _snapshot_list(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings.database_reader_url) as conn:
        snaps = recent_snapshots(conn, args.limit)
    if args.json:
        print_json({"snapshots": [s.to_json() for s in snaps]})
    else:
        schedule_views.snapshots(console(), snaps)
    return EXIT_OK


def _schedules(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings.database_reader_url) as conn:
        runs = last_runs(conn, args.runs)
        latest = latest_reconciliation(conn)
    if args.json:
        print_json(
            {
                "runs": [r.to_json() for r in runs],
                "latest_reconciliation": None if latest is None else latest.to_json(),
            }
        )
    else:
        schedule_views.schedules(console(), runs, latest)
    last = {r.job: r for r in reversed(runs)}  # runs come newest first within a job
    return EXIT_PROBLEM if any(r.failed for r in last.values()) else EXIT_OK


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    policies = load_policies(args.policy)  # PolicyError: a usage error here (exit 2)
    with connect(settings.database_reader_url) as conn:
        stored = load(conn, args.since, args.until)
    with progress("re-deciding", len(stored)) as advance:
        result = simulate(stored, policies, advance)
    if args.json:
        print_json(result.to_json())
    else:
        views.simulation(console(), result, args.show)
    return EXIT_OK


def _review_list(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings.database_reader_url) as conn:
        waiting = queue(
            conn,
            platform=args.platform,
            risk_flag=args.risk_flag,
            older_than=args.older_than,
            order_id=getattr(args, "order_id", None),
        )
    if args.json:
        print_json({"waiting": [w.to_json() for w in waiting]})
    else:
        views.reviews(console(), waiting)
    if getattr(args, "order_id", None) and not waiting:
        print(f"recoveryctl: no case of order {args.order_id} waits for a review", file=sys.stderr)
        return EXIT_PROBLEM
    return EXIT_OK


def _review_decide(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings.database_reader_url) as conn:
        waiting = queue(conn, order_id=args.order_id)
    types = {w.exception_type for w in waiting}
    exception_type = args.type or (types.pop() if len(types) == 1 else None)
    if exception_type is None:
        problem = "no case waits for a review" if not types else "several cases wait: give --type"
        print(f"recoveryctl: order {args.order_id}: {problem}", file=sys.stderr)
        return EXIT_PROBLEM
    try:
        step = decide_review(
            settings.database_operator_url,
            load_policies(),
            (args.order_id, exception_type),
            ReviewVerdict(args.verdict),
            args.reviewer,
            args.reason,
        )
    except ReviewRefused as exc:
        print(f"recoveryctl: review refused: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    released = ", ".join(step.actions) or "nothing"
    print(f"order {args.order_id} ({exception_type}): {step.to_state}; released: {released}")
    return EXIT_OK


def _older_than(text: str) -> timedelta:
    units = {"m": 60, "h": 3600, "d": 86400}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30m, 4h or 2d")
    return timedelta(seconds=int(text[:-1]) * units[text[-1]])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recoveryctl",
        description="Operate order-recovery: topics, database, dead letters, cases and figures.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    topics = commands.add_parser("topics", help="Kafka topics the project owns")
    topics_sub = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    topics_sub.add_parser(
        "create", help="create the source, dead-letter and outcome topics (idempotent)"
    ).set_defaults(handler=_topics_create)

    db = commands.add_parser("db", help="the Postgres schema")
    db_sub = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    db_sub.add_parser(
        "migrate", help="apply pending migrations as the owner, DATABASE_OWNER_URL (idempotent)"
    ).set_defaults(handler=_db_migrate)
    sample = commands.add_parser(
        "produce-sample",
        help="publish realistic mixed sample events (all platforms, edge cases, duplicates)",
    )
    sample.add_argument("--count", type=int, default=1000, help="events to send; 0 = forever")
    sample.add_argument(
        "--rate",
        type=_positive_float,
        default=None,
        help="events per second at most (default: as fast as possible)",
    )
    sample.add_argument("--seed", type=int, default=1, help="generator seed (same seed, same feed)")
    sample.add_argument(
        "--live",
        action="store_true",
        help="date each event now as it is sent (its case then lives in the present)",
    )
    sample.set_defaults(handler=_produce_sample)

    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print JSON instead of tables")

    sim_platform = commands.add_parser(
        "simulate-platform",
        help="the reference executor and a simulated platform for the local stack: apply and "
        "report the action commands, answer open cases (payments, shipments, verdicts)",
    )
    sim_platform.add_argument("--seed", type=int, default=7, help="the simulation's seed")
    sim_platform.add_argument(
        "--fail-share", type=_share, default=0.03, help="share of actions that fail for good"
    )
    sim_platform.add_argument(
        "--interval", type=_positive_float, default=1.0, help="seconds between polls"
    )
    sim_platform.set_defaults(handler=_simulate_platform)

    policy = commands.add_parser("policy", help="platform policy files")
    policy_sub = policy.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = policy_sub.add_parser(
        "check",
        parents=[json_flag],
        help="validate a policy directory the way the worker loads it (exit 1 if invalid)",
    )
    check.add_argument("dir", type=Path, metavar="DIR", help="directory of <platform>.toml files")
    check.set_defaults(handler=_policy_check)

    dlq = commands.add_parser("dlq", help="dead-letter topics: inspect and replay")
    dlq_sub = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    dlq_sub.add_parser(
        "list",
        parents=[json_flag],
        help="per DLQ topic: records (each dead letter once), oldest and newest failure, counts "
        "by error class, and dead letters kept in Postgres because the broker refused them",
    ).set_defaults(handler=_dlq_list)
    show = dlq_sub.add_parser(
        "show",
        parents=[json_flag],
        help="records with headers, the decoded value, or the raw bytes (escaped)",
    )
    _filter_arguments(show)
    show.add_argument(
        "--limit", type=_positive_int, default=20, help="show at most N records (default 20)"
    )
    show.set_defaults(handler=_dlq_show)
    unsendable = dlq_sub.add_parser(
        "unsendable",
        parents=[json_flag],
        help="dead letters the broker refused even truncated, kept in Postgres (newest first)",
        description=(
            "Dead letters the broker refused even with their value truncated (a dead-letter "
            "topic whose max.message.bytes is smaller than the record, or a record whose key and "
            "headers alone are too large). The worker keeps each in Postgres (table "
            "unsendable_dead_letters: where the record was, why it failed, why the broker "
            "refused it, key, headers and the value's first 16 KiB) and moves on. The whole "
            "record stays on its source topic at that place for as long as retention keeps it."
        ),
    )
    unsendable.add_argument(
        "--topic", help="one DLQ: an exception type, its topic or its .dlq topic (default: all)"
    )
    unsendable.add_argument(
        "--limit", type=_positive_int, default=20, help="show at most N records (default 20)"
    )
    unsendable.set_defaults(handler=_dlq_unsendable)
    again = dlq_sub.add_parser(
        "replay",
        parents=[json_flag],
        help="send selected records back to their original topic, once per replay id",
        description=(
            "Send the selected dead letters back to their original topic, key and value "
            "unchanged, with headers replay.id, replay.at, replay.source.topic/.partition/"
            ".offset. Progress is kept in Kafka per replay id: an interrupted replay run again "
            "with the same --replay-id and filters continues where it stopped and never sends a "
            "record twice. A replay stops at the DLQ end offsets taken when it first started. "
            "Exit 130 when interrupted (Ctrl-C)."
        ),
    )
    _filter_arguments(again)
    again.add_argument(
        "--replay-id",
        help="names the replay and its progress; default: a new id from the current time",
    )
    again.add_argument(
        "--dry-run", action="store_true", help="list what would be sent; send and record nothing"
    )
    again.add_argument("--rate", type=_positive_float, help="records per second at most")
    again.add_argument(
        "--limit", type=_positive_int, help="send at most N records in this run (resumable)"
    )
    again.set_defaults(handler=_dlq_replay)

    case = commands.add_parser("case", help="one order's recovery case")
    case_sub = case.add_subparsers(dest="action", required=True, metavar="ACTION")
    case_show = case_sub.add_parser(
        "show",
        parents=[json_flag],
        help="the order's cases (state, deadline, held and released actions) and timeline: "
        "events, decisions, actions, compensation, audit log, case steps, resolutions, "
        "deadlines set and fired, reviews, action reports (exit 1 if the order is unknown)",
    )
    case_show.add_argument("order_id", metavar="ORDER_ID")
    case_show.set_defaults(handler=_case_show)

    review = commands.add_parser("review", help="cases waiting for a person: list, approve, reject")
    review_sub = review.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, helptext in (
        ("list", "cases waiting for a review, longest waiting first"),
        ("show", "the waiting case(s) of one order (exit 1 if none waits)"),
    ):
        listing = review_sub.add_parser(name, parents=[json_flag], help=helptext)
        if name == "show":
            listing.add_argument("order_id", metavar="ORDER_ID")
        listing.add_argument("--platform", help="only this platform's cases")
        listing.add_argument("--risk-flag", help="only cases whose decision raised this flag")
        listing.add_argument(
            "--older-than", type=_older_than, help="waiting longer than this (30m, 4h, 2d)"
        )
        listing.set_defaults(handler=_review_list)
    for verdict, helptext in (
        ("approve", "release the held actions, once (exit 1 if the case waits for no review)"),
        ("reject", "close the case without recovery (exit 1 if it waits for no review)"),
    ):
        decide = review_sub.add_parser(verdict, help=helptext)
        decide.add_argument("order_id", metavar="ORDER_ID")
        decide.add_argument("--type", help="the exception type, when several cases wait")
        decide.add_argument("--reviewer", required=True, help="who decides (audited)")
        decide.add_argument("--reason", required=True, help="why (audited)")
        decide.set_defaults(handler=_review_decide, verdict=verdict)

    stats = commands.add_parser(
        "stats",
        parents=[json_flag],
        help="cases: recovery rate, time to recovery vs the "
        f"{TARGET_RECOVERY_RATE:.0%}% and {TARGET_MEAN_TTR_S // 60} min targets (exit 1 if a "
        "target is missed); open cases by state and age; decisions' outcomes and compensation",
    )
    stats.add_argument(
        "--since", type=parse_when, help="closed / opened / decided at or after (date or time)"
    )
    stats.add_argument(
        "--until", type=parse_when, help="closed / opened / decided before (date or time)"
    )
    stats.add_argument("--by", choices=sorted(GROUPINGS), help="one row per platform/type/rule")
    stats.set_defaults(handler=_stats)

    rec = commands.add_parser(
        "reconcile",
        parents=[json_flag],
        help="a day's coupons and refunds against a payment ledger CSV (exit 1 on any mismatch)",
        description=(
            "Compare the coupons and refunds decided on an Asia/Shanghai calendar day with a "
            "payment ledger export: CSV with a header row and columns order_id, exception_type, "
            "kind (coupon|refund), amount_fen (integer fen); other columns are ignored. Reports "
            "missing, extra and mismatched amounts; exit 1 if there is any."
        ),
    )
    rec.add_argument("--date", type=parse_day, required=True, help="YYYY-MM-DD (Asia/Shanghai)")
    rec.add_argument(
        "--ledger",
        type=Path,
        help="the ledger CSV; without it, only list the day (with --record: the day's file in "
        "ORDER_RECOVERY_LEDGER_DIR)",
    )
    rec.add_argument(
        "--record",
        action="store_true",
        help="run it as the daily schedule does and record the result (as the operator)",
    )
    rec.set_defaults(handler=_reconcile)

    snap = commands.add_parser("snapshot", help="open cases by state and age (every 15 min)")
    snap_sub = snap.add_subparsers(dest="action", required=True, metavar="ACTION")
    snap_sub.add_parser(
        "take", parents=[json_flag], help="take one now, record it (as the operator) and print it"
    ).set_defaults(handler=_snapshot_take)
    snap_sub.add_parser(
        "latest", parents=[json_flag], help="the latest snapshot (exit 1 if there is none)"
    ).set_defaults(handler=_snapshot_latest)
    snap_list = snap_sub.add_parser("list", parents=[json_flag], help="recent snapshots")
    snap_list.add_argument(
        "--limit", type=_positive_int, default=12, help="at most N, newest first (default 12)"
    )
    snap_list.set_defaults(handler=_snapshot_list)

    sched = commands.add_parser(
        "schedules",
        parents=[json_flag],
        help="the last runs of the snapshot and reconciliation schedules, and the latest "
        "reconciliation (exit 1 if a job's last run failed)",
    )
    sched.add_argument(
        "--runs", type=_positive_int, default=1, help="runs per job, newest first (default 1)"
    )
    sched.set_defaults(handler=_schedules)

    sim = commands.add_parser(
        "simulate",
        parents=[json_flag],
        help="re-decide stored events with another policy directory, no side effects",
    )
    sim.add_argument("--policy", type=Path, required=True, metavar="DIR", help="policy directory")
    sim.add_argument("--since", type=parse_when, help="events that occurred at or after")
    sim.add_argument("--until", type=parse_when, help="events that occurred before")
    sim.add_argument(
        "--show", type=int, default=20, help="changed decisions listed in the table (default 20)"
    )
    sim.set_defaults(handler=_simulate)
    return parser


def _filter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--topic", help="one DLQ: an exception type, its topic or its .dlq topic (default: all)"
    )
    parser.add_argument("--error-class", help="dlq.error.class, e.g. unknown_platform")
    parser.add_argument("--order-id", help="the event's order id (else the record key)")
    parser.add_argument("--since", type=parse_when, help="failed at or after (date or time)")
    parser.add_argument("--until", type=parse_when, help="failed before (date or time)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    try:
        return handler(args, Settings.from_env())
    except (ConfigError, MigrationError, UsageError, PolicyError) as exc:
        print(f"recoveryctl: {exc}", file=sys.stderr)
    except (KafkaUnavailable, KafkaException) as exc:
        print(f"recoveryctl: Kafka error: {_first_line(exc)}", file=sys.stderr)
    except psycopg.OperationalError as exc:
        print(f"recoveryctl: cannot reach Postgres: {_first_line(exc)}", file=sys.stderr)
    except psycopg.errors.InsufficientPrivilege as exc:
        print(
            f"recoveryctl: Postgres refused: {_first_line(exc)} (is the DSN's role the one "
            "this command needs? see docs/operations.md, Database roles)",
            file=sys.stderr,
        )
    except KeyboardInterrupt:
        print("recoveryctl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_USAGE


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())

"""`recoveryctl`: the operator's tool. Exit codes: 0 ok, 1 problem found, 2 usage or connection
error (one line on stderr, no traceback)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import psycopg
from confluent_kafka import KafkaException

from order_recovery.adapters.kafka_admin import KafkaUnavailable, ensure_project_topics
from order_recovery.adapters.postgres.migrations import MigrationError, migrate
from order_recovery.config import ConfigError, Settings

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


def _topics_create(args: argparse.Namespace, settings: Settings) -> int:
    created = ensure_project_topics(settings)
    for name in settings.all_topics:
        print(f"{name:50} {'created' if name in created else 'exists'}")
    return EXIT_OK


def _db_migrate(args: argparse.Namespace, settings: Settings) -> int:
    applied = migrate(settings.database_url)
    print(f"applied: {', '.join(applied)}" if applied else "database schema up to date")
    return EXIT_OK


def _produce_sample(args: argparse.Namespace, settings: Settings) -> int:
    from order_recovery.adapters.sample_feed import produce_sample

    def progress(sent: int) -> None:
        if sys.stderr.isatty():
            print(f"\rsent {sent}", end="", file=sys.stderr, flush=True)

    sent = produce_sample(settings, args.count, args.rate, args.seed, progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"sent {sent} sample events to {settings.topic_prefix}*")
    return EXIT_OK


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


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
    db_sub.add_parser("migrate", help="apply pending migrations (idempotent)").set_defaults(
        handler=_db_migrate
    )
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
    sample.set_defaults(handler=_produce_sample)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    try:
        return handler(args, Settings.from_env())
    except (ConfigError, MigrationError) as exc:
        print(f"recoveryctl: {exc}", file=sys.stderr)
    except (KafkaUnavailable, KafkaException) as exc:
        print(f"recoveryctl: Kafka error: {exc}", file=sys.stderr)
    except psycopg.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"recoveryctl: cannot reach Postgres: {first_line}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

"""`recovery-worker`: runs the stream processors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from order_recovery.config import ConfigError, Settings
from order_recovery.domain.errors import PolicyError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="recovery-worker", description="Consume order-exception events and decide recovery."
    )
    parser.add_argument(
        "--runtime",
        choices=["confluent", "faust"],
        default=None,
        help="consumer runtime (default: ORDER_RECOVERY_RUNTIME, else confluent)",
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"recovery-worker: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    runtime = args.runtime or settings.runtime
    if runtime == "confluent":
        from order_recovery.runtimes.confluent import run
    else:
        from order_recovery.runtimes.faust_app import run
    try:
        return run(settings)
    except PolicyError as exc:
        print(f"recovery-worker: refusing to start: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""`recovery-worker`: runs the stream processors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from order_recovery.config import ConfigError, Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="recovery-worker", description="Consume order-exception events and decide recovery."
    )
    parser.add_argument("--runtime", choices=["faust"], default="faust")
    parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"recovery-worker: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    from order_recovery.adapters.faust_app import run_worker

    return run_worker(settings)


if __name__ == "__main__":
    sys.exit(main())

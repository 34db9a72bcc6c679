"""`recovery-worker`: runs the stream processors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from order_recovery.config import Settings
from order_recovery.entrypoints.service import serve


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

    def run(settings: Settings) -> int:
        # Before any thread starts: the pipeline's writer thread and the decisions share the GIL.
        sys.setswitchinterval(settings.gil_switch_interval_s)
        runtime = args.runtime or settings.runtime
        if runtime == "confluent":
            from order_recovery.runtimes.confluent import run as run_confluent

            return run_confluent(settings)
        from order_recovery.runtimes.faust_app import run as run_faust

        return run_faust(settings)

    return serve("recovery-worker", run)


if __name__ == "__main__":
    sys.exit(main())

"""`recovery-lifecycle`: moves cases after their decision (resolutions, deadlines, orphans)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from order_recovery.config import ConfigError, Settings
from order_recovery.domain.errors import PolicyError


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="recovery-lifecycle",
        description="Consume resolution events, fire deadlines, and move recovery cases on.",
    ).parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"recovery-lifecycle: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    from order_recovery.runtimes.lifecycle import run

    try:
        return run(settings)
    except PolicyError as exc:
        print(f"recovery-lifecycle: refusing to start: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""What every long-running process does before its loop: settings from the environment, logging,
and a one-line refusal (exit 2) for a bad configuration or policy instead of a traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from order_recovery.config import ConfigError, Settings
from order_recovery.domain.errors import PolicyError


def serve(prog: str, run: Callable[[Settings], int]) -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        return run(settings)
    except PolicyError as exc:
        print(f"{prog}: refusing to start: {exc}", file=sys.stderr)
        return 2

"""`recovery-lifecycle`: moves cases after their decision (resolutions, deadlines, orphans)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from order_recovery.config import Settings
from order_recovery.entrypoints.service import serve


def _run(settings: Settings) -> int:
    from order_recovery.runtimes.lifecycle import run

    return run(settings)


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="recovery-lifecycle",
        description="Consume resolution events, fire deadlines, and move recovery cases on.",
    ).parse_args(argv)
    return serve("recovery-lifecycle", _run)


if __name__ == "__main__":
    sys.exit(main())

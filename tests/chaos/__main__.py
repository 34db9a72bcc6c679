"""`python -m tests.chaos [options]` (what `make chaos` runs): one campaign per seed, the table of
each, exit 1 if any invariant broke in any of them, 2 if a run could not be carried out."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.chaos.campaign import Config, report, run, save
from tests.chaos.faults import Counts


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    p.add_argument("--seed", type=int, nargs="+", default=[1], help="one run per seed, in a row")
    p.add_argument("--runtime", choices=["confluent", "faust"], default="confluent")
    p.add_argument("--events", type=int, default=20_000, help="unique valid events")
    p.add_argument(
        "--rate", type=float, default=None, help="records/s (default: over the schedule)"
    )
    p.add_argument("--kills", type=int, default=20, help="worker SIGKILLs")
    p.add_argument("--pauses", type=int, default=2, help="worker SIGSTOPs past the session timeout")
    p.add_argument("--postgres-kills", type=int, default=2)
    p.add_argument("--kafka-kills", type=int, default=1)
    p.add_argument("--rebalances", type=int, default=10, help="join-and-leave cycles")
    p.add_argument("--poison-pct", type=float, default=0.5)
    p.add_argument("--oversized", type=int, default=2, help="oversized poison records (0: none)")
    p.add_argument(
        "--static",
        choices=["on", "off"],
        default="on",
        help="static group membership for the two members",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=None,
        metavar="S",
        help="wait up to S s for catch-up after each fault (to measure catch-up)",
    )
    p.add_argument("--gap", type=float, nargs=2, default=(2.0, 6.0), metavar=("MIN", "MAX"))
    p.add_argument(
        "--metrics-port-base",
        type=int,
        default=None,
        help="metrics ports from this one up (default: ephemeral)",
    )
    p.add_argument("--drain-timeout", type=float, default=300.0)
    p.add_argument("--keep", action="store_true", help="keep the database and topics of clean runs")
    p.add_argument("--out", type=Path, default=None, help="run directory (one seed only)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # SIGTERM, and SIGINT even where a background shell ignores it, end the run through its
    # clean-up: the workers stopped, none left frozen, a killed service started again.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    counts = Counts(args.kills, args.pauses, args.postgres_kills, args.kafka_kills, args.rebalances)
    worst = 0
    for seed in args.seed:
        config = Config(
            seed=seed,
            runtime=args.runtime,
            events=args.events,
            counts=counts,
            rate=args.rate,
            poison_pct=args.poison_pct,
            oversized=args.oversized,
            static=args.static == "on",
            settle_s=args.settle,
            gap_s=tuple(args.gap),
            metrics_port_base=args.metrics_port_base,
            drain_timeout_s=args.drain_timeout,
            keep=args.keep,
            out_dir=args.out if len(args.seed) == 1 else None,
        )
        try:
            result = run(config)
        except Exception:
            logging.getLogger("chaos").exception("seed %d: the run could not be carried out", seed)
            return 2
        text = report(result)
        save(result, text)
        print(text, flush=True)
        worst = max(worst, 0 if result.findings.clean else 1)
    return worst


if __name__ == "__main__":
    sys.exit(main())

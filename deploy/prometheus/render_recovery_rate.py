"""Renders docs/img/recovery-rate.png: the dashboard's recovery-rate graphs for a known mix of
events, drawn from a real Prometheus's query_range API (`make dashboard-png`).

It runs the real worker (confluent runtime) on its own topics and database against the local
Kafka and Postgres (KAFKA_BOOTSTRAP_SERVERS, DATABASE_*_URL: the Makefile sets them), a Prometheus
scraping it every second with deploy/prometheus/rules, feeds the known mix of
tests/support/known_mix.py in chunks, then plots the recording rules
event_type:order_recovery_recovered:ratio_rate5m and platform:order_recovery_recovered:ratio_rate5m
with the 92% target line. Everything it created is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from dataclasses import replace
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

from order_recovery.adapters.kafka_admin import delete_topics, ensure_topics  # noqa: E402
from order_recovery.config import Settings  # noqa: E402
from order_recovery.ops.stats import TARGET_RECOVERY_RATE  # noqa: E402
from tests.support.databases import admin_url, scratch_database  # noqa: E402
from tests.support.known_mix import recovery_rates  # noqa: E402
from tests.support.observed_mix import ObservedMix, observed_known_mix  # noqa: E402

TARGET = TARGET_RECOVERY_RATE
PANELS = (
    ("event_type", "Recovery rate by exception type (5 m)"),
    ("platform", "Recovery rate by platform (5 m)"),
)


def render(mix: ObservedMix, out: Path) -> None:
    prom = mix.prometheus
    start, end = mix.second_copy_started - 10, mix.second_copy_scraped + 4
    total = sum(mix.labels.values())
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    for ax, (label, title) in zip(axes, PANELS, strict=True):
        series = prom.query_range(
            f"{label}:order_recovery_recovered:ratio_rate5m", start, end, step=1
        )
        expected = recovery_rates(mix.labels, label)
        for s in sorted(series, key=lambda s: s["metric"][label]):
            name = s["metric"][label]
            times = [datetime.fromtimestamp(float(t)) for t, _ in s["values"]]
            values = [float(v) for _, v in s["values"]]
            (line,) = ax.plot(times, values, linewidth=2, label=f"{name}: {values[-1]:.1%}")
            ax.annotate(
                f"{values[-1]:.1%}",
                (times[-1], values[-1]),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
                color=line.get_color(),
            )
            assert abs(values[-1] - expected[name]) < 1e-9, (name, values[-1], expected[name])
        ax.axhline(
            TARGET, color="crimson", linestyle="--", linewidth=1.5, label=f"target {TARGET:.0%}"
        )
        ax.set_title(title)
        ax.set_ylim(0, 1.02)
        ax.margins(x=0.1)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        ax.grid(alpha=0.3)
        ax.legend(loc="center right", fontsize=8)
    fig.suptitle(
        f"order-recovery: recovery rate = recovered / decided, a known sample mix of {total} "
        "decisions (from Prometheus query_range)",
        fontsize=10,
    )
    fig.autofmt_xdate()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs/img/recovery-rate.png")
    parser.add_argument("--count", type=int, default=300, help="sample events in the mix")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--chunks", type=int, default=10, help="the mix is fed in this many parts")
    parser.add_argument("--pause", type=float, default=5.0, help="seconds between two parts")
    args = parser.parse_args()

    base = Settings.from_env(os.environ)
    prefix = f"png{uuid.uuid4().hex[:8]}."
    with scratch_database(admin_url(), base, "orpng") as database:
        settings = replace(
            database, topic_prefix=prefix, topic_partitions=3, consumer_group=f"{prefix}group"
        )
        ensure_topics(settings.kafka_bootstrap_servers, settings.all_topics, 3, 1)
        try:
            with (
                tempfile.TemporaryDirectory(prefix="recovery-rate-png-") as tmp,
                observed_known_mix(
                    settings, Path(tmp), args.count, args.seed, args.chunks, args.pause
                ) as mix,
            ):
                render(mix, args.out)
        finally:
            delete_topics(settings.kafka_bootstrap_servers, settings.all_topics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The figures of issue 19 and their targets, from the bench's raw samples: pure, no services
(tests/unit/test_bench_figures.py).

Each figure is computed per repetition from that repetition's measurements (a ratio of two rates
of the same repetition, never of two medians), then reported as the median of the repetitions
with every sample, its target and whether it was met. A target marked `every_repetition` is met
only when every sample meets it (the p99 at half the maximum: "in every repetition").
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Comparison = Literal["<=", "<", ">="]


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    unit: str
    comparison: Comparison
    bound: float
    every_repetition: bool = False

    def holds(self, value: float) -> bool:
        if self.comparison == "<=":
            return value <= self.bound
        if self.comparison == "<":
            return value < self.bound
        return value >= self.bound


#: Issue 19's table, in its order, plus the second half of its DLQ row (the worker decides the
#: replayed records at its normal rate: here at least 0.8 of its rate on the preloaded topic).
TARGETS: tuple[Target, ...] = (
    Target(
        "cpu_us_per_decision_all",
        "CPU per decision, all processes, at the maximum rate",
        "us",
        "<=",
        100,
    ),
    Target("worker_cpu_us_per_decision", "worker CPU per decision", "us", "<=", 45),
    Target("worker_vs_plain_consumer", "confluent worker / plain consumer", "x", ">=", 5),
    Target("faust_vs_floor_c", "faust runtime / floor C", "x", ">=", 0.8),
    Target(
        "p99_ms_half_max",
        "p99 produce -> decision commit at half the maximum",
        "ms",
        "<",
        100,
        every_repetition=True,
    ),
    Target("p99_ms_at_2000", "p99 at 2,000/s", "ms", "<", 50),
    Target(
        "worker_peak_rss_mb", "worker peak RSS (confluent runtime, the default)", "MB", "<", 150
    ),
    Target(
        "faust_peak_rss_mb", "worker peak RSS, faust runtime (its two processes)", "MB", "<", 150
    ),
    Target(
        "dlq_replay_rps", "DLQ replay (recoveryctl dlq replay, no rate cap)", "/s", ">=", 20_000
    ),
    Target(
        "dlq_replayed_vs_normal_rate",
        "worker rate on the replayed records / on the preloaded topic",
        "x",
        ">=",
        0.8,
    ),
)


def _sum(a: str, b: str) -> Callable[[Mapping[str, Sequence[float]], int], float | None]:
    return lambda s, i: _combine(s, i, a, b, lambda x, y: x + y)


def _ratio(a: str, b: str) -> Callable[[Mapping[str, Sequence[float]], int], float | None]:
    return lambda s, i: _combine(s, i, a, b, lambda x, y: x / y if y else math.nan)


def _same(a: str) -> Callable[[Mapping[str, Sequence[float]], int], float | None]:
    return lambda s, i: _at(s, a, i)


def _at(samples: Mapping[str, Sequence[float]], key: str, i: int) -> float | None:
    values = samples.get(key, ())
    return values[i] if i < len(values) else None


def _combine(
    samples: Mapping[str, Sequence[float]],
    i: int,
    a: str,
    b: str,
    op: Callable[[float, float], float],
) -> float | None:
    x, y = _at(samples, a, i), _at(samples, b, i)
    return None if x is None or y is None else op(x, y)


#: Each figure from the raw samples of one repetition (keys as bench/run.py names them).
SOURCES: dict[str, Callable[[Mapping[str, Sequence[float]], int], float | None]] = {
    "cpu_us_per_decision_all": _sum(
        "worker_confluent_cpu_us_per_event", "worker_confluent_other_cpu_us_per_event"
    ),
    "worker_cpu_us_per_decision": _same("worker_confluent_cpu_us_per_event"),
    "worker_vs_plain_consumer": _ratio("worker_confluent_rps", "plain_consumer_rps"),
    "faust_vs_floor_c": _ratio("worker_faust_rps", "floor_c_rps"),
    "p99_ms_half_max": _same("p99_latency_ms"),
    "p99_ms_at_2000": _same("p99_latency_ms_at_2000_rps"),
    "worker_peak_rss_mb": _same("confluent_peak_rss_mb_per_repetition"),
    "faust_peak_rss_mb": _same("worker_faust_peak_rss_mb"),
    "dlq_replay_rps": _same("dlq_replay_rps"),
    "dlq_replayed_vs_normal_rate": _ratio("dlq_replayed_worker_rps", "worker_confluent_rps"),
}


def figure_samples(samples: Mapping[str, Sequence[float]], repetitions: int) -> dict[str, list]:
    """Every figure per repetition; a repetition that lacks a measurement gives no sample."""
    out: dict[str, list[float]] = {}
    for target in TARGETS:
        values = (SOURCES[target.key](samples, i) for i in range(repetitions))
        out[target.key] = [v for v in values if v is not None and not math.isnan(v)]
    return out


def figures(samples: Mapping[str, Sequence[float]], repetitions: int) -> dict[str, dict[str, Any]]:
    """The figures as latest.json holds them: median, samples, target, met (None: unmeasured)."""
    per_rep = figure_samples(samples, repetitions)
    out: dict[str, dict[str, Any]] = {}
    for t in TARGETS:
        values = per_rep[t.key]
        median = statistics.median(values) if values else None
        if median is None:
            met = None
        elif t.every_repetition:
            met = all(t.holds(v) for v in values)
        else:
            met = t.holds(median)
        out[t.key] = {
            "label": t.label,
            "unit": t.unit,
            "median": None if median is None else round(median, 3),
            "samples": [round(v, 3) for v in values],
            "target": t.bound,
            "comparison": t.comparison,
            "every_repetition": t.every_repetition,
            "met": met,
        }
    return out


def _number(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "/s":
        return f"{value:,.0f}/s"
    return f"{value:,.1f} {unit}"


def figure_lines(figs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The figures table: label, target, median, samples, met/missed."""
    rows = []
    for t in TARGETS:
        f = figs.get(t.key)
        if f is None:
            continue
        target = f"{t.comparison} {_number(t.bound, t.unit)}"
        if t.every_repetition:
            target += " (every rep.)"
        median = "-" if f["median"] is None else _number(f["median"], t.unit)
        samples = ", ".join(_number(v, t.unit) for v in f["samples"]) or "none"
        verdict = {True: "met", False: "MISSED", None: "not measured"}[f["met"]]
        rows.append((t.label, target, median, samples, verdict))
    header = ("figure", "target", "median", "samples", "")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(4)]
    return [
        "  ".join(f"{cell:<{w}}" for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        for row in (header, *rows)
    ]

"""Issue 19's figures as `make bench` computes them from its raw samples (bench/figures.py):
per repetition, medians of the repetitions, targets and verdicts, latest.json's shape. No
services: the samples are made up."""

from __future__ import annotations

import json

import pytest

from bench.figures import TARGETS, figure_lines, figure_samples, figures

#: Three repetitions of the raw measurements bench/run.py takes.
SAMPLES: dict[str, list[float]] = {
    "worker_confluent_cpu_us_per_event": [50.0, 40.0, 44.0],
    "worker_confluent_other_cpu_us_per_event": [60.0, 50.0, 70.0],
    "worker_confluent_rps": [10_000.0, 12_000.0, 9_000.0],
    "plain_consumer_rps": [1_000.0, 3_000.0, 1_500.0],
    "worker_faust_rps": [8_000.0, 8_100.0, 9_000.0],
    "floor_c_rps": [10_000.0, 9_000.0, 10_000.0],
    "p99_latency_ms": [80.0, 95.0, 120.0],
    "p99_latency_ms_at_2000_rps": [40.0, 60.0, 45.0],
    "confluent_peak_rss_mb_per_repetition": [140.0, 160.0, 149.0],
    "worker_faust_peak_rss_mb": [240.0, 230.0, 250.0],
    "dlq_replay_rps": [25_000.0, 18_000.0, 21_000.0],
    "dlq_replayed_worker_rps": [9_000.0, 9_000.0, 9_000.0],
}


def test_each_figure_is_computed_within_its_repetition() -> None:
    per_rep = figure_samples(SAMPLES, 3)
    assert per_rep["cpu_us_per_decision_all"] == [110.0, 90.0, 114.0]
    assert per_rep["worker_cpu_us_per_decision"] == [50.0, 40.0, 44.0]
    # The ratio of each repetition, never the ratio of the medians (which would be 10,000/1,500).
    assert per_rep["worker_vs_plain_consumer"] == [10.0, 4.0, 6.0]
    assert per_rep["faust_vs_floor_c"] == pytest.approx([0.8, 0.9, 0.9])
    assert per_rep["dlq_replayed_vs_normal_rate"] == pytest.approx([0.9, 0.75, 1.0])


def test_medians_and_verdicts() -> None:
    figs = figures(SAMPLES, 3)
    assert figs["cpu_us_per_decision_all"]["median"] == 110.0
    assert figs["cpu_us_per_decision_all"]["met"] is False  # <= 100
    assert figs["worker_cpu_us_per_decision"]["median"] == 44.0
    assert figs["worker_cpu_us_per_decision"]["met"] is True  # <= 45
    assert figs["worker_vs_plain_consumer"]["median"] == 6.0
    assert figs["worker_vs_plain_consumer"]["met"] is True  # >= 5, one sample at 4
    assert figs["faust_vs_floor_c"]["met"] is True  # 0.9 >= 0.8
    assert figs["p99_ms_at_2000"]["median"] == 45.0
    assert figs["p99_ms_at_2000"]["met"] is True  # < 50
    assert figs["worker_peak_rss_mb"]["median"] == 149.0
    assert figs["worker_peak_rss_mb"]["met"] is True  # < 150
    assert figs["faust_peak_rss_mb"]["median"] == 240.0
    assert figs["faust_peak_rss_mb"]["met"] is False
    assert figs["dlq_replay_rps"]["median"] == 21_000.0
    assert figs["dlq_replay_rps"]["met"] is True
    assert figs["dlq_replayed_vs_normal_rate"]["median"] == 0.9


def test_p99_at_half_the_maximum_must_hold_in_every_repetition() -> None:
    figs = figures(SAMPLES, 3)
    assert figs["p99_ms_half_max"]["median"] == 95.0  # under 100 ...
    assert figs["p99_ms_half_max"]["met"] is False  # ... but one repetition at 120
    held = figures({**SAMPLES, "p99_latency_ms": [80.0, 95.0, 99.9]}, 3)
    assert held["p99_ms_half_max"]["met"] is True


def test_bounds_are_exact() -> None:
    at_bounds = figures(
        {
            **SAMPLES,
            "worker_confluent_cpu_us_per_event": [45.0] * 3,  # <= 45: met
            "p99_latency_ms_at_2000_rps": [50.0] * 3,  # < 50: missed
            "dlq_replay_rps": [20_000.0] * 3,  # >= 20,000: met
        },
        3,
    )
    assert at_bounds["worker_cpu_us_per_decision"]["met"] is True
    assert at_bounds["p99_ms_at_2000"]["met"] is False
    assert at_bounds["dlq_replay_rps"]["met"] is True


def test_a_missing_measurement_is_not_measured_rather_than_met() -> None:
    partial = {k: v for k, v in SAMPLES.items() if k != "p99_latency_ms_at_2000_rps"}
    partial["plain_consumer_rps"] = [1_000.0]  # one repetition only
    figs = figures(partial, 3)
    assert figs["p99_ms_at_2000"] == {
        **figs["p99_ms_at_2000"],
        "median": None,
        "samples": [],
        "met": None,
    }
    assert figs["worker_vs_plain_consumer"]["samples"] == [10.0]
    a_zero_rate = figures({**SAMPLES, "plain_consumer_rps": [0.0, 0.0, 0.0]}, 3)
    assert a_zero_rate["worker_vs_plain_consumer"]["met"] is None


def test_the_json_shape_latest_json_holds() -> None:
    figs = json.loads(json.dumps(figures(SAMPLES, 3)))
    assert list(figs) == [t.key for t in TARGETS]
    assert {
        "cpu_us_per_decision_all",
        "worker_cpu_us_per_decision",
        "worker_vs_plain_consumer",
        "faust_vs_floor_c",
        "p99_ms_half_max",
        "p99_ms_at_2000",
        "worker_peak_rss_mb",
        "dlq_replay_rps",
    } <= set(figs)
    for key, fig in figs.items():
        assert {"median", "samples", "target", "met"} <= set(fig), key
        assert len(fig["samples"]) == 3, key
        assert isinstance(fig["target"], int | float), key
    assert figs["worker_peak_rss_mb"]["target"] == 150
    assert figs["dlq_replay_rps"]["target"] == 20_000


def test_the_table_says_met_or_missed_for_every_figure() -> None:
    lines = figure_lines(figures(SAMPLES, 3))
    assert len(lines) == 1 + len(TARGETS)
    cpu = next(line for line in lines if line.startswith("CPU per decision, all"))
    assert "<= 100.0 us" in cpu and "110.0 us" in cpu and cpu.endswith("MISSED")
    p99 = next(line for line in lines if line.startswith("p99 produce"))
    assert "every rep." in p99 and "80.0 ms, 95.0 ms, 120.0 ms" in p99
    assert next(line for line in lines if line.startswith("worker peak RSS")).endswith("met")

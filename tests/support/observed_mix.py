"""The real worker fed the known mix (tests/support/known_mix.py) and a real Prometheus scraping it
every second with the shipped rules: used by tests/integration/observability and by the dashboard
PNG (`make dashboard-png`). Beside the worker, the case figures (what each lifecycle process
exports) served from this process, and the known case mix (tests/support/case_mix.py) closed
once the decisions are in: the recovery-rate rules read those."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from order_recovery.adapters.http_server import HealthServer
from order_recovery.adapters.metrics import LifecycleMetrics
from order_recovery.adapters.postgres.case_figures import CaseFigures
from order_recovery.config import EXCEPTION_TYPES, Settings
from tests.support.case_mix import CLOSED, close_known_cases
from tests.support.kafka_io import produce_events, wait_until
from tests.support.known_mix import Labels, decided_labels, known_mix, second_copy
from tests.support.prometheus import PrometheusServer, free_port
from tests.support.worker_process import WorkerProcess
from tests.unit.domain.factories import POLICIES

DECIDED = "order_recovery_events_decided_total"
CLOSED_CASES = "order_recovery_cases_closed_total"


@dataclass
class ObservedMix:
    worker: WorkerProcess
    prometheus: PrometheusServer
    labels: Counter[Labels]  # the decisions of one copy of the mix
    second_copy_started: float  # wall time (s) the second copy began to flow
    second_copy_scraped: float  # wall time (s) Prometheus had scraped all of it
    figures: str  # the case figures' address (host:port)


@contextmanager
def observed_known_mix(
    settings: Settings,
    workdir: Path,
    count: int = 300,
    seed: int = 7,
    chunks: int = 1,
    pause_s: float = 0.0,
) -> Iterator[ObservedMix]:
    """Feeds the mix once, starts Prometheus, feeds the second copy (in `chunks`, `pause_s` apart),
    and yields once Prometheus scraped every decision and evaluated its rules since. Stops the
    worker and Prometheus on the way out."""
    first = known_mix(count, seed)
    labels = decided_labels(first)
    assert decided_labels(second_copy(first, "b")) == labels
    total = sum(labels.values())
    worker = WorkerProcess(settings, workdir, name="observed-worker", runtime="confluent")
    prometheus: PrometheusServer | None = None
    figures = CaseFigures(settings.database_url, EXCEPTION_TYPES, POLICIES, refresh_s=0)
    metrics = LifecycleMetrics(figures)  # what a lifecycle process serves
    metrics.ready.set_function(lambda: 1.0)
    registry = metrics.registry
    # Served only once the mix is decided (the cases the mix closes at once are then in the
    # figures' first sample, outside every increase), on a port Prometheus knows from the start.
    port = free_port()
    address = f"127.0.0.1:{port}"
    server: HealthServer | None = None
    try:
        worker.start().wait_ready(timeout_s=120)
        produce_events(settings, first)
        wait_until(lambda: worker.metric(DECIDED) == total, 180, "the first copy decided")

        prometheus = PrometheusServer(
            workdir / "prometheus", [f"127.0.0.1:{worker.port}"], lifecycle_targets=[address]
        )
        prometheus.start()
        prometheus.wait_for(f"sum({DECIDED})", total, 60, "the first scrape of the first copy")
        time.sleep(3)  # a few scrapes of the first copy's values: the base rate() starts from

        second = second_copy(first, "b")
        started = time.time()
        size = -(-len(second) // chunks)
        for i in range(0, len(second), size):
            produce_events(settings, second[i : i + size])
            if i + size < len(second):
                time.sleep(pause_s)
        wait_until(lambda: worker.metric(DECIDED) == 2 * total, 180, "the second copy decided")
        prometheus.wait_for(f"sum({DECIDED})", 2 * total, 60, "the second copy scraped")
        scraped = time.time()
        # A first copy of the case mix in the first sample: each series the second copy moves
        # then starts above zero, so increase() extrapolates them all alike and the ratios are
        # exact (a series starting at 0 is extrapolated less, to where it would cross zero).
        close_known_cases(settings, "observed-a")
        server = HealthServer("127.0.0.1", port, registry, lambda: True).start()
        closed = f"sum(max by (event_type, platform, state) ({CLOSED_CASES}))"
        prometheus.wait_for(f"count({CLOSED_CASES}) > bool 0", 1, 60, "the case figures scraped")
        before = prometheus.scalar(closed) or 0
        close_known_cases(settings, "observed-b")
        prometheus.wait_for(closed, before + CLOSED, 60, "the known cases' closes scraped")
        time.sleep(4)  # the rules evaluated (every second) on the last scrapes
        yield ObservedMix(worker, prometheus, labels, started, scraped, address)
    finally:
        if prometheus is not None:
            prometheus.stop()
        if server is not None:
            server.stop()
        figures.close()
        worker.stop()

"""The fault campaign's short variant (the full one is `make chaos`, docs/reliability.md): real
workers, a feed of dependent events and poison of every kind (an oversized record included), two
SIGKILLs of a worker restarted 1-3 s later and a third worker joining and leaving, then every
invariant of the campaign's checker at 0."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

from order_recovery.config import Settings
from tests.chaos.campaign import Config, report, run
from tests.chaos.faults import WORKER_JOIN, WORKER_KILL, WORKER_LEAVE, Counts


def test_a_short_fault_campaign_comes_out_clean(
    kafka_bootstrap: str, postgres_admin_url: str, server_settings: Settings, tmp_path: Path
) -> None:
    base = replace(server_settings, kafka_bootstrap_servers=kafka_bootstrap)
    config = Config(
        seed=15,
        runtime="confluent",
        events=3000,
        counts=Counts(kills=2, pauses=0, postgres_kills=0, kafka_kills=0, rebalances=1),
        oversized=1,
        drain_timeout_s=120,
        out_dir=tmp_path,
        base=base,
        admin_url=postgres_admin_url,
    )
    result = run(config)
    text = report(result)
    assert result.findings.clean, text
    assert result.drained, text
    kinds = Counter(i.kind for i in result.injected)
    assert (kinds[WORKER_KILL], kinds[WORKER_JOIN], kinds[WORKER_LEAVE]) == (2, 1, 1), text

"""The Docker Compose stack runs Postgres with the settings of the local stack's config file."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _conf(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, value = (part.strip() for part in line.split("=", 1))
            pairs[key] = value
    return pairs


def test_compose_postgres_has_the_local_stack_settings():
    local = _conf(ROOT / "deploy/local/postgres/order-recovery.conf")
    command = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())["services"][
        "postgres"
    ]["command"]
    flags = dict(command[i + 1].split("=", 1) for i, a in enumerate(command) if a == "-c")
    assert local and flags == local

"""Running `recoveryctl` against the test's own topics and database: in process (exit code,
stdout, stderr) for most tests, as a process for the one that sends it SIGINT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from order_recovery.config import Settings
from order_recovery.entrypoints.cli import main


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


def ctl_env(settings: Settings) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        **settings.database_env(),
        "ORDER_RECOVERY_TOPIC_PREFIX": settings.topic_prefix,
        "ORDER_RECOVERY_CONSUMER_GROUP": settings.consumer_group,
    }


@pytest.fixture
def ctl(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Run]:
    for name, value in ctl_env(settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ORDER_RECOVERY_POLICY_DIR", raising=False)

    def run(*argv: str) -> Run:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def ctl_process(settings: Settings) -> Callable[..., subprocess.Popen[str]]:
    """`recoveryctl ARGS` as its own process (stdout and stderr piped)."""

    def start(*argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "order_recovery.entrypoints.cli", *argv],
            env={**os.environ, **ctl_env(settings)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    return start

"""recoveryctl's surface without services: help that matches the commands, exit codes, and a
one-line reason (never a traceback) when Kafka or Postgres cannot be reached."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from order_recovery.domain.policy import DEFAULT_POLICY_DIR
from order_recovery.entrypoints.cli import build_parser, main

COMMANDS = {
    ("topics", "create"): [],
    ("db", "migrate"): [],
    ("produce-sample",): ["--count", "--rate", "--seed", "--live"],
    ("simulate-platform",): ["--seed", "--fail-share", "--interval"],
    ("policy", "check"): ["DIR", "--json"],
    ("dlq", "list"): ["--json"],
    ("dlq", "show"): ["--topic", "--error-class", "--order-id", "--since", "--until", "--limit"],
    ("dlq", "unsendable"): ["--topic", "--limit", "--json"],
    ("dlq", "replay"): [
        "--topic", "--error-class", "--order-id", "--since", "--until", "--replay-id",
        "--dry-run", "--rate", "--limit", "--json",
    ],
    ("case", "show"): ["ORDER_ID", "--json"],
    ("review", "list"): ["--platform", "--risk-flag", "--older-than", "--json"],
    ("review", "show"): ["ORDER_ID", "--platform", "--risk-flag", "--older-than", "--json"],
    ("review", "approve"): ["ORDER_ID", "--type", "--reviewer", "--reason"],
    ("review", "reject"): ["ORDER_ID", "--type", "--reviewer", "--reason"],
    ("stats",): ["--since", "--until", "--by", "--json"],
    ("reconcile",): ["--date", "--ledger", "--record", "--json"],
    ("snapshot", "take"): ["--json"],
    ("snapshot", "latest"): ["--json"],
    ("snapshot", "list"): ["--limit", "--json"],
    ("schedules",): ["--runs", "--json"],
    ("simulate",): ["--policy", "--since", "--until", "--json"],
}  # fmt: skip


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {path}
    return {leaf for name, p in subs[0].choices.items() for leaf in _leaves(p, (*path, name))}


def test_every_command_is_documented_here_and_nothing_else_exists() -> None:
    assert _leaves(build_parser()) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_has_accurate_help(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: recoveryctl {' '.join(command)}")
    for option in COMMANDS[command]:
        assert option in out, f"{option} missing from `{' '.join(command)} --help`"


def test_top_level_help_lists_the_commands_as_installed() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "order_recovery.entrypoints.cli", "--help"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for name in ("topics", "db", "produce-sample", "policy", "dlq", "case", "stats",
                 "reconcile", "snapshot", "schedules", "simulate"):  # fmt: skip
        assert f"    {name}" in out


def test_policy_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(DEFAULT_POLICY_DIR)]) == 0
    assert "3 policy file(s)" in capsys.readouterr().out
    (tmp_path / "douyin.toml").write_text('version = "x"\nplatform = "douyin"\n')
    assert main(["policy", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("recoveryctl: ") and "missing key" in err


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("argv", "variable", "value", "reason"),
    [
        # Reports connect as the reports role (DATABASE_READER_URL).
        (["stats"], "DATABASE_READER_URL", "postgresql://x@127.0.0.1:{port}/x",
         "cannot reach Postgres"),
        (["case", "show", "o"], "DATABASE_READER_URL", "postgresql://x@127.0.0.1:{port}/x",
         "cannot reach Postgres"),
        (["dlq", "list"], "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:{port}", "Kafka error"),
        (["reconcile", "--date", "2025-06-02", "--ledger", "/nonexistent.csv"],
         "DATABASE_READER_URL", "postgresql://x@127.0.0.1:{port}/x", "cannot read ledger"),
        (["reconcile", "--date", "2025-06-02", "--ledger", "/nonexistent.csv", "--record"],
         "DATABASE_OPERATOR_URL", "postgresql://x@127.0.0.1:{port}/x", "cannot read ledger"),
        (["snapshot", "take"], "DATABASE_OPERATOR_URL", "postgresql://x@127.0.0.1:{port}/x",
         "cannot reach Postgres"),
        (["schedules"], "DATABASE_READER_URL", "postgresql://x@127.0.0.1:{port}/x",
         "cannot reach Postgres"),
        (["reconcile", "--date", "2025-06-02", "--record"], "ORDER_RECOVERY_RECONCILE_AT",
         "8pm", "ORDER_RECOVERY_RECONCILE_AT"),
        (["stats"], "ORDER_RECOVERY_TOPIC_PARTITIONS", "zero", "is not an integer"),
    ],
)  # fmt: skip
def test_unreachable_or_misconfigured_is_exit_2_with_one_line(
    argv: list[str], variable: str, value: str, reason: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "order_recovery.entrypoints.cli", *argv],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", variable: value.format(port=_closed_port())},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("recoveryctl: ") and reason in proc.stderr


def test_bad_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["reconcile", "--date", "June"], ["dlq", "replay", "--rate", "0"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
    assert "is not a date YYYY-MM-DD" in capsys.readouterr().err

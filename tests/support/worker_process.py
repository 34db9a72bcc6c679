"""The worker run as a real process, the way an operator runs it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from order_recovery.config import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first, then the parent's
    pid), or None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    """Running, not gone and not a zombie waiting for its parent."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


class WorkerProcess:
    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        name: str = "worker",
        runtime: str = "faust",
        extra_env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.log_path = log_dir / f"{name}.log"
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "DATABASE_URL": settings.database_url,
            "ORDER_RECOVERY_TOPIC_PREFIX": settings.topic_prefix,
            "ORDER_RECOVERY_CONSUMER_GROUP": settings.consumer_group,
            "ORDER_RECOVERY_METRICS_PORT": str(self.port),
            "ORDER_RECOVERY_WORKER_ID": name,
            "ORDER_RECOVERY_BATCH_SIZE": str(settings.batch_size),
            **(extra_env or {}),
        }
        self.runtime = runtime
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "order_recovery.entrypoints.worker", "--runtime", self.runtime],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ready(self, timeout_s: float = 60.0) -> WorkerProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            try:
                if self.get("/readyz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout_s}s:\n{self.log()}")

    def metrics(self) -> str:
        return self.get("/metrics")[1]

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            series, value = line.rsplit(" ", 1)
            metric_name = series.split("{", 1)[0]
            if metric_name != name:
                continue
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def children(self) -> list[int]:
        """Processes the worker started that are still alive (the faust runtime's pipeline)."""
        assert self.proc is not None
        found = []
        for entry in Path("/proc").iterdir():
            stat = proc_stat(int(entry.name)) if entry.name.isdigit() else None
            if stat is not None and int(stat[1]) == self.proc.pid and stat[0] != "Z":
                found.append(int(entry.name))
        return found

    def wait_exit(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class LifecycleProcess(WorkerProcess):
    """`recovery-lifecycle` as a process: its /metrics (the case figures), /healthz and /readyz
    on its own port."""

    def __init__(self, settings: Settings, log_dir: Path, name: str = "lifecycle", **kw: Any):
        super().__init__(settings, log_dir, name=name, **kw)
        self.env["ORDER_RECOVERY_LIFECYCLE_METRICS_PORT"] = str(self.port)

    def start(self) -> LifecycleProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "order_recovery.entrypoints.lifecycle"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

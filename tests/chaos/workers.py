"""The campaign's worker processes, supervised the way a deployment would: the members meant to run
all the time (w1, w2) are restarted a second after any exit the campaign did not cause, and every
exit is recorded with its code (-9 for a SIGKILL, 0 for a clean stop, 70 for a bug)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from order_recovery.config import Settings
from tests.support.worker_process import WorkerProcess, alive

log = logging.getLogger("chaos")

#: A supervisor's delay before restarting a worker that exited on its own.
RESTART_AFTER_EXIT_S = 1.0


@dataclass(frozen=True, slots=True)
class Exit:
    at: float  # monotonic
    name: str
    code: int
    caused: bool  # the campaign killed or stopped it


class Ports:
    """Metrics ports for the workers: ephemeral ones, or the free ones of a range (to stay inside
    ports set aside for the campaign on a shared machine)."""

    def __init__(self, base: int | None, size: int = 100) -> None:
        self._range = range(base, base + size) if base else None
        self._next = 0

    def take(self) -> int | None:
        if self._range is None:
            return None  # WorkerProcess picks an ephemeral port
        for _ in self._range:
            port = self._range[self._next % len(self._range)]
            self._next += 1
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
        raise RuntimeError(f"no free metrics port in {self._range}")


class WorkerPool:
    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        runtime: str,
        *,
        static: bool,
        ports: Ports,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.settings, self.log_dir, self.runtime = settings, log_dir, runtime
        self.static, self.ports = static, ports
        self.extra_env = extra_env or {}
        self.exits: list[Exit] = []
        self.starts: Counter[str] = Counter()
        self._workers: dict[str, WorkerProcess] = {}
        self._supervised: set[str] = set()  # restarted after an exit nobody asked for
        self._caused: set[int] = set()  # pids whose exit the campaign caused
        self._recorded: set[int] = set()  # pids whose exit is in `exits`
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="chaos-watchdog", daemon=True)

    # ------------------------------------------------------------------ lifecycle
    def start(
        self, name: str, *, supervised: bool = True, static: bool | None = None
    ) -> WorkerProcess:
        """Start (or restart) worker `name`. Static members keep `name` as their group instance
        id across restarts; a transient joiner is a dynamic member, so it leaves cleanly."""
        env = {**self.extra_env}
        if self.static if static is None else static:
            env["ORDER_RECOVERY_GROUP_INSTANCE_ID"] = name
        with self._lock:  # never two processes under one name (one instance id)
            if supervised:
                self._supervised.add(name)
            if self.running(name):
                return self._workers[name]
            self._record_exits()  # the exit of the process this one replaces
            worker = WorkerProcess(
                self.settings,
                self.log_dir,
                name=name,
                runtime=self.runtime,
                extra_env=env,
                port=self.ports.take(),
            ).start()
            self._workers[name] = worker
            self.starts[name] += 1
        if not self._watchdog.is_alive() and not self._closing.is_set():
            self._watchdog.start()
        return worker

    def worker(self, name: str) -> WorkerProcess:
        return self._workers[name]

    def running(self, name: str) -> bool:
        worker = self._workers.get(name)
        return worker is not None and worker.proc is not None and worker.proc.poll() is None

    def pids(self, name: str) -> list[int]:
        """The worker's process and the processes it started (the faust runtime's pipeline)."""
        worker = self._workers[name]
        assert worker.proc is not None
        return [worker.proc.pid, *worker.children()]

    # ------------------------------------------------------------------ faults
    def kill(self, name: str) -> int | None:
        """SIGKILL the worker's process (its pipeline process, if any, notices and exits). The
        campaign restarts it itself (`start`); until then it is not supervised. None if it had
        already exited on its own."""
        with self._lock:
            self._supervised.discard(name)
            proc = self._workers[name].proc
            if proc is None or proc.poll() is not None:
                return None
            self._caused.add(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            return proc.pid

    def pause(self, name: str) -> list[int]:
        """SIGSTOP the worker and its children, like a frozen VM or a long GC pause (nothing if
        it is not running)."""
        with self._lock:
            if not self.running(name):
                return []
            pids = self.pids(name)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            return pids

    @staticmethod
    def resume(pids: list[int]) -> None:
        for pid in reversed(pids):
            if alive(pid):
                os.kill(pid, signal.SIGCONT)

    def stop(self, name: str, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait: a clean leave. The exit code, or None if it had to be killed."""
        with self._lock:
            worker = self._workers.get(name)
            if worker is None or worker.proc is None or worker.proc.poll() is not None:
                return None
            self._supervised.discard(name)
            self._caused.add(worker.proc.pid)
        worker.signal(signal.SIGTERM)
        try:
            return worker.wait_exit(timeout_s)
        except Exception:
            worker.signal(signal.SIGKILL)
            worker.wait_exit(10)
            return None

    def close(self) -> None:
        self._closing.set()
        for name in list(self._workers):
            self.stop(name)
        if self._watchdog.is_alive():
            self._watchdog.join(5)
        self._record_exits()

    # ------------------------------------------------------------------ supervision
    def _watch(self) -> None:
        restart_at: dict[str, float] = {}
        while not self._closing.wait(0.2):
            now = time.monotonic()
            for name in self._record_exits():
                restart_at[name] = now + RESTART_AFTER_EXIT_S
            for name, at in list(restart_at.items()):
                if at > now:
                    continue
                del restart_at[name]
                with self._lock:
                    if name in self._supervised and not self.running(name):
                        log.warning("%s exited on its own: restarting it", name)
                        self.start(name)

    def _record_exits(self) -> list[str]:
        """Record exits not yet recorded; return the names that exited on their own."""
        unasked = []
        with self._lock:
            for name, worker in self._workers.items():
                proc = worker.proc
                if proc is None or proc.pid in self._recorded:
                    continue
                code = proc.poll()
                if code is None:
                    continue
                self._recorded.add(proc.pid)
                caused = proc.pid in self._caused
                self.exits.append(Exit(time.monotonic(), name, code, caused))
                if not caused:
                    log.warning("%s exited with %d (not caused by the campaign)", name, code)
                    unasked.append(name)
        return unasked

    def exit_codes(self) -> Counter[tuple[int, bool]]:
        return Counter((e.code, e.caused) for e in self.exits)

"""The fault schedule (seeded, jittered) and the injection of each fault.

Faults are injected one at a time in a shuffled order, each after a jittered gap; a fault's own
recovery (a restart, a resume, a service back up) is part of it, but the next fault does not wait
for the group to catch up unless the campaign is told to settle (then catch-up times belong to one
fault each, which is how docs/reliability.md measures static membership).

- worker SIGKILL: one of the two members, restarted 1-3 s later (the same group instance id
  when static membership is on);
- worker SIGSTOP: one member and its children frozen for longer than the session timeout, then
  SIGCONT: it has lost its partitions and wakes up as a zombie with a batch in hand;
- Postgres SIGKILL: the postmaster and every backend at once (a machine crash, not a clean stop),
  restarted with `stack.sh up postgres` (crash recovery replays the WAL);
- Kafka SIGKILL: the broker, restarted with `stack.sh up kafka`;
- rebalance: a third worker (a dynamic member) joins, stays a few seconds and leaves with SIGTERM:
  two forced rebalances.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos.monitor import GroupMonitor, Partition
from tests.chaos.workers import WorkerPool
from tests.support.worker_process import alive, proc_stat

log = logging.getLogger("chaos")

ROOT = Path(__file__).resolve().parents[2]

WORKER_KILL = "worker SIGKILL"
WORKER_PAUSE = "worker SIGSTOP"
POSTGRES_KILL = "postgres SIGKILL"
KAFKA_KILL = "kafka SIGKILL"
REBALANCE = "rebalance"  # scheduled as one fault, recorded as a join and a leave
WORKER_JOIN = "worker join"
WORKER_LEAVE = "worker leave"
KINDS = (WORKER_KILL, WORKER_PAUSE, POSTGRES_KILL, KAFKA_KILL, WORKER_JOIN, WORKER_LEAVE)
MEMBERS = ("w1", "w2")
JOINER = "w3"


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    gap_s: float  # wait before injecting it
    hold_s: float  # restart delay, pause length, or how long the joiner stays
    target: str | None = None


@dataclass(frozen=True, slots=True)
class Counts:
    kills: int = 20
    pauses: int = 2
    postgres_kills: int = 2
    kafka_kills: int = 1
    rebalances: int = 10  # join-and-leave cycles, two rebalances each

    @property
    def total(self) -> int:
        return self.kills + self.pauses + self.postgres_kills + self.kafka_kills + self.rebalances


#: Rough time a fault takes beyond its gap and hold (a service's restart, a worker's start), for
#: spreading the feed over the schedule.
OVERHEAD_S = {WORKER_KILL: 0.5, WORKER_PAUSE: 0.5, POSTGRES_KILL: 4.0, KAFKA_KILL: 15.0}
JOIN_OVERHEAD_S = {"confluent": 4.0, "faust": 10.0}


def plan(
    seed: int, counts: Counts, session_timeout_s: float, gap_s: tuple[float, float]
) -> list[Fault]:
    """The schedule: every fault with its jittered gap and hold, in a seeded random order."""
    rng = random.Random(seed * 7919 + 1)

    def gap() -> float:
        return round(rng.uniform(*gap_s), 2)

    faults = [Fault(WORKER_KILL, gap(), round(rng.uniform(1, 3), 2)) for _ in range(counts.kills)]
    faults += [
        Fault(WORKER_PAUSE, gap(), round(session_timeout_s + rng.uniform(3, 6), 2))
        for _ in range(counts.pauses)
    ]
    faults += [Fault(POSTGRES_KILL, gap(), 0.0) for _ in range(counts.postgres_kills)]
    faults += [Fault(KAFKA_KILL, gap(), 0.0) for _ in range(counts.kafka_kills)]
    faults += [
        Fault(REBALANCE, gap(), round(rng.uniform(3, 8), 2)) for _ in range(counts.rebalances)
    ]
    rng.shuffle(faults)
    return [
        Fault(
            f.kind,
            f.gap_s,
            f.hold_s,
            rng.choice(MEMBERS) if f.kind in (WORKER_KILL, WORKER_PAUSE) else None,
        )
        for f in faults
    ]


def expected_duration_s(faults: list[Fault], runtime: str) -> float:
    return sum(
        f.gap_s
        + f.hold_s
        + (JOIN_OVERHEAD_S[runtime] if f.kind == REBALANCE else OVERHEAD_S[f.kind])
        for f in faults
    )


# ---------------------------------------------------------------------------- the local stack
class LocalStack:
    """Postgres and Kafka of `deploy/local/stack.sh`, killed by the pids in their pid files and
    started again by the script (ports and paths from the same variables the script reads)."""

    def __init__(self, log_path: Path) -> None:
        self.local = Path(os.environ.get("ORDER_RECOVERY_LOCAL_DIR") or ROOT / ".local")
        self.ports = {
            "kafka": int(os.environ.get("LOCAL_KAFKA_PORT") or 19092),
            "postgres": int(os.environ.get("LOCAL_PG_PORT") or 55432),
        }
        self.log_path = log_path

    @staticmethod
    def _pid(pid_file: Path) -> int:
        return int(pid_file.read_text().split("\n", 1)[0].strip())

    def kill_postgres(self) -> list[int]:
        """SIGKILL the postmaster and all its processes at once, as a crash of the machine would.
        The postmaster is frozen first: a backend it forked between listing its children and
        the kill would live on, serving its client from the dead server's memory while a new
        server recovers (a split brain no real crash produces)."""
        postmaster = self._pid(self.local / "pg" / "postmaster.pid")
        os.kill(postmaster, signal.SIGSTOP)
        return self._kill("postgres", [*_children(postmaster), postmaster])

    def kill_kafka(self) -> list[int]:
        return self._kill("kafka", [self._pid(self.local / "kafka" / "kafka.pid")])

    def _kill(self, service: str, pids: list[int]) -> list[int]:
        """SIGKILL, then wait until the processes are gone and their port is closed: a killed
        JVM's leader thread shows as a zombie while its other threads still hold the socket."""
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(map(alive, pids)) or _port_open(self.ports[service]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{service} {pids} still up 30 s after SIGKILL")
            time.sleep(0.05)
        # Postgres refuses to start while its lock file names a pid that still exists, and a
        # zombie does until init reaps it (which can take a moment here).
        reaped = time.monotonic() + 10
        while any(proc_stat(pid) is not None for pid in pids) and time.monotonic() < reaped:
            time.sleep(0.05)
        return pids

    def up(self, service: str) -> float:
        """Start a service (retried: a port can linger a moment); return how long it took."""
        started = time.monotonic()
        for attempt in range(5):
            with self.log_path.open("ab") as out:
                done = subprocess.run(
                    [str(ROOT / "deploy/local/stack.sh"), "up", service],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
            if done.returncode == 0:
                return time.monotonic() - started
            log.warning(
                "stack.sh up %s failed (attempt %d); see %s", service, attempt + 1, self.log_path
            )
            time.sleep(2)
        raise RuntimeError(f"{service} did not come back; see {self.log_path}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        stat = proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if stat is not None and int(stat[1]) == parent:
            found.append(int(entry.name))
    return found


# ---------------------------------------------------------------------------- injection
@dataclass(slots=True)
class Injected:
    """A fault as it happened. A rebalance is recorded as two: the join and the leave."""

    kind: str
    at: float  # monotonic: when it struck
    ended: float = 0.0  # when its own part was over (restarted, resumed, back up, joined, left)
    ends: dict[Partition, int] = field(default_factory=dict)  # source end offsets at `ended`
    detail: str = ""
    caught_up: float | None = None

    @property
    def catch_up_s(self) -> float | None:
        """From the fault until everything produced before its own part was over is committed
        (see monitor.py)."""
        return None if self.caught_up is None else self.caught_up - self.at


@dataclass
class Injector:
    pool: WorkerPool
    stack: LocalStack
    monitor: GroupMonitor
    settle_timeout_s: float | None = None  # wait for catch-up before the next fault
    injected: list[Injected] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(
        self, faults: list[Fault], on_each: Callable[[Injected], None] = lambda i: None
    ) -> None:
        for fault in faults:
            if self.stop.wait(fault.gap_s):
                return
            for injected in self.inject(fault):
                self.injected.append(injected)
                on_each(injected)
                if self.settle_timeout_s:
                    self.monitor.wait_caught_up(
                        injected.ends, injected.ended, self.settle_timeout_s
                    )

    def inject(self, fault: Fault) -> list[Injected]:
        if fault.kind == REBALANCE:
            return [self._join(), self._leave(fault.hold_s)]
        injected = Injected(fault.kind, time.monotonic())
        at = injected.at
        if fault.kind == WORKER_KILL:
            assert fault.target is not None
            pid = self.pool.kill(fault.target)
            time.sleep(fault.hold_s)
            self.pool.start(fault.target)
            killed = f"pid {pid}" if pid else "had exited on its own"
            injected.detail = f"{fault.target} ({killed}) restarted after {fault.hold_s:.1f} s"
        elif fault.kind == WORKER_PAUSE:
            assert fault.target is not None
            pids = self.pool.pause(fault.target)
            try:
                time.sleep(fault.hold_s)
            finally:  # never leave a worker frozen behind
                self.pool.resume(pids)
            injected.detail = f"{fault.target} (pids {pids}) resumed after {fault.hold_s:.1f} s"
        elif fault.kind == POSTGRES_KILL:
            try:
                pids = self.stack.kill_postgres()
            finally:  # never leave the stack down behind
                self.stack.up("postgres")
            injected.detail = (
                f"{len(pids)} processes killed, back up after {time.monotonic() - at:.1f} s"
            )
        elif fault.kind == KAFKA_KILL:
            try:
                self.stack.kill_kafka()
            finally:
                self.stack.up("kafka")
            injected.detail = f"back up after {time.monotonic() - at:.1f} s"
        return [self._over(injected)]

    def _join(self) -> Injected:
        injected = Injected(WORKER_JOIN, time.monotonic())
        joiner = self.pool.start(JOINER, supervised=False, static=False)
        try:
            joiner.wait_ready(60)
            injected.detail = f"{JOINER} ready after {time.monotonic() - injected.at:.1f} s"
        except AssertionError:
            injected.detail = f"{JOINER} not ready after 60 s"
        return self._over(injected)

    def _leave(self, after_s: float) -> Injected:
        time.sleep(after_s)
        injected = Injected(WORKER_LEAVE, time.monotonic())
        code = self.pool.stop(JOINER)
        injected.detail = f"{JOINER} stopped {after_s:.1f} s after joining (exit {code})"
        return self._over(injected)

    def _over(self, injected: Injected) -> Injected:
        injected.ended = time.monotonic()
        injected.ends = self._ends()
        log.info("%s: %s", injected.kind, injected.detail)
        return injected

    def _ends(self) -> dict[Partition, int]:
        """The source topics' end offsets now (from the last sample when the broker is slow)."""
        try:
            return self.monitor.end_offsets(timeout_s=10.0)
        except Exception:
            return self.monitor.samples[-1].ends if self.monitor.samples else {}

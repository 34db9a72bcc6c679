"""`make bench`: the worker's throughput against the floors of the same broker and database.

One run, one broker, one topic set, N preloaded events (default 200,000 from the sample feed):
  floor A  raw confluent-kafka consume, commit per batch (no processing)
  floor B  raw consume + COPY one row per event into Postgres + commit (the I/O limit)
  floor C  a faust agent that only counts events
  worker   each runtime, end to end: every event decided in Postgres, every outcome published
  latency  produce -> decision committed (Postgres commit timestamp), at half the measured maximum,
           in steady state (after a warm-up set is decided)
  scaling  two worker processes against one, same topic (6 partitions)
  plain    the plain consumer (bench/plain_consumer.py): issue 19's baseline, one record at a
           time with a read and a statement per row and a commit per record, on the first
           BENCH_PLAIN_EVENTS decisions of the same topic
  DLQ      `dlq replay` with no rate cap on BENCH_DLQ_EVENTS dead letters, then the worker
           deciding the replayed records
  CPU      during each worker run: the worker's CPU per decision, everything else's (Kafka,
           Postgres, this script), and how busy the machine's cores were; the figures that say
           whether a ratio is bound by the worker's code or by the cores it shares
Each measurement is repeated (default 3) and the medians are reported, with the ratios that matter
(worker / floor B, faust worker / floor C) computed within the run. Machines are shared and noisy:
quote the ratios, not a lone absolute figure. Issue 19's figures (bench/figures.py) are computed
per repetition and printed last, as medians with their samples, targets and verdicts; they are in
latest.json under their own keys ({"median", "samples", "target", "met", ...}).

Environment: BENCH_EVENTS (200000), BENCH_REPEAT (3), BENCH_LATENCY_S (20),
BENCH_LATENCY_EXTRA_RPS (500,2000: fixed loads, measured in every repetition like half the
maximum), BENCH_PLAIN_EVENTS (5000: about 60/s here), BENCH_DLQ_EVENTS (50000),
BENCH_WORKER_ERR (a file for the workers' stderr, for diagnosis; discarded by default), plus
the usual KAFKA_BOOTSTRAP_SERVERS and DATABASE_*_URL (the local stack by default): the worker runs
as its own role in scratch databases that the superuser of DATABASE_ADMIN_URL makes.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.dlq_replay import preload_dead_letters, timed_replay  # noqa: E402
from bench.figures import TARGETS, figure_lines, figures  # noqa: E402
from order_recovery.adapters.kafka_admin import delete_topics, ensure_topics  # noqa: E402
from order_recovery.adapters.kafka_messages import produce_all  # noqa: E402
from order_recovery.config import Settings  # noqa: E402
from order_recovery.core.records import OutgoingMessage  # noqa: E402
from order_recovery.domain.sample import sample_events  # noqa: E402
from tests.support.databases import admin_url, scratch_database  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PARTITIONS = 6


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- set-up
def fresh_settings(base: Settings, tag: str) -> Settings:
    return replace(
        base,
        topic_prefix=f"bench{tag}.",
        consumer_group=f"bench{tag}",
        topic_partitions=PARTITIONS,
    )


def preload(settings: Settings, events: list[dict[str, Any]]) -> None:
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
        }
    )
    produce_all(producer, (OutgoingMessage(*_message(settings, e)) for e in events))
    assert producer.flush(60) == 0


def _message(settings: Settings, event: dict[str, Any]) -> tuple[str, bytes, bytes]:
    """An event as its producer sends it: (topic, key, value)."""
    return (
        settings.source_topic(event["event_type"]),
        event["order_id"].encode(),
        orjson.dumps(event),
    )


# ---------------------------------------------------------------------------- floors
def _consumer(settings: Settings, group: str) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 50,
        }
    )
    consumer.subscribe(list(settings.source_topics))
    return consumer


def _consume_all(
    settings: Settings, total: int, handle: Callable[[list[Any]], None], batch: int = 1000
) -> float:
    consumer = _consumer(settings, f"{settings.consumer_group}-{uuid.uuid4().hex[:6]}")
    seen, first, started = 0, 0, 0.0
    try:
        while seen < total:
            messages = [m for m in consumer.consume(batch, timeout=1.0) if m.error() is None]
            if not messages:
                continue
            handle(messages)
            consumer.commit(asynchronous=False, offsets=_next_offsets(messages))
            if not started:
                started, first = time.perf_counter(), len(messages)
            seen += len(messages)
        return (seen - first) / (time.perf_counter() - started)
    finally:
        consumer.close()


def _next_offsets(messages: list[Any]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        last[(m.topic(), m.partition())] = m.offset() + 1
    return [TopicPartition(t, p, o) for (t, p), o in last.items()]


def floor_a(settings: Settings, total: int) -> float:
    return _consume_all(settings, total, lambda messages: None)


def floor_b(settings: Settings, total: int, dsn: str) -> float:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_floor (topic text, part int, off bigint, value bytea)"
        )
        conn.commit()

        def copy_batch(messages: list[Any]) -> None:
            with (
                conn.cursor() as cur,
                cur.copy("COPY bench_floor (topic, part, off, value) FROM STDIN") as copy,
            ):
                for m in messages:
                    copy.write_row((m.topic(), m.partition(), m.offset(), m.value()))
            conn.commit()

        return _consume_all(settings, total, copy_batch)


FAUST_COUNT_APP = """
import json, os, time, faust
N = int(os.environ["BENCH_N"])
app = faust.App(os.environ["BENCH_GROUP"], broker="kafka://" + os.environ["BENCH_BOOTSTRAP"],
                value_serializer="raw", store="memory://", web_enabled=False,
                topic_disable_leader=True, consumer_auto_offset_reset="earliest",
                datadir=os.environ["BENCH_DATADIR"])
topic = app.topic(*os.environ["BENCH_TOPICS"].split(","), value_type=bytes)
state = {"n": 0, "first": 0.0}

@app.agent(topic)
async def count(stream):
    async for _ in stream:
        state["n"] += 1
        if state["n"] == 1:
            state["first"] = time.perf_counter()
        if state["n"] == N:
            rate = (N - 1) / (time.perf_counter() - state["first"])
            with open(os.environ["BENCH_OUT"], "w") as out:
                json.dump({"rps": rate}, out)

if __name__ == "__main__":
    app.main()
"""


def floor_c(settings: Settings, total: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        app, out = Path(tmp) / "count_app.py", Path(tmp) / "result.json"
        app.write_text(FAUST_COUNT_APP)
        env = {
            **os.environ,
            "BENCH_N": str(total),
            "BENCH_OUT": str(out),
            "BENCH_GROUP": f"{settings.consumer_group}-count-{uuid.uuid4().hex[:6]}",
            "BENCH_BOOTSTRAP": settings.kafka_bootstrap_servers,
            "BENCH_TOPICS": ",".join(settings.source_topics),
            "BENCH_DATADIR": str(Path(tmp) / "d"),
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        log_path = RESULTS / "floor_c.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, str(app), "worker", "-l", "warn"],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 600
            while not out.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"faust counting agent did not finish; see {log_path}")
                time.sleep(0.2)
            time.sleep(0.1)
            return float(json.loads(out.read_text())["rps"])
        finally:
            proc.terminate()
            proc.wait(30)


# ---------------------------------------------------------------------------- the worker
class WorkerRun:
    def __init__(self, settings: Settings, dsn: str, runtime: str, name: str) -> None:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "DATABASE_URL": dsn,
            "ORDER_RECOVERY_TOPIC_PREFIX": settings.topic_prefix,
            "ORDER_RECOVERY_CONSUMER_GROUP": settings.consumer_group,
            "ORDER_RECOVERY_METRICS_PORT": "0",
            "ORDER_RECOVERY_WORKER_ID": name,
            "ORDER_RECOVERY_LOG_LEVEL": "WARNING",
        }
        with open(os.environ.get("BENCH_WORKER_ERR", os.devnull), "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "order_recovery.entrypoints.worker", "--runtime", runtime],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def peak_rss_mb(self) -> float:
        """The peak resident memory of the worker: of its process and every process it started
        (the faust runtime runs its pipeline in a second process), summed."""
        total = 0.0
        for pid in process_tree(self.proc.pid):
            with contextlib.suppress(OSError):  # gone meanwhile
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) / 1024
        return total

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Progress:
    """Polls the worker's database for completion, twice a second on one connection: the
    benchmark shares the worker's cores, so it must not spend them watching (a fresh connection
    and a count every 50 ms cost Postgres a third of a core)."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)

    def counts(self) -> tuple[int, int]:
        """(decisions written, outcomes not yet marked published), from the outbox alone: every
        written decision is in exactly one outbox batch, a row per batch, so this reads a few
        hundred rows where `count(*) FROM decisions` scanned the whole table (a tenth of
        Postgres's CPU during a run, spent on the benchmark rather than the worker)."""
        row = self.conn.execute(
            "SELECT coalesce(sum(cardinality(event_ids)), 0),"
            " coalesce(sum(cardinality(event_ids)) FILTER (WHERE published_at IS NULL), 0)"
            " FROM outbox_batches"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def rate(self) -> float:
        """Decisions per second between the first batch's transaction and the last outcome
        marked published, from the database's own clock: precise whatever the poll interval.
        The first batch itself is left out (its start is not a transaction time)."""
        row = self.conn.execute(
            """WITH t AS (SELECT min(decided_at) AS t0 FROM decisions)
               SELECT (SELECT count(*) FROM decisions, t WHERE decided_at > t.t0),
                      extract(epoch FROM (SELECT max(published_at) FROM outbox_batches) - t.t0)
               FROM t"""
        ).fetchone()
        assert row is not None
        return int(row[0]) / float(row[1])

    def close(self) -> None:
        self.conn.close()


@dataclass(frozen=True)
class CpuSample:
    """Clock ticks: the whole machine's busy and total time (/proc/stat), and the workers'."""

    busy: int
    total: int
    workers: int

    @classmethod
    def take(cls, pids: list[int]) -> CpuSample:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        workers = 0
        for pid in (p for root in pids for p in process_tree(root)):
            with contextlib.suppress(OSError):  # gone meanwhile
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                workers += int(stat[11]) + int(stat[12])  # utime + stime
        return cls(sum(fields) - idle, sum(fields), workers)


def process_tree(root: int) -> list[int]:
    """`root` and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


@dataclass(frozen=True)
class WorkerFigures:
    rate: float
    peak_rss_mb: float
    # CPU per decision, in microseconds: the worker processes, and everything else on the
    # machine (Kafka, Postgres, this script); and how busy the machine's cores were.
    worker_cpu_us: float
    other_cpu_us: float
    machine_busy_pct: float


def worker_rate(
    settings: Settings, dsn: str, runtime: str, decisions: int, processes: int = 1
) -> WorkerFigures:
    """Decisions per second from the first decision to the last one committed with every outcome
    published; the largest peak RSS of the worker processes; where the CPU went meanwhile."""
    runs = [WorkerRun(settings, dsn, runtime, f"bench-{runtime}-{i}") for i in range(processes)]
    pids = [r.proc.pid for r in runs]
    progress = Progress(dsn)
    try:
        deadline = time.monotonic() + 900
        first: tuple[CpuSample, int] | None = None
        while True:
            done, unpublished = progress.counts()
            if done and first is None:
                first = (CpuSample.take(pids), done)
            if done >= decisions and unpublished == 0:
                break
            if time.monotonic() > deadline or any(r.proc.poll() is not None for r in runs):
                raise RuntimeError(f"{runtime} worker stopped or stalled at {done}/{decisions}")
            time.sleep(0.5)
        last = CpuSample.take(pids)
        assert first is not None
        start, counted = first
        tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
        n = max(1, done - counted)
        worker_ticks = last.workers - start.workers
        return WorkerFigures(
            rate=progress.rate(),
            peak_rss_mb=max(r.peak_rss_mb() for r in runs),
            worker_cpu_us=worker_ticks * tick_us / n,
            other_cpu_us=(last.busy - start.busy - worker_ticks) * tick_us / n,
            machine_busy_pct=100 * (last.busy - start.busy) / max(1, last.total - start.total),
        )
    finally:
        progress.close()
        for r in runs:
            r.stop()


def plain_consumer(settings: Settings, dsn: str, decisions: int) -> dict[str, float]:
    """The plain consumer's rate and CPU per decision, as it measures them itself (from its first
    decision on), in its own process like the worker."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "plain.json"
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "DATABASE_URL": dsn,
            "ORDER_RECOVERY_TOPIC_PREFIX": settings.topic_prefix,
            "ORDER_RECOVERY_CONSUMER_GROUP": settings.consumer_group,
        }
        with open(os.environ.get("BENCH_WORKER_ERR", os.devnull), "ab") as err:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "bench" / "plain_consumer.py"),
                    str(decisions),
                    str(out),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            code = proc.wait(1800)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise RuntimeError("plain consumer did not finish in 30 minutes") from None
        if code != 0:
            raise RuntimeError(f"plain consumer exited with {code} (BENCH_WORKER_ERR keeps stderr)")
        return dict(json.loads(out.read_text()))


def dlq_replay(base: Settings, admin: str, count: int) -> tuple[float, float]:
    """(replay records/s, the confluent worker's decisions/s on the replayed records): a fresh
    topic set whose DLQ topics hold `count` dead letters, replayed uncapped onto its source
    topics, then decided by a worker from the start in a scratch database."""
    settings = fresh_settings(base, f"dlq{uuid.uuid4().hex[:6]}")
    ensure_topics(settings.kafka_bootstrap_servers, settings.all_topics, PARTITIONS, 1)
    try:
        preload_dead_letters(settings, count, PARTITIONS)
        sent, replay_rps = timed_replay(settings)
        with scratch_database(admin, base, "bench") as database:
            decided = worker_rate(settings, database.database_url, "confluent", sent)
        return replay_rps, decided.rate
    finally:
        delete_topics(settings.kafka_bootstrap_servers, settings.all_topics)


def latency(
    base: Settings, admin: str, runtime: str, rate: float, seconds: float
) -> tuple[float, float]:
    """p50/p99 ms from the producer's timestamp to the commit of the decision's transaction
    (Postgres's commit timestamp of the row), at a fixed offered load, in steady state: the clock
    starts once the worker has decided a warm-up set (joined its group, got every partition,
    connected, through a first batch), so a slow start is not counted as latency under load."""
    settings = fresh_settings(base, f"lat{uuid.uuid4().hex[:6]}")
    ensure_topics(settings.kafka_bootstrap_servers, settings.all_topics, PARTITIONS, 1)
    try:
        with scratch_database(admin, base, "bench") as database:
            return _latency(settings, database.database_url, runtime, rate, seconds)
    finally:
        delete_topics(settings.kafka_bootstrap_servers, settings.all_topics)


def _latency(
    settings: Settings, dsn: str, runtime: str, rate: float, seconds: float
) -> tuple[float, float]:
    run = WorkerRun(settings, dsn, runtime, "bench-latency")
    # librdkafka's default linger (5 ms), as an upstream producer would run it; the record
    # timestamp is taken at produce(), so the linger counts against our latency. The warm-up
    # goes through it too, so it is connected before the clock starts.
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    try:
        warm_up = sample_events(WARM_UP_EVENTS, seed=98, duplicate_pct=0)
        _offer(producer, [_message(settings, e) for e in warm_up], rate)
        _wait_for_decisions(dsn, WARM_UP_EVENTS, run, timeout_s=120)
        events = sample_events(int(rate * seconds), seed=99, duplicate_pct=0)
        messages = [_message(settings, e) for e in events]
        del events
        _offer(producer, messages, rate)
        _wait_for_decisions(dsn, WARM_UP_EVENTS + len(messages), run, timeout_s=120)
        produced_at = _produce_timestamps(settings)
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                """SELECT source_topic, source_partition, source_offset,
                          extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000
                   FROM decisions WHERE event_id <> ALL(%s::uuid[])""",
                ([e["event_id"] for e in warm_up],),
            ).fetchall()
        latencies = sorted(float(ms) - produced_at[(t, p, off)] for t, p, off, ms in rows)
        return _percentile(latencies, 50), _percentile(latencies, 99)
    finally:
        run.stop()


#: Decided before the latency clock starts; enough to land on every partition.
WARM_UP_EVENTS = 60


def _offer(producer: Producer, messages: list[tuple[str, bytes, bytes]], rate: float) -> None:
    """Produce `messages` at `rate` per second. The messages are encoded beforehand and the
    collector is off meanwhile: this script shares the worker's cores, and its own pauses (a full
    collection of the prepared events took up to 90 ms) made the offered load come in bursts."""
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        sent = 0
        while sent < len(messages):
            # Everything due by now, then a millisecond's sleep: the offered load stays exact
            # without a sleep call per event eating the cores the worker runs on.
            due = min(len(messages), int((time.perf_counter() - started) * rate) + 1)
            for topic, key, value in messages[sent:due]:
                producer.produce(topic, key=key, value=value)
            sent = due
            producer.poll(0)
            time.sleep(0.001)
        producer.flush(30)
    finally:
        gc.enable()


def _wait_for_decisions(dsn: str, count: int, run: WorkerRun, timeout_s: float) -> None:
    """Until `count` decisions are written and every outcome is published."""
    deadline = time.monotonic() + timeout_s
    progress = Progress(dsn)
    try:
        while progress.counts() != (count, 0):
            if run.proc.poll() is not None:
                raise RuntimeError(f"latency worker exited with {run.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"latency run did not reach {count} decisions")
            time.sleep(0.2)
    finally:
        progress.close()


def _produce_timestamps(settings: Settings) -> dict[tuple[str, int, int], float]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": "bench-ts",
            "enable.auto.commit": False,
        }
    )
    out: dict[tuple[str, int, int], float] = {}
    try:
        for topic in settings.source_topics:
            for p in range(PARTITIONS):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high <= low:
                    continue
                consumer.assign([TopicPartition(topic, p, low)])
                while True:
                    msgs = consumer.consume(1000, timeout=2)
                    for m in msgs:
                        out[(topic, p, m.offset())] = float(m.timestamp()[1])
                    if not msgs or msgs[-1].offset() + 1 >= high:
                        break
    finally:
        consumer.close()
    return out


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    index = min(len(values) - 1, round(pct / 100 * (len(values) - 1)))
    return values[index]


# ---------------------------------------------------------------------------- main
def main() -> int:
    total = int(os.environ.get("BENCH_EVENTS", "200000"))
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    latency_s = float(os.environ.get("BENCH_LATENCY_S", "20"))
    plain_events = int(os.environ.get("BENCH_PLAIN_EVENTS", "5000"))
    dlq_events = int(os.environ.get("BENCH_DLQ_EVENTS", "50000"))
    fixed_loads = [
        float(r) for r in os.environ.get("BENCH_LATENCY_EXTRA_RPS", "500,2000").split(",") if r
    ]
    base = Settings.from_env()
    admin = admin_url()
    tag = uuid.uuid4().hex[:6]
    settings = fresh_settings(base, tag)
    ensure_topics(settings.kafka_bootstrap_servers, settings.all_topics, PARTITIONS, 1)
    events = sample_events(total, seed=2026)
    decisions = len({e["event_id"] for e in events})
    plain_decisions = min(plain_events, decisions)
    log(f"preloading {total} events ({decisions} distinct) into {settings.topic_prefix}*")
    preload(settings, events)

    samples: dict[str, list[float]] = {
        k: []
        for k in (
            "floor_a_rps",
            "floor_b_rps",
            "floor_c_rps",
            "worker_confluent_rps",
            "worker_faust_rps",
            "two_workers_rps",
            "plain_consumer_rps",
            "plain_consumer_cpu_us_per_event",
            "worker_peak_rss_mb",
            "worker_peak_rss_mb_per_repetition",
            "confluent_peak_rss_mb_per_repetition",
            "worker_confluent_peak_rss_mb",
            "worker_faust_peak_rss_mb",
            "dlq_replay_rps",
            "dlq_replayed_worker_rps",
            *(
                f"worker_{runtime}_{figure}"
                for runtime in ("confluent", "faust")
                for figure in ("cpu_us_per_event", "other_cpu_us_per_event", "machine_busy_pct")
            ),
        )
    }
    try:
        for rep in range(1, repeat + 1):
            log(f"repetition {rep}/{repeat}")
            samples["floor_a_rps"].append(floor_a(settings, total))
            with scratch_database(admin, base, "bench") as database:
                # The floor's own table: the owner creates it.
                samples["floor_b_rps"].append(floor_b(settings, total, database.database_owner_url))
            samples["floor_c_rps"].append(floor_c(settings, total))
            rss: list[float] = []
            for runtime in ("confluent", "faust"):
                group = replace(
                    settings, consumer_group=f"{settings.consumer_group}-{runtime}{rep}"
                )
                with scratch_database(admin, base, "bench") as database:
                    measured = worker_rate(group, database.database_url, runtime, decisions)
                samples[f"worker_{runtime}_rps"].append(measured.rate)
                rss.append(measured.peak_rss_mb)
                samples[f"worker_{runtime}_peak_rss_mb"].append(measured.peak_rss_mb)
                samples[f"worker_{runtime}_cpu_us_per_event"].append(measured.worker_cpu_us)
                samples[f"worker_{runtime}_other_cpu_us_per_event"].append(measured.other_cpu_us)
                samples[f"worker_{runtime}_machine_busy_pct"].append(measured.machine_busy_pct)
            group = replace(settings, consumer_group=f"{settings.consumer_group}-two{rep}")
            with scratch_database(admin, base, "bench") as database:
                two = worker_rate(group, database.database_url, "confluent", decisions, processes=2)
            samples["two_workers_rps"].append(two.rate)
            rss.append(two.peak_rss_mb)
            samples["worker_peak_rss_mb"] += rss
            samples["worker_peak_rss_mb_per_repetition"].append(max(rss))
            # The default runtime's: one process per worker, alone or beside a second.
            samples["confluent_peak_rss_mb_per_repetition"].append(
                max(samples["worker_confluent_peak_rss_mb"][-1], two.peak_rss_mb)
            )
            group = replace(settings, consumer_group=f"{settings.consumer_group}-plain{rep}")
            with scratch_database(admin, base, "bench") as database:
                plain = plain_consumer(group, database.database_url, plain_decisions)
            samples["plain_consumer_rps"].append(plain["rps"])
            samples["plain_consumer_cpu_us_per_event"].append(plain["cpu_us_per_decision"])
            replay_rps, replayed_rps = dlq_replay(base, admin, dlq_events)
            samples["dlq_replay_rps"].append(replay_rps)
            samples["dlq_replayed_worker_rps"].append(replayed_rps)
            log("  " + ", ".join(f"{k}={v[-1]:.0f}" for k, v in samples.items() if v))
    finally:
        delete_topics(settings.kafka_bootstrap_servers, settings.all_topics)

    med = {k: statistics.median(v) for k, v in samples.items()}
    best = max(med["worker_confluent_rps"], med["worker_faust_rps"])
    best_runtime = (
        "confluent" if med["worker_confluent_rps"] >= med["worker_faust_rps"] else "faust"
    )
    # Latency in every repetition: at half the maximum (the median maximum of the run) and at
    # each fixed load, one run of each per repetition.
    p50s: list[float] = []
    p99s: list[float] = []
    fixed: dict[float, list[tuple[float, float]]] = {rate: [] for rate in fixed_loads}
    for rep in range(1, repeat + 1):
        log(f"latency {rep}/{repeat} at {best / 2:.0f} events/s (half of {best_runtime}'s maximum)")
        p50, p99 = latency(base, admin, best_runtime, best / 2, latency_s)
        p50s.append(p50)
        p99s.append(p99)
        for rate in fixed_loads:
            log(f"latency {rep}/{repeat} at a fixed {rate:.0f} events/s")
            fixed[rate].append(latency(base, admin, best_runtime, rate, latency_s))
    samples["p50_latency_ms"], samples["p99_latency_ms"] = p50s, p99s
    extra = {}
    for rate, pairs in fixed.items():
        samples[f"p50_latency_ms_at_{rate:.0f}_rps"] = [p50 for p50, _ in pairs]
        samples[f"p99_latency_ms_at_{rate:.0f}_rps"] = [p99 for _, p99 in pairs]
        extra[f"latency_at_{rate:.0f}_rps_ms"] = [
            round(statistics.median(p50 for p50, _ in pairs), 1),
            round(statistics.median(p99 for _, p99 in pairs), 1),
        ]
    figure_keys = {t.key for t in TARGETS}
    result = {
        "events": total,
        "distinct_events": decisions,
        "repetitions": repeat,
        "plain_consumer_decisions": plain_decisions,
        "dlq_events": dlq_events,
        **{k: round(v, 1) for k, v in med.items() if k not in figure_keys},
        # A ceiling over every worker run of the bench, not a median.
        "worker_peak_rss_mb_max": round(max(samples["worker_peak_rss_mb"]), 1),
        "worker_confluent_over_floor_b": round(med["worker_confluent_rps"] / med["floor_b_rps"], 3),
        "worker_faust_over_floor_c": round(med["worker_faust_rps"] / med["floor_c_rps"], 3),
        "two_workers_ratio": round(med["two_workers_rps"] / med["worker_confluent_rps"], 3),
        "latency_runtime": best_runtime,
        "latency_offered_rps": round(best / 2, 1),
        "p50_latency_ms": round(statistics.median(p50s), 1),
        "p99_latency_ms": round(statistics.median(p99s), 1),
        **extra,
        # Issue 19's figures, each {"median", "samples", "target", "met", ...}.
        **figures(samples, repeat),
        "samples": {k: [round(x, 1) for x in v] for k, v in samples.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    return 0


def print_table(r: dict[str, Any]) -> None:
    rows = [
        ("floor A: raw consume + commit per batch", f"{r['floor_a_rps']:>10,.0f} /s"),
        ("floor B: consume + COPY + commit", f"{r['floor_b_rps']:>10,.0f} /s"),
        ("floor C: faust agent that counts", f"{r['floor_c_rps']:>10,.0f} /s"),
        ("worker, confluent runtime", f"{r['worker_confluent_rps']:>10,.0f} /s"),
        ("worker, faust runtime", f"{r['worker_faust_rps']:>10,.0f} /s"),
        ("two confluent workers", f"{r['two_workers_rps']:>10,.0f} /s"),
        ("confluent worker / floor B", f"{r['worker_confluent_over_floor_b']:>10.1%}"),
        ("faust worker / floor C", f"{r['worker_faust_over_floor_c']:>10.1%}"),
        ("two workers / one", f"{r['two_workers_ratio']:>10.2f}x"),
        (
            f"p50 latency at {r['latency_offered_rps']:,.0f}/s ({r['latency_runtime']})",
            f"{r['p50_latency_ms']:>10.1f} ms",
        ),
        ("p99 latency", f"{r['p99_latency_ms']:>10.1f} ms"),
        ("plain consumer (issue 19's baseline)", f"{r['plain_consumer_rps']:>10,.0f} /s"),
        ("DLQ replay, then the worker on it", f"{r['dlq_replayed_worker_rps']:>10,.0f} /s"),
        ("worker peak RSS, every run", f"{r['worker_peak_rss_mb_max']:>10.1f} MB"),
    ]
    for runtime in ("confluent", "faust"):
        rows.append(
            (
                f"CPU per decision, {runtime}: worker / Kafka+Postgres+rest, cores busy",
                f"{r[f'worker_{runtime}_cpu_us_per_event']:>6.0f} / "
                f"{r[f'worker_{runtime}_other_cpu_us_per_event']:.0f} us, "
                f"{r[f'worker_{runtime}_machine_busy_pct']:.0f}%",
            )
        )
    for key, (p50, p99) in ((k, v) for k, v in r.items() if k.startswith("latency_at_")):
        rate = key.removeprefix("latency_at_").removesuffix("_rps_ms")
        rows.append((f"p50 / p99 latency at a fixed {rate}/s", f"{p50:>6.1f} / {p99:.1f} ms"))
    width = max(len(a) for a, _ in rows)
    print(f"order-recovery benchmark: {r['events']:,} events, medians of {r['repetitions']}")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    print(f"issue 19's figures: medians of {r['repetitions']}, each repetition's samples")
    for line in figure_lines(r):
        print(f"  {line}")


if __name__ == "__main__":
    sys.exit(main())

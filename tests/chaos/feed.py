"""The campaign's feed: seeded, built in memory before anything runs, then produced at a steady rate
by an idempotent producer that records where every record landed (partition and offset), so the
checker knows each valid event's place in its partition and each poison record's exact address.

The feed is built so decisions depend on earlier events across partitions, workers and crashes:

- refund clusters: hundreds of buyers, each with several refunds on one business day, every one on
  an order of its own, half as fresh-goods shipping delays (full refund) and half as pinduoduo
  logistics exceptions (refund first), produced back to back: they land on two topics and several
  partitions at once, so two workers decide the same buyer's refunds at the same time and the
  refunds-per-buyer-per-day cap binds across them;
- coupon orders: two or three shipping delays of one order with different event ids (the second
  coupon must be refused);
- payment-freeze orders: five payment timeouts of one order (more than three attempts freezes it);
- the sample mix (`order_recovery.domain.sample`) around them, one buyer per order;
- about 2% exact duplicates (redeliveries of earlier events) and poison of every kind.

Every event but the poison is valid per the schemas; the builder checks that as it goes.
"""

from __future__ import annotations

import base64
import copy
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer

from order_recovery.config import Settings
from order_recovery.domain.contract import decode_event
from order_recovery.domain.history import SHANGHAI
from order_recovery.domain.sample import PLATFORMS, SAMPLE_START, sample_events

EVENT = "event"
DUPLICATE = "duplicate"
MALFORMED = "malformed_json"
SCHEMA = "schema_violation"
UNKNOWN_PLATFORM = "unknown_platform"
UNKNOWN_TYPE = "unknown_event_type"
OVERSIZED = "oversized"
POISON_KINDS = (MALFORMED, SCHEMA, UNKNOWN_PLATFORM, UNKNOWN_TYPE, OVERSIZED)
#: An oversized record's value: above what the worker's producer accepts (librdkafka's
#: message.max.bytes, 1,000,000), so its dead letter cannot be sent as it is, and below the
#: broker's record batch limit (1,048,588), so the feed can produce it. Random, so compression
#: does not shrink it.
OVERSIZED_BYTES = 1_040_000
#: Refunds per cluster buyer: around the cap of 5 (shipped policies), mostly above it.
CLUSTER_SIZES = (3, 4, 5, 6, 6, 7, 8, 9)


@dataclass(slots=True)
class FeedRecord:
    event_type: str  # the topic's event type
    key: bytes | None
    value: bytes
    kind: str  # EVENT, DUPLICATE or a poison kind
    event: dict[str, Any] | None = None  # the valid event (EVENT, DUPLICATE)
    scenario: str = ""  # which part of the feed it belongs to
    partition: int = -1  # where it landed, once the broker acknowledged it
    offset: int = -1
    produced_at: float = 0.0  # monotonic time of the produce call


@dataclass(slots=True)
class Feed:
    seed: int
    records: list[FeedRecord]

    @property
    def valid(self) -> list[FeedRecord]:
        return [r for r in self.records if r.event is not None]

    @property
    def poison(self) -> list[FeedRecord]:
        return [r for r in self.records if r.event is None]

    def summary(self) -> dict[str, int]:
        counts = Counter(r.kind for r in self.records)
        scenarios = Counter(r.scenario for r in self.records if r.kind == EVENT)
        return {
            "records": len(self.records),
            "valid events": counts[EVENT],
            "exact duplicates": counts[DUPLICATE],
            **{f"poison: {k}": counts[k] for k in POISON_KINDS},
            **{f"events: {k}": n for k, n in sorted(scenarios.items())},
        }


# ---------------------------------------------------------------------------- valid events
def _iso(at: datetime) -> str:
    return at.isoformat()


class _Builder:
    """Events of the dependent scenarios, each valid per the schemas (checked when built)."""

    def __init__(self, rng: random.Random, seed: int) -> None:
        self.rng = rng
        self.seed = seed
        self.orders = 0

    def _event_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def order_id(self, scenario: str) -> str:
        self.orders += 1
        return f"{scenario}-{self.seed}-{self.orders:06d}"

    def _envelope(
        self,
        event_type: str,
        order_id: str,
        buyer_id: str,
        at: datetime,
        *,
        platform: str,
        category: str,
        created: datetime,
    ) -> dict[str, Any]:
        # No merchant DSR, parcel weight or high amount: no risk control but the one under test
        # holds these decisions.
        return {
            "event_id": self._event_id(),
            "event_type": event_type,
            "schema_version": 1,
            "occurred_at": _iso(at),
            "order_id": order_id,
            "platform": platform,
            "merchant_id": f"m-{self.rng.randrange(25):03d}",
            "buyer_id": buyer_id,
            "category": category,
            "amount_fen": self.rng.randrange(990, 60_000),
            "currency": "CNY",
            "order_created_at": _iso(created),
        }

    def fresh_refund(self, buyer_id: str, at: datetime) -> dict[str, Any]:
        """Fresh goods unshipped for hours after payment: full refund."""
        paid = at - timedelta(hours=self.rng.choice((3, 5, 8)))
        event = self._envelope(
            "shipping-delay",
            self.order_id("cr"),
            buyer_id,
            at,
            platform=self.rng.choice(PLATFORMS),
            category="fresh",
            created=paid - timedelta(minutes=10),
        )
        event.update(paid_at=_iso(paid), carrier_pickup_status="not_picked_up")
        return _checked(event)

    def pinduoduo_refund(self, buyer_id: str, at: datetime) -> dict[str, Any]:
        """A lost parcel on pinduoduo, within the window: refund first."""
        reported = at - timedelta(days=1)
        carrier = self.rng.choice(("SF", "ZTO", "YTO"))
        event = self._envelope(
            "logistics-exception",
            self.order_id("cr"),
            buyer_id,
            at,
            platform="pinduoduo",
            category=self.rng.choice(("standard", "fresh")),
            created=reported - timedelta(days=2),
        )
        event.update(
            exception_kind=self.rng.choice(("transit_timeout", "lost")),
            carrier=carrier,
            tracking_no=f"{carrier}{self.rng.randrange(10**11):011d}",
            exception_reported_at=_iso(reported),
            signed_at=None,
            evidence=[],
        )
        return _checked(event)

    def coupon_delays(self, at: datetime) -> list[dict[str, Any]]:
        """Two or three shipping delays of one order, an hour apart, within the 7-day window: the
        first earns a coupon, the others must not."""
        paid = at - timedelta(hours=60)
        first = self._first_of_order("cc", "shipping-delay", at, created=paid - timedelta(hours=1))
        first.update(paid_at=_iso(paid), carrier_pickup_status="not_picked_up")
        return self._repeated(first, self.rng.choice((2, 3)), timedelta(hours=1))

    def payment_attempts(self, at: datetime) -> list[dict[str, Any]]:
        """Five payment timeouts of one order: the stored attempts pass the freeze threshold."""
        created = at - timedelta(minutes=40)
        first = self._first_of_order("cf", "payment-timeout", at, created=created)
        first.update(
            payment_failed_at=_iso(created + timedelta(minutes=5)),
            payment_attempt_count=1,
            stock_available=True,
            payment_channel=self.rng.choice(("wechat_pay", "alipay", "douyin_pay")),
            channel_return_code=self.rng.choice((None, "ERR_TIMEOUT", "NOTENOUGH")),
        )
        return self._repeated(first, 5, timedelta(minutes=2))

    def _first_of_order(
        self, scenario: str, event_type: str, at: datetime, *, created: datetime
    ) -> dict[str, Any]:
        order_id = self.order_id(scenario)
        return self._envelope(
            event_type,
            order_id,
            f"b-{order_id}",
            at,
            platform=self.rng.choice(PLATFORMS),
            category="standard",
            created=created,
        )

    def _repeated(self, first: dict[str, Any], times: int, step: timedelta) -> list[dict[str, Any]]:
        """`first` and copies of it under new event ids, `step` apart in event time."""
        at = datetime.fromisoformat(first["occurred_at"])
        events = [first]
        for n in range(1, times):
            later = dict(first, event_id=self._event_id())
            later["occurred_at"] = _iso(at + n * step)
            events.append(later)
        return [_checked(e) for e in events]


def _checked(event: dict[str, Any]) -> dict[str, Any]:
    decode_event(orjson.dumps(event))  # raises if the builder made an invalid event
    return event


def _cluster_day(rng: random.Random) -> datetime:
    """09:00-20:00 Asia/Shanghai of one of the sample's first three days."""
    day = SAMPLE_START.astimezone(SHANGHAI).replace(hour=9, minute=0, second=0)
    return day + timedelta(days=rng.randrange(3), seconds=rng.randrange(11 * 3600))


#: How far apart, in records, the events of one order are produced (a fraction of a second to
#: several seconds at the campaign's rates): far enough that a crash can fall between them.
ORDER_SPREAD = (20, 300)


def _ordered(rng: random.Random, seed: int, count: int) -> list[FeedRecord]:
    """The valid events in the order they are produced. A buyer's refunds go back to back (on
    orders of their own: several partitions at once); the events of one order are spread out
    (its later events land in later batches, possibly after a crash)."""
    build = _Builder(rng, seed)
    blocks: list[tuple[bool, list[FeedRecord]]] = []  # (spread out?, records)

    def add(events: list[dict[str, Any]], scenario: str, spread: bool = False) -> None:
        blocks.append((spread, [_valid(e, scenario) for e in events]))

    budget = count
    for n in range(max(2, count // 60)):
        size = rng.choice(CLUSTER_SIZES)
        buyer, start = f"cb-{seed}-{n:05d}", _cluster_day(rng)
        makers = [build.fresh_refund, build.pinduoduo_refund]
        events = [
            makers[i % 2](buyer, start + timedelta(minutes=rng.randrange(120))) for i in range(size)
        ]
        rng.shuffle(events)
        add(events, "refund cluster")
        budget -= size
    for _ in range(max(2, count // 40)):
        events = build.coupon_delays(_cluster_day(rng))
        add(events, "coupon order", spread=True)
        budget -= len(events)
    for _ in range(max(1, count // 200)):
        events = build.payment_attempts(_cluster_day(rng))
        add(events, "payment freeze", spread=True)
        budget -= len(events)
    for event in sample_events(max(0, budget), seed, duplicate_pct=0):
        event["buyer_id"] = f"b-{event['order_id']}"  # the sample's small buyer pool stays out
        add([event], "sample mix")
    rng.shuffle(blocks)
    keyed: list[tuple[float, int, FeedRecord]] = []
    for position, (spread, records) in enumerate(blocks):
        key = float(position)
        for record in records:
            keyed.append((key, len(keyed), record))
            key += rng.randrange(*ORDER_SPREAD) if spread else 0.001
    return [record for _, _, record in sorted(keyed, key=lambda k: (k[0], k[1]))]


def _valid(event: dict[str, Any], scenario: str) -> FeedRecord:
    return FeedRecord(
        event["event_type"],
        event["order_id"].encode(),
        orjson.dumps(event),
        EVENT,
        event,
        scenario,
    )


def plain_feed(events: list[dict[str, Any]], seed: int = 0) -> Feed:
    """Given events as a feed (no poison, no duplicates added), to produce at a steady rate."""
    return Feed(seed, [_valid(e, "given") for e in events])


# ---------------------------------------------------------------------------- poison
def _poison(rng: random.Random, kind: str, like: dict[str, Any], n: int) -> FeedRecord:
    """A record of this kind, made from a valid event `like` (a copy under a new id)."""
    event = copy.deepcopy(like)
    event["event_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    key = f"poison-{n}".encode()
    topic_type = event["event_type"]
    if kind == MALFORMED:
        text = orjson.dumps(event)
        value = rng.choice(
            (text[: len(text) // 2], b"\xff\xfe not utf-8", b"[1, 2, 3]", b"{not json")
        )
    elif kind == SCHEMA:
        breakage = rng.randrange(3)
        if breakage == 0:
            del event["order_id"]
        elif breakage == 1:
            event["amount_fen"] = "12"
        else:
            event["occurred_at"] = "yesterday"
        value = orjson.dumps(event)
    elif kind == UNKNOWN_PLATFORM:
        event["platform"] = "jingdong"
        value = orjson.dumps(event)
    elif kind == UNKNOWN_TYPE:
        event["schema_version"] = 2
        value = orjson.dumps(event)
    elif kind == OVERSIZED:
        # A producer that attached a file to the event: schema-invalid, and too big to
        # dead-letter whole.
        event["attachment"] = base64.b64encode(rng.randbytes(OVERSIZED_BYTES * 3 // 4)).decode()
        value = orjson.dumps(event)
    else:
        raise ValueError(f"unknown poison kind {kind!r}")
    return FeedRecord(topic_type, key, value, kind, None, "poison")


def build_feed(
    seed: int,
    events: int,
    *,
    poison_pct: float = 0.5,
    oversized: int = 2,
    duplicate_pct: float = 2.0,
) -> Feed:
    """`events` unique valid events, about `duplicate_pct` % more as exact duplicates of recent
    ones, `poison_pct` % poison (at least one of each kind but oversized, plus `oversized`
    oversized records). The same arguments always give the same feed."""
    # Not Random(seed): sample_events draws its event ids from that very stream, and the two
    # would make the same ids for different events.
    rng = random.Random(f"chaos-feed-{seed}")
    valid = _ordered(rng, seed, events)
    if len({r.event["event_id"] for r in valid if r.event}) != len(valid):
        raise AssertionError("two different events of the feed share an event id")
    ordinary = [k for k in POISON_KINDS if k != OVERSIZED]
    poison_at = {rng.randrange(len(valid)): k for k in ordinary}  # one of each, at least
    for _ in range(round(len(valid) * poison_pct / 100) - len(ordinary)):
        poison_at.setdefault(rng.randrange(len(valid)), rng.choice(ordinary))
    # Oversized records land after the warm-up, so a worker that cannot handle them has
    # decided the rest of its partition up to them.
    for _ in range(oversized):
        poison_at[rng.randrange(len(valid) // 10, len(valid))] = OVERSIZED
    records: list[FeedRecord] = []
    for i, record in enumerate(valid):
        records.append(record)
        if i > 0 and rng.random() < duplicate_pct / 100:
            # A redelivery of a recent event (an upstream retry), sometimes an old one.
            back = rng.randrange(1, 300) if rng.random() < 0.9 else rng.randrange(1, i + 1)
            original = valid[max(0, i - back)]
            records.append(
                FeedRecord(
                    original.event_type,
                    original.key,
                    original.value,
                    DUPLICATE,
                    original.event,
                    original.scenario,
                )
            )
        if i in poison_at:
            records.append(_poison(rng, poison_at[i], record.event or {}, len(records)))
    return Feed(seed, records)


# ---------------------------------------------------------------------------- producing
@dataclass
class FeedProducer:
    """Produces the feed at a steady rate on a thread of its own. Idempotent (a broker crash
    neither duplicates nor reorders a record) and patient (records wait out a Kafka outage in
    the producer's queue); each record's partition and offset are set on delivery."""

    settings: Settings
    feed: Feed
    rate: float
    started_at: float = 0.0
    finished_at: float | None = None
    failures: list[str] = field(default_factory=list)
    _thread: threading.Thread | None = None

    def start(self) -> FeedProducer:
        self._thread = threading.Thread(target=self._run, name="chaos-feed", daemon=True)
        self.started_at = time.monotonic()
        self._thread.start()
        return self

    def produced(self) -> int:
        """Records handed to the producer so far."""
        return sum(1 for r in self.feed.records if r.produced_at)

    def join(self, timeout_s: float | None = None) -> None:
        assert self._thread is not None
        self._thread.join(timeout_s)

    def _run(self) -> None:
        producer = Producer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                "message.max.bytes": 2 * OVERSIZED_BYTES,
                "message.timeout.ms": 600_000,  # longer than any outage the campaign makes
                "log_level": 2,  # the outages are ours: no connection errors on the terminal
            }
        )
        for i, record in enumerate(self.feed.records):
            delay = self.started_at + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            record.produced_at = time.monotonic()
            while True:
                try:
                    producer.produce(
                        self.settings.source_topic(record.event_type),
                        key=record.key,
                        value=record.value,
                        on_delivery=self._on_delivery(record),
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        left = producer.flush(600)
        if left:
            self.failures.append(f"{left} record(s) never acknowledged")
        self.finished_at = time.monotonic()

    def _on_delivery(self, record: FeedRecord):  # type: ignore[no-untyped-def]
        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self.failures.append(f"record not delivered: {err}")
                return
            record.partition, record.offset = msg.partition() or 0, msg.offset() or 0

        return delivered

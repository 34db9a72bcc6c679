"""The reference executor and a simulated platform, for the local stack and the end-to-end tests.

It plays everyone downstream of the decisions. As the **executor** it consumes the action commands
(`{prefix}action-commands`, its own consumer group, read_committed), applies each action key at
most once, and reports it: completed, or failed for good for a configurable share. As the
**platform, carrier and buyers** it answers what an open case waits for: the buyer pays the
recalled or reissued order, the channel re-query answers (paid in 83% of cases, the seed's
figure), the merchant ships, the evidence arrives, the platform gives its verdict. Every choice is
a pure function of the seed and the command or case step, and every event id is derived from
them, so running it twice (or restarting it) sends the same events, which the lifecycle
deduplicates.

Commands arrive at least once (a relay that crashed before marking resends them). The executor
keeps the keys it applied and skips a key seen before; it commits its offsets only once its
reports are on the broker, so a restart re-reads at most what it had not reported, and those
reports carry the same ids. (The simulation applies nothing real, so the applied keys live in
memory: a real executor stores them with the effect itself, in one transaction.)

The platform side reads open cases with the reports role; neither side writes the service's
tables.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson
import psycopg
from confluent_kafka import Consumer, KafkaException, Message, Producer

from order_recovery.adapters.kafka_messages import produce_all
from order_recovery.config import Settings
from order_recovery.core.records import OutgoingMessage
from order_recovery.domain.commands import ActionCommand, decode_command
from order_recovery.domain.errors import InvalidEvent

log = logging.getLogger(__name__)

_NAMESPACE = uuid.UUID("3d6f0b8e-2a41-4c77-9e2b-5b1f0c9d7a13")


@dataclass(frozen=True, slots=True)
class Odds:
    """Shares of what happens next (each in 0..1); the defaults make most cases recover."""

    action_fails: float = 0.03
    buyer_pays: float = 0.9
    channel_finds_payment: float = 0.83
    merchant_ships: float = 0.95
    evidence_arrives: float = 0.85
    verdict_won: float = 0.8


def _chance(seed: int, *parts: object) -> float:
    digest = hashlib.sha256("/".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _event_id(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(map(str, parts))))


def _envelope(kind: str, order_id: str, platform: str, ref: str, at: datetime) -> dict[str, Any]:
    return {
        "event_id": _event_id(order_id, ref, kind),
        "event_type": kind,
        "schema_version": 1,
        "occurred_at": at.isoformat(),
        "platform": platform,
        "order_id": order_id,
    }


#: The actions the simulated platform may refuse; the rest (a review, a freeze) always complete.
FALLIBLE = frozenset(
    {"issue_coupon", "auto_refund", "recall_order", "reissue_order_with_payment_link"}
)
OPEN = """SELECT order_id, exception_type, platform, state, seq, amount_fen
    FROM cases WHERE closed_at IS NULL AND state <> 'awaiting_review'
      AND state_since >= now() - interval '2 days'"""


def executor_reports(
    commands: list[ActionCommand], seed: int, odds: Odds, now: datetime
) -> Iterator[dict[str, Any]]:
    """An action-report per command applied: completed, or failed for good for a share."""
    for c in commands:
        key = c.action_key
        failed = c.action in FALLIBLE and _chance(seed, key, "fails") < odds.action_fails
        yield {
            **_envelope("action-report", c.order_id, c.platform, key, now),
            "exception_type": str(c.exception_type),
            "action": str(c.action),
            "action_key": key,
            "status": "failed" if failed else "completed",
            "final": True,
            "detail": "the platform refused it (simulated)" if failed else None,
        }


def platform_answers(
    rows: list[tuple[Any, ...]], seed: int, odds: Odds, now: datetime
) -> Iterator[dict[str, Any]]:
    """What the world does about each open case, once per case step (None: it stays silent,
    and the case's deadline decides)."""
    for order_id, exception_type, platform, state, seq, amount_fen in rows:
        ref = f"{exception_type}/{seq}"
        roll = _chance(seed, order_id, ref)
        env = partial(_envelope, order_id=order_id, platform=platform, ref=ref, at=now)
        if state == "awaiting_payment" and roll < odds.buyer_pays:
            yield {**env("payment-completed"), "amount_fen": amount_fen}
        elif state == "awaiting_channel_query":
            paid = roll < odds.channel_finds_payment
            yield {**env("channel-query-result"), "answer": "paid" if paid else "failed"}
        elif state == "awaiting_shipment" and roll < odds.merchant_ships:
            yield {
                **env("parcel-handed-over"),
                "carrier": "SF",
                "tracking_no": f"SF{seq}{order_id[-6:]}",
            }
        elif state == "awaiting_evidence" and roll < odds.evidence_arrives:
            evidence = [{"kind": "tracking_screenshot", "uri": f"oss://evidence/{order_id}.png"}]
            yield {**env("evidence-uploaded"), "evidence": evidence}
        elif state == "awaiting_verdict":
            won = roll < odds.verdict_won
            yield {
                **env("platform-verdict"),
                "proceeding": "arbitration" if platform == "taobao" else "appeal",
                "result": "won" if won else "lost",
                "amount_fen": amount_fen if won else 0,
            }


class ReferencePlatform:
    """Consumes the action commands and polls the open cases; produces what the executor and the
    world would. The open cases are polled every `interval_s`."""

    def __init__(
        self, settings: Settings, *, seed: int = 7, odds: Odds = Odds(), interval_s: float = 1.0
    ) -> None:
        self.settings, self.seed, self.odds, self.interval_s = settings, seed, odds, interval_s
        self.stop = threading.Event()
        self._sent: set[str] = set()
        self.applied: set[str] = set()  # the action keys applied: each at most once

    def run(self) -> int:
        producer = Producer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                "enable.idempotence": True,
                "linger.ms": 20,
            }
        )
        consumer = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                "group.id": self.settings.executor_group,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            },
            logger=log,
        )
        consumer.subscribe([self.settings.command_topic])
        next_poll = 0.0
        try:
            with psycopg.connect(self.settings.database_reader_url, autocommit=True) as conn:
                while not self.stop.is_set():
                    messages = consumer.consume(500, min(self.interval_s, 0.5))
                    now = datetime.now(UTC)
                    events = list(
                        executor_reports(self.to_apply(messages), self.seed, self.odds, now)
                    )
                    if time.monotonic() >= next_poll:
                        next_poll = time.monotonic() + self.interval_s
                        open_cases = conn.execute(OPEN).fetchall()
                        events += platform_answers(open_cases, self.seed, self.odds, now)
                    self._send(producer, events)
                    self.applied.update(e["action_key"] for e in events if "action_key" in e)
                    if messages:
                        self._commit(consumer)
        finally:
            consumer.close()
            producer.flush(30)
        return 0

    def to_apply(self, messages: list[Message]) -> list[ActionCommand]:
        """The commands among these messages whose action key was not applied before (nor
        earlier in the same messages): a redelivered command is applied once."""
        fresh: dict[str, ActionCommand] = {}
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                continue  # end of partition and the like
            try:
                command = decode_command(msg.value() or b"")
            except InvalidEvent as exc:
                log.error("reference executor: skipping a bad command: %s", exc)
                continue
            if command.action_key not in self.applied:
                fresh.setdefault(command.action_key, command)
        return list(fresh.values())

    @staticmethod
    def _commit(consumer: Consumer) -> None:
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:  # revoked meanwhile: re-read, and skipped as applied
            log.warning("reference executor: commit refused: %s", exc)

    def _send(self, producer: Producer, events: list[dict[str, Any]]) -> None:
        fresh = [e for e in events if e["event_id"] not in self._sent]
        produce_all(
            producer,
            (
                OutgoingMessage(
                    self.settings.source_topic(e["event_type"]),
                    e["order_id"].encode(),
                    orjson.dumps({k: v for k, v in e.items() if v is not None}),
                )
                for e in fresh
            ),
        )
        producer.flush(10)
        self._sent.update(e["event_id"] for e in fresh)
        if fresh:
            log.info("reference platform: sent %d resolution events", len(fresh))

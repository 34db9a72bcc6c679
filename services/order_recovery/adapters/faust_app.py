"""The faust-streaming runtime: agents that feed the source topics to the pipeline."""

from __future__ import annotations

import logging

import faust

from order_recovery.config import Settings

log = logging.getLogger(__name__)


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{hostport.strip()}" for hostport in bootstrap.split(",") if hostport.strip()]


def create_app(settings: Settings) -> faust.App:
    """A faust app bound to loopback, with no topic auto-creation of its own."""
    return faust.App(
        settings.consumer_group,
        broker=broker_urls(settings.kafka_bootstrap_servers),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        # faust's own web server would bind 0.0.0.0; metrics are served by our own listener.
        web_enabled=False,
        web_bind=settings.metrics_host,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        datadir=f"/tmp/order-recovery-faust-{settings.worker_id}",
    )


def run_worker(settings: Settings) -> int:
    app = create_app(settings)

    @app.agent(app.topic(*settings.source_topics, value_type=bytes, key_type=bytes))
    async def log_events(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            log.info(
                "received %s[%s]@%s",
                event.message.topic,
                event.message.partition,
                event.message.offset,
            )

    worker = faust.Worker(app, loglevel=settings.log_level.lower(), redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0

"""The core's ports on real systems: Postgres (the store, the unsendable letters, the outbox
marker, migrations), Kafka (the publisher, the message converter and produce loop, topics),
Prometheus metrics, tenacity retries, the health listener. Adapters import the core and the
domain, never the bootstrap, a runtime or an entrypoint; they raise the core's faults."""

"""Edges of the service: Kafka, faust, Postgres and metrics. The domain never imports these."""

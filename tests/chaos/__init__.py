"""The fault campaign (`make chaos`, `python -m tests.chaos`): real worker processes against the
local stack, a seeded feed of dependent events and poison, and a seeded schedule of SIGKILLs,
SIGSTOP pauses, Postgres and Kafka crashes and forced rebalances; then a checker that holds
Postgres and the outcome and dead-letter topics to the exactly-once invariants.

It lives under tests/ because it is a test: it ends in a verdict (exit 1 when an invariant is
broken), it reuses the test support code (worker processes, topic readers, the reference rules)
and a short variant of it runs in `make test` (tests/e2e/test_chaos.py). It is not a benchmark
(bench/ measures speed; here timings such as catch-up are reported, never the verdict), and it is
not a pytest suite by default because a full run takes minutes. See docs/reliability.md.
"""

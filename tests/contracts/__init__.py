"""Contract suites of the core's ports, in the manner of eventsourcing's recorder tests: a base
class per port holds the tests, and is subclassed once with the in-memory fake
(tests/unit/test_fakes_contract.py) and once with the real adapter on the real service
(tests/integration/test_adapters_contract.py). A subclass only says how to build the port and how
to do what the port itself cannot (age the outbox, read what the broker got)."""

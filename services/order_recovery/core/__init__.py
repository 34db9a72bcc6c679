"""The application core: the stream processor (`pipeline`) and everything it exchanges with the
outside, in its own terms: records in and messages out (`records`), the ports it is typed on
(`ports`), the faults adapters raise (`faults`), the dead-letter side (`dead_letters`, `headers`,
`intake`). Above the pure domain, below the adapters: nothing here imports an adapter, a runtime
or a driver (tests/unit/domain/test_purity.py keeps it so)."""

"""The processes' entry points: `recovery-worker` (picks a runtime), `recovery-lifecycle` and
`recoveryctl`."""

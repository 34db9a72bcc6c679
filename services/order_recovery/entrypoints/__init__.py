"""The processes' entry points: `recovery-worker` (picks a runtime) and `recoveryctl`."""

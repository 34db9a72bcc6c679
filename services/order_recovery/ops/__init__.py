"""What `recoveryctl` does beyond topics and migrations: dead letters, replay, case timelines,
figures, reconciliation and what-if. One module per concern; the CLI only parses and prints."""

"""Consumer runtimes: what feeds the pipeline batches and commits what it finished. Each builds its
worker through `order_recovery.bootstrap`; nothing below imports from here."""

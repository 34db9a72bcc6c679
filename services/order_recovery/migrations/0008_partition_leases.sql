-- Fencing of zombie workers. A worker paused past its session (SIGSTOP, a long GC, a stalled VM)
-- loses its partitions to another member and, when it wakes, may still hold a decided batch of
-- them. Kafka refuses its offset commit, but nothing stopped its Postgres write. Now a worker
-- claims each partition before its first batch of it (epoch + 1, under the row lock), and every
-- write transaction takes a share lock on the leases of its batch's partitions and checks their
-- epochs: a claim waits for a write in progress, and a write after the claim finds another epoch
-- and is rolled back. So once the new owner has read its history, nothing of the old owner's
-- lands behind it.
CREATE TABLE partition_leases (
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    epoch       bigint      NOT NULL,
    owner       text        NOT NULL,   -- ORDER_RECOVERY_WORKER_ID of the claimer
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- The worker claims (insert, or a new epoch and owner) and share-locks leases (FOR SHARE needs an
-- UPDATE privilege); it never removes one, nor renames what a lease is of.
GRANT SELECT, INSERT ON partition_leases TO recovery_write;
GRANT UPDATE (epoch, owner, claimed_at) ON partition_leases TO recovery_write;
